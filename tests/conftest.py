"""Shared test parts: real fixture recordings, a moto S3 server on 127.0.0.1."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = Path(os.environ.get("PAMINGEST_FIXTURES", ROOT.parent / "shared" / "fixtures"))

# Credentials for the local moto server only; set before boto/s3fs/icechunk read them.
os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
os.environ.pop("AWS_PROFILE", None)
logging.getLogger("werkzeug").setLevel(logging.WARNING)


def pytest_configure(config):
    if not FIXTURES.is_dir():
        raise pytest.UsageError(f"fixture recordings not found at {FIXTURES} (set PAMINGEST_FIXTURES)")


@pytest.fixture(scope="session")
def fixtures() -> Path:
    return FIXTURES


@pytest.fixture(scope="session")
def moto_endpoint():
    """One moto S3 server per test session, on a free loopback port."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture(scope="session")
def gcs_endpoint():
    """One gcp-storage-emulator per test session, in memory, on a free loopback port.

    Clients reach it only through ``endpoint_url``: ``STORAGE_EMULATOR_HOST`` is never
    set, as it would send every later gcsfs client of the session (and the subprocesses
    and Dask workers that inherit the environment) to the emulator.
    """
    from gcp_storage_emulator.server import create_server

    # The emulator logs every request at INFO, and a traceback for each client that closes
    # a read-ahead connection early.
    logging.getLogger("gcp_storage_emulator").setLevel(logging.WARNING)
    server = create_server("127.0.0.1", 0, in_memory=True)
    server.start()  # returns once the socket is bound and serving
    # Port 0 lets the OS choose a free port; the emulator keeps the bound socket privately.
    host, port = server._api._httpd.server_address[:2]
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def s3(moto_endpoint):
    """A clean S3 server for each test: ``S3Bucket`` helper bound to the endpoint."""
    import requests

    requests.post(f"{moto_endpoint}/moto-api/reset", timeout=10).raise_for_status()
    return S3(moto_endpoint)


class S3:
    """Create buckets and upload fixture files, laid out as the real buckets are."""

    def __init__(self, endpoint: str) -> None:
        import boto3

        self.endpoint = endpoint
        self.client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
        self.storage_options = {"endpoint_url": endpoint, "key": "testing", "secret": "testing"}

    def bucket(self, name: str) -> str:
        self.client.create_bucket(Bucket=name)
        return f"s3://{name}"

    def put(self, bucket: str, key: str, path_or_bytes) -> str:
        body = path_or_bytes if isinstance(path_or_bytes, bytes) else Path(path_or_bytes).read_bytes()
        self.client.put_object(Bucket=bucket, Key=key, Body=body)
        return f"s3://{bucket}/{key}"

    def delete(self, bucket: str, key: str) -> None:
        self.client.delete_object(Bucket=bucket, Key=key)


@pytest.fixture
def store(tmp_path) -> str:
    return str(tmp_path / "store")


def copy_tree(src: Path, dst: Path, pattern: str = "*") -> list[Path]:
    dst.mkdir(parents=True, exist_ok=True)
    out = []
    for p in sorted(src.glob(pattern)):
        shutil.copy(p, dst / p.name)
        out.append(dst / p.name)
    return out


@pytest.fixture(scope="session")
def demo_store(tmp_path_factory, moto_endpoint) -> str:
    """The demo store, built as ``pamingest demo`` builds it (``pamingest.demo.build_demo_store``: the
    calls ``make demo``'s flow runs make) from the demo's buckets on the moto server: the SongMeter,
    SoundTrap and SanctSound fixture recordings, the Orcasound bucket (fixture HLS session on
    rpi_orcasound_lab, two synthesised sessions an hour apart on rpi_bush_point), every chunk scored
    by the demo's labeller."""
    import requests

    from pamingest.demo import build_demo_store, fill_demo_buckets

    store = str(tmp_path_factory.mktemp("demo") / "store")
    requests.post(f"{moto_endpoint}/moto-api/reset", timeout=10).raise_for_status()
    fill_demo_buckets(moto_endpoint, FIXTURES)
    built = build_demo_store(store, moto_endpoint, FIXTURES, "serial")
    for _, _, report in built.ingests:
        assert report.ingested and not report.failed, report.summary()
    assert built.labeling.scored and not built.labeling.failed, built.labeling.summary()
    return store


PLUGINS = Path(__file__).resolve().parent / "plugins"


@pytest.fixture
def labeler_plugin(tmp_path, monkeypatch):
    """A user's labeller package, registered through the ``pamingest.labelers`` entry point.

    The package (tests/plugins/pamingest_testplugin) is not installed: a
    dist-info naming its entry points is written to a temporary folder and
    both go on sys.path, and on PYTHONPATH for subprocesses and Dask workers.
    """
    site = tmp_path / "plugin-site"
    info = site / "pamingest_testplugin-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: pamingest-testplugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(
        "[pamingest.labelers]\n"
        "loudness = pamingest_testplugin:LoudnessLabeler\n"
        "broken = pamingest_testplugin:BrokenLabeler\n")
    monkeypatch.syspath_prepend(str(PLUGINS))
    monkeypatch.syspath_prepend(str(site))
    path = os.pathsep.join([str(site), str(PLUGINS), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    monkeypatch.setenv("PYTHONPATH", path)
    loads = tmp_path / "loads.txt"
    monkeypatch.setenv("PAMINGEST_TEST_LOADS", str(loads))
    return loads


@pytest.fixture(scope="session")
def chromium_or_none():
    """One headless Chromium for the session (``tests/browser.py``), or None without Debian's chromium."""
    from browser import CHROMIUM, Chromium

    if not CHROMIUM.exists():
        yield None
        return
    browser = Chromium()
    yield browser
    browser.close()


@pytest.fixture
def chromium(chromium_or_none):
    """The session's headless Chromium; the test is skipped when /usr/bin/chromium is absent."""
    if chromium_or_none is None:
        pytest.skip("no /usr/bin/chromium: install Debian's chromium (apt-get install chromium chromium-driver; "
                    ".ci/run does) to run the browser tests")
    return chromium_or_none
