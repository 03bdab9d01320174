"""Ingest through an S3 server that fails (issue #16 item 3).

The source bucket and the store's bucket are both reached through
``faultproxy.FaultProxy`` in front of the session's moto server, which drops,
delays, cuts short or answers with 500/503 a seeded share of GETs and PUTs.
What must hold: a run either completes or stops with an error saying why, a
re-run completes, and the store ends identical, row by row, to a clean run's;
no file is recorded failed because of a fault a retry absorbs.

The quick tests run one seed at 10% (~25 s); ``pytest -m slow tests/test_faults.py``
runs six seeds at 10% and 25% (~2.5 min). Icechunk names its objects at random,
so the faults that land on store writes vary from run to run with one seed.

What the slow form found (icechunk 1.1, s3fs 2025.x):
- absorbed: 500/503, resets, slow replies and truncated bodies on source reads
  (s3fs/botocore retry them), and on store writes (Icechunk retries them);
- a lost reply to the first branch write made the store unusable (fixed in
  store/repo.py; test_a_lost_reply_to_the_first_branch_write_leaves_a_usable_store);
- a truncated body (or a reset mid-body) on a store read of ``ref.json`` or a
  snapshot inside Icechunk's commit is not retried by Icechunk: the run stops
  (now with ``StoreUnavailableError``, one line naming the store); at 25% the
  re-runs stop too;
- a store read failing inside a write task surfaced from zarr as "No array
  found ... audio" and the file was recorded ``failed`` for good; now the
  task reads the array again, and a store that still cannot be read or
  written stops the run with ``StoreUnavailableError`` (uncommitted), so a
  re-run completes (ingest._open_audio, store.rows.row_writer).

Still failing (marked xfail, not strict: which objects the faults hit varies
between runs): seed 7 at 25%, where every run meets a cut-short read of
``branch.main/ref.json`` inside Icechunk's own commit, which neither Icechunk
nor pamingest retries.
"""

from __future__ import annotations

import pytest

import pamingest as pi
from pamingest.sources.orcasound import OrcasoundHLS

from faultproxy import FaultProxy
from helpers import tree_digest

SOUNDTRAP_PREFIX = "deployment-01"
ORCA_BUCKET = "audio-orcasound-net"
LAB = "rpi_orcasound_lab"
E1 = 1_622_000_000
# A run stopped by a fault is run again; faults stay on, so a few tries may be needed.
MAX_RUNS = 4


def run_through_faults(make_source, store_url: str, store_options: dict, proxy: FaultProxy, **kwargs):
    """Ingest until a run completes; the errors of the runs that stopped, and the last report."""
    errors = []
    for _ in range(MAX_RUNS):
        try:
            return errors, pi.ingest(make_source(), store_url, store_options=store_options, **kwargs)
        except Exception as exc:  # noqa: BLE001 - each is checked for a clear message below
            errors.append(exc)
    pytest.fail(f"{MAX_RUNS} runs through faults {proxy.counts()} all stopped: {errors!r}")


def assert_clear(errors) -> None:
    # A stopped run must say what went wrong, not end on a bare exception without a message.
    for exc in errors:
        assert str(exc).strip(), f"{type(exc).__name__} with no message"


def upload_soundtrap(s3, fixtures) -> None:
    s3.bucket("rec")
    for f in sorted((fixtures / "soundtrap").glob("*.flac")):
        s3.put("rec", f"{SOUNDTRAP_PREFIX}/{f.name}", f)


def soundtrap_through_faults(s3, fixtures, *, seed: int, rate: float, client: str, **proxy_kwargs):
    """(clean digest, faulty digest, proxy, errors, report) for the SoundTrap folder."""
    upload_soundtrap(s3, fixtures)
    s3.bucket("stores")
    direct = s3.storage_options
    clean = pi.ingest(pi.TimestampedFiles("s3://rec", "soundtrap", storage_options=direct), "s3://stores/clean",
                      store_options=direct, client="serial")
    assert clean.ingested == 3 and not clean.failed, clean.summary()
    with FaultProxy(s3.endpoint, rate=rate, seed=seed, **proxy_kwargs) as proxy:
        via = {**direct, "endpoint_url": proxy.endpoint}
        errors, report = run_through_faults(
            lambda: pi.TimestampedFiles("s3://rec", "soundtrap", storage_options=via),
            "s3://stores/faulty", via, proxy, client=client)
    want = tree_digest(pi.open_store("s3://stores/clean", storage_options=direct))
    got = tree_digest(pi.open_store("s3://stores/faulty", storage_options=direct))
    return want, got, proxy, errors, report


def assert_same_store(want: dict, got: dict, proxy: FaultProxy, report) -> None:
    note = f"faults injected: {dict(proxy.counts())}; last run:\n{report.summary()}"
    assert not report.failed, f"files failed because of injected faults; {note}"
    assert got.keys() == want.keys(), note
    for key in want:
        assert got[key] == want[key], f"{key} differs from the clean run's; {note}"


