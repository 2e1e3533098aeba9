"""Groups, keepers and `duplicates` writes shared by every dedup method.

A full run replaces all of a method's rows (`write_method`). An incremental run
(`write_changes`) touches only what the new rows change, and `write_deferred` writes
the changes of every incremental method together:

* `merge_groups`: connected components of the new edges plus the (star) edges of
  the existing groups those edges touch; untouched groups are not read again;
* `changed_keepers` (without `dedup.stable_keepers`): existing groups whose keeper
  under the current ranking (`dedup.keeper`, clip scores embedded since) differs from
  the stored one; with it, the members matched by earlier runs rank before the new
  ones instead (`_earlier_first`) and untouched groups are left alone;
* `write_deferred` (`lakecurate.deltaio.keyed.replace_rows`): one commit that adds the
  rows of the rebuilt groups and removes the rows they replace; only the Parquet files
  holding a replaced row are rewritten (a method whose rebuilt rows equal the old ones
  takes no part).

Groups only grow (new edges never split one), and a group's id, keeper and
similarities depend only on its members and their ranks, so without stable keepers
the result equals a full run over the same edges.

Verdicts inside a group. Exact methods: every member is a duplicate of the best-ranked
member (the keeper), similarity 1. Near-duplicate methods (`Keeping.vectors`): greedy
keepers (`udfs/keepers.py`): in rank order, a member within the method's threshold of a
keeper chosen so far is a duplicate of the most similar one, otherwise it becomes a
keeper itself, because components chain (A~B, B~C groups A with C). The group's best
member is the one row with `keeper_uid == uid` and similarity 1.0 (`is_best`); other
keepers carry their highest similarity to earlier keepers (< 1). Incremental runs
redo a group when it gains members or its best member changes; a rank change further
down (a clip score embedded later for a lower-ranked member) takes effect when the
group is next touched or on a full run.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from functools import partial

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from lakecurate.curation.dedup.components import connected_components, cut_lineage
from lakecurate.deltaio.keyed import replace_rows
from lakecurate.deltaio.lake import VOLATILE_COLUMNS
from lakecurate.runtime.config import Config
from lakecurate.runtime.jobkit import JobContext
from lakecurate.schemas import TABLES
from lakecurate.udfs.keepers import OUTPUT_SCHEMA as KEEPERS_SCHEMA
from lakecurate.udfs.keepers import keepers_batches


@dataclass
class DedupRun:
    """What every method reads: the session, the job context and the lake's rows."""

    spark: object
    ctx: JobContext
    cfg: Config
    pairs: DataFrame  # uid, image_sha256, caption
    signals: DataFrame  # every uid's signals row
    # where keeper ranks come from, each (uid, its columns): resolution, clip_score
    rank_sources: tuple[DataFrame, ...]
    # incremental results, written together by `write_deferred` (one commit per table)
    changes: list[tuple[str, DataFrame, DataFrame]] = field(default_factory=list)
    new_index: list[DataFrame] = field(default_factory=list)
    cached: list[DataFrame] = field(default_factory=list)
    # uids of the `pairs` rows added since the last complete run under the same settings
    # (None: unknown, every pair may be unmatched); see `unmatched`
    arrivals: DataFrame | None = None
    _slugs: dict[tuple[str, str], int] | None = None
    _ranks: DataFrame | None = None

    @property
    def ranks(self) -> DataFrame:
        """(uid, resolution, clip_score) of every uid, cached on first use (a full run
        ranks the whole lake; a refresh looks its few members up instead, `_with_ranks`)."""
        if self._ranks is None:
            ranks = self.rank_sources[0]
            for src in self.rank_sources[1:]:
                ranks = ranks.join(src, "uid", "left")
            self._ranks = ranks.persist()
        return self._ranks

    def stored_slugs(self) -> dict[tuple[str, str], int]:
        """(method, config_slug) -> index rows (0: `duplicates` rows only) of every method
        at the start of the run: one job for all methods. A method reads its own entries
        before it writes, and no method writes another's rows."""
        if self._slugs is None:
            lake = self.ctx.lake
            idx = lake.read(self.spark, "dedup_index").select(
                "method", "config_slug", F.lit(1).alias("indexed")
            )
            dups = lake.read(self.spark, "duplicates").select(
                "method", "config_slug", F.lit(0).alias("indexed")
            )
            rows = idx.unionByName(dups).groupBy("method", "config_slug").agg(F.sum("indexed"))
            self._slugs = {(r[0], r[1]): int(r[2]) for r in rows.collect()}
        return self._slugs

    def unmatched(self, rows: DataFrame, done: DataFrame, full: bool) -> DataFrame:
        """The `rows` whose uid `done` lacks. After a complete run only this run's
        arrivals can be, so they are broadcast into both scans (no shuffle of the lake);
        a method that re-matches everything (`full`), or a run without arrivals, joins
        over the lake."""
        return unmatched(rows, done, None if full else self.arrivals)

    def existing(self, method: str) -> DataFrame:
        """The method's current `duplicates` rows."""
        return self.ctx.lake.read(self.spark, "duplicates").filter(F.col("method") == method)

    def cache(self, df: DataFrame) -> DataFrame:
        """`df` persisted until `release` (deferred writes still read it)."""
        df = df.persist()
        self.cached.append(df)
        return df

    @contextlib.contextmanager
    def method(self) -> Iterator[None]:
        """One method's run: what it cached is released at its end unless it deferred
        writes that still read it (a full run writes at once)."""
        first, deferred = len(self.cached), len(self.changes) + len(self.new_index)
        yield
        if len(self.changes) + len(self.new_index) == deferred:
            self.release(first)

    def release(self, first: int = 0) -> None:
        """Unpersist the frames cached since the `first` one (all by default)."""
        for df in self.cached[first:]:
            df.unpersist()
        del self.cached[first:]
        if first == 0 and self._ranks is not None:
            self._ranks.unpersist()
            self._ranks = None


