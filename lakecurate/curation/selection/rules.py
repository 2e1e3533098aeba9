"""Selection rules: each a small class with a name, validated parameters and one method.

A rule's `keep(df)` gets the frame of rows still in play (every earlier rule of the
recipe passed) and returns a boolean Column: true keeps the row. Quantile rules
compute their thresholds over exactly those rows, eagerly, so the Column they return
holds literal thresholds. `lakecurate.curation.selection.recipes.label_rows` runs a recipe's rules in
order and labels each row with the first rule that dropped it.

Quantiles: `accuracy` > 0 uses Spark's `percentile_approx` (Greenwald-Khanna), whose
rank error is at most `rows_in_play / accuracy` at each bound, so a band [lo, hi]
keeps (hi - lo) of the rows within +-2/accuracy (ties aside). `accuracy: 0` uses
Spark's exact `percentile`, which interpolates linearly like `numpy.quantile` but
gathers every value of the column in one task: fine for millions of rows, not billions.

Fitted rules (`FittedRule`: the quantile rules and `sample`) split `keep` into `fit(df)`,
which computes thresholds as plain data, and `keep_fitted(thresholds)`. The select job
freezes the thresholds of a fit and reuses them until the lake has grown by
`select.refit_growth` (`lakecurate.curation.selection.thresholds`), so a small refresh
does not move every boundary a little and flip the rows next to it.

User rules: subclass `Rule` and decorate with `@register_rule`, or register a plain
function `fn(df, **params) -> Column` with `register_rule("name", params=..., columns=...)`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from lakecurate.schemas.duplicates import METHODS as DUP_METHODS

REQUIRED: Any = object()  # a Param default meaning "must be given"
DEFAULT_ACCURACY = 10_000

# Columns the select job can put in front of a rule, and the table each comes from.
COLUMNS: dict[str, str] = {
    **{c: "pairs" for c in ("uid", "caption", "width", "height")},
    **{c: "pairs" for c in ("caption_words", "caption_chars", "resolution", "aspect")},
    **{c: "embeddings" for c in ("clip_score", "image_emb", "text_emb")},
    **{c: "embeddings" for c in ("aesthetic_score", "unsafe_score")},  # `embed.heads`
    **{c: "signals" for c in ("semantic_cluster", "centroid_sim", "caption_sha256")},
    "entry_ids": "concepts",  # the metadata entries the caption matches (MetaCLIP)
    **{f"dup_{m}": "duplicates" for m in DUP_METHODS},
    **{f"dupk_{m}": "duplicates" for m in DUP_METHODS},
}


def dup_column(method: str) -> str:
    """Similarity to its keeper when the uid is a non-keeper for `method`, else null."""
    return f"dup_{method}"


def keeper_column(method: str) -> str:
    """The keeper's uid when the uid is a non-keeper for `method`, else null."""
    return f"dupk_{method}"


class RuleParamError(ValueError):
    """Raised by a rule's `check()`; the recipe loader adds the rule's name and position."""

    def __init__(self, param: str, message: str):
        self.param = param
        super().__init__(message)


# --- parameters -------------------------------------------------------------------------


