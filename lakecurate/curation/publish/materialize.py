"""`lakecurate versions materialize NAME@V --out DIR`: an exact copy of a published version.

A version that reuses its parent's shards may carry deletion lists, which plain
WebDataset readers do not apply. Its exact copy holds only the version's samples:
shards without a deletion list are hard linked (same local filesystem) or copied;
the others are rewritten without their deleted members by Spark tasks, many at once
(`shards.copy_without_deleted`: the bytes a publish that compacted the shard would
write). The copy's manifest (`"exact": true`, `materialized_from`) is written last,
so a directory without one is an unfinished copy, and a re-run replaces it.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from functools import partial

from lakecurate.catalog.dataset import DatasetVersion
from lakecurate.curation.publish.files import (
    MANIFEST,
    clear_leftovers,
    link_or_copy,
    move_dir,
    open_fs,
)
from lakecurate.runtime.errors import ConfigError
from lakecurate.udfs import shards as shardlib

log = logging.getLogger(__name__)


def materialize(spark, dv: DatasetVersion, out: str) -> dict:
    """Write the exact copy of `dv` into `out`; return its manifest."""
    src = dv.shard_uri.rstrip("/")
    out = out.rstrip("/")
    if out == src:
        raise ConfigError("--out", f"{out} is the version's own directory; choose another")
    manifest = dv.manifest()
    fs, path = open_fs(out)
    done = _finished(fs, path, dv, manifest)
    if done is not None:
        log.info("materialize: %s already holds the exact copy of %s", out, dv.ref)
        return done
    clear_leftovers(fs, path)
    staging = f"{out.rsplit('/', 1)[0]}/.{out.rsplit('/', 1)[1]}.staging-materialize"
    sfs, spath = open_fs(staging)
    if sfs.exists(spath):
        sfs.rm(spath, recursive=True)
    sfs.makedirs(spath, exist_ok=True)
    shards = manifest["shards"]
    trimmed = [s for s in shards if s.get("deletions")]
    for s in shards:
        if not s.get("deletions"):
            for name in (s["name"], s["index"]):
                link_or_copy(f"{src}/{name}", f"{staging}/{name}")
    rewritten = {}
    if trimmed:
        sc = spark.sparkContext
        rdd = sc.parallelize(trimmed, min(len(trimmed), 4 * sc.defaultParallelism))
        for r in rdd.map(partial(shardlib.copy_without_deleted, src, staging)).collect():
            rewritten[r["name"]] = r
    for stray in sfs.glob(f"{spath}/.*.tmp"):  # from task attempts that died
        sfs.rm(stray)
    records = [
        rewritten.get(s["name"]) or {**s, "deleted": 0, "deletions": None, "reused": False}
        for s in shards
    ]
    for r in records:
        r["deletions_sha256"] = None
    copy = dict(manifest)
    copy["shards"] = records
    copy["exact"] = True
    copy["counts"] = {
        **manifest["counts"],
        "num_bytes": sum(r["num_bytes"] for r in records),
        "num_deleted": 0,
    }
    copy["materialized_from"] = {
        "ref": dv.ref,
        "shard_uri": src,
        "manifest_sha256": _manifest_sha(manifest),
        "rewritten_shards": len(rewritten),
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    want = int(manifest["counts"]["num_samples"])
    got = sum(int(r["num_samples"]) for r in records)
    if got != want:
        raise ConfigError(
            dv.ref, f"its shards hold {got} samples after deletions, its manifest says {want}"
        )
    move_dir(sfs, spath, path)
    with fs.open(f"{path}/{MANIFEST}.tmp", "w") as f:
        json.dump(copy, f, indent=2, sort_keys=True)
    fs.mv(f"{path}/{MANIFEST}.tmp", f"{path}/{MANIFEST}")
    log.info(
        "materialize: %s -> %s: %d shards, %d rewritten without deleted samples",
        dv.ref,
        out,
        len(records),
        len(rewritten),
    )
    return copy


def _manifest_sha(manifest: dict) -> str:
    import hashlib

    return hashlib.sha256(json.dumps(manifest, sort_keys=True).encode()).hexdigest()


def _finished(fs, path: str, dv: DatasetVersion, manifest: dict) -> dict | None:
    """The manifest of a finished copy of this very version at `path`, else None."""
    if not fs.exists(f"{path}/{MANIFEST}"):
        return None
    with fs.open(f"{path}/{MANIFEST}", "r") as f:
        try:
            done = json.load(f)
        except ValueError:
            return None
    origin = done.get("materialized_from") or {}
    if origin.get("manifest_sha256") != _manifest_sha(manifest):
        raise ConfigError(
            "--out", f"{path} already holds another version; choose an empty or new directory"
        )
    return done