def unmatched(rows: DataFrame, done: DataFrame, arrivals: DataFrame | None) -> DataFrame:
    """The `rows` whose uid `done` lacks, looking only at `arrivals` (a few uids, or None:
    every row may be)."""
    if arrivals is None:
        return rows.join(done.select("uid"), "uid", "left_anti")
    few = F.broadcast(arrivals.select("uid"))
    held = done.select("uid").join(few, "uid", "left_semi")
    return rows.join(few, "uid", "left_semi").join(held, "uid", "left_anti")


@dataclass(frozen=True)
class Keeping:
    """How a method turns a group into verdicts: extra rank columns (frames of uid and
    the columns, joined to the run's ranks) and the ordering columns that come first;
    for a near-duplicate method, each member's vector, the similarity kernel of
    `udfs/keepers.py` and the method's threshold (None: every member is an identical
    copy of the keeper)."""

    extra: tuple[DataFrame, ...] = ()
    first: tuple[Column, ...] = ()
    vectors: DataFrame | None = None  # uid, vector
    kernel: str = ""
    min_similarity: float = 0.0
    # the members are few (a refresh's touched groups): their uids are broadcast to
    # each rank source and to the vectors, which are scanned in place, not shuffled
    few: bool = False


def is_best() -> Column:
    """Whether a `duplicates` row is its group's best-ranked member."""
    return (F.col("uid") == F.col("keeper_uid")) & (F.col("similarity") >= 1.0)


_ORDER: dict[str, Callable[[], Column]] = {
    "clip_score": lambda: F.col("clip_score").desc_nulls_last(),
    "resolution": lambda: F.col("resolution").desc_nulls_last(),
    "uid": lambda: F.col("uid").asc(),
}


def keeper_order(cfg: Config, first: tuple[Column, ...] = ()) -> list[Column]:
    """The configured keeper ranking; uid last so that every group has one keeper."""
    return [*first, *(_ORDER[k]() for k in cfg.dedup.keeper), F.col("uid").asc()]