def _as_int(v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise TypeError("expected an integer")
    return v


def _as_float(v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise TypeError("expected a number")
    return float(v)


def _as_bool(v: Any) -> bool:
    if not isinstance(v, bool):
        raise TypeError("expected true or false")
    return v


def _as_str(v: Any) -> str:
    if not isinstance(v, str):
        raise TypeError("expected a string")
    return v


def _as_str_list(v: Any) -> tuple[str, ...]:
    if isinstance(v, str):
        v = [v]
    if not isinstance(v, list | tuple) or not all(isinstance(x, str) for x in v):
        raise TypeError("expected a list of strings")
    return tuple(v)


_KINDS: dict[str, Callable[[Any], Any]] = {
    "int": _as_int,
    "float": _as_float,
    "bool": _as_bool,
    "str": _as_str,
    "str_list": _as_str_list,
}


@dataclass(frozen=True)
class Param:
    """One rule parameter: its kind, default, allowed range or choices."""

    kind: str
    default: Any = REQUIRED
    lo: float | None = None
    hi: float | None = None
    choices: tuple[str, ...] | None = None
    doc: str = ""

    def __post_init__(self):
        if self.kind not in _KINDS:
            raise ValueError(f"Param kind {self.kind!r}; allowed: {', '.join(_KINDS)}")

    def coerce(self, value: Any) -> Any:
        """The validated value; raises ValueError/TypeError with a short reason."""
        if value is None and self.default is None:
            return None  # an optional bound left open
        value = _KINDS[self.kind](value)
        items = value if isinstance(value, tuple) else (value,)
        for x in items:
            if self.choices is not None and x not in self.choices:
                raise ValueError(f"got {x!r}; allowed: {', '.join(self.choices)}")
            if self.lo is not None and x < self.lo:
                raise ValueError(f"got {x!r}; must be >= {self.lo}")
            if self.hi is not None and x > self.hi:
                raise ValueError(f"got {x!r}; must be <= {self.hi}")
        if self.kind == "str_list" and not value:
            raise ValueError("must not be empty")
        return value


# --- rules ------------------------------------------------------------------------------


class Rule:
    """A selection rule: `name`, `params` (spec), and `keep(df) -> Column`."""

    name: ClassVar[str] = ""
    label: ClassVar[str] = ""  # the reason its drops carry, when not its name
    params: ClassVar[dict[str, Param]] = {}
    needs: ClassVar[tuple[str, ...]] = ()  # columns keep() reads

    def __init__(self, **values: Any):
        self.values = values

    def __getattr__(self, key: str) -> Any:
        values = self.__dict__.get("values", {})
        if key in values:
            return values[key]
        raise AttributeError(key)

    def check(self) -> None:
        """Cross-parameter checks; raise RuleParamError(param, message)."""

    def columns(self) -> tuple[str, ...]:
        return self.needs

    def keep(self, df: DataFrame) -> Column:
        raise NotImplementedError

    def drops(self, in_play: DataFrame) -> DataFrame | None:
        """For a rule that looks across rows: the uids (of `in_play`) it drops, as a
        DataFrame with a `uid` column; None (the default) means `keep` decides per row."""
        return None

    def canonical(self) -> dict[str, Any]:
        """The rule as plain data with every default filled in (what recipe_id hashes).

        Unset optional parameters (None) are left out, so adding one to a rule later
        keeps existing recipe ids.
        """
        items = self.values.items()
        params = {k: list(v) if isinstance(v, tuple) else v for k, v in items if v is not None}
        return {"rule": self.name, "params": dict(sorted(params.items()))}

    def __repr__(self) -> str:
        return f"{self.name}({', '.join(f'{k}={v!r}' for k, v in self.values.items())})"


class FittedRule(Rule):
    """A rule whose decision depends on thresholds fitted over the rows in play.

    `fit(df)` returns them as JSON-able data (None when there are no rows to fit);
    `keep_fitted(thresholds)` keeps rows by them. `keep` fits and keeps in one go."""

    def fit(self, df: DataFrame) -> Any:
        raise NotImplementedError

    def keep_fitted(self, thresholds: Any) -> Column:
        raise NotImplementedError

    def keep(self, df: DataFrame) -> Column:
        return self.keep_fitted(self.fit(df))


RULES: dict[str, type[Rule]] = {}


def register_rule(
    obj: type[Rule] | str,
    *,
    params: dict[str, Param] | None = None,
    columns: tuple[str, ...] = (),
) -> Any:
    """Register a Rule subclass (`@register_rule`), or a function by name.

    `@register_rule("short_caption", params={"max": Param("int")}, columns=("caption",))`
    over `def fn(df, max): return F.length("caption") <= max` makes a rule too.
    """
    if isinstance(obj, type):
        if not issubclass(obj, Rule) or not obj.name:
            raise TypeError(f"{obj!r} must subclass Rule and set a name")
        RULES[obj.name] = obj
        return obj

    def wrap(fn: Callable[..., Column]) -> Callable[..., Column]:
        def keep(self: Rule, df: DataFrame) -> Column:
            return fn(df, **self.values)

        attrs = {"name": obj, "params": dict(params or {}), "needs": tuple(columns), "keep": keep}
        register_rule(type(f"{obj.title().replace('_', '')}Rule", (Rule,), attrs))
        return fn

    return wrap


def make_rule(name: str, values: dict[str, Any]) -> Rule:
    """Build and validate one rule; errors are RuleParamError naming the parameter."""
    cls = RULES.get(name)
    if cls is None:
        raise KeyError(name)
    unknown = sorted(set(values) - set(cls.params))
    if unknown:
        allowed = ", ".join(cls.params) or "(none)"
        raise RuleParamError(unknown[0], f"unknown parameter; allowed: {allowed}")
    resolved = {}
    for key, spec in cls.params.items():
        if key not in values and spec.default is REQUIRED:
            raise RuleParamError(key, f"required ({spec.doc or spec.kind})")
        try:
            resolved[key] = spec.coerce(values[key]) if key in values else spec.default
        except (TypeError, ValueError) as e:
            raise RuleParamError(key, f"{e} (got {values[key]!r})") from None
    rule = cls(**resolved)
    rule.check()
    for c in rule.columns():
        if c not in COLUMNS:
            raise RuleParamError("", f"reads unknown column {c!r}; known: {', '.join(COLUMNS)}")
    return rule


def _accuracy() -> Param:
    return Param("int", DEFAULT_ACCURACY, lo=0, hi=10_000_000, doc="0 = exact percentiles")


def _fraction(default: Any = REQUIRED) -> Param:
    return Param("float", default, lo=0.0, hi=1.0)


def quantile_expr(column: str, probs: list[float], accuracy: int) -> Column:
    """Exact (linear interpolation) when accuracy is 0, else percentile_approx."""
    c = F.col(column)
    return F.percentile(c, probs) if accuracy == 0 else F.percentile_approx(c, probs, accuracy)


def quantiles(df: DataFrame, column: str, probs: list[float], accuracy: int) -> list | None:
    """Quantiles of the non-null `column` values of `df` (None when there are none)."""
    return df.agg(quantile_expr(column, probs, accuracy).alias("q")).first()["q"]


class RangeRule(Rule):
    """Keep rows whose `column` lies in [min, max] (max null: no upper bound)."""

    column: ClassVar[str] = ""

    def check(self) -> None:
        if self.max is not None and self.min > self.max:
            raise RuleParamError("min", f"min={self.min} is above max={self.max}")

    def columns(self) -> tuple[str, ...]:
        return (self.column,)

    def keep(self, df: DataFrame) -> Column:
        c = F.col(self.column)
        return c >= self.min if self.max is None else c.between(self.min, self.max)


class ThresholdRule(Rule):
    """Keep rows whose `column` is >= (or, with `upper`, <=) the parameter `param`."""

    column: ClassVar[str] = ""
    param: ClassVar[str] = ""
    upper: ClassVar[bool] = False

    def columns(self) -> tuple[str, ...]:
        return (self.column,)

    def keep(self, df: DataFrame) -> Column:
        c, v = F.col(self.column), self.values[self.param]
        return c <= v if self.upper else c >= v


@register_rule
class MinResolutionRule(ThresholdRule):
    """Keep images whose shorter side is at least `min_side` pixels."""

    name, column, param = "min_resolution", "resolution", "min_side"
    params = {"min_side": Param("int", lo=1, doc="pixels of the shorter side")}


@register_rule
class MaxAspectRatioRule(ThresholdRule):
    """Keep images whose long/short side ratio is at most `max`."""

    name, column, param, upper = "max_aspect_ratio", "aspect", "max", True
    params = {"max": Param("float", lo=1.0, doc="max(w, h) / min(w, h)")}


@register_rule
class ClipScoreMinRule(ThresholdRule):
    """Keep pairs whose CLIP score (cosine of image and text embeddings) is >= `min`."""

    name, column, param = "clip_score_min", "clip_score", "min"
    params = {"min": Param("float", lo=-1.0, hi=1.0)}


@register_rule
class MinAestheticRule(ThresholdRule):
    """Keep images whose aesthetic head score (`embed.heads.aesthetic`) is >= `min`."""

    name, column, param = "min_aesthetic", "aesthetic_score", "min"
    params = {"min": Param("float", doc="LAION's predictors score about 1-10")}


@register_rule
class MaxUnsafeRule(ThresholdRule):
    """Keep images whose unsafe-content probability (`embed.heads.unsafe`) is <= `max`."""

    name, column, param, upper = "max_unsafe", "unsafe_score", "max", True
    params = {"max": Param("float", lo=0.0, hi=1.0, doc="a probability")}


@register_rule
class CaptionWordsRule(RangeRule):
    """Keep captions with between `min` and `max` whitespace-separated words."""

    name = "caption_words"
    column = "caption_words"
    params = {"min": Param("int", 0, lo=0), "max": Param("int", None, lo=0)}


@register_rule
class CaptionCharsRule(RangeRule):
    """Keep captions with between `min` and `max` characters (whitespace collapsed)."""

    name = "caption_chars"
    column = "caption_chars"
    params = {"min": Param("int", 0, lo=0), "max": Param("int", None, lo=0)}


@register_rule
class ClipScoreTopFractionRule(FittedRule):
    """Keep the top `fraction` of the rows in play by CLIP score."""

    name = "clip_score_top_fraction"
    params = {"fraction": _fraction(), "accuracy": _accuracy()}
    needs = ("clip_score",)

    def check(self) -> None:
        if self.fraction <= 0:
            raise RuleParamError("fraction", "must be > 0 (it would keep nothing)")

    def fit(self, df: DataFrame) -> list | None:
        return quantiles(df, "clip_score", [1.0 - self.fraction], self.accuracy)

    def keep_fitted(self, thresholds: list | None) -> Column:
        return F.lit(False) if thresholds is None else F.col("clip_score") >= thresholds[0]


@register_rule
class NotDuplicateRule(Rule):
    """Drop uids that are a non-keeper of a duplicate group under any of `methods`,
    while their keeper is still in play: a duplicate whose keeper an earlier rule
    dropped (a one-word caption, a smaller side under the floor) is kept instead, so the
    picture is not lost.

    `min_similarity` > 0 counts only duplicates at least that similar to their keeper.
    `semantic_eps` makes the select job check that the `semantic` verdicts in the lake
    were made at that `dedup.semantic_eps` (Bunny: 0.14, i.e. cosine 0.86), and fail
    with the command to re-run otherwise.
    """

    name = "not_duplicate"
    params = {
        "methods": Param("str_list", choices=DUP_METHODS),
        "min_similarity": Param("float", 0.0, lo=0.0, hi=1.0),
        "semantic_eps": Param("float", None, lo=0.0, hi=1.0, doc="dedup.semantic_eps"),
    }

    def check(self) -> None:
        if self.semantic_eps is not None and "semantic" not in self.methods:
            raise RuleParamError("semantic_eps", "only applies when methods include semantic")
        if self.semantic_eps is not None and not 0 < self.semantic_eps < 1:
            raise RuleParamError("semantic_eps", f"must be in (0, 1), got {self.semantic_eps}")

    def columns(self) -> tuple[str, ...]:
        return tuple(c for m in self.methods for c in (dup_column(m), keeper_column(m)))

    def is_duplicate(self, method: str) -> Column:
        return F.coalesce(F.col(dup_column(method)) >= self.min_similarity, F.lit(False))

    def keep(self, df: DataFrame) -> Column:
        """Per row, ignoring whether the keeper is in play (see `drops`)."""
        dup = F.lit(False)
        for m in self.methods:
            dup = dup | self.is_duplicate(m)
        return ~dup

    def drops(self, in_play: DataFrame) -> DataFrame:
        keepers = in_play.select(F.col("uid").alias("_keeper"))
        dropped = None
        for m in self.methods:
            d = (
                in_play.filter(self.is_duplicate(m))
                .select("uid", F.col(keeper_column(m)).alias("_keeper"))
                .join(keepers, "_keeper", "left_semi")
                .select("uid")
            )
            dropped = d if dropped is None else dropped.unionByName(d)
        return dropped


@register_rule
class CaptionRepeatCapRule(Rule):
    """Keep at most `max` of the pairs in play that share one normalised caption (the
    caption group of `signals.caption_sha256`): the highest resolution first, then by
    uid. A caption shared by different pictures is not a duplicate, but hundreds of
    pictures captioned "image" or "open book" teach a model little; this caps them
    without wiping them out. Pairs without a caption group are never capped."""

    name = "caption_repeat_cap"
    params = {"max": Param("int", REQUIRED, lo=1, doc="pairs kept per caption")}
    needs = ("caption_sha256", "resolution")

    def keep(self, df: DataFrame) -> Column:
        return F.lit(True)  # decided across rows: see `drops`

    def drops(self, in_play: DataFrame) -> DataFrame:
        from pyspark.sql import Window

        grouped = in_play.filter(F.col("caption_sha256").isNotNull())
        w = Window.partitionBy("caption_sha256").orderBy(
            F.col("resolution").desc_nulls_last(), F.col("uid")
        )
        ranked = grouped.select("uid", F.row_number().over(w).alias("_n"))
        return ranked.filter(F.col("_n") > self.max).select("uid")


class QuantileBandRule(FittedRule):
    """Keep rows whose `column` lies in the [lo, hi] quantile band of the rows in play."""

    column: ClassVar[str] = ""
    params = {"lo": _fraction(), "hi": _fraction(), "accuracy": _accuracy()}

    def check(self) -> None:
        if self.lo >= self.hi:
            raise RuleParamError("lo", f"lo={self.lo} must be below hi={self.hi}")

    def columns(self) -> tuple[str, ...]:
        return (self.column,)

    def fit(self, df: DataFrame) -> list | None:
        """[value at quantile lo, value at quantile hi] over the rows of `df`."""
        return quantiles(df, self.column, [self.lo, self.hi], self.accuracy)

    def keep_fitted(self, thresholds: list | None) -> Column:
        if thresholds is None:
            return F.lit(False)
        return F.col(self.column).between(thresholds[0], thresholds[1])


@register_rule
class SimilarityBandRule(QuantileBandRule):
    """Keep the [lo, hi] quantile band of image-text similarity (CLIP score)."""

    name = "similarity_band"
    column = "clip_score"


@register_rule
class CentroidBandRule(QuantileBandRule):
    """Keep the [lo, hi] quantile band of image-to-cluster-centroid similarity.

    Bands are over all rows in play; `per_cluster: true` computes one band per
    semantic cluster instead (thresholds collected to the driver, one pair per cluster).
    """

    name = "centroid_band"
    column = "centroid_sim"
    params = {**QuantileBandRule.params, "per_cluster": Param("bool", False)}

    def columns(self) -> tuple[str, ...]:
        return ("centroid_sim", "semantic_cluster") if self.per_cluster else ("centroid_sim",)

    def fit(self, df: DataFrame) -> list | dict | None:
        """As the band's; per cluster: {cluster (as text): [lo, hi]}."""
        if not self.per_cluster:
            return super().fit(df)
        q = quantile_expr(self.column, [self.lo, self.hi], self.accuracy)
        rows = df.groupBy("semantic_cluster").agg(q.alias("q")).collect()
        rows = [r for r in rows if r["semantic_cluster"] is not None and r["q"] is not None]
        return {str(r["semantic_cluster"]): [float(v) for v in r["q"]] for r in rows}

    def keep_fitted(self, thresholds: list | dict | None) -> Column:
        if not self.per_cluster:
            return super().keep_fitted(thresholds)
        if not thresholds:
            return F.lit(False)
        items = sorted(thresholds.items(), key=lambda kv: int(kv[0]))
        keys = F.array(*[F.lit(int(c)) for c, _ in items])
        lo = F.map_from_arrays(keys, F.array(*[F.lit(float(q[0])) for _, q in items]))
        hi = F.map_from_arrays(keys, F.array(*[F.lit(float(q[1])) for _, q in items]))
        k = F.col("semantic_cluster")
        return F.col(self.column).between(F.element_at(lo, k), F.element_at(hi, k))


@register_rule
class SampleRule(FittedRule):
    """Keep `n` rows (or `fraction` of the rows in play), chosen by a seeded hash of uid.

    Deterministic: the rows with the smallest xxhash64(seed, uid) are kept, so the same
    rows in play give the same sample. A fraction keeps round(fraction * rows in play).
    The fit is the largest hash kept: frozen, it keeps about the same fraction of new
    rows, so `n` is exact at each refit and grows with the lake between refits.
    """

    name = "sample"
    params = {
        "n": Param("int", None, lo=1),
        "fraction": Param("float", None, lo=0.0, hi=1.0),
        "seed": Param("int", 0),
    }
    needs = ("uid",)

    def check(self) -> None:
        if (self.n is None) == (self.fraction is None):
            raise RuleParamError("n", "give exactly one of n or fraction")

    def _hash(self) -> Column:
        return F.xxhash64(F.lit(self.seed), F.col("uid"))

    def fit(self, df: DataFrame) -> list | None:
        n = self.n
        if n is None:
            n = round(self.fraction * df.count())
        if n <= 0:
            return None
        h = self._hash()
        top = df.select(h.alias("h")).orderBy("h").limit(n).agg(F.max("h").alias("t")).first()
        return None if top["t"] is None else [int(top["t"])]

    def keep_fitted(self, thresholds: list | None) -> Column:
        return F.lit(False) if thresholds is None else self._hash() <= F.lit(thresholds[0])


@register_rule
class HasConceptRule(Rule):
    """Keep pairs whose caption matches at least one metadata entry (`lakecurate
    concepts`); MetaCLIP drops the rest. Its drops carry the reason `no_concept`."""

    name = "has_concept"
    label = "no_concept"
    needs = ("entry_ids",)

    def keep(self, df: DataFrame) -> Column:
        return F.size(F.coalesce(F.col("entry_ids"), F.array())) > 0


def balance_draw(seed: int, uid: Column, entry: Column) -> Column:
    """A uniform draw in [0, 1) fixed per (seed, uid, entry): the top 53 bits of a
    seeded xxhash64. The same pair always draws the same number, so a row's fate moves
    only when its entries' probabilities do."""
    h = F.xxhash64(F.lit(seed), uid, entry)
    return F.shiftrightunsigned(h, 11).cast("double") / float(1 << 53)


@register_rule
class BalanceRule(FittedRule):
    """MetaCLIP balancing: keep a pair with probability 1 - prod(1 - min(1, t / c_e))
    over the entries e its caption matches, c_e being the number of pairs of the whole
    pool matching e. Tail entries (c_e <= t) keep all their pairs; a head entry keeps
    about t. MetaCLIP's t is 20,000 at 400M pairs; scale it with the pool (t of 20 to
    200 for a pool of 100k pairs keeps the same head/tail split; see the README).

    The draw is not `random()` but a seeded hash of (uid, entry) (`balance_draw`): a
    refresh changes only rows whose probabilities moved, and as counts grow a kept row
    of a head entry can only leave, never come back. Pairs matching no entry are
    dropped. The select job gives the counts from table `concept_counts` (the whole
    pool, counted incrementally); `fit` counts the rows in play instead (tests, and
    frames without a lake)."""

    name = "balance"
    params = {
        "t": Param("int", 20_000, lo=1, doc="pairs kept per head entry"),
        "seed": Param("int", 0),
    }
    needs = ("uid", "entry_ids")

    def fit(self, df: DataFrame) -> dict:
        counts = (
            df.select(F.explode("entry_ids").alias("e"))
            .groupBy("e")
            .count()
            .filter(F.col("count") > self.t)
            .collect()
        )
        return head_counts(self.t, {int(r["e"]): int(r["count"]) for r in counts})

    def keep_fitted(self, thresholds: dict | None) -> Column:
        head = sorted((thresholds or {}).get("head", {}).items(), key=lambda kv: int(kv[0]))
        draw = lambda e: balance_draw(self.seed, F.col("uid"), e)  # noqa: E731
        entries = F.coalesce(F.col("entry_ids"), F.array().cast("array<int>"))
        if not head:
            return F.size(entries) > 0
        ids = F.lit([int(k) for k, _ in head]).cast("array<int>")
        probs = F.lit([min(1.0, self.t / int(c)) for _, c in head]).cast("array<double>")
        p = F.map_from_arrays(ids, probs)
        return F.exists(entries, lambda e: F.coalesce(F.element_at(p, e), F.lit(1.0)) > draw(e))


def head_counts(t: int, counts: dict[int, int]) -> dict:
    """The balance rule's fit: the entries counted above `t` (the rest keep all)."""
    return {"t": t, "head": {str(e): c for e, c in sorted(counts.items()) if c > t}}