def test_digest_sees_one_changed_sample(s3, fixtures):
    """The comparison can fail: one sample changed in one row, or one row's n_valid, is seen."""
    upload_soundtrap(s3, fixtures)
    s3.bucket("stores")
    opts = s3.storage_options
    pi.ingest(pi.TimestampedFiles("s3://rec", "soundtrap", storage_options=opts), "s3://stores/s",
              store_options=opts, client="serial")
    tree = pi.open_store("s3://stores/s", storage_options=opts).load()
    want = tree_digest(tree)
    (path,) = pi.streams(tree)
    ds = tree[path].to_dataset()
    ds["audio"].values[40, 123, 0] += 1
    assert tree_digest(tree)[(f"/{path}", "audio")] != want[(f"/{path}", "audio")]
    ds["audio"].values[40, 123, 0] -= 1
    ds["n_valid"].values[-1] -= 1
    assert tree_digest(tree)[(f"/{path}", "n_valid")] != want[(f"/{path}", "n_valid")]


@pytest.mark.parametrize("client", ["serial", "threads"])
def test_soundtrap_from_and_to_s3_through_faults(s3, fixtures, client):
    want, got, proxy, errors, report = soundtrap_through_faults(s3, fixtures, seed=1, rate=0.1, client=client)
    assert sum(proxy.counts().values()) >= 5, "the schedule injected (almost) nothing: the test tests nothing"
    assert_clear(errors)
    assert_same_store(want, got, proxy, report)


CUT_SHORT_REF_READ = pytest.mark.xfail(strict=False, reason="a cut-short read of branch.main/ref.json inside "
                                       "Icechunk's commit stops every run (see the module docstring)")


@pytest.mark.slow
@pytest.mark.parametrize("seed,rate", [(seed, rate) if (seed, rate) != (7, 0.25)
                                       else pytest.param(seed, rate, marks=CUT_SHORT_REF_READ)
                                       for rate in (0.1, 0.25) for seed in range(2, 8)])
def test_soundtrap_through_faults_many_seeds(s3, fixtures, seed, rate):
    want, got, proxy, errors, report = soundtrap_through_faults(s3, fixtures, seed=seed, rate=rate, client="threads")
    assert_clear(errors)
    assert_same_store(want, got, proxy, report)


def orcasound_through_faults(s3, fixtures, *, seed: int, rate: float, client: str):
    """(clean digest, faulty digest, proxy, errors, report) for one HLS session of the fixture segments,
    laid out as Orcasound's bucket is (tests/test_orcasound.py)."""
    s3.bucket(ORCA_BUCKET)
    for n in range(3):
        s3.put(ORCA_BUCKET, f"{LAB}/hls/{E1}/live{n:03d}.ts", fixtures / "orcasound" / "hls" / f"live00{n}.ts")
    s3.put(ORCA_BUCKET, f"{LAB}/hls/{E1}/live.m3u8", b"#EXTM3U\n")
    s3.put(ORCA_BUCKET, f"{LAB}/latest.txt", str(E1).encode())
    s3.bucket("stores")
    direct = s3.storage_options
    clean = pi.ingest(OrcasoundHLS([LAB], storage_options=direct), "s3://stores/clean", store_options=direct,
                      client="serial")
    assert clean.ingested == 3 and not clean.failed, clean.summary()
    with FaultProxy(s3.endpoint, rate=rate, seed=seed) as proxy:
        via = {**direct, "endpoint_url": proxy.endpoint}
        errors, report = run_through_faults(lambda: OrcasoundHLS([LAB], storage_options=via),
                                            "s3://stores/faulty", via, proxy, client=client)
    want = tree_digest(pi.open_store("s3://stores/clean", storage_options=direct))
    got = tree_digest(pi.open_store("s3://stores/faulty", storage_options=direct))
    return want, got, proxy, errors, report


def test_orcasound_hls_from_and_to_s3_through_faults(s3, fixtures):
    want, got, proxy, errors, report = orcasound_through_faults(s3, fixtures, seed=1, rate=0.1, client="threads")
    assert sum(proxy.counts().values()) >= 3, "the schedule injected (almost) nothing: the test tests nothing"
    assert_clear(errors)
    assert_same_store(want, got, proxy, report)


@pytest.mark.slow
@pytest.mark.parametrize("seed", [*range(2, 7), pytest.param(7, marks=CUT_SHORT_REF_READ)])
def test_orcasound_hls_through_faults_many_seeds(s3, fixtures, seed):
    want, got, proxy, errors, report = orcasound_through_faults(s3, fixtures, seed=seed, rate=0.25, client="threads")
    assert_clear(errors)
    assert_same_store(want, got, proxy, report)


def test_a_lost_reply_to_the_first_branch_write_leaves_a_usable_store(s3, fixtures):
    """The reply to the store's first commit lost (the write landed): Icechunk's retry of the
    conditional write meets its own write as a conflict. The store must still be usable."""
    upload_soundtrap(s3, fixtures)
    s3.bucket("stores")
    direct = s3.storage_options
    pi.ingest(pi.TimestampedFiles("s3://rec", "soundtrap", storage_options=direct), "s3://stores/clean",
              store_options=direct, client="serial")
    with FaultProxy(s3.endpoint, rate=1.0, methods=("PUT",), faults=("lost-reply",), only="/refs/", limit=1) as proxy:
        via = {**direct, "endpoint_url": proxy.endpoint}
        errors, report = run_through_faults(
            lambda: pi.TimestampedFiles("s3://rec", "soundtrap", storage_options=via),
            "s3://stores/faulty", via, proxy, client="serial")
    assert proxy.counts() == {"lost-reply": 1}
    assert_clear(errors)
    assert_same_store(tree_digest(pi.open_store("s3://stores/clean", storage_options=direct)),
                      tree_digest(pi.open_store("s3://stores/faulty", storage_options=direct)), proxy, report)
