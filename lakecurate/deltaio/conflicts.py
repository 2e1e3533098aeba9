"""Optimistic concurrency for lakecurate's commits, the way Delta's protocol has it.

A write reads its table at some version, decides what to add and remove, and
commits. Between the read and the commit another writer may commit. Delta's rule is
that the commit fails when that other commit changed what this one read:

* a blind append (`ReadScope.nothing()`) read nothing: it never conflicts;
* an append of rows not yet in the table (`keys`) read the table's keys: any
  file added since could hold the same keys;
* a rewrite of the rows whose `column` is `value` (`value`) read those rows: a file
  added or removed since that may hold such rows conflicts;
* an overwrite (`whole`) read everything: any change conflicts.

delta-rs checks removes of the same file itself, but its Python API takes no read
predicate for a hand-made transaction (an overwrite on an old snapshot silently drops
a concurrent append), so `check` compares the table's file sets at the read version
and now, and the commit is then made on the snapshot it checked: delta-rs's own
checker covers what lands after that.

Every commit also carries a Delta application transaction (`txn`: app id = run id, a
version counted per table and run), so a commit retried after an unknown outcome is
found in the log and not applied twice (`already_committed`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from lakecurate.runtime.errors import JobError


class ConflictError(JobError):
    """A concurrent commit changed what this write read; nothing was committed."""


@dataclass(frozen=True)
class ReadScope:
    """What a write read of its table (see the module docstring)."""

    kind: str = "nothing"  # nothing | keys | value | whole
    column: str = ""
    value: Any = None

    @staticmethod
    def nothing() -> ReadScope:
        return ReadScope()

    @staticmethod
    def keys() -> ReadScope:
        return ReadScope("keys")

    @staticmethod
    def rows_where(column: str, value: Any) -> ReadScope:
        return ReadScope("value", column, value)

    @staticmethod
    def whole() -> ReadScope:
        return ReadScope("whole")

    def may_hold(self, action: dict) -> bool:
        """Whether a file (an add action with flattened stats) may hold rows read."""
        if self.kind != "value":
            return True
        lo, hi = action.get(f"min.{self.column}"), action.get(f"max.{self.column}")
        return lo is None or hi is None or lo <= self.value <= hi


def _files(dt) -> dict[str, dict]:
    return {a["path"]: a for a in pa.table(dt.get_add_actions(flatten=True)).to_pylist()}


def check(table_uri: str, read_version: int, scope: ReadScope, storage_options=None) -> int:
    """Raise ConflictError if a commit after `read_version` (-1: before the table
    existed) changed what `scope` read; return the latest version checked (the
    snapshot to commit on)."""
    from deltalake import DeltaTable

    latest = DeltaTable(table_uri, storage_options=storage_options)
    now = latest.version()
    if now == read_version or scope.kind == "nothing":
        return now
    before = (  # read_version -1: the table did not exist when the write read it
        _files(DeltaTable(table_uri, version=read_version, storage_options=storage_options))
        if read_version >= 0
        else {}
    )
    after = _files(latest)
    added = [a for p, a in after.items() if p not in before and scope.may_hold(a)]
    removed = [a for p, a in before.items() if p not in after and scope.may_hold(a)]
    if scope.kind == "keys":
        removed = []  # keys read to skip present rows: a removal cannot duplicate them
    if added or removed:
        what = ", ".join(
            [f"added {a['path']}" for a in added[:3]]
            + [f"removed {a['path']}" for a in removed[:3]]
        )
        raise ConflictError(
            f"{table_uri}: changed by another writer since version {read_version} (now "
            f"{now}: {what}); this write read it and was not committed: run it again"
        )
    return now


def already_committed(dt, app_id: str, txn_version: int) -> bool:
    """True when the log holds this run's transaction `txn_version` (or a later one)."""
    done = dt.transaction_version(app_id)
    return done is not None and done >= txn_version
