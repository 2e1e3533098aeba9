"""Executor side of publish: deterministic WebDataset shards and their Parquet indexes.

A shard is a plain tar (`{key}.jpg|png|webp`, `{key}.txt`, `{key}.json`) whose bytes depend
only on the samples in it and their order: every header has the same mtime, uid, gid,
owner names and mode, members are written in sorted order within a sample, and the JSON
sidecar is dumped with sorted keys. Same samples in -> byte-identical tar out, so a
republish from the same pinned table versions can be checked by sha256.

Next to each `shard-NNNNNN.tar` sits `shard-NNNNNN.parquet`: one row per sample with its
key, uid, caption, url, size, clip_score and the byte offset of its first tar header, so a
reader can find a sample without scanning the tar.

A version that reuses a shard of its parent without some of its samples records their
keys in `shard-NNNNNN.deleted.parquet` (one `key` column, sorted): a deletion list, like
Delta's deletion vectors. The tar and its index still hold those samples; readers skip
them (`lakecurate.dataset`), and `copy_without_deleted` writes the shard without them.

No lake or Spark-session imports here: this runs in Python workers.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import tarfile
import uuid
from collections.abc import Iterable
from dataclasses import asdict, dataclass

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

# Fixed tar header fields: nothing about the machine or the clock leaks into a shard.
TAR_MTIME = 946_684_800  # 2000-01-01T00:00:00Z
TAR_MODE = 0o644
TAR_OWNER = ""

# `image_format` as stored in `pairs` -> the member extension WebDataset decoders expect.
IMAGE_EXTENSIONS: dict[str, str] = {
    "jpeg": "jpg",
    "jpg": "jpg",
    "png": "png",
    "webp": "webp",
    "gif": "gif",
    "bmp": "bmp",
    "tiff": "tiff",
}

# Columns the shard writer needs in each row (the driver selects exactly these).
SAMPLE_COLUMNS = (
    "shard",
    "pos",
    "uid",
    "image",
    "image_format",
    "caption",
    "url",
    "width",
    "height",
    "clip_score",
)

# Optional columns of a sample rewritten from its parent version's shard (incremental
# publish): `image` is then null and is read from member `src_member` of the tar at
# `src_uri`, checked against the pair's `image_sha256`.
SOURCE_COLUMNS = ("src_uri", "src_member", "image_sha256")
PARENT_DAMAGED = "damaged parent shard"

SHARD_RESULT_SCHEMA = "shard int, name string, sha256 string, num_samples long, num_bytes long"
DELETIONS_RESULT_SCHEMA = "shard int, deletions string, deletions_sha256 string, deleted long"
DELETIONS_SCHEMA = pa.schema([("key", pa.string())])

INDEX_SCHEMA = pa.schema(
    [
        ("key", pa.string()),
        ("uid", pa.string()),
        ("pos", pa.int64()),
        ("image_member", pa.string()),
        ("caption", pa.string()),
        ("url", pa.string()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("clip_score", pa.float32()),
        ("image_bytes", pa.int64()),
        ("offset", pa.int64()),  # byte offset of the sample's first tar header
    ]
)


@dataclass(frozen=True)
class ShardWritten:
    """One finished shard: its file name, content hash and size."""

    shard: int
    name: str
    sha256: str
    num_samples: int
    num_bytes: int


def shard_name(shard: int) -> str:
    return f"shard-{shard:06d}"


def deletions_name(shard: int) -> str:
    """The file of a shard's deletion list."""
    return f"{shard_name(shard)}.deleted.parquet"


def sample_key(member: str) -> str:
    """The WebDataset key of a tar member: its name up to the first dot."""
    return member.rsplit("/", 1)[-1].split(".", 1)[0]


def image_extension(image_format: str | None) -> str:
    """The member extension for a stored image format (unknown formats keep their name)."""
    fmt = (image_format or "jpeg").lower()
    return IMAGE_EXTENSIONS.get(fmt, fmt)


def _none_if_nan(value):
    if value is None:
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def _int_or_none(value) -> int | None:
    value = _none_if_nan(value)
    return None if value is None else int(value)


def sample_json(row: dict) -> bytes:
    """The `{key}.json` sidecar: uid, url, caption, width, height, clip_score."""
    score = _none_if_nan(row.get("clip_score"))
    doc = {
        "uid": row["uid"],
        "url": _none_if_nan(row.get("url")),
        "caption": row.get("caption") or "",
        "width": _int_or_none(row.get("width")),
        "height": _int_or_none(row.get("height")),
        "clip_score": None if score is None else round(float(score), 6),
    }
    return json.dumps(doc, sort_keys=True, ensure_ascii=False).encode("utf-8")


def sample_members(row: dict) -> list[tuple[str, bytes]]:
    """The tar members of one sample, sorted by name (the key is the uid)."""
    key = row["uid"]
    members = [
        (f"{key}.{image_extension(row.get('image_format'))}", bytes(row["image"])),
        (f"{key}.txt", (row.get("caption") or "").encode("utf-8")),
        (f"{key}.json", sample_json(row)),
    ]
    return sorted(members)


