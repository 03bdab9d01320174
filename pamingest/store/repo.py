"""The Icechunk repository behind a store URL: its sessions and its commits, in one place.

``/path`` or ``file:///path``: a local folder. ``s3://bucket/prefix``: S3 or
any S3-compatible server (``endpoint_url``), credentials from explicit
options or the standard AWS variables. ``gs://bucket/prefix``: Google Cloud
Storage. ``memory://``: an in-process store, for tests and trials.

Every writer (ingest, annotate, pseudolabel, label refresh) commits through
:meth:`Store.commit` or :meth:`Store.update`, so concurrent writers land the
same way:

1. commit on the branch tip the session started from;
2. if another writer moved the branch meanwhile, rebase the session onto the
   new tip with Icechunk's :class:`icechunk.ConflictDetector`: changes to
   different arrays, or to different chunks of one array, carry over as
   they are; then the writer may ``repair`` what a rebase cannot know about
   (e.g. grow arrays another writer created) and commit again;
3. if the rebase finds a real conflict (both resized one array, both wrote
   one chunk, both changed one group's attributes), the writer's ``rebuild``
   re-applies its intent on a fresh session at the new tip (re-reading
   whatever it depends on), and that is committed the same way.

Local folders have no conditional writes (Icechunk updates a local branch
reference without compare-and-swap), so commits to a local store hold an
exclusive lock file for the moment of the commit; object stores (S3, GCS)
rely on their conditional writes.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import pickle
import random
import time
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Generic, Iterator, TypeVar

from ..errors import ConcurrentWriteError, ConfigError, StoreNotFoundError, StoreUnavailableError, first_line

if TYPE_CHECKING:
    import datetime

    import icechunk
    import zarr

log = logging.getLogger(__name__)
T = TypeVar("T")

# zarr warns each time it reads the metadata of an array kept with a numcodecs codec that such codecs
# are outside the Zarr v3 spec. pamingest keeps what FLAC cannot hold (32-bit, float) with PCodec on
# purpose (layout.py), so every reader of such a stream (queue, review, annotate, export...) would
# warn: ignored, for that message only, in every process that opens a store. Once, for the process:
# warnings.catch_warnings around each read is not thread-safe, and labelling and exports read in threads.
warnings.filterwarnings("ignore", message="Numcodecs codecs are not in the Zarr version 3 specification")

_MEMORY: dict[str, icechunk.Storage] = {}
LOCK_NAME = "pamingest.commit.lock"


@functools.cache
def _icechunk():
    """The ``icechunk`` module, set up for pamingest on first use.

    icechunk and zarr are imported lazily, by the functions that open and
    commit stores: `import pamingest` stays under 0.4 s (benchmarks/startup.py).
    """
    import icechunk

    # Icechunk warns on every local-filesystem open that concurrent commits are
    # unsafe there; pamingest serialises local commits with a lock file (above),
    # so the warning is noise. ICECHUNK_LOG set by the user still wins.
    if "ICECHUNK_LOG" not in os.environ:
        icechunk.set_logs_filter("error")
    return icechunk


def _icechunk_2() -> bool:
    return int(_icechunk().__version__.split(".")[0]) >= 2


def load_session(data: bytes) -> icechunk.Session:
    """A session (or fork) pickled by another process, with icechunk set up as above."""
    _icechunk()
    return pickle.loads(data)


@dataclass(frozen=True)
class StoreLocation:
    """A store URL plus the options needed to reach it; picklable, no live handles."""

    url: str
    options: dict[str, Any] = field(default_factory=dict, hash=False)

    @classmethod
    def from_url(cls, url: "str | StoreLocation", options: dict[str, Any] | None = None) -> "StoreLocation":
        if isinstance(url, StoreLocation):
            return url
        return cls(str(url), dict(options or {}))

    @property
    def local_path(self) -> str | None:
        """The folder of a local store, else None."""
        if "://" not in self.url or self.url.startswith("file://"):
            return os.path.abspath(self.url.removeprefix("file://"))
        return None

    def storage(self) -> icechunk.Storage:
        icechunk = _icechunk()
        url, opts = self.url, dict(self.options)
        if url.startswith("memory://"):
            return _MEMORY.setdefault(url, icechunk.in_memory_storage())
        if self.local_path is not None:
            return icechunk.local_filesystem_storage(self.local_path)
        scheme, rest = url.split("://", 1)
        bucket, _, prefix = rest.partition("/")
        prefix = prefix.strip("/") or None
        if scheme in ("s3", "s3a"):
            endpoint = opts.get("endpoint_url") or (opts.get("client_kwargs") or {}).get("endpoint_url")
            key = opts.get("key") or opts.get("access_key_id")
            secret = opts.get("secret") or opts.get("secret_access_key")
            kwargs: dict[str, Any] = dict(
                bucket=bucket,
                prefix=prefix,
                region=opts.get("region") or os.environ.get("AWS_DEFAULT_REGION") or os.environ.get("AWS_REGION"),
                endpoint_url=endpoint,
                allow_http=bool(endpoint and endpoint.startswith("http://")),
                force_path_style=bool(endpoint),
            )
            if opts.get("anon"):
                kwargs["anonymous"] = True
            elif key and secret:
                kwargs.update(access_key_id=key, secret_access_key=secret, session_token=opts.get("token"))
            else:
                kwargs["from_env"] = True
            return icechunk.s3_storage(**kwargs)
        if scheme in ("gs", "gcs"):
            if opts.get("anon") or opts.get("token") == "anon":
                return icechunk.gcs_storage(bucket=bucket, prefix=prefix, anonymous=True)
            return icechunk.gcs_storage(bucket=bucket, prefix=prefix, from_env=True)
        raise ConfigError(f"unsupported store URL {url!r}: use a path, s3://, gs:// or memory://")


def open_repository(location: StoreLocation, create: bool = False) -> icechunk.Repository:
    import zarr

    icechunk = _icechunk()
    path = location.local_path
    if not create and path is not None and not os.path.isdir(path):
        # Checked first: opening local storage would leave an empty folder behind.
        raise StoreNotFoundError(f"no pamingest store at {location.url}")
    storage = location.storage()
    if icechunk.Repository.exists(storage):
        repo = _authorised(icechunk.Repository.open(storage), location)
        if create:
            _ensure_root(repo, path)
        return repo
    if not create:
        raise StoreNotFoundError(f"no pamingest store at {location.url}")
    try:
        # Icechunk 2 writes its own format (spec 2) by default, which Icechunk 1 cannot open; stores stay
        # in the format both read until every reader has moved (docs/architecture.md, "Icechunk versions").
        repo = (icechunk.Repository.create(storage, spec_version=1) if _icechunk_2()
                else icechunk.Repository.create(storage))
    except icechunk.IcechunkError:
        # The branch write landed but its reply was lost (or another first writer won): Icechunk's
        # retry of the conditional write met it as a conflict. The repository is there to open.
        if not icechunk.Repository.exists(storage):
            raise
        repo = icechunk.Repository.open(storage)
    _ensure_root(repo, path)
    return repo


def _authorised(repo: icechunk.Repository, location: StoreLocation) -> icechunk.Repository:
    """``repo`` allowed to read the virtual chunk containers its configuration holds (virtual streams'
    references to the original recordings, store/virtual.py); unchanged when it holds none."""
    from .virtual import authorization

    granted = authorization(repo.config, location.options)
    return repo.reopen(authorize_virtual_chunk_access=granted) if granted else repo


def _ensure_root(repo: icechunk.Repository, path: str | None) -> None:
    """Make the root group, in a commit of its own, if main does not hold it yet.

    Made right after creation, so that no two first writers both create it;
    checked again on every writer's open, because a creation stopped between
    Icechunk's first commit and this one (a crash, a lost reply) would
    otherwise leave a store no run can use.
    """
    import zarr

    icechunk = _icechunk()
    try:
        zarr.open_group(repo.readonly_session("main").store, mode="r")
        return
    except FileNotFoundError:  # zarr's GroupNotFoundError
        pass
    session = repo.writable_session("main")
    zarr.open_group(session.store, mode="a", attributes={"pamingest_store": 1})
    try:
        with _local_lock(path):
            session.commit("pamingest: new store")
    except icechunk.ConflictError:
        pass  # another first writer made it meanwhile


@contextlib.contextmanager
def _local_lock(path: str | None) -> Iterator[None]:
    if path is None:
        yield
        return
    import fcntl

    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, LOCK_NAME), "a+b") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


# ---------------------------------------------------------------- garbage

# Keep objects younger than this: a run writes its rows before its commit references them.
DEFAULT_GC_GRACE_SECONDS = 7 * 24 * 3600.0
# Runs of pamingest before 0.1 wrote on a branch of their own; a killed one left it behind.
LEGACY_RUN_BRANCH_PREFIX = "pamingest-run-"


@dataclass
class Collected:
    """What ``Store.collect_garbage`` deleted (or, in a dry run, would delete).

    Unreachable data comes from rows written by runs that never landed: a
    file that failed after some of its rows were stored in the run's fork,
    a run killed or given up before its commit, a run that lost a race and
    re-wrote its rows on the new tip. Expired history adds the snapshots
    older than the cutoff and whatever only they referenced.
    """

    dry_run: bool
    branches: list[str] = field(default_factory=list)
    snapshots_expired: int = 0
    chunks: int = 0
    bytes: int = 0
    manifests: int = 0
    snapshots: int = 0
    transaction_logs: int = 0

    def summary(self) -> str:
        verb = "would delete" if self.dry_run else "deleted"
        lines = [f"{verb} {self.chunks} chunks ({self.bytes / 1e6:.1f} MB), {self.manifests} manifests, "
                 f"{self.snapshots} snapshots, {self.transaction_logs} transaction logs"]
        if self.snapshots_expired:
            lines.append(f"{'would expire' if self.dry_run else 'expired'} {self.snapshots_expired} snapshots of history")
        if self.branches:
            lines.append(f"{'would remove' if self.dry_run else 'removed'} branches: {', '.join(self.branches)}")
        return "\n".join(lines)

    def as_dict(self) -> dict[str, Any]:
        import dataclasses

        return dataclasses.asdict(self)


# ---------------------------------------------------------------- commits

@dataclass
class Commit(Generic[T]):
    """What committing through the store did: the snapshot (None: nothing to commit), the
    value the writer returned from its last application, and how often it had to rebase
    onto other writers' commits or re-apply its work."""

    snapshot_id: str | None
    value: T | None = None
    rebases: int = 0
    rebuilds: int = 0
    conflicts: list[str] = field(default_factory=list)


