"""One refresh per lake: a lease file stored in the lake (`<lake>/_lease.json`).

* acquire: the lease's JSON (owner, host, pid, token, start time, heartbeat) is
  written to a private temporary file and then *hard-linked* to `_lease.json`.
  `link()` fails if the name exists, so exactly one process wins, and the lease
  is never visible half-written.
* heartbeat: a daemon thread rewrites the lease (temporary file + atomic rename)
  every `heartbeat_s` while it is still ours; if another process took it over
  (we stalled past the timeout) the lease is marked lost and `check()` raises.
* stale lease: one whose heartbeat is older than `timeout_s`, or whose owner ran
  on this host and its pid is gone (a SIGKILLed refresh). Taking it over goes
  through a second create-exclusive file, `_lease.json.takeover`, so two
  processes that both see the same stale lease cannot both win: the holder of
  the takeover file re-reads the lease, removes it only if it still carries the
  stale token, links its own, and drops the takeover file.

A refresh that finds a live lease raises `LeaseHeldError` (exit code 1, a job
failure per DESIGN.md: the refresh did not run) naming the holder.

That needs a POSIX file system (local disk, NFS). A lake on an object store
(`s3://`, `gs://`, `az://`, ...) keeps its lease as a Delta log instead,
`<lake>/_lease` (`DeltaLease`): every acquire, heartbeat, takeover and release is a
commit of the next log version, made with no retry, so it lands only if no other
process committed that version first. delta-rs makes that commit a put-if-absent on
every store it supports (S3 conditional writes, GCS and Azure preconditions, local
create-exclusive), the same guarantee Delta's own commits rely on, with no lock
service. The store must honour those preconditions: AWS S3 does, as do current
MinIO and Ceph releases; an S3-compatible server that ignores `If-None-Match` would let
two writers both commit. `open_lease` picks the kind from where the lease lives.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

from lakecurate.runtime.errors import ConfigError, JobError

log = logging.getLogger(__name__)

LEASE_FILE = "_lease.json"


class LeaseHeldError(JobError):
    """Another writer (a refresh, or a writing command) holds a live lease on this lake."""


class LeaseLostError(JobError):
    """Our lease was taken over (we stalled past the timeout): stop writing."""


@dataclass(frozen=True)
class LeaseInfo:
    """The content of a lease file."""

    owner: str
    host: str
    pid: int
    token: str
    started_at: float
    heartbeat_at: float
    timeout_s: float

    @staticmethod
    def parse(text: str) -> LeaseInfo | None:
        try:
            return LeaseInfo(**json.loads(text))
        except (ValueError, TypeError):
            return None  # unreadable: treated as stale (see Lease.is_stale)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    def describe(self) -> str:
        age = time.time() - self.heartbeat_at
        started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.started_at))
        return (
            f"owner {self.owner} (pid {self.pid} on {self.host}), started {started}, "
            f"last heartbeat {age:.0f} s ago"
        )


def lease_dir_for(lake_root: str, lease_dir: str = "") -> Path:
    """Where the lease lives: `lease_dir` if set, else the lake root (must be a local path)."""
    if lease_dir:
        return Path(lease_dir)
    if lake_root.startswith("file://"):
        return Path(lake_root[len("file://") :])
    if "://" in lake_root:
        raise ConfigError(
            "refresh.lease_dir",
            f"the lake {lake_root} is on an object store, which has no create-exclusive "
            "file; set refresh.lease_dir to a directory every refresh host shares",
        )
    return Path(lake_root)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


class Lease:
    """An exclusive, heartbeated lease on a lake; use as a context manager."""

    def __init__(
        self,
        directory: str | Path,
        owner: str = "",
        timeout_s: float = 3600,
        heartbeat_s: float = 30,
    ):
        self.dir = Path(directory)
        self.path = self.dir / LEASE_FILE
        self.owner = owner or f"{os.environ.get('USER', 'user')}@{socket.gethostname()}"
        self.timeout_s = timeout_s
        self.heartbeat_s = heartbeat_s
        self.info: LeaseInfo | None = None
        self.taken_over: LeaseInfo | None = None  # the stale lease we replaced, if any
        self._lost = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- reading --------------------------------------------------------------------------

    def current(self) -> LeaseInfo | None:
        """The lease on disk now (None if there is none)."""
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return None
        info = LeaseInfo.parse(text)
        if info is None:  # half-written by a crashed heartbeat? rename is atomic, so unlikely
            st = self.path.stat()
            return LeaseInfo("unreadable", "?", -1, "unreadable", st.st_mtime, st.st_mtime, 0)
        return info

    def is_stale(self, info: LeaseInfo) -> bool:
        if info.token == "unreadable":
            return time.time() - info.heartbeat_at > self.timeout_s
        if info.host == socket.gethostname() and info.pid > 0 and not _pid_alive(info.pid):
            return True
        return time.time() - info.heartbeat_at > self.timeout_s

    # -- acquiring ------------------------------------------------------------------------

    def acquire(self) -> LeaseInfo:
        """Take the lease or raise `LeaseHeldError`; takes over a stale lease."""
        self.dir.mkdir(parents=True, exist_ok=True)
        now = time.time()
        host, token = socket.gethostname(), uuid.uuid4().hex
        mine = LeaseInfo(self.owner, host, os.getpid(), token, now, now, self.timeout_s)
        if not self._link_new(mine):
            held = self.current()
            if held is None or not self.is_stale(held):
                if held is None:  # released between our link and read: try once more
                    if self._link_new(mine):
                        return self._started(mine)
                    held = self.current()
                raise LeaseHeldError(
                    f"another writer holds this lake's lease: {held.describe()}. Run "
                    f"again when it is done. "
                    f"It is taken over automatically once its heartbeat is older than "
                    f"{self.timeout_s:.0f} s (refresh.lease_timeout_s); lease file: {self.path}"
                )
            self._take_over(held, mine)
        return self._started(mine)

    def _link_new(self, info: LeaseInfo) -> bool:
        """Create `_lease.json` with `info` only if it does not exist (atomic)."""
        tmp = self.dir / f".{LEASE_FILE}.{info.token}.tmp"
        tmp.write_text(info.to_json())
        try:
            os.link(tmp, self.path)
            return True
        except FileExistsError:
            return False
        finally:
            tmp.unlink(missing_ok=True)

    def _take_over(self, stale: LeaseInfo, mine: LeaseInfo) -> None:
        guard = self.dir / f"{LEASE_FILE}.takeover"
        self._clear_stale_guard(guard)
        try:
            fd = os.open(guard, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            raise LeaseHeldError(
                f"another process is taking over the stale lease ({stale.describe()}); "
                "try again later"
            ) from None
        try:
            os.write(fd, mine.to_json().encode())
            os.close(fd)
            again = self.current()
            if again is not None and again.token != stale.token:
                raise LeaseHeldError(f"the lease was taken by {again.describe()}")
            self.path.unlink(missing_ok=True)
            if not self._link_new(mine):
                raise LeaseHeldError(f"the lease was taken by {self.current().describe()}")
            self.taken_over = stale
            log.warning("took over a stale lease: %s", stale.describe())
        finally:
            guard.unlink(missing_ok=True)

    def _clear_stale_guard(self, guard: Path) -> None:
        """A takeover that crashed leaves its guard file; clear it once it is old enough."""
        with contextlib.suppress(FileNotFoundError):
            if time.time() - guard.stat().st_mtime > max(self.timeout_s, 60):
                guard.unlink(missing_ok=True)

    def _started(self, info: LeaseInfo) -> LeaseInfo:
        self.info = info
        self._stop.clear()
        self._lost.clear()
        self._thread = threading.Thread(target=self._beat, name="lease-heartbeat", daemon=True)
        self._thread.start()
        log.info("acquired lease %s (%s)", self.path, info.token[:8])
        return info

    # -- holding --------------------------------------------------------------------------

    def _beat(self) -> None:
        last_ok = time.time()
        while not self._stop.wait(self.heartbeat_s):
            try:
                self.heartbeat()
                last_ok = time.time()
            except LeaseLostError:
                return
            except Exception as e:  # a transient store error: keep trying, the timeout is long
                log.warning("lease heartbeat failed: %s", e)
                if time.time() - last_ok > self.timeout_s - self.heartbeat_s:
                    self._lost.set()  # others may take it over now: stop writing
                    log.error("lease heartbeats failed for %.0f s: lease lost", self.timeout_s)
                    return

    def heartbeat(self) -> None:
        """Refresh `heartbeat_at` if the lease is still ours; else mark it lost."""
        assert self.info is not None, "heartbeat() before acquire()"
        on_disk = self.current()
        if on_disk is None or on_disk.token != self.info.token:
            self._lost.set()
            log.error("lease lost: now held by %s", on_disk.describe() if on_disk else "nobody")
            raise LeaseLostError("the refresh lease was lost")
        self.info = LeaseInfo(**{**asdict(self.info), "heartbeat_at": time.time()})
        tmp = self.dir / f".{LEASE_FILE}.{self.info.token}.beat"
        tmp.write_text(self.info.to_json())
        os.replace(tmp, self.path)

    def check(self) -> None:
        """Raise `LeaseLostError` if another process took the lease (call between stages)."""
        if self._lost.is_set():
            raise LeaseLostError(
                "the refresh lease was taken over by another process (this one stalled "
                f"longer than {self.timeout_s:.0f} s); stopping before writing more"
            )

    def release(self) -> None:
        """Stop the heartbeat and remove the lease if it is still ours."""
        self._stop.set()
        if self._thread is not None:  # a beat in flight must not land after the release
            self._thread.join(timeout=max(5.0, self.heartbeat_s))
        try:
            if self.info is not None and self._drop_if_ours():
                log.info("released lease %s", self.path)
        except Exception as e:  # the work is done: a lease left behind goes stale, no more
            log.warning(
                "lease %s not released (%s); it goes stale after %.0f s",
                self.path,
                e,
                self.timeout_s,
            )
        self.info = None

    def _drop_if_ours(self) -> bool:
        on_disk = self.current()
        if on_disk is None or on_disk.token != self.info.token:
            return False
        self.path.unlink(missing_ok=True)
        return True

    def __enter__(self) -> Lease:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


# --- object stores: a lease kept as a Delta log --------------------------------------------

LEASE_TABLE = "_lease"
_META_KEY = "lakecurate.lease"


class DeltaLease(Lease):
    """The lease as a Delta log at `uri` (see the module docstring): each state is the
    metadata of one commit, and the latest commit is the lease now ("released" or a
    `LeaseInfo`). Heartbeats add a commit each; a checkpoint every `CHECKPOINT_EVERY`
    versions keeps reading the latest state cheap."""

    CHECKPOINT_EVERY = 100

    def __init__(self, uri: str, owner: str = "", timeout_s: float = 3600, heartbeat_s: float = 30):
        super().__init__(Path("."), owner, timeout_s, heartbeat_s)
        self.uri = uri.rstrip("/")
        self.path = self.uri  # named in messages

    def _latest(self) -> tuple[int | None, LeaseInfo | None]:
        """(latest log version, the lease it holds, None if released); (None, None)
        when no lease was ever taken here."""
        from deltalake import DeltaTable

        if not DeltaTable.is_deltatable(self.uri):
            return None, None
        dt = DeltaTable(self.uri)
        meta = (dt.history(1) or [{}])[0].get(_META_KEY)
        return dt.version(), (LeaseInfo.parse(meta) if meta else None)

    def current(self) -> LeaseInfo | None:
        return self._latest()[1]

    def _state_at(self, version: int) -> dict | None:
        """The lease metadata committed as `version` ({key: json}), None if none is."""
        from deltalake import DeltaTable

        try:
            dt = DeltaTable(self.uri, version=version)
            entry = next((h for h in dt.history(1) if h.get("version") == version), None)
        except Exception:
            return None
        return None if entry is None else {_META_KEY: entry.get(_META_KEY)}

    def _commit(self, base: int | None, info: LeaseInfo | None) -> bool:
        """Commit version base + 1 holding `info` (None: released) only if nobody else
        committed it; False if somebody did."""
        import pyarrow as pa
        from deltalake import CommitProperties, DeltaTable
        from deltalake import Schema as DeltaSchema
        from deltalake.transaction import create_table_with_add_actions

        props = CommitProperties(
            custom_metadata={_META_KEY: info.to_json() if info else ""}, max_commit_retries=0
        )
        schema = DeltaSchema.from_arrow(pa.schema([pa.field("unused", pa.int32())]))
        try:
            if base is None:
                create_table_with_add_actions(
                    self.uri, schema, [], mode="error", commit_properties=props
                )
                return True
            dt = DeltaTable(self.uri, version=base)
            dt.create_write_transaction([], "append", schema, commit_properties=props)
        except Exception as e:  # CommitFailedError, the table created meanwhile, or a timeout
            # a put whose reply was lost lands all the same: the log tells who won
            if self._state_at(0 if base is None else base + 1) == props.custom_metadata:
                return True
            log.debug("lease commit on version %s lost: %s", base, e)
            return False
        if (base + 1) % self.CHECKPOINT_EVERY == 0:
            with contextlib.suppress(Exception):  # an optimisation only
                DeltaTable(self.uri).create_checkpoint()
        return True

    def acquire(self) -> LeaseInfo:
        now = time.time()
        mine = LeaseInfo(
            self.owner,
            socket.gethostname(),
            os.getpid(),
            uuid.uuid4().hex,
            now,
            now,
            self.timeout_s,
        )
        version, held = self._latest()
        if held is not None and not self.is_stale(held):
            raise self._held(held)
        if not self._commit(version, mine):
            raise self._held(self.current())
        if held is not None:
            self.taken_over = held
            log.warning("took over a stale lease: %s", held.describe())
        return self._started(mine)

    def _held(self, held: LeaseInfo | None) -> LeaseHeldError:
        who = held.describe() if held else "another process, just now"
        return LeaseHeldError(
            f"another writer holds this lake's lease: {who}. Run again when it is done. It "
            f"is taken over automatically once its heartbeat is older than "
            f"{self.timeout_s:.0f} s (refresh.lease_timeout_s); lease log: {self.uri}"
        )

    def heartbeat(self) -> None:
        assert self.info is not None, "heartbeat() before acquire()"
        version, held = self._latest()
        beat = LeaseInfo(**{**asdict(self.info), "heartbeat_at": time.time()})
        if held is None or held.token != self.info.token or not self._commit(version, beat):
            self._lost.set()
            now = self.current()
            log.error("lease lost: now held by %s", now.describe() if now else "nobody")
            raise LeaseLostError("the lake's lease was lost")
        self.info = beat

    def _drop_if_ours(self) -> bool:
        version, held = self._latest()
        return held is not None and held.token == self.info.token and self._commit(version, None)


def open_lease(
    lake_root: str,
    lease_dir: str = "",
    owner: str = "",
    timeout_s: float = 3600,
    heartbeat_s: float = 30,
) -> Lease:
    """The lake's writer lease: a lease file in `lease_dir` (default: the lake root) on
    a POSIX file system, a Delta-log lease (`<where>/_lease`) on an object store."""
    where = (lease_dir or lake_root).rstrip("/")
    if "://" in where and not where.startswith("file://"):
        return DeltaLease(f"{where}/{LEASE_TABLE}", owner, timeout_s, heartbeat_s)
    return Lease(lease_dir_for(lake_root, lease_dir), owner, timeout_s, heartbeat_s)
