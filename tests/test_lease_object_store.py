"""The writer lease on an object store: a Delta log of lease states, each committed
only if no other process committed that version first (DeltaLease), on a real S3
server process and on local disk (delta-rs gives both the same put-if-absent)."""

from __future__ import annotations

import time

import pytest
from test_lease import race_to_acquire

from lakecurate.runtime.lease import (
    DeltaLease,
    Lease,
    LeaseHeldError,
    LeaseInfo,
    LeaseLostError,
    open_lease,
)


@pytest.fixture(params=["s3", "local"])
def where(request, tmp_path) -> str:
    if request.param == "s3":
        return request.getfixturevalue("s3_bucket") + "/lake/_lease"
    return str(tmp_path / "_lease")


def _foreign(owner: str, age_s: float = 0.0) -> LeaseInfo:
    now = time.time() - age_s
    return LeaseInfo(owner, "elsewhere.example", 4242, owner * 4, now, now, 60)


def test_acquire_refuse_with_the_holder_named_release(where):
    first = DeltaLease(where, owner="ingest:alice", timeout_s=60, heartbeat_s=30)
    with first:
        assert first.current().owner == "ingest:alice"
        with pytest.raises(LeaseHeldError) as e:
            DeltaLease(where, owner="publish:bob", timeout_s=60).acquire()
        assert "ingest:alice" in str(e.value) and e.value.exit_code == 1
    assert first.current() is None  # released
    with DeltaLease(where, owner="publish:bob", timeout_s=60) as second:
        assert second.current().owner == "publish:bob"


@pytest.mark.parametrize("log_exists", [True, False])
def test_only_one_of_many_concurrent_acquirers_wins(where, log_exists):
    if log_exists:  # all race on its next version; else all race to create it
        DeltaLease(where, owner="init").__enter__().release()
    winners, refused = race_to_acquire(
        lambda i: DeltaLease(where, owner=f"w{i}", timeout_s=60, heartbeat_s=30), n=6
    )
    assert len(winners) == 1 and len(refused) == 5
    assert winners[0].current().token == winners[0].info.token
    winners[0].release()


def test_a_stale_lease_is_taken_over_and_a_fresh_one_is_not(where):
    probe = DeltaLease(where, timeout_s=60)
    version, _ = probe._latest()
    assert probe._commit(version, _foreign("crashed", age_s=600))
    with DeltaLease(where, owner="rerun", timeout_s=60) as lease:
        assert lease.taken_over.owner == "crashed"
    version, _ = probe._latest()
    assert probe._commit(version, _foreign("alive"))
    with pytest.raises(LeaseHeldError, match="alive"):
        DeltaLease(where, timeout_s=60).acquire()


def test_heartbeat_moves_forward_and_detects_loss(where):
    lease = DeltaLease(where, owner="me", timeout_s=60, heartbeat_s=30)
    lease.acquire()
    try:
        first = lease.info.heartbeat_at
        time.sleep(0.01)
        lease.heartbeat()
        assert lease.current().heartbeat_at > first
        version, _ = lease._latest()
        assert lease._commit(version, _foreign("thief"))  # took it while we stalled
        with pytest.raises(LeaseLostError):
            lease.heartbeat()
        with pytest.raises(LeaseLostError, match="taken over"):
            lease.check()
    finally:
        lease.release()
    assert lease.current().owner == "thief"  # release leaves someone else's lease


def test_open_lease_picks_the_kind_by_where_the_lease_lives(tmp_path):
    assert type(open_lease(str(tmp_path))) is Lease
    assert isinstance(open_lease("s3://bucket/lake"), DeltaLease)
    assert open_lease("s3://bucket/lake").uri == "s3://bucket/lake/_lease"
    assert type(open_lease("s3://bucket/lake", str(tmp_path))) is Lease  # a shared directory
    assert open_lease(str(tmp_path), "gs://b/leases").uri == "gs://b/leases/_lease"
