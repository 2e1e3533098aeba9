"""The last run of each command, kept beside the lake's tables in `<lake>/_runs/`.

`<job>.json` holds what the job's last run did (status ok or failed, when it
finished, the table versions it read and wrote, its counts), so an operator and
`lakecurate status` can tell what is pending without reading the logs of the host
that ran it. A record is written whole to a temporary name and then moved, so a
reader sees the previous record or the new one, never half of one.
"""

from __future__ import annotations

import json
import logging
import uuid
from datetime import UTC, datetime
from typing import Any

log = logging.getLogger(__name__)

RUNS_DIR = "_runs"


def _fs(lake_root: str):
    from lakecurate.udfs.storage import url_to_fs

    return url_to_fs(lake_root)


def record_run(lake_root: str, job: str, status: str, **doc: Any) -> None:
    """Record the end of a run of `job` (status "ok" or "failed"). Best effort: a lake
    that cannot take the record does not fail the run that did the work."""
    body = {
        "job": job,
        "status": status,
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        **doc,
    }
    try:
        fs, root = _fs(lake_root)
        folder = f"{root.rstrip('/')}/{RUNS_DIR}"
        fs.makedirs(folder, exist_ok=True)
        tmp = f"{folder}/.{job}.{uuid.uuid4().hex}.tmp"
        with fs.open(tmp, "w") as f:
            f.write(json.dumps(body, default=str, sort_keys=True))
        fs.mv(tmp, f"{folder}/{job}.json")
    except Exception as e:  # e.g. an object store whose fsspec driver is not installed
        log.warning("could not record the %s run under %s/%s: %s", job, lake_root, RUNS_DIR, e)


def last_run(lake_root: str, job: str) -> dict | None:
    """The record of the last run of `job`, or None (never run, or unreadable)."""
    fs, root = _fs(lake_root)
    path = f"{root.rstrip('/')}/{RUNS_DIR}/{job}.json"
    try:
        with fs.open(path, "r") as f:
            doc = json.loads(f.read())
    except (FileNotFoundError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


# --- watermarks: "nothing changed since the last run" --------------------------------------


def table_watermark(lake, tables: tuple[str, ...], config: str) -> dict:
    """What a job's result depends on: the versions of `tables` (its inputs and
    outputs) and a hash of its settings. Equal to the one its last run recorded
    (`unchanged_since`): nothing new arrived, nobody else wrote its tables, and its
    settings are the same, so running again would change nothing."""
    return {"versions": {t: lake.version(t) for t in tables}, "config": config}


def unchanged_since(lake_root: str, name: str, mark: dict) -> dict | None:
    """The record of the last run saved under `name` when its watermark is `mark`."""
    last = last_run(lake_root, name)
    return last if last and last.get("watermark") == mark else None