def _with_ranks(run: DedupRun, members: DataFrame, keeping: Keeping):
    """(members joined with their ranks, the window ordering each group by keeper rank)."""
    w = Window.partitionBy("group_id").orderBy(*keeper_order(run.cfg, keeping.first))
    if keeping.few:
        uids = F.broadcast(members.select("uid").distinct())
        sources = [src.join(uids, "uid", "left_semi") for src in run.rank_sources + keeping.extra]
    else:
        sources = [run.ranks, *keeping.extra]
    for src in sources:
        members = members.join(src, "uid", "left")
    return members, w


def _keepers(run: DedupRun, members: DataFrame, keeping: Keeping) -> DataFrame:
    """members (uid, group_id, ...) -> the same with `best`, the group's keeper by rank."""
    joined, w = _with_ranks(run, members, keeping)
    return joined.withColumn("best", F.first("uid").over(w))


def ranked(run: DedupRun, members: DataFrame, keeping: Keeping) -> DataFrame:
    """members (uid, group_id) -> (uid, group_id, pos): 1-based rank within the group."""
    joined, w = _with_ranks(run, members.select("uid", "group_id"), keeping)
    return joined.select("uid", "group_id", F.row_number().over(w).alias("pos"))


def greedy_verdicts(ranked: DataFrame, keeping: Keeping) -> DataFrame:
    """(uid, group_id, pos) -> (uid, group_id, keeper_uid, similarity): greedy keepers."""
    fn = partial(keepers_batches, kernel=keeping.kernel, min_similarity=keeping.min_similarity)
    vectors = keeping.vectors.select("uid", "vector")
    rows = vectors.join(F.broadcast(ranked), "uid") if keeping.few else ranked.join(vectors, "uid")
    return rows.repartition("group_id").mapInArrow(fn, KEEPERS_SCHEMA)


def finalize(
    run: DedupRun, method: str, slug: str, members: DataFrame, keeping: Keeping = Keeping()
) -> DataFrame:
    """members (uid, group_id) -> `duplicates` rows with keeper and similarity to it."""
    if keeping.vectors is None:  # identical copies
        keyed = _keepers(run, members.select("uid", "group_id"), keeping)
        verdicts = keyed.select(
            "uid", "group_id", F.col("best").alias("keeper_uid"), F.lit(1.0).alias("similarity")
        )
    else:
        verdicts = greedy_verdicts(ranked(run, members, keeping), keeping)
    return verdicts.select(
        "uid",
        F.lit(method).alias("method"),
        "group_id",
        "keeper_uid",
        F.col("similarity").cast("float").alias("similarity"),
        F.lit(slug).alias("config_slug"),
        F.lit(run.ctx.run_id).alias("run_id"),
    )


def method_counts(run: DedupRun, methods: list[str]) -> dict[str, int]:
    """`<method>_groups` and `<method>_duplicates` of the methods, from the table: one job."""
    rows = (
        run.ctx.lake.read(run.spark, "duplicates")
        .filter(F.col("method").isin(methods))
        .groupBy("method")
        .agg(
            F.countDistinct("group_id").alias("groups"),
            F.sum((F.col("uid") != F.col("keeper_uid")).cast("int")).alias("dups"),
        )
        .collect()
    )
    found = {r["method"]: (int(r["groups"]), int(r["dups"] or 0)) for r in rows}
    counts: dict[str, int] = {}
    for m in methods:
        groups, dups = found.get(m, (0, 0))
        counts |= {f"{m}_groups": groups, f"{m}_duplicates": dups}
    return counts


def write_method(run: DedupRun, method: str, rows: DataFrame) -> None:
    """Replace all of the method's `duplicates` rows."""
    version, changed = run.ctx.lake.replace_where(
        rows, "duplicates", "method", method, run.ctx.commit
    )
    if changed:
        run.ctx.wrote("duplicates", version)