def describe_conflicts(exc: BaseException) -> list[str]:
    conflicts = getattr(exc, "conflicts", None) or []
    return [f"{getattr(c.conflict_type, 'name', c.conflict_type)} at {c.path}" for c in conflicts]


@dataclass(frozen=True)
class RetryPolicy:
    """How long a writer keeps trying to land, and how it waits between attempts (with jitter)."""

    # A writer gives up (ConcurrentWriteError, nothing committed) when it has not landed after this
    # long: long enough that an ingest that decoded hours of audio is not thrown away by a busy minute.
    timeout: float = 600.0
    first_delay: float = 0.002
    max_delay: float = 0.1
    # Lost races a writer retries at once: a rebase or a re-application is quick, and a
    # writer that waits hands the branch to whoever committed last (starving itself).
    eager: int = 10

    def delay(self, attempt: int) -> float:
        if attempt < self.eager:
            return 0.0
        return random.uniform(0.5, 1.0) * min(self.max_delay, self.first_delay * 2 ** min(attempt - self.eager, 16))


class Store:
    """A pamingest store: one Icechunk repository, its sessions and commits.

    Parameters
    ----------
    location : StoreLocation
        URL and options.
    repo : icechunk.Repository
        The opened repository.
    """

    def __init__(self, location: StoreLocation, repo: icechunk.Repository,
                 retry: RetryPolicy = RetryPolicy()) -> None:
        self.location = location
        self.repo = repo
        self.retry = retry

    @classmethod
    def open(cls, url: "str | StoreLocation | Store", options: dict | None = None, *, create: bool = False) -> "Store":
        """Open the store at ``url`` (creating an empty one when ``create``)."""
        if isinstance(url, Store):
            return url
        location = StoreLocation.from_url(url, options)
        return cls(location, open_repository(location, create=create))

    @property
    def url(self) -> str:
        return self.location.url

    @property
    def can_fork(self) -> bool:
        """Whether sessions forked to other processes reach this store (not ``memory://``: a pickled
        session of in-memory storage comes back with storage of its own, empty)."""
        return not self.url.startswith("memory://")

    # ------------------------------------------------------------ reading
    def tip(self, branch: str = "main") -> str:
        return self.repo.lookup_branch(branch)

    def session(self, snapshot: str | None = None, branch: str = "main") -> icechunk.Session:
        """A read-only session on a snapshot, or on the tip of ``branch``."""
        if snapshot:
            return self.repo.readonly_session(snapshot_id=snapshot)
        return self.repo.readonly_session(branch)

    def root(self, snapshot: str | None = None, branch: str = "main") -> zarr.Group:
        """The root group of a snapshot (or of the tip of ``branch``), read-only."""
        import zarr

        return zarr.open_group(self.session(snapshot, branch).store, mode="r")

    def history(self, snapshot: str, n: int) -> list[icechunk.SnapshotInfo]:
        out = []
        for k, snap in enumerate(self.repo.ancestry(snapshot_id=snapshot)):
            if k >= n:
                break
            out.append(snap)
        return out

    # ------------------------------------------------------------ writing
    def writable(self, branch: str = "main") -> icechunk.Session:
        return self.repo.writable_session(branch)

    @staticmethod
    def open_root(session: icechunk.Session) -> zarr.Group:
        import zarr

        return zarr.open_group(session.store, mode="r+")

    @staticmethod
    def fork(session: icechunk.Session) -> icechunk.session.ForkSession:
        """A fork of a writable session *with* its uncommitted changes, for workers to write into.

        Icechunk 1.x refuses ``Session.fork()`` while the session has
        uncommitted changes (Icechunk 2 allows it, committing them to an
        anonymous snapshot first). A run must grow its arrays before workers
        write regions past their old end, and must not commit that growth to
        the branch readers see. So the fork is what Icechunk's own ``fork()``
        makes, a deep copy of the session, taken with the changes in it:
        merging such forks back repeats those changes, which Icechunk's change
        set merge takes as they are (the same array definitions by node id).
        ``tests/test_store.py`` checks this behaviour on every release we run.
        """
        if session.read_only:
            raise ConfigError("a read-only session cannot be forked for writing")
        if _icechunk_2() or not session.has_uncommitted_changes:
            return session.fork()
        icechunk = _icechunk()
        from icechunk._icechunk_python import PySession

        return icechunk.session.ForkSession(PySession.from_bytes(session._session.as_bytes()))

    def commit(self, session: icechunk.Session, message: str | Callable[[], str],
               metadata: dict | Callable[[], dict] | None = None, *,
               repair: Callable[[icechunk.Session], None] | None = None,
               rebuild: Callable[[], icechunk.Session | None] | None = None) -> Commit:
        """Commit ``session`` to its branch, landing on top of whatever other writers committed.

        Parameters
        ----------
        session : icechunk.Session
            A writable session with changes.
        message, metadata : str and dict, or functions returning them
            Evaluated at each attempt, so that they can describe what a
            rebuild re-applied.
        repair : callable, optional
            Called with the session after each successful rebase, before
            committing again: fix what another writer's commit leaves
            inconsistent with this one's (it may change the session).
        rebuild : callable, optional
            Called when a rebase meets a real conflict: returns a new session
            at the branch tip with the intent re-applied (or None when nothing
            is left to commit). Without it a real conflict raises
            ``ConcurrentWriteError``.

        Returns
        -------
        Commit
        """
        icechunk = _icechunk()
        result: Commit = Commit(None)
        path = self.location.local_path
        deadline = time.monotonic() + self.retry.timeout
        attempt = -1
        while time.monotonic() < deadline or attempt < 0:
            attempt += 1
            if session is None or not session.has_uncommitted_changes:
                return result
            try:
                with warnings.catch_warnings():
                    # Forks that failed are deliberately not merged: their writes are dropped.
                    warnings.filterwarnings("ignore", message="Committing a session after forking")
                    # The branch moves last: a commit the storage refuses leaves it where it was.
                    with _local_lock(path), self.writing("the commit"):
                        result.snapshot_id = session.commit(
                            message() if callable(message) else message,
                            metadata=metadata() if callable(metadata) else metadata)
                return result
            except icechunk.ConflictError:
                pass
            pause = self.retry.delay(attempt)
            if pause:
                time.sleep(pause)
            if not result.conflicts:
                try:
                    session.rebase(icechunk.ConflictDetector())
                    result.rebases += 1
                    if repair is not None:
                        repair(session)
                    continue
                except icechunk.RebaseFailedError as exc:
                    conflicts = describe_conflicts(exc)
            else:
                # Once this write met a real conflict, the next lost race is most likely the same
                # one: re-apply at once instead of rebasing first, or a writer that has to re-apply
                # is always a rebase late against one that commits straight from the tip.
                conflicts = result.conflicts
            result.conflicts = conflicts
            if rebuild is None:
                raise ConcurrentWriteError(
                    f"{self.url}: another writer changed the same data ({'; '.join(conflicts)}); "
                    "nothing of this write was committed: run it again")
            log.info("%s: re-applying on the new tip (%s)", self.url, "; ".join(conflicts))
            result.rebuilds += 1
            session = rebuild()
        raise ConcurrentWriteError(f"{self.url}: the branch kept moving; gave up after {attempt + 1} attempts "
                                   f"in {self.retry.timeout:g} s to commit: run again")

    @contextlib.contextmanager
    def writing(self, what: str) -> Iterator[None]:
        """Storage that refuses the writes made inside (a full disk, a bucket that keeps failing)
        raises ``StoreUnavailableError``, one line naming the store: the store's fault, not the
        data's. Conflicts with other writers pass through."""
        icechunk = _icechunk()
        try:
            yield
        except icechunk.ConflictError:
            raise
        except icechunk.IcechunkError as exc:
            raise StoreUnavailableError(f"{self.url}: the store refused {what} ({first_line(str(exc))}); it stays "
                                        "at its last snapshot: run again once it can be written") from exc

    def update(self, apply: Callable[[zarr.Group], T], message: str | Callable[[T], str],
               metadata: dict | Callable[[T], dict] | None = None, *, branch: str = "main",
               repair: Callable[[icechunk.Session], None] | None = None) -> Commit[T]:
        """Apply ``apply(root)`` on the tip of ``branch`` and commit it; re-applied on the new tip
        whenever another writer's commit conflicts.

        ``apply`` reads what it needs from the group it is given (so that a
        re-application sees the other writers' results) and returns a value
        handed back in ``Commit.value``; when it changes nothing, nothing is
        committed. ``message`` and ``metadata`` may be functions of that value.
        """
        state: dict[str, Any] = {}

        def build() -> icechunk.Session | None:
            session = self.writable(branch)
            # Chunks larger than Icechunk inlines go to storage as they are set: a full disk shows here.
            with self.writing("the changes of this write"):
                state["value"] = apply(self.open_root(session))
            return session if session.has_uncommitted_changes else None

        session = build()
        if session is None:
            return Commit(None, state["value"])
        result = self.commit(
            session,
            lambda: message(state["value"]) if callable(message) else message,
            lambda: metadata(state["value"]) if callable(metadata) else metadata,
            repair=repair, rebuild=build)
        result.value = state["value"]
        return result

    # ------------------------------------------------------------ garbage
    def collect_garbage(self, *, grace_seconds: float = DEFAULT_GC_GRACE_SECONDS,
                        expire_before: "datetime.datetime | None" = None, dry_run: bool = False) -> "Collected":
        """Delete what no branch or tag needs; see ``Collected`` for what that is.

        Parameters
        ----------
        grace_seconds : float
            Objects written in the last ``grace_seconds`` are kept whatever
            refers to them: a run in flight writes its rows before its commit
            makes them reachable, and a run's legacy branch may still be in
            use. Default 7 days, longer than any partition of a flow runs.
        expire_before : datetime, optional
            Also drop history: snapshots written before this time, which no
            branch or tag points at, can no longer be opened (a training set
            pinned to one of them cannot be read again), and their data goes.
        dry_run : bool
            Count, delete nothing (expiry is then counted on ``main``'s
            history only).
        """
        import datetime as dt

        now = dt.datetime.now(dt.timezone.utc)
        cutoff = now - dt.timedelta(seconds=grace_seconds)
        collected = Collected(dry_run=dry_run)
        with _local_lock(self.location.local_path):
            for name in sorted(self.repo.list_branches()):
                if not name.startswith(LEGACY_RUN_BRANCH_PREFIX):
                    continue
                tip = next(iter(self.repo.ancestry(branch=name)))
                if tip.written_at < cutoff:
                    collected.branches.append(name)
                    if not dry_run:
                        self.repo.delete_branch(name)
            if expire_before is not None:
                if dry_run:
                    history = list(self.repo.ancestry(branch="main"))[1:]  # the tip is never expired
                    collected.snapshots_expired = sum(1 for snap in history if snap.written_at < expire_before)
                else:
                    collected.snapshots_expired = len(self.repo.expire_snapshots(expire_before))
            summary = self.repo.garbage_collect(cutoff, dry_run=dry_run)
        collected.chunks, collected.bytes = summary.chunks_deleted, summary.bytes_deleted
        collected.manifests, collected.snapshots = summary.manifests_deleted, summary.snapshots_deleted
        collected.transaction_logs = summary.transaction_logs_deleted
        return collected

    # ------------------------------------------------------------ branches
    def create_branch(self, name: str, snapshot: str) -> None:
        with _local_lock(self.location.local_path):
            self.repo.create_branch(name, snapshot)

    def delete_branch(self, name: str) -> None:
        with _local_lock(self.location.local_path):
            self.repo.delete_branch(name)
