"""The files of published versions: finding and checking a parent version, putting its
shards into a new one without re-encoding them, and the leftovers of crashed publishes.

The parent of a new version is the newest live (not retired) version of the same name
whose manifest verifies: it reads, names that version, has this `FORMAT` and the same
`shard_size`, `shard_bytes` and `seed`, and every shard and index it lists exists (each
tar with the size the manifest records). Reused files are hard links when both
versions are on the same local filesystem, else copies: a version's files must never
be modified in place (they may be shared with other versions); publish itself only
ever writes new files and renames them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from dataclasses import dataclass
from functools import partial

from lakecurate.catalog.dataset import RETIRED, DatasetVersion, dataset_rows
from lakecurate.deltaio.lake import Lake
from lakecurate.runtime.config import Config
from lakecurate.runtime.errors import ConfigError, JobError
from lakecurate.udfs import shards as shardlib

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
# /2: shards may carry deletion lists (`deleted`, `deletions`, `deletions_sha256`) and the
# manifest says whether the version is `exact`; a /1 manifest has no deletion lists
FORMAT = "lakecurate-dataset/2"
READABLE_FORMATS = ("lakecurate-dataset/1", FORMAT)
SAME_SETTINGS = ("shard_size", "shard_bytes", "seed")


# --- the parent version --------------------------------------------------------------------


@dataclass(frozen=True)
class Parent:
    """The version a new one is laid out from: its shard directory and manifest."""

    version: int
    uri: str
    manifest: dict

    @property
    def shards(self) -> list[dict]:
        return self.manifest["shards"]

    def by_number(self) -> dict[int, dict]:
        """The manifest's shard records by shard number (`shard-NNNNNN.tar`)."""
        return {int(s["name"][len("shard-") : -len(".tar")]): s for s in self.shards}

    def restricted(self, shards: set[int]) -> Parent:
        """The same version with only the shards numbered in `shards`."""
        kept = [s for n, s in self.by_number().items() if n in shards]
        return Parent(self.version, self.uri, {**self.manifest, "shards": kept})

    def describe(self) -> dict:
        """What the manifest records (and `inputs_hash` covers) about the parent."""
        blob = json.dumps(self.shards, sort_keys=True).encode()
        return {
            "version": self.version,
            "shard_uri": self.uri,
            "shards_sha256": hashlib.sha256(blob).hexdigest(),
        }


def find_parent(spark, lake: Lake, cfg: Config, name: str, path: str) -> Parent | None:
    """The newest live version of `name` whose manifest verifies, or None (full layout)."""
    if not cfg.publish.incremental:
        log.info("publish: full layout (publish.incremental is false)")
        return None
    live = [r for r in dataset_rows(spark, lake, name) if r.status != RETIRED]
    if not live:
        return None
    parent, why = verify_parent(live[-1], cfg, path)
    if parent is None:
        log.warning("publish: %s cannot be the parent (%s); full layout", live[-1].ref, why)
    return parent


def verify_parent(dv: DatasetVersion, cfg: Config, path: str) -> tuple[Parent | None, str]:
    """(Parent, "") when `dv`'s manifest and files check out, else (None, the reason)."""
    if dv.shard_uri.rstrip("/") == path.rstrip("/"):
        return None, f"the new version would be written into its directory {path}"
    try:
        man = dv.manifest()
    except (OSError, ValueError, JobError) as e:
        return None, f"manifest unreadable: {e}"
    if man.get("format") not in READABLE_FORMATS:
        return None, f"unknown manifest format {man.get('format')!r}"
    if (man.get("name"), man.get("version")) != (dv.name, dv.version):
        return None, "manifest does not describe this version"
    settings = vars(cfg.publish)
    for key in SAME_SETTINGS:
        if man.get(key) != settings[key]:
            return None, f"its {key} is {man.get(key)!r}, now {settings[key]!r}"
    fs, root = open_fs(dv.shard_uri)
    for s in man.get("shards") or []:
        tar, idx = f"{root}/{s['name']}", f"{root}/{s['index']}"
        if not fs.exists(idx) or not fs.exists(tar) or fs.size(tar) != s["num_bytes"]:
            return None, f"shard {s['name']} is missing or changed size"
        if s.get("deletions") and not fs.exists(f"{root}/{s['deletions']}"):
            return None, f"the deletion list {s['deletions']} of shard {s['name']} is missing"
    return Parent(dv.version, dv.shard_uri, man), ""


