"""Published dataset versions as things to query: the `datasets` catalog and `open_dataset`.

A dataset version is a row of `datasets` (written last by publish) plus the table versions
it pins. `open_dataset(spark, lake, name, version_or_tag)` rebuilds its samples by time
travel on exactly those versions: the kept uids of `selection@v` for the version's recipe,
joined with `pairs@v`, `signals@v` (as one struct column) and `embeddings@v` (the model the
version was published with). Nothing is copied; the shards on disk are one materialisation
of this query.

`selection_hash` (an additive hash of the kept uids, computed by Spark in
`selection_hash_of`, or from the parent's by `selection_hash_since`) is stored with
each version so refresh can tell whether a selection changed.

References: `NAME@3`, `NAME@v3`, `NAME@prod` (a tag), `NAME@latest` or just `NAME` (the
newest version that is not retired).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from lakecurate.deltaio.lake import Lake
from lakecurate.runtime.errors import ConfigError, JobError

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
TAG_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$")
PUBLISHED, RETIRED = "published", "retired"


def check_name(name: str, key: str = "NAME") -> str:
    if not NAME_RE.match(name or ""):
        raise ConfigError(
            key, f"{name!r} is not a dataset name: use letters, digits, '_', '.', '-'"
        )
    return name


def check_tag(tag: str) -> str:
    if not TAG_RE.match(tag or "") or tag == "latest":
        raise ConfigError(
            "TAG", f"{tag!r} is not a tag: start with a letter; letters, digits, '_', '.', '-'"
        )
    return tag


def parse_ref(ref: str, default: str | None = "latest") -> tuple[str, str | None]:
    """`name@selector` -> (name, selector); `name` -> (name, default)."""
    name, sep, sel = (ref or "").partition("@")
    check_name(name)
    if sep and not sel:
        raise ConfigError("NAME@V", f"{ref!r}: nothing after '@' (a version number or a tag)")
    return name, (sel if sep else default)


@dataclass(frozen=True)
class DatasetVersion:
    """One row of `datasets`, with the pinned versions parsed."""

    name: str
    version: int
    status: str
    recipe_id: str
    config_hash: str
    num_samples: int
    num_shards: int
    shard_uri: str
    manifest_uri: str
    pinned: dict[str, int]
    selection_hash: str
    model_id: str
    tags: tuple[str, ...]
    run_id: str
    created_at: Any

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"

    @classmethod
    def from_row(cls, r: dict) -> DatasetVersion:
        return cls(
            name=r["name"],
            version=int(r["version"]),
            status=r.get("status") or PUBLISHED,
            recipe_id=r.get("recipe_id") or "",
            config_hash=r.get("config_hash") or "",
            num_samples=int(r.get("num_samples") or 0),
            num_shards=int(r.get("num_shards") or 0),
            shard_uri=r.get("shard_uri") or "",
            manifest_uri=r.get("manifest_uri") or "",
            pinned={k: int(v) for k, v in json.loads(r.get("pinned_versions") or "{}").items()},
            selection_hash=r.get("selection_hash") or "",
            model_id=r.get("model_id") or "",
            tags=tuple(r.get("tags") or ()),
            run_id=r.get("run_id") or "",
            created_at=r.get("created_at"),
        )

    def to_json(self) -> dict[str, Any]:
        d = {k: getattr(self, k) for k in self.__dataclass_fields__}
        d["tags"] = list(self.tags)
        d["created_at"] = None if self.created_at is None else str(self.created_at)
        return d

    def manifest(self) -> dict[str, Any]:
        """The version's manifest.json (an error naming the file if it is gone)."""
        from lakecurate.udfs.storage import open_uri

        try:
            with open_uri(self.manifest_uri, "r") as f:
                return json.load(f)
        except FileNotFoundError:
            raise JobError(f"{self.ref}: manifest {self.manifest_uri} is missing") from None


def _lake(lake: Lake | str) -> Lake:
    return lake if isinstance(lake, Lake) else Lake(str(lake))


