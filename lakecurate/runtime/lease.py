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

The lease needs a POSIX file system (local disk, NFS, a mounted bucket): object
stores have no create-exclusive through pyarrow. For a lake on `s3://...` set
`refresh.lease_dir` to a shared directory.
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
        while not self._stop.wait(self.heartbeat_s):
            try:
                self.heartbeat()
            except LeaseLostError:
                return
            except OSError as e:  # a transient I/O error: keep trying, the timeout is long
                log.warning("lease heartbeat failed: %s", e)

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
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self.info is None:
            return
        on_disk = self.current()
        if on_disk is not None and on_disk.token == self.info.token:
            self.path.unlink(missing_ok=True)
            log.info("released lease %s", self.path)
        self.info = None

    def __enter__(self) -> Lease:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()