def link_or_copy(src: str, dst: str) -> str:
    """Put the bytes of `src` at `dst` without re-encoding: a hard link when both are on
    the same local filesystem, else a copy. Returns "link" or "copy"."""
    sfs, spath = open_fs(src)
    dfs, dpath = open_fs(dst)
    local = "file" in _protocols(sfs) and "file" in _protocols(dfs)
    if local:
        try:
            os.link(spath, dpath)
            return "link"
        except OSError:  # another device, or a filesystem without hard links
            shutil.copyfile(spath, dpath)
            return "copy"
    if type(sfs) is type(dfs) and _protocols(sfs) == _protocols(dfs):
        dfs.copy(spath, dpath)
    else:
        with sfs.open(spath, "rb") as fi, dfs.open(dpath, "wb") as fo:
            shutil.copyfileobj(fi, fo, 1 << 20)
    return "copy"


def move_dir(fs, src: str, dst: str) -> None:
    """Move directory `src` to `dst` on one filesystem: a rename where directories
    exist; on an object store (no directories, no rename of a prefix) each file is
    moved in turn. Either way the caller writes its completion marker afterwards."""
    if "file" in _protocols(fs):
        fs.mv(src, dst, recursive=True)
        return
    for path in sorted(fs.find(src)):
        fs.mv(path, dst + path[len(src) :])
    if fs.exists(src):  # an empty directory marker, on stores that keep them
        fs.rm(src, recursive=True)


def _protocols(fs) -> tuple[str, ...]:
    p = fs.protocol
    return tuple(p) if isinstance(p, list | tuple) else (p,)


# --- leftovers of crashed publishes -----------------------------------------------------------


def open_fs(uri: str):
    """(filesystem, path) for a local path or URL (s3://, file://, ...)."""
    from lakecurate.udfs.storage import url_to_fs

    return url_to_fs(uri)


def _ours(fs, path: str) -> bool:
    """True if `path` is absent, empty, or only holds what publish writes."""
    if not fs.exists(path):
        return True
    for p in fs.ls(path, detail=False):
        base = p.rstrip("/").rsplit("/", 1)[-1]
        if not base.lstrip(".").startswith(("shard-", MANIFEST)):
            return False
    return True


def reusable_manifest(fs, path: str, plan: dict, spark=None, uri: str = "") -> dict | None:
    """A leftover manifest for the same inputs whose shards all verify, else None.

    With `spark` and the directory's `uri`, the shards are hashed by Spark tasks, many
    at once (a crashed publish of a large version has thousands); else one by one here."""
    mpath = f"{path}/{MANIFEST}"
    if not fs.exists(mpath):
        return None
    try:
        with fs.open(mpath, "r") as f:
            man = json.load(f)
    except (OSError, ValueError):
        return None
    if man.get("inputs_hash") != plan["inputs_hash"] or man.get("name") != plan["name"]:
        return None
    if man.get("version") != plan["version"]:
        return None
    shards = man.get("shards", [])
    want = {s["name"]: s["sha256"] for s in shards}
    want.update({s["deletions"]: s["deletions_sha256"] for s in shards if s.get("deletions")})
    if spark is not None and uri and len(want) > 1:
        sc = spark.sparkContext
        names = sc.parallelize(sorted(want), min(len(want), 4 * sc.defaultParallelism))
        got = dict(names.map(partial(shardlib.shard_sha256, uri)).collect())
    else:
        got = {n: _sha_or_none(fs, f"{path}/{n}") for n in want}
    return man if got == want else None


def _sha_or_none(fs, path: str) -> str | None:
    return shardlib.file_sha256(fs, path) if fs.exists(path) else None


def clear_leftovers(fs, path: str) -> None:
    """Remove an unregistered version directory and stale staging dirs next to it."""
    if not _ours(fs, path):
        raise ConfigError(
            "--out",
            f"{path} holds files publish did not write; choose an empty or new directory",
        )
    if fs.exists(path):
        log.warning("publish: replacing unfinished version directory %s", path)
        fs.rm(path, recursive=True)
    parent, base = path.rsplit("/", 1)
    if fs.exists(parent):
        for p in fs.ls(parent, detail=False):
            if p.rstrip("/").rsplit("/", 1)[-1].startswith(f".{base}.staging-"):
                log.warning("publish: removing stale staging directory %s", p)
                fs.rm(p, recursive=True)