def dataset_rows(spark, lake: Lake | str, name: str | None = None) -> list[DatasetVersion]:
    """Every registered version (of `name`, if given), ordered by name and version
    (`spark` None: read without Spark)."""
    lake = _lake(lake)
    if not lake.exists("datasets"):
        return []
    if spark is None:  # a command without Spark: the small table read through delta-rs
        found = lake.delta("datasets").to_pyarrow_table().to_pylist()
        rows = [DatasetVersion.from_row(r) for r in found if name is None or r["name"] == name]
    else:
        df = lake.read(spark, "datasets")
        if name is not None:
            df = df.filter(df["name"] == name)
        rows = [DatasetVersion.from_row(r.asDict(recursive=True)) for r in df.collect()]
    return sorted(rows, key=lambda d: (d.name, d.version))


def resolve(
    spark, lake: Lake | str, name: str, selector: str | int | None = "latest"
) -> DatasetVersion:
    """The version `selector` (number, `vN`, tag or `latest`) of dataset `name`."""
    rows = dataset_rows(spark, lake, check_name(name))
    if not rows:
        raise ConfigError(
            "NAME", f"no dataset named {name!r}; `lakecurate versions list` shows them"
        )
    return pick(rows, name, selector)


def pick(rows: list[DatasetVersion], name: str, selector: str | int | None) -> DatasetVersion:
    sel = "latest" if selector is None else str(selector)
    if sel == "latest":
        live = [r for r in rows if r.status != RETIRED]
        if not live:
            raise ConfigError("NAME", f"every version of {name!r} is retired")
        return live[-1]
    num = sel[1:] if re.fullmatch(r"[vV]\d+", sel) else sel
    if num.isdigit():
        for r in rows:
            if r.version == int(num):
                return r
        have = ", ".join(str(r.version) for r in rows)
        raise ConfigError("NAME@V", f"{name!r} has no version {num}; versions: {have}")
    for r in rows:
        if sel in r.tags:
            return r
    tags = sorted({t for r in rows for t in r.tags})
    raise ConfigError("NAME@V", f"{name!r} has no tag {sel!r}; tags: {', '.join(tags) or 'none'}")


# --- the samples of a version, by time travel ------------------------------------------------


HASH_PREFIX = "sum256:"
_MOD = 1 << 256


def _digest(uid: str) -> int:
    return int.from_bytes(hashlib.sha256(uid.encode()).digest(), "big")


def _format(total: int) -> str:
    return f"{HASH_PREFIX}{total % _MOD:064x}"


def selection_hash(uids: Iterable[str]) -> str:
    """`sum256:` and the sum of sha256(uid) over the set of kept uids, mod 2**256.

    Additive: a version's hash is its parent's plus the digests of the rows a later
    `selection` version gained minus those of the rows it lost (`selection_hash_since`),
    so a refresh hashes what changed, not the lake. Equal sets give equal hashes, and
    different sets collide by chance as rarely as sha256 digests do; unlike a digest of
    the sorted list it is not built to resist uids crafted to collide. (Versions
    published before it carry a plain sha256 hex digest and are hashed afresh.)"""
    return _format(sum(_digest(u) for u in set(uids)))


def digest_sum(uids) -> int:
    """The sum of sha256(uid) over the rows of `uids` (a frame with a uid column),
    computed by Spark in four 64-bit limbs (exact in decimal(38,0) up to 2**62 rows)."""
    from pyspark.sql import functions as F

    h = F.sha2(F.col("uid"), 256)
    limbs = [
        F.sum(F.conv(F.substring(h, 1 + 16 * k, 16), 16, 10).cast("decimal(38,0)")).alias(f"l{k}")
        for k in range(4)
    ]
    row = uids.agg(*limbs).first()
    return sum(int(row[f"l{k}"] or 0) << (64 * (3 - k)) for k in range(4))


def selection_hash_of(spark, lake: Lake, recipe_id: str, version: int | None = None) -> str:
    """`selection_hash` of the kept uids of `recipe_id` at `selection@version` (latest if
    None), computed by Spark: one row of sums reaches the driver."""
    v = lake.version("selection") if version is None else version
    if v is None:
        return selection_hash([])
    return _format(digest_sum(kept_uids(spark, lake, v, recipe_id)))