class _HashingWriter:
    """A write-only file wrapper that counts bytes and hashes them on the way out."""

    def __init__(self, raw):
        self.raw = raw
        self.sha = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.raw.write(data)
        self.sha.update(data)
        self.size += len(data)
        return len(data)

    def tell(self) -> int:
        return self.size


def _tarinfo(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = TAR_MTIME
    info.mode = TAR_MODE
    info.uid = info.gid = 0
    info.uname = info.gname = TAR_OWNER
    info.type = tarfile.REGTYPE
    return info


def write_tar(rows: Iterable[dict], fileobj) -> tuple[str, int, list[dict]]:
    """Write rows (already in shard order) as a tar; return (sha256, bytes, index rows)."""
    out = _HashingWriter(fileobj)
    index = []
    # GNU format: no PAX headers (those may carry timestamps); long names still work.
    with tarfile.open(fileobj=out, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for row in rows:
            offset = out.tell()
            members = sample_members(row)
            for name, data in members:
                tar.addfile(_tarinfo(name, len(data)), io.BytesIO(data))
            index.append(_index_row(row, members[0][0] if members else "", offset))
    return out.sha.hexdigest(), out.size, index


def _index_row(row: dict, first_member: str, offset: int) -> dict:
    image_member = f"{row['uid']}.{image_extension(row.get('image_format'))}"
    return {
        "key": row["uid"],
        "uid": row["uid"],
        "pos": int(row["pos"]),
        "image_member": image_member,
        "caption": row.get("caption"),
        "url": _none_if_nan(row.get("url")),
        "width": _int_or_none(row.get("width")),  # pandas turns ints with nulls into floats
        "height": _int_or_none(row.get("height")),
        "clip_score": _none_if_nan(row.get("clip_score")),
        "image_bytes": len(row["image"]),
        "offset": offset,
    }


def _open_fs(uri: str):
    from lakecurate.udfs.storage import url_to_fs

    return url_to_fs(uri)


def write_shard(rows: list[dict], shard: int, staging_uri: str) -> ShardWritten:
    """Write one shard's tar and Parquet index under `staging_uri`; return what was written."""
    fs, root = _open_fs(staging_uri)
    fs.makedirs(root, exist_ok=True)
    name = shard_name(shard)
    rows = sorted(rows, key=lambda r: int(r["pos"]))
    # Temp name + rename: a retried or speculative task attempt never leaves a torn file
    # under the final name (and every attempt writes the same bytes anyway).
    tmp = f"{root}/.{name}.{uuid.uuid4().hex}.tmp"
    with fs.open(tmp, "wb") as f:
        sha, size, index = write_tar(rows, f)
    fs.mv(tmp, f"{root}/{name}.tar")
    table = pa.Table.from_pylist(index, schema=INDEX_SCHEMA)
    with fs.open(tmp, "wb") as f:
        pq.write_table(table, f, compression="zstd")
    fs.mv(tmp, f"{root}/{name}.parquet")
    return ShardWritten(shard, f"{name}.tar", sha, len(rows), size)


def read_members(uri: str, names: set[str]) -> dict[str, bytes]:
    """The bytes of the tar members called `names` in the tar at `uri` (one pass)."""
    fs, path = _open_fs(uri)
    found: dict[str, bytes] = {}
    with fs.open(path, "rb") as f, tarfile.open(fileobj=f, mode="r:") as tar:
        for info in tar:
            if info.name in names and info.isfile():
                found[info.name] = tar.extractfile(info).read()
    return found


def fill_images(rows: list[dict]) -> list[dict]:
    """Give rows without `image` the image bytes of their parent shard's member.

    Each parent tar is read once. A missing member or bytes whose sha256 is not the
    pair's `image_sha256` mean the parent version is damaged: that raises, and the
    driver tells the user to publish with `--full`.
    """
    by_src: dict[str, list[dict]] = {}
    for r in rows:
        if r.get("image") is None:
            by_src.setdefault(r["src_uri"], []).append(r)
    for uri, todo in sorted(by_src.items()):
        members = read_members(uri, {r["src_member"] for r in todo})
        for r in todo:
            data = members.get(r["src_member"])
            if data is None or hashlib.sha256(data).hexdigest() != r["image_sha256"]:
                raise ValueError(
                    f"{PARENT_DAMAGED}: {uri}: member {r['src_member']} is missing or not "
                    f"the image of {r['uid']} (sha256 mismatch)"
                )
            r["image"] = data
    return rows


def shard_writer(staging_uri: str):
    """A function for `groupBy("shard").applyInPandas`: one group in, one shard written."""

    def write_group(pdf: pd.DataFrame) -> pd.DataFrame:
        if pdf.empty:
            return pd.DataFrame(columns=["shard", "name", "sha256", "num_samples", "num_bytes"])
        shard = int(pdf["shard"].iloc[0])
        rows = pdf.to_dict("records")
        if "src_uri" in pdf.columns:
            rows = fill_images(rows)
        written = write_shard(rows, shard, staging_uri)
        return pd.DataFrame([asdict(written)])

    return write_group


def shard_sha256(root_uri: str, name: str) -> tuple[str, str | None]:
    """(name, sha256 of `root_uri`/`name`, None if it is missing): one task's part of
    verifying a published version's shards before they are trusted."""
    from lakecurate.udfs.storage import url_to_fs

    fs, root = url_to_fs(root_uri)
    path = f"{root}/{name}"
    return name, file_sha256(fs, path) if fs.exists(path) else None


def file_sha256(fs, path: str, chunk: int = 1 << 20) -> str:
    """sha256 of a file on any fsspec filesystem (used to verify a shard before reuse)."""
    h = hashlib.sha256()
    with fs.open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


# --- deletion lists ---------------------------------------------------------------------------


def _put(fs, path: str, data: bytes) -> None:
    """Write `data` at `path` through a temp name (a retried task never leaves a torn file)."""
    tmp = f"{path.rsplit('/', 1)[0]}/.{path.rsplit('/', 1)[1]}.{uuid.uuid4().hex}.tmp"
    with fs.open(tmp, "wb") as f:
        f.write(data)
    fs.mv(tmp, path)


def deletions_bytes(keys: Iterable[str]) -> bytes:
    """The bytes of a deletion list: the sorted distinct keys, one Parquet column."""
    table = pa.Table.from_pydict({"key": sorted(set(keys))}, schema=DELETIONS_SCHEMA)
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    return buf.getvalue()


def read_deleted_keys(uri: str) -> frozenset[str]:
    """The keys of the deletion list at `uri`."""
    fs, path = _open_fs(uri)
    with fs.open(path, "rb") as f:
        return frozenset(pq.read_table(f, columns=["key"]).column("key").to_pylist())


def deletions_writer(staging_uri: str):
    """For `groupBy("shard").applyInPandas`: the keys (`uid`) one shard's version leaves
    out in, its deletion list written under `staging_uri`, its record out."""

    def write_group(pdf: pd.DataFrame) -> pd.DataFrame:
        if pdf.empty:
            return pd.DataFrame(columns=["shard", "deletions", "deletions_sha256", "deleted"])
        shard = int(pdf["shard"].iloc[0])
        data = deletions_bytes(pdf["uid"])
        fs, root = _open_fs(staging_uri)
        fs.makedirs(root, exist_ok=True)
        _put(fs, f"{root}/{deletions_name(shard)}", data)
        sha = hashlib.sha256(data).hexdigest()
        return pd.DataFrame([(shard, deletions_name(shard), sha, pdf["uid"].nunique())])

    return write_group


def copy_without_deleted(src_root: str, dst_root: str, record: dict) -> dict:
    """Write shard `record` of the version at `src_root` into `dst_root` without the
    samples its deletion list names: the tar (members copied with the fixed headers, so
    the bytes equal a shard written from the remaining samples) and its index (offsets
    of the new tar). Returns the new shard's record (no deletions)."""
    deleted = read_deleted_keys(f"{src_root}/{record['deletions']}")
    sfs, spath = _open_fs(src_root)
    dfs, dpath = _open_fs(dst_root)
    dfs.makedirs(dpath, exist_ok=True)
    with sfs.open(f"{spath}/{record['index']}", "rb") as f:
        index = [r for r in pq.read_table(f).to_pylist() if r["key"] not in deleted]
    offsets: dict[str, int] = {}
    tmp = f"{dpath}/.{record['name']}.{uuid.uuid4().hex}.tmp"
    with sfs.open(f"{spath}/{record['name']}", "rb") as fi, dfs.open(tmp, "wb") as fo:
        out = _HashingWriter(fo)
        with (
            tarfile.open(fileobj=fi, mode="r|") as src,
            tarfile.open(fileobj=out, mode="w", format=tarfile.GNU_FORMAT) as tar,
        ):
            for info in src:
                key = sample_key(info.name)
                if key in deleted or not info.isfile():
                    continue
                offsets.setdefault(key, out.tell())
                data = src.extractfile(info).read()
                tar.addfile(_tarinfo(info.name, len(data)), io.BytesIO(data))
    dfs.mv(tmp, f"{dpath}/{record['name']}")
    for r in index:
        r["offset"] = offsets[r["key"]]
    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(index, schema=INDEX_SCHEMA), buf, compression="zstd")
    _put(dfs, f"{dpath}/{record['index']}", buf.getvalue())
    return {
        **record,
        "sha256": out.sha.hexdigest(),
        "num_bytes": out.size,
        "num_samples": len(index),
        "deleted": 0,
        "deletions": None,
        "deletions_sha256": None,
        "reused": False,
    }
