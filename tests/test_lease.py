"""The refresh lease: exclusive, heartbeated, stale leases taken over safely."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time

import pytest

from lakecurate.runtime.config import load_config
from lakecurate.runtime.errors import ConfigError
from lakecurate.runtime.lease import (
    LEASE_FILE,
    Lease,
    LeaseHeldError,
    LeaseInfo,
    LeaseLostError,
    lease_dir_for,
)


def _write_lease(path, **over) -> LeaseInfo:
    now = time.time()
    info = LeaseInfo(
        **{
            "owner": "other",
            "host": "elsewhere.example",
            "pid": 12345,
            "token": "t" * 32,
            "started_at": now,
            "heartbeat_at": now,
            "timeout_s": 60,
            **over,
        }
    )
    path.mkdir(parents=True, exist_ok=True)
    (path / LEASE_FILE).write_text(info.to_json())
    return info


def test_acquire_writes_owner_and_release_removes(tmp_path):
    lease = Lease(tmp_path, owner="nightly", timeout_s=60, heartbeat_s=30)
    with lease:
        doc = json.loads((tmp_path / LEASE_FILE).read_text())
        assert doc["owner"] == "nightly"
        assert doc["pid"] == os.getpid()
        assert doc["started_at"] <= doc["heartbeat_at"] <= time.time()
    assert not (tmp_path / LEASE_FILE).exists()
    assert list(tmp_path.iterdir()) == []  # no temporary files left behind


def test_second_holder_is_refused_with_the_holder_named(tmp_path):
    with Lease(tmp_path, owner="first", timeout_s=60, heartbeat_s=30):
        with pytest.raises(LeaseHeldError) as e:
            Lease(tmp_path, owner="second", timeout_s=60).acquire()
        assert "first" in str(e.value) and "lease_timeout_s" in str(e.value)
        assert e.value.exit_code == 1
    # once released, the next one gets it
    with Lease(tmp_path, owner="second", timeout_s=60):
        assert json.loads((tmp_path / LEASE_FILE).read_text())["owner"] == "second"


def race_to_acquire(make_lease, n: int = 8) -> tuple[list, list]:
    """(leases that won, indices refused) of n threads acquiring at the same moment."""
    winners, refused = [], []
    barrier = threading.Barrier(n)

    def attempt(i):
        lease = make_lease(i)
        barrier.wait()
        try:
            lease.acquire()
            winners.append(lease)
        except LeaseHeldError:
            refused.append(i)

    threads = [threading.Thread(target=attempt, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return winners, refused


def test_only_one_of_many_concurrent_acquirers_wins(tmp_path):
    winners, refused = race_to_acquire(
        lambda i: Lease(tmp_path, owner=f"w{i}", timeout_s=60, heartbeat_s=30)
    )
    assert len(winners) == 1 and len(refused) == 7
    winners[0].release()


def test_stale_heartbeat_is_taken_over(tmp_path):
    old = _write_lease(tmp_path, heartbeat_at=time.time() - 120)
    lease = Lease(tmp_path, owner="new", timeout_s=60, heartbeat_s=30)
    with lease:
        assert lease.taken_over == old
        assert json.loads((tmp_path / LEASE_FILE).read_text())["owner"] == "new"
    assert not (tmp_path / f"{LEASE_FILE}.takeover").exists()


def test_fresh_lease_from_another_host_is_respected(tmp_path):
    _write_lease(tmp_path)  # heartbeat now, another host: cannot check its pid
    with pytest.raises(LeaseHeldError, match="elsewhere.example"):
        Lease(tmp_path, timeout_s=60).acquire()
    assert json.loads((tmp_path / LEASE_FILE).read_text())["owner"] == "other"


def test_lease_of_a_killed_process_on_this_host_is_stale_at_once(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    import socket

    _write_lease(tmp_path, host=socket.gethostname(), pid=proc.pid)
    with Lease(tmp_path, owner="rerun", timeout_s=3600) as lease:
        assert lease.taken_over is not None and lease.taken_over.pid == proc.pid


def test_takeover_in_progress_blocks_a_second_taker(tmp_path):
    _write_lease(tmp_path, heartbeat_at=time.time() - 120)
    (tmp_path / f"{LEASE_FILE}.takeover").write_text("{}")
    with pytest.raises(LeaseHeldError, match="taking over"):
        Lease(tmp_path, timeout_s=60).acquire()


def test_heartbeat_moves_forward_and_detects_loss(tmp_path):
    lease = Lease(tmp_path, owner="me", timeout_s=60, heartbeat_s=30)
    lease.acquire()
    try:
        first = lease.info.heartbeat_at
        time.sleep(0.01)
        lease.heartbeat()
        on_disk = LeaseInfo.parse((tmp_path / LEASE_FILE).read_text())
        assert on_disk.heartbeat_at > first and on_disk.token == lease.info.token
        lease.check()  # still ours
        # someone took it over while we stalled
        _write_lease(tmp_path, owner="thief")
        with pytest.raises(LeaseLostError):
            lease.heartbeat()
        with pytest.raises(LeaseLostError, match="taken over"):
            lease.check()
    finally:
        lease.release()
    # release does not remove someone else's lease
    assert json.loads((tmp_path / LEASE_FILE).read_text())["owner"] == "thief"


def test_heartbeat_thread_runs(tmp_path):
    lease = Lease(tmp_path, owner="me", timeout_s=3, heartbeat_s=1)
    with lease:
        start = lease.info.heartbeat_at
        deadline = time.time() + 10
        while lease.info.heartbeat_at == start and time.time() < deadline:
            time.sleep(0.1)
        assert lease.info.heartbeat_at > start


def test_unreadable_lease_is_held_until_timeout(tmp_path):
    (tmp_path / LEASE_FILE).write_text("{not json")
    with pytest.raises(LeaseHeldError, match="unreadable"):
        Lease(tmp_path, timeout_s=60).acquire()
    old = time.time() - 120
    os.utime(tmp_path / LEASE_FILE, (old, old))
    with Lease(tmp_path, timeout_s=60) as lease:
        assert lease.taken_over.owner == "unreadable"


def test_lease_dir_for_an_object_store_lake_needs_a_lease_dir(tmp_path):
    # (open_lease gives such a lake a Delta-log lease instead: test_lease_object_store.py)
    assert lease_dir_for(str(tmp_path)) == tmp_path
    assert lease_dir_for(f"file://{tmp_path}") == tmp_path
    with pytest.raises(ConfigError, match="refresh.lease_dir"):
        lease_dir_for("s3://bucket/lake")
    assert lease_dir_for("s3://bucket/lake", str(tmp_path)) == tmp_path


def test_refresh_config_checks_heartbeat_against_timeout():
    with pytest.raises(ConfigError, match="refresh.heartbeat_s"):
        load_config(None, {"refresh.lease_timeout_s": 10, "refresh.heartbeat_s": 9})
    with pytest.raises(ConfigError, match="refresh.lease_timeout_s"):
        load_config(None, {"refresh.lease_timeout_s": 0})
    cfg = load_config(None, {"refresh.lease_timeout_s": 10, "refresh.heartbeat_s": 5})
    assert cfg.refresh.lease_timeout_s == 10