def selection_hash_since(
    spark, lake: Lake, recipe_id: str, base: str, since: int, until: int
) -> str | None:
    """`selection_hash` at `selection@until` from `base`, the hash at `selection@since`:
    plus the kept rows of the files `until` holds and `since` lacks, minus those of the
    files `since` holds and `until` lacks (a row per uid and recipe). None when `base` is
    not additive or the log cannot tell."""
    from pyspark.sql import functions as F

    if not base.startswith(HASH_PREFIX):
        return None
    changes = lake.changes_since("selection", since, until)
    if changes is None:
        return None
    _, added, removed = changes
    total = int(base[len(HASH_PREFIX) :], 16)
    for files, sign in ((added, 1), (removed, -1)):
        if files:
            rows = lake.read_files(spark, "selection", files, ["uid", "recipe_id", "kept"])
            kept = rows.filter((F.col("recipe_id") == recipe_id) & F.col("kept"))
            total += sign * digest_sum(kept.select("uid"))
    return _format(total)


def kept_uids(spark, lake: Lake, selection_version: int, recipe_id: str):
    """uid of every kept row of `recipe_id` in `selection@selection_version`."""
    from pyspark.sql import functions as F

    sel = lake.read(spark, "selection", selection_version)
    return sel.filter((F.col("recipe_id") == recipe_id) & F.col("kept")).select("uid").distinct()


def samples_frame(spark, lake: Lake, pinned: dict[str, int], recipe_id: str, model_id: str | None):
    """uid, caption, image, image_format, width, height, url, signals, image_emb, text_emb,
    clip_score: the kept samples at the pinned versions (signals/embeddings may be null)."""
    from pyspark.sql import functions as F

    for table in ("selection", "pairs"):
        if table not in pinned:
            raise JobError(f"no pinned version of {table!r}; the dataset cannot be rebuilt")
    uids = kept_uids(spark, lake, pinned["selection"], recipe_id)
    pairs = lake.read(spark, "pairs", pinned["pairs"]).select(
        "uid", "caption", "image", "image_format", "width", "height", "url"
    )
    df = uids.join(pairs, "uid")
    sig_spec = lake.spec("signals")
    sig_cols = [c for c in sig_spec.columns if c not in ("uid", "run_id")]
    if "signals" in pinned:
        sig = lake.read(spark, "signals", pinned["signals"])
        sig = sig.select("uid", F.struct(*sig_cols).alias("signals"))
        df = df.join(sig, "uid", "left")
    else:
        df = df.withColumn("signals", F.lit(None).cast(_struct_type(sig_spec, sig_cols)))
    if "embeddings" in pinned and model_id:
        emb = lake.read(spark, "embeddings", pinned["embeddings"])
        emb = emb.filter(F.col("model_id") == model_id)
        emb = emb.select("uid", "image_emb", "text_emb", "clip_score").dropDuplicates(["uid"])
        df = df.join(emb, "uid", "left")
    else:
        df = (
            df.withColumn("image_emb", F.lit(None).cast("array<float>"))
            .withColumn("text_emb", F.lit(None).cast("array<float>"))
            .withColumn("clip_score", F.lit(None).cast("float"))
        )
    return df


def _struct_type(spec, cols: list[str]):
    full = spec.spark_schema()
    from pyspark.sql.types import StructType

    return StructType([full[c] for c in cols])


def open_dataset(
    spark, lake: Lake | str, name: str, version_or_tag: str | int | None = "latest", **kw: Any
):
    """The samples of dataset `name` at `version_or_tag`, as a Spark DataFrame.

    Columns: uid, caption, image, image_format, width, height, url, signals (struct),
    image_emb, text_emb, clip_score. Rebuilt from the table versions the dataset pins,
    so it is the same rows the shards hold even after the tables moved on. A retired
    version raises (its files may have been vacuumed) unless `allow_retired=True`.
    """
    lake = _lake(lake)
    if isinstance(version_or_tag, str) and "@" in version_or_tag:
        raise ConfigError("version_or_tag", "pass the name and the version separately")
    dv = resolve(spark, lake, name, version_or_tag)
    if dv.status == RETIRED and not kw.get("allow_retired", False):
        raise JobError(
            f"{dv.ref} is retired: `lakecurate vacuum` may have removed the files it pinned"
        )
    return samples_frame(spark, lake, dv.pinned, dv.recipe_id, dv.model_id or None)
