"""Configuration: one YAML file validated into frozen dataclasses, one per section.

Every section works with no file at all. `load_config(path, overrides)` reads the
file, applies dotted overrides (`{"model.name": "ViT-B-32"}`) and validates; any
error names the key and the allowed values. `config_hash(cfg)` is stored in each
commit's metadata.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from lakecurate.runtime.errors import ConfigError


def _check(cond: bool, key: str, message: str) -> None:
    if not cond:
        raise ConfigError(key, message)


def _one_of(value: str, allowed: tuple[str, ...], key: str) -> None:
    _check(value in allowed, key, f"got {value!r}; allowed: {', '.join(allowed)}")


READ_PATHS = ("auto", "spark", "arrow")


@dataclass(frozen=True)
class LakeConfig:
    path: str = "./lake"
    engine: str = "deltalake"  # deltalake (delta-rs commits) | delta-spark (native jars)
    # how Spark reads table files: spark (its Parquet reader; needs a JVM connector for
    # object stores, e.g. hadoop-aws for s3a), arrow (pyarrow in Python tasks: no JVM
    # connector), auto (spark, unless the lake is on an object store the JVM cannot read)
    read_path: str = "auto"
    # object-store settings under their standard environment names (AWS_ENDPOINT_URL,
    # AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION, AWS_ALLOW_HTTP, GOOGLE_*,
    # AZURE_*): set in the environment of the driver and of every executor, where
    # delta-rs, pyarrow and fsspec read them. Empty: the environment as it is.
    storage_options: dict = field(default_factory=dict)

    def __post_init__(self):
        _check(bool(self.path), "lake.path", "must be a non-empty path or URI")
        _one_of(self.engine, ("deltalake", "delta-spark"), "lake.engine")
        _one_of(self.read_path, READ_PATHS, "lake.read_path")
        for k, v in self.storage_options.items():
            _check(
                isinstance(k, str) and re.fullmatch(r"[A-Z][A-Z0-9_]*", k) is not None,
                f"lake.storage_options.{k}",
                "keys are environment variable names, e.g. AWS_ENDPOINT_URL, AWS_REGION",
            )
            _check(
                isinstance(v, str | int | float | bool),
                f"lake.storage_options.{k}",
                "must be a string (or a number or boolean)",
            )


@dataclass(frozen=True)
class SparkConfig:
    master: str = ""  # "": spark-submit's --master when launched by it, else local[*]
    app_name: str = "lakecurate"
    shuffle_partitions: int = 8
    arrow_batch_rows: int = 1024
    ui: bool = True  # the Spark UI (its address is logged at start)
    conf: dict = field(default_factory=dict)

    def __post_init__(self):
        _check(self.shuffle_partitions >= 1, "spark.shuffle_partitions", "must be >= 1")
        _check(self.arrow_batch_rows >= 1, "spark.arrow_batch_rows", "must be >= 1")


@dataclass(frozen=True)
class SourceConfig:
    uri: str
    format: str = "auto"


SOURCE_FORMATS = ("auto", "webdataset", "folder", "parquet", "jsonl", "urls")


@dataclass(frozen=True)
class IngestConfig:
    max_pixels: int = 89_478_485  # Pillow's own decompression-bomb limit
    min_side: int = 16
    max_image_bytes: int = 64 * 1024 * 1024
    max_caption_chars: int = 4096
    caption_column: str = "caption"
    image_column: str = "image"
    path_column: str = "image_path"
    url_column: str = "url"
    key_column: str = "key"  # parquet/jsonl: the record key; the row index when absent
    files_per_task: int = 1
    # source files per commit (pairs, rejects, then their ledger rows): a run killed
    # mid-way keeps the files it committed, and the re-run skips them by the ledger.
    # Files, not rows: a shard's row count is only known once it is read.
    commit_every_files: int = 64
    force: bool = False  # re-ingest sources the ledger already holds
    # header: parse the header (size, EXIF orientation, pixel limit) and check the end
    # marker, so cut-off files are rejected here; the pixels are decoded once, by embed,
    # where a corrupt body becomes an embed-stage `undecodable_image` reject.
    # full: also decode the pixels during ingest (about 1.4x the ingest CPU).
    decode: str = "header"
    image_formats: tuple[str, ...] = ("jpeg", "png", "webp", "gif", "bmp", "tiff", "mpo")
    download_dir: str = ""  # urls: img2dataset output; default <lake>/_downloads
    download_timeout_s: int = 10
    download_threads: int = 16
    download_retries: int = 0
    download_shard_size: int = 10000
    resize_max_side: int = 0  # 0: store bytes as given; N: re-encode images larger than N
    resize_quality: int = 95

    def __post_init__(self):
        _check(self.max_pixels > 0, "ingest.max_pixels", "must be > 0")
        _check(self.min_side >= 1, "ingest.min_side", "must be >= 1")
        _check(self.max_caption_chars >= 1, "ingest.max_caption_chars", "must be >= 1")
        _check(self.max_image_bytes > 0, "ingest.max_image_bytes", "must be > 0")
        _check(self.files_per_task >= 1, "ingest.files_per_task", "must be >= 1")
        _check(self.commit_every_files >= 1, "ingest.commit_every_files", "must be >= 1")
        _one_of(self.decode, ("full", "header"), "ingest.decode")
        _check(bool(self.image_formats), "ingest.image_formats", "must list at least one format")
        _check(self.download_timeout_s >= 1, "ingest.download_timeout_s", "must be >= 1")
        _check(self.download_threads >= 1, "ingest.download_threads", "must be >= 1")
        _check(self.download_retries >= 0, "ingest.download_retries", "must be >= 0")
        _check(self.download_shard_size >= 1, "ingest.download_shard_size", "must be >= 1")
        _check(self.resize_max_side >= 0, "ingest.resize_max_side", "must be >= 0 (0: off)")
        _check(1 <= self.resize_quality <= 100, "ingest.resize_quality", "1..100")


@dataclass(frozen=True)
class ModelConfig:
    # "": the model the lake's embeddings hold (lakecurate.curation.models.resolve_model),
    # or ViT-B-32 with `pretrained` on a lake that holds none
    name: str = ""
    pretrained: str = "laion2b_s34b_b79k"  # a tag, a checkpoint path, or "none"
    precision: str = "auto"  # auto | fp32 | bf16 | fp16
    device: str = "auto"  # auto | cpu | cuda
    batch_size: int = 64
    decode_threads: int = 2

    def __post_init__(self):
        _one_of(self.precision, ("auto", "fp32", "bf16", "fp16"), "model.precision")
        _one_of(self.device, ("auto", "cpu", "cuda"), "model.device")
        _check(self.batch_size >= 1, "model.batch_size", "must be >= 1")
        _check(self.decode_threads >= 1, "model.decode_threads", "must be >= 1")


@dataclass(frozen=True)
class EmbedConfig:
    """`embed`: how a long run is cut into commits."""

    # pairs per commit: a run killed after hours keeps every chunk it committed, and
    # the re-run embeds only what is still pending
    commit_every: int = 200_000
    # score heads over the image embedding, computed in the same pass: {aesthetic |
    # unsafe: path of a LAION-format state dict} (`udfs/heads.py`); their scores go to
    # `embeddings.aesthetic_score` / `unsafe_score` for the rules min_aesthetic, max_unsafe
    heads: dict = field(default_factory=dict)

    def __post_init__(self):
        _check(self.commit_every >= 1, "embed.commit_every", "must be >= 1 (pairs)")
        _check(isinstance(self.heads, dict), "embed.heads", "must map a head name to a file")
        for name, path in self.heads.items():
            _one_of(name, ("aesthetic", "unsafe"), "embed.heads")
            _check(
                isinstance(path, str) and bool(path.strip()),
                f"embed.heads.{name}",
                f"must be the path of a head file, got {path!r}",
            )


DEDUP_METHODS = ("exact", "phash", "minhash", "semantic")


@dataclass(frozen=True)
class DedupConfig:
    """`dedup`: which duplicate methods run and how each decides.

    Caption near-duplicates (minhash) default to character 5-grams of the normalized
    caption (punctuation folded to spaces) at estimated Jaccard >= 0.45, chosen by
    measurement on 12k generated captions of 7-36 words (2k originals, each edited 1,
    2 and 3 words, re-spelled/re-punctuated, and paraphrased). Word n-grams are too
    coarse for 5-30 word captions (one changed word removes n of ~15 word 3-grams:
    word-3 recall on 3-word edits is 0.47 at 0.4); short character grams match
    unrelated captions that share stock phrases (char-4 pair precision 0.75 at 0.4).
    All-pairs, char-5 at 0.45 gave pair precision 0.986 and light-edit recall 0.93
    (0.40: 0.95 recall but 0.948 precision; 0.50: 0.998 / 0.89). End to end with
    banding (`benchmarks/dedup_quality.py`): verified-pair precision 0.988, light-edit
    recall 0.921 (1 word 0.996, 2 words 0.928, 3 words 0.760, spelling+punctuation
    1.0), paraphrase recall 0.14. Groups are connected components, so chains lower
    the precision over all pairs inside a group to 0.887; each row's `similarity` to
    its keeper lets selection be stricter. LSH bands x rows come from the threshold
    with datasketch's objective (`minhash_bands`/`minhash_rows` override it), weighted
    0.3/0.7 towards
    false negatives: every candidate is verified against the threshold, so a false
    positive only costs work. Measured: datasketch's default 0.5/0.5 gives 25x5 bands
    and light-edit recall 0.88; 0.3/0.7 gives 32x4 and 0.92 for ~2.5x the candidates.

    Defaults (`methods`): exact and phash, the methods that say "the same picture".
    Caption MinHash is not run by default and, when run, drops pairs only where a recipe
    names it in `not_duplicate` (text-heavy data): on real data, pairs whose captions are
    near-identical are mostly different pictures ("LED Triangular 1 (Orange)" and
    "(Black)"; an emoji in five skin tones).

    pHash pairs within `phash_max_distance` bits are found by splitting the 64 bits
    into 4 bands of 16 and probing every band value within distance // 4 bits (so no
    pair within the distance can be missed), then verifying. `bucket_limit`: a bucket
    with more members than this links each member to a leader and to its neighbour in
    signature order instead of all pairs, keeping the cost linear on stock captions
    (measured on 100k generated captions: 37.8 candidate pairs per caption with a
    limit of 50, 18.6 with 10, 15.9 with 5).

    `phash_crops`: a crop or border moves every pixel, so whole-frame hashes miss it
    (crop recall 0.001 on the real benchmark). With it on, each image also carries the
    pHash of 15 sub-rectangles of its frame (`signals.phash_windows`, 120 bytes); a
    window hash of one image within the distance of the other's whole-frame hash is a
    candidate, proven by registering the smaller picture inside the bigger one
    (`udfs/registration.py`). The price: 16 hashes per image in the band join instead
    of one (measured by `benchmarks/phash_crops.py`: candidate search 1.8x on a full
    run, 1.45x on a 1 % refresh; signals pass 2.3x); `false` gives the whole-frame
    search alone.

    `stable_keepers` (incremental runs; a full run ranks every member by `keeper`):
    members matched by an earlier run rank before new ones, so a keeper stays a
    keeper when a better-ranked near-duplicate arrives (the newcomer becomes its
    duplicate), and groups no new row touches are not re-ranked. A refresh then
    removes a published sample only where a new row joins two groups, and the next
    version reuses the shards it does not touch; without it, a 1% refresh of 50k
    pairs moved 23 old samples out of the selection, spread over every shard, and
    publish rewrote the whole dataset. `false`: incremental keepers are those of a
    full run over the same rows (groups whose best member changed since, by a clip
    score embedded later or another `keeper` order, are re-ranked on each run).
    """

    # exact and verified pHash: the same picture. minhash (caption near-duplicates) and
    # semantic run only when named: a caption shared by different pictures is not a
    # duplicate, and semantic needs a real model.
    methods: tuple[str, ...] = ("exact", "phash")
    phash_max_distance: int = 6
    phash_crops: bool = True  # window hashes find crops and borders; registration verifies
    minhash_num_perm: int = 128
    minhash_seed: int = 1
    minhash_ngram: int = 5
    minhash_shingle: str = "char"  # char | word
    minhash_threshold: float = 0.45
    minhash_bands: int = 0  # 0: chosen from the threshold like datasketch's LSH
    minhash_rows: int = 0  # 0: num_perm // bands
    minhash_fn_weight: float = 0.7  # banding objective's false-negative weight
    bucket_limit: int = 10
    semantic_eps: float = 0.07
    semantic_clusters: int = 0  # 0: about sqrt(n / 2)
    semantic_keep: str = "hard"  # hard | easy | random
    semantic_sample: int = 100_000  # embeddings k-means is fitted on (driver side)
    semantic_iterations: int = 25
    semantic_block: int = 2048  # members compared per task; larger clusters are split
    semantic_refit_growth: float = 0.25  # refit k-means once the lake grew by this fraction
    seed: int = 0  # k-means init and the `random` keep policy
    keeper: tuple[str, ...] = ("clip_score", "resolution", "uid")
    stable_keepers: bool = True  # incremental runs: earlier members rank before new ones

    def __post_init__(self):
        for m in self.methods:
            _one_of(m, DEDUP_METHODS, "dedup.methods")
        _check(0 <= self.phash_max_distance <= 11, "dedup.phash_max_distance", "0..11")
        _check(8 <= self.minhash_num_perm <= 1024, "dedup.minhash_num_perm", "8..1024")
        _check(1 <= self.minhash_ngram <= 16, "dedup.minhash_ngram", "1..16")
        _one_of(self.minhash_shingle, ("char", "word"), "dedup.minhash_shingle")
        _check(0 < self.minhash_threshold < 1, "dedup.minhash_threshold", "in (0, 1)")
        _check(self.minhash_bands >= 0, "dedup.minhash_bands", "must be >= 0")
        _check(self.minhash_rows >= 0, "dedup.minhash_rows", "must be >= 0")
        _check(0 < self.minhash_fn_weight < 1, "dedup.minhash_fn_weight", "in (0, 1)")
        _check(
            max(self.minhash_bands, 1) * self.minhash_rows <= self.minhash_num_perm,
            "dedup.minhash_rows",
            "bands * rows must not exceed minhash_num_perm",
        )
        _check(self.bucket_limit >= 2, "dedup.bucket_limit", "must be >= 2")
        _check(0 < self.semantic_eps < 1, "dedup.semantic_eps", "in (0, 1)")
        _check(self.semantic_clusters >= 0, "dedup.semantic_clusters", "must be >= 0")
        _one_of(self.semantic_keep, ("hard", "easy", "random"), "dedup.semantic_keep")
        _check(self.semantic_sample >= 1, "dedup.semantic_sample", "must be >= 1")
        _check(self.semantic_iterations >= 1, "dedup.semantic_iterations", "must be >= 1")
        _check(self.semantic_block >= 2, "dedup.semantic_block", "must be >= 2")
        _check(
            0 <= self.semantic_refit_growth <= 100,
            "dedup.semantic_refit_growth",
            "0..100 (a fraction of the embeddings at the last fit; 0: refit on any growth)",
        )
        for k in self.keeper:
            _one_of(k, ("clip_score", "resolution", "uid"), "dedup.keeper")


@dataclass(frozen=True)
class SelectConfig:
    """`select`: which recipe (validated by `lakecurate.curation.selection.recipes.load_recipe` when used)."""

    recipe: str = "default"  # a built-in recipe name (default, datacomp-clip, bunny) or a YAML file
    # percentile rules keep the thresholds of their last fit until the lake holds this
    # fraction more pairs than at that fit (0.1: with +1% a night, a refit every ~10
    # nights; between refits no boundary moves, so refreshes do not flip old rows).
    # 0: refit on every run that sees new pairs
    refit_growth: float = 0.1
    refit: bool = False  # refit the percentile rules on this run (`select --refit`)
    # label every pair again (`select --full`); otherwise a run after an earlier one
    # labels only the pairs whose inputs changed and those linked to them
    full: bool = False

    def __post_init__(self):
        _check(bool(self.recipe.strip()), "select.recipe", "must name a built-in recipe or a file")
        _check(
            0 <= self.refit_growth <= 100,
            "select.refit_growth",
            "0..100 (a fraction of the pairs at the last fit; 0: refit on any growth)",
        )


@dataclass(frozen=True)
class PublishConfig:
    name: str = "default"
    # the version's shard directory (local path or fsspec URI); may use {name} and
    # {version}; "" means <lake>/_published/{name}/v{version}
    out: str = ""
    shard_size: int = 1000
    shard_bytes: int = 0  # 0: no byte limit
    seed: int = 0
    force: bool = False  # publish even when the latest version has the same selection
    # lay the new version out from its parent's shards (reuse the untouched ones);
    # false: every shard is written afresh (`publish --full`)
    incremental: bool = True
    # an incremental layout merges the parent's small shards (under half of shard_size,
    # and of shard_bytes if set) into its new tail once this many of them survive
    max_small_shards: int = 4
    # an incremental layout is used only when the parent's shards it can reuse untouched
    # hold at least this fraction of the new version's samples; below it, rewriting most
    # shards from the parent's tars costs more than writing every shard afresh
    min_reuse: float = 0.5
    # a reused shard keeps a deletion list of the members the new version leaves out;
    # once they pass this fraction of its samples it is rewritten without them. At 0.2 a
    # reader skips at most a fifth of a shard's bytes (about a tenth over a version),
    # and each deleted sample costs at most 4 rewritten ones; 0 makes every version
    # exact (for readers that cannot apply deletion lists)
    compact_fraction: float = 0.2

    def __post_init__(self):
        _check(self.shard_size >= 1, "publish.shard_size", "must be >= 1")
        _check(0.0 <= self.compact_fraction < 1.0, "publish.compact_fraction", "must be in [0, 1)")
        _check(0.0 <= self.min_reuse <= 1.0, "publish.min_reuse", "must be in [0, 1]")
        _check(self.shard_bytes >= 0, "publish.shard_bytes", "must be >= 0")
        _check(self.max_small_shards >= 1, "publish.max_small_shards", "must be >= 1")


@dataclass(frozen=True)
class RefreshConfig:
    """The nightly refresh: its lease (see `lakecurate.runtime.lease`) and its logs."""

    lease_timeout_s: int = 3600  # a lease whose heartbeat is older than this is stale
    heartbeat_s: int = 30
    lease_dir: str = ""  # default: the lake root (on an object store: a Delta-log lease)
    log_json: bool = False  # JSON lines instead of text logs
    log_file: str = ""  # also (or only, with log_json) write the log here

    def __post_init__(self):
        _check(self.lease_timeout_s >= 1, "refresh.lease_timeout_s", "must be >= 1 (seconds)")
        _check(self.heartbeat_s >= 1, "refresh.heartbeat_s", "must be >= 1 (seconds)")
        _check(
            self.heartbeat_s * 2 <= self.lease_timeout_s,
            "refresh.heartbeat_s",
            f"must be at most half of refresh.lease_timeout_s ({self.lease_timeout_s})",
        )


@dataclass(frozen=True)
class Config:
    lake: LakeConfig = field(default_factory=LakeConfig)
    spark: SparkConfig = field(default_factory=SparkConfig)
    sources: tuple[SourceConfig, ...] = ()
    ingest: IngestConfig = field(default_factory=IngestConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    embed: EmbedConfig = field(default_factory=EmbedConfig)
    dedup: DedupConfig = field(default_factory=DedupConfig)
    select: SelectConfig = field(default_factory=SelectConfig)
    publish: PublishConfig = field(default_factory=PublishConfig)
    refresh: RefreshConfig = field(default_factory=RefreshConfig)

    def table_path(self, table: str) -> str:
        return f"{self.lake.path.rstrip('/')}/{table}"


# --- building dataclasses from plain data, with errors that name the key ---------------


def _coerce(value: Any, tp: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if isinstance(value, str) and tp is SourceConfig:
            value = {"uri": value}
        _check(isinstance(value, dict), key, f"expected a mapping, got {type(value).__name__}")
        return _build(tp, value, key)
    if origin is tuple:
        (item_tp, _ellipsis) = typing.get_args(tp)
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        _check(isinstance(value, list | tuple), key, "expected a list")
        return tuple(_coerce(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value))
    if tp is dict:
        _check(isinstance(value, dict), key, "expected a mapping")
        return dict(value)
    if tp is bool:
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0"):
            return value.lower() in ("true", "1")
        _check(isinstance(value, bool), key, f"expected true/false, got {value!r}")
        return value
    if tp is int:
        try:
            _check(not isinstance(value, bool), key, "expected an integer")
            return int(value) if isinstance(value, str) else _exact(value, int, key)
        except ValueError:
            raise ConfigError(key, f"expected an integer, got {value!r}") from None
    if tp is float:
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(key, f"expected a number, got {value!r}") from None
    if tp is str:
        _check(isinstance(value, str | int | float), key, f"expected a string, got {value!r}")
        return str(value)
    return value


def _exact(value: Any, tp: type, key: str) -> Any:
    _check(isinstance(value, tp), key, f"expected {tp.__name__}, got {value!r}")
    return value


def _build(cls: type, data: dict, prefix: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for k, v in data.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        _check(k in names, key, f"unknown key; allowed: {', '.join(sorted(names))}")
        kwargs[k] = _coerce(v, hints[k], key)
    try:
        return cls(**kwargs)
    except TypeError as e:  # a required field is missing
        raise ConfigError(prefix or cls.__name__, str(e)) from None


def _set_dotted(data: dict, dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = data
    for p in parts[:-1]:
        node = node.setdefault(p, {})
        _check(isinstance(node, dict), dotted, "cannot set a key under a non-mapping")
    node[parts[-1]] = value


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> Config:
    """Read `path` (YAML; optional), apply dotted `overrides`, validate, return a Config."""
    data: dict = {}
    if path is not None:
        p = Path(path)
        if not p.exists():
            raise ConfigError("--config", f"file not found: {p}")
        try:
            loaded = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError("--config", f"{p} is not valid YAML: {e}") from None
        _check(isinstance(loaded, dict), "--config", f"{p} must hold a mapping at the top")
        data = loaded
    for dotted, value in (overrides or {}).items():
        if value is not None:
            _set_dotted(data, dotted, value)
    return _build(Config, data)


def to_dict(cfg: Any) -> dict:
    return json.loads(json.dumps(dataclasses.asdict(cfg), default=list))


def config_hash(cfg: Any) -> str:
    """A short, stable hash of a config (or a section of one). Storage options say where
    to connect, not what was computed (and hold credentials): they are left out."""
    data = to_dict(cfg)
    data.pop("storage_options", None)
    if isinstance(data.get("lake"), dict):
        data["lake"].pop("storage_options", None)
    blob = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def replace(cfg: Config, **sections: Any) -> Config:
    """`replace(cfg, model={"name": "x"})`: a new Config with those keys changed."""
    data = to_dict(cfg)
    for section, changes in sections.items():
        if isinstance(changes, dict):
            data[section].update(changes)
        else:
            data[section] = changes
    return _build(Config, data)