# --- the index of matched uids ------------------------------------------------------------


def index_rows(run: DedupRun, method: str, slug: str) -> tuple[DataFrame, bool]:
    """(rows of uids already matched under `slug`, whether everything must be re-matched).

    Everything is re-matched on the first run of a method and when any index or
    `duplicates` row of the method carries another configuration slug.
    """
    idx = run.ctx.lake.read(run.spark, "dedup_index").filter(F.col("method") == method)
    held = {s: n for (m, s), n in run.stored_slugs().items() if m == method}
    if not sum(held.values()) or set(held) != {slug}:
        return idx.limit(0), True
    return idx, False


def record_index(run: DedupRun, method: str, rows: DataFrame, full: bool) -> None:
    """Mark uids as matched (after their duplicates are written: the completion marker).

    A full run replaces the method's index rows now; an incremental run's rows (the
    uids missing from the index) are appended by `write_deferred`, after the changes.
    """
    if not full:
        run.new_index.append(rows)
        return
    lake, commit = run.ctx.lake, run.ctx.commit
    version, changed = lake.replace_where(rows, "dedup_index", "method", method, commit)
    if changed:
        run.ctx.wrote("dedup_index", version)


def write_deferred(run: DedupRun) -> None:
    """Write what the incremental methods rebuilt: `duplicates` first (one commit for the
    methods whose rows changed), then the index rows that mark their uids as matched."""
    lake, commit = run.ctx.lake, run.ctx.commit
    changed = _changed_methods(run.changes)
    picked = [(rows, stale) for m, rows, stale in run.changes if m in changed]
    if picked:
        rows, stale = (_union([p[i] for p in picked]) for i in (0, 1))
        run.ctx.wrote(
            "duplicates",
            replace_rows(run.spark, run.ctx.lake, run.ctx.commit, "duplicates", rows, stale),
        )
    if run.new_index:
        version, added = lake.append_new(_union(run.new_index), "dedup_index", commit)
        if added:
            run.ctx.wrote("dedup_index", version)
    run.changes.clear()
    run.new_index.clear()


def _union(frames: list[DataFrame]) -> DataFrame:
    out = frames[0]
    for df in frames[1:]:
        out = out.unionByName(df)
    return out


def index_frame(run: DedupRun, df: DataFrame, method: str, slug: str, sig=None) -> DataFrame:
    return df.select(
        "uid",
        F.lit(method).alias("method"),
        F.lit(slug).alias("config_slug"),
        (sig if sig is not None else F.lit(None).cast("binary")).alias("signature"),
        F.lit(run.ctx.run_id).alias("run_id"),
    )


def write_groups(
    run: DedupRun, method: str, slug: str, edges, full: bool, keeping: Keeping = Keeping()
):
    """Edges -> groups merged with the existing ones -> `duplicates` (all rows when full)."""
    if full:
        members = _components(method, edges)
        return write_mode(run, method, slug, members, None, True, keeping)
    members, touched = merge_groups(method, edges, run.existing(method))
    return write_mode(run, method, slug, members, touched, False, keeping)


def write_mode(run, method, slug, members, touched, full, keeping: Keeping = Keeping()):
    """All of the method's rows when `full`, else only the groups that change."""
    if full:
        return write_method(run, method, finalize(run, method, slug, members, keeping))
    return write_changes(run, method, slug, members, touched, keeping)


# --- incremental ----------------------------------------------------------------------------


