#!/bin/sh
# The Prefect worker of pamingest (compose service prefect-worker, k8s
# Deployment prefect-worker); installed in the image as
# /usr/local/bin/pamingest-prefect-worker and run from /opt/pamingest.
#
# 1. waits for the Prefect API at $PREFECT_API_URL;
# 2. creates the process work pool `pamingest` if it is missing, without a
#    concurrency limit: flow runs writing to the same store all land (a commit
#    rebases onto other writers' commits or re-applies its change, and an ingest
#    defers what raced), so deployments run side by side; prefect.yaml limits
#    the deployments whose own runs would only overlap pointlessly. A pool made
#    by an older image keeps the limit of 1 it was given then:
#    `prefect work-pool clear-concurrency-limit pamingest` removes it;
# 3. registers the deployments of prefect.yaml (again on every start, so an
#    image update updates them);
# 4. starts the worker, with its health endpoint on :8080/health. Each flow
#    run is a process in this container that plans on the client (listing, the
#    store's catalogue): --limit keeps at most 4 of them at once, a bound on
#    the container's memory (k8s: 4Gi; raise both together).
set -eu

until python -c 'import os, urllib.request; urllib.request.urlopen(os.environ["PREFECT_API_URL"] + "/health", timeout=5)' 2>/dev/null; do
    echo "waiting for the Prefect API at ${PREFECT_API_URL}"
    sleep 3
done

if ! prefect work-pool inspect pamingest >/dev/null 2>&1; then
    prefect work-pool create pamingest --type process
fi

prefect --no-prompt deploy --all --prefect-file prefect.yaml

exec prefect worker start --pool pamingest --type process --limit 4 --with-healthcheck --install-policy never
