#!/bin/sh
# The Prefect worker of pamingest (compose service prefect-worker, k8s
# Deployment prefect-worker); installed in the image as
# /usr/local/bin/pamingest-prefect-worker and run from /opt/pamingest.
#
# 1. waits for the Prefect API at $PREFECT_API_URL;
# 2. creates the process work pool `pamingest` if it is missing, with a
#    concurrency limit of 1: every deployment writes the same store, and a
#    store takes one ingest at a time (a second one fails with
#    ConcurrentIngestError); raise it for deployments with separate stores;
# 3. registers the deployments of prefect.yaml (again on every start, so an
#    image update updates them);
# 4. starts the worker, with its health endpoint on :8080/health.
set -eu

until python -c 'import os, urllib.request; urllib.request.urlopen(os.environ["PREFECT_API_URL"] + "/health", timeout=5)' 2>/dev/null; do
    echo "waiting for the Prefect API at ${PREFECT_API_URL}"
    sleep 3
done

if ! prefect work-pool inspect pamingest >/dev/null 2>&1; then
    prefect work-pool create pamingest --type process
    prefect work-pool set-concurrency-limit pamingest 1
fi

prefect --no-prompt deploy --all --prefect-file prefect.yaml

exec prefect worker start --pool pamingest --type process --with-healthcheck --install-policy never