def merge_groups(method: str, edges: DataFrame, existing: DataFrame) -> tuple[DataFrame, DataFrame]:
    """(members (uid, group_id) of the groups the edges build or grow, ids of groups absorbed).

    `existing` holds the method's current rows (empty for a full run); only the groups
    that share a node with an edge take part in the components.
    """
    edges = cut_lineage(edges.select("a", "b"))  # used twice; keeps later plans small
    nodes = edges.select(F.col("a").alias("uid")).union(edges.select(F.col("b").alias("uid")))
    touched = existing.join(nodes.distinct(), "uid", "left_semi").select("group_id").distinct()
    touched = cut_lineage(touched)
    old = existing.join(touched, "group_id", "left_semi")
    best = old.filter(is_best()).select("group_id", F.col("uid").alias("a"))
    star = old.join(best, "group_id").filter(F.col("uid") != F.col("a"))
    star = star.select("a", F.col("uid").alias("b"))
    return _components(method, edges.unionByName(star)), touched


def _components(method: str, edges: DataFrame) -> DataFrame:
    """(uid, group_id): group ids are the method and the smallest uid of the component."""
    comps = connected_components(edges.select("a", "b"), "a", "b")
    return comps.select(
        F.col("node").alias("uid"), F.concat(F.lit(f"{method}:"), F.col("root")).alias("group_id")
    )


def changed_keepers(run: DedupRun, existing: DataFrame, keeping: Keeping) -> DataFrame:
    """group_ids of existing groups whose best member by the current ranking is not the stored one."""
    ranked = _keepers(run, existing.select("uid", "group_id", "keeper_uid", "similarity"), keeping)
    moved = is_best() & (F.col("best") != F.col("uid"))
    return ranked.filter(moved).select("group_id").distinct()


def write_changes(
    run: DedupRun,
    method: str,
    slug: str,
    members: DataFrame,
    touched: DataFrame,
    keeping: Keeping = Keeping(),
) -> None:
    """Rebuild the groups in `members` and those whose keeper changed: the new rows and
    the rows they replace are kept for `write_deferred`."""
    existing = run.cache(run.existing(method))
    if run.cfg.dedup.stable_keepers:
        redo, regroup, keeping = touched, members, _earlier_first(run, method, keeping)
    else:
        rerank = changed_keepers(run, existing, keeping).join(touched, "group_id", "left_anti")
        rerank = cut_lineage(rerank)
        redo = touched.unionByName(rerank)
        regroup = members.unionByName(
            existing.join(rerank, "group_id", "left_semi").select("uid", "group_id")
        )
    stale = run.cache(existing.join(redo, "group_id", "left_semi"))
    rows = run.cache(finalize(run, method, slug, regroup, replace(keeping, few=True)))
    run.changes.append((method, rows, stale))


def _earlier_first(run: DedupRun, method: str, keeping: Keeping) -> Keeping:
    """`keeping` ranking the uids matched by an earlier run (in the index before this
    run's rows are appended) before the new ones (`dedup.stable_keepers`): an earlier
    member keeps its verdict, since greedy keepers over the same ranked prefix repeat it."""
    earlier = (
        run.ctx.lake.read(run.spark, "dedup_index")
        .filter(F.col("method") == method)
        .select("uid", F.lit(0).alias("_arrival"))
    )
    arrival = F.coalesce(F.col("_arrival"), F.lit(1)).asc()
    return replace(keeping, extra=(*keeping.extra, earlier), first=(arrival, *keeping.first))


def _changed_methods(changes: list[tuple[str, DataFrame, DataFrame]]) -> set[str]:
    """The methods whose rebuilt rows differ from those they replace (ignoring run ids):
    one job for all of them."""
    if not changes:
        return set()
    cols = [c for c in TABLES["duplicates"].columns if c not in VOLATILE_COLUMNS]
    h = F.xxhash64(*cols).cast("decimal(38,0)").alias("h")
    signed = [
        df.select(F.lit(m).alias("m"), h, F.lit(sign).alias("s"))
        for m, rows, stale in changes
        for df, sign in ((rows, 1), (stale, -1))
    ]
    agg = (
        _union(signed)
        .groupBy("m")
        .agg(F.sum("s").alias("n"), F.sum(F.col("h") * F.col("s")).alias("d"))
    )
    return {r["m"] for r in agg.collect() if r["n"] or r["d"]}
