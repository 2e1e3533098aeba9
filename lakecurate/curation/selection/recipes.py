"""Selection recipes: an ordered list of rules, loaded from YAML and validated up front.

A recipe file is either a bare YAML list of rules or a mapping with `rules:` and
optional `name`, `description`, `source` and `imports` (Python modules that register
user rules with `lakecurate.curation.selection.rules.register_rule`). Each rule is written as
`- name` or `- name: {param: value, ...}`, for example (`lakecurate select --recipe
strict.yaml`):

    name: strict
    imports: [my_rules]               # registers a user rule `no_watermark`
    rules:
      - min_resolution: {min_side: 256}
      - clip_score_min: {min: 0.28}
      - no_watermark: {max_prob: 0.5}
      - sample: {fraction: 0.5, seed: 7}

`recipe_id` is the content hash of the validated rules (names and every parameter,
defaults filled in): comments, descriptions and key order do not change it; any
parameter does. A user rule's code is not hashed: rename it (or add a version
parameter) when its behaviour changes. Built-in recipes (`default`, `datacomp-clip`, `bunny`) ship as package
data in `lakecurate/curation/selection/recipes/*.yaml`.

Running one: `label_rows(frame, recipe.rules)` adds `reason` (the label of the first
rule that dropped the row, null if kept; each rule sees only the rows still in play)
and `funnel(labeled, rules)` counts (in, dropped, out) per rule.
"""

from __future__ import annotations

import hashlib
import importlib
import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from lakecurate.curation.selection.rules import (
    COLUMNS,
    RULES,
    FittedRule,
    Rule,
    RuleParamError,
    make_rule,
)
from lakecurate.curation.selection.thresholds import Thresholds
from lakecurate.runtime.errors import ConfigError

RECIPE_ID_VERSION = "1"  # bump when rule semantics change in a way that changes selections


@dataclass(frozen=True)
class Recipe:
    """A validated recipe: its rules in order and its content hash `recipe_id`."""

    name: str
    origin: str  # "builtin:<name>" or the file it was read from
    rules: tuple[Rule, ...]
    description: str = ""
    source: str = ""
    imports: tuple[str, ...] = ()

    def canonical(self) -> list[dict[str, Any]]:
        return [r.canonical() for r in self.rules]

    @property
    def recipe_id(self) -> str:
        blob = json.dumps(
            {"v": RECIPE_ID_VERSION, "rules": self.canonical()},
            sort_keys=True,
            separators=(",", ":"),
        )
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def columns(self) -> set[str]:
        """Every input column the rules read (keys of `lakecurate.curation.selection.rules.COLUMNS`)."""
        return {c for r in self.rules for c in r.columns()}

    def tables(self) -> set[str]:
        return {COLUMNS[c] for c in self.columns()}


def builtin_recipes() -> list[str]:
    """Names of the recipes shipped in `lakecurate/curation/selection/recipes/*.yaml`."""
    root = resources.files(__package__) / "recipes"
    return sorted(p.name[: -len(".yaml")] for p in root.iterdir() if p.name.endswith(".yaml"))


def _builtin_text(name: str) -> str | None:
    res = resources.files(__package__) / "recipes" / f"{name}.yaml"
    return res.read_text(encoding="utf-8") if res.is_file() else None


def load_recipe(spec: str) -> Recipe:
    """A built-in recipe by name, or a YAML file by path; ConfigError if it is bad."""
    key = "select.recipe"
    if not spec:
        raise ConfigError(key, f"empty; give a built-in name ({', '.join(builtin_recipes())})")
    text = None if spec.endswith((".yaml", ".yml")) else _builtin_text(spec)
    origin = f"builtin:{spec}"
    name = spec
    if text is None:
        path = Path(spec)
        if not path.is_file():
            raise ConfigError(
                key,
                f"{spec!r} is neither a built-in recipe ({', '.join(builtin_recipes())}) "
                "nor an existing YAML file",
            )
        text, origin, name = path.read_text(encoding="utf-8"), str(path), path.stem
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(key, f"recipe {origin} is not valid YAML: {e}") from None
    return parse_recipe(data, name=name, origin=origin)


def parse_recipe(data: Any, name: str = "recipe", origin: str = "<inline>") -> Recipe:
    """Validate plain data (a list of rules, or a mapping with `rules:`) into a Recipe."""
    where = f"recipe {name}"
    if isinstance(data, list):
        data = {"rules": data}
    if not isinstance(data, dict):
        raise ConfigError(where, "expected a list of rules or a mapping with `rules:`")
    allowed = ("name", "description", "source", "imports", "rules")
    for k in data:
        if k not in allowed:
            raise ConfigError(f"{where}.{k}", f"unknown key; allowed: {', '.join(allowed)}")
    name = str(data.get("name") or name)
    where = f"recipe {name}"
    imports = _import_modules(data.get("imports") or [], where)
    entries = data.get("rules")
    if not isinstance(entries, list) or not entries:
        raise ConfigError(f"{where}.rules", "expected a non-empty list of rules")
    rules = tuple(_rule(entry, i, where) for i, entry in enumerate(entries, 1))
    return Recipe(
        name=name,
        origin=origin,
        rules=rules,
        description=str(data.get("description") or "").strip(),
        source=str(data.get("source") or "").strip(),
        imports=imports,
    )


def _import_modules(mods: Any, where: str) -> tuple[str, ...]:
    if isinstance(mods, str):
        mods = [mods]
    if not isinstance(mods, list) or not all(isinstance(m, str) for m in mods):
        raise ConfigError(f"{where}.imports", "expected a list of Python module names")
    for m in mods:
        try:
            importlib.import_module(m)
        except ImportError as e:
            raise ConfigError(f"{where}.imports", f"cannot import {m!r}: {e}") from None
    return tuple(mods)


def _rule(entry: Any, position: int, where: str) -> Rule:
    """One `- name` or `- name: {params}` entry -> a validated Rule."""
    at = f"{where}, rule {position}"
    if isinstance(entry, str):
        rule_name, params = entry, {}
    elif isinstance(entry, dict) and len(entry) == 1:
        ((rule_name, params),) = entry.items()
        params = {} if params is None else params
    else:
        raise ConfigError(at, f"expected `name` or `name: {{params}}`, got {entry!r}")
    if not isinstance(params, dict):
        raise ConfigError(f"{at} ({rule_name})", f"parameters must be a mapping, got {params!r}")
    if rule_name not in RULES:
        raise ConfigError(
            f"{at} ({rule_name})", f"unknown rule; known rules: {', '.join(sorted(RULES))}"
        )
    try:
        return make_rule(rule_name, params)
    except RuleParamError as e:
        param = f", parameter {e.param}" if e.param else ""
        raise ConfigError(f"{at} ({rule_name}){param}", str(e)) from None


def recipe_for(cfg: Any) -> Recipe:
    """The recipe `cfg.select.recipe` names, loaded and validated."""
    return load_recipe(cfg.select.recipe)


def recipe_id_for(cfg: Any) -> str:
    """The recipe_id under which `lakecurate select` writes the selection for `cfg`."""
    return recipe_for(cfg).recipe_id


# --- running a recipe's rules -----------------------------------------------------------


@dataclass(frozen=True)
class FunnelStep:
    """One rule's line of the funnel."""

    rule: str
    rows_in: int
    dropped: int
    rows_out: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "in": self.rows_in,
            "dropped": self.dropped,
            "out": self.rows_out,
        }


def rule_labels(rules: list[Rule] | tuple[Rule, ...]) -> list[str]:
    """Each rule's name; a name used twice gets `#position` (1-based) from its second use."""
    seen: set[str] = set()
    labels = []
    for i, r in enumerate(rules, 1):
        base = r.label or r.name
        labels.append(base if base not in seen else f"{base}#{i}")
        seen.add(base)
    return labels


def label_rows(
    df: DataFrame, rules: list[Rule] | tuple[Rule, ...], thresholds: Thresholds | None = None
) -> DataFrame:
    """`df` plus `reason`: the label of the first rule that dropped the row (null: kept).

    Each rule sees only the rows every earlier rule kept; a null in a rule's condition
    (a missing score, say) counts as dropped. Cache `df` first: quantile and sample
    rules run one Spark aggregate each over the rows in play (none where `thresholds`
    holds their frozen fit; it records the thresholds each fitted rule used).
    """
    thresholds = thresholds if thresholds is not None else Thresholds()
    in_play = df
    reason = None
    flags: list[str] = []
    for i, (rule, label) in enumerate(zip(rules, rule_labels(rules), strict=True)):
        dropped = rule.drops(in_play)
        if dropped is not None:  # a rule across rows: its drops, joined on as a flag
            flag = f"_dropped_{i}"
            marks = dropped.select("uid").distinct().withColumn(flag, F.lit(True))
            df, in_play = df.join(marks, "uid", "left"), in_play.join(marks, "uid", "left")
            keep = ~F.coalesce(F.col(flag), F.lit(False))
            flags.append(flag)
        elif isinstance(rule, FittedRule):
            keep = F.coalesce(rule.keep_fitted(thresholds.get(label, rule, in_play)), F.lit(False))
        else:
            keep = F.coalesce(rule.keep(in_play), F.lit(False))
        reason = F.when(~keep, F.lit(label)) if reason is None else reason.when(~keep, label)
        in_play = in_play.filter(keep)
    if reason is None:
        return df.withColumn("reason", F.lit(None).cast("string"))
    return df.withColumn("reason", reason.otherwise(F.lit(None).cast("string"))).drop(*flags)


def funnel(labeled: DataFrame, rules: list[Rule] | tuple[Rule, ...]) -> list[FunnelStep]:
    """(in, dropped, out) per rule, from one aggregate over the labeled rows."""
    labels = rule_labels(rules)
    aggs = [F.count_if(F.col("reason") == lab).alias(f"d{i}") for i, lab in enumerate(labels)]
    row = labeled.agg(F.count("*").alias("n"), *aggs).first()
    steps, rows_in = [], int(row["n"])
    for i, lab in enumerate(labels):
        dropped = int(row[f"d{i}"])
        steps.append(FunnelStep(lab, rows_in, dropped, rows_in - dropped))
        rows_in -= dropped
    return steps


def duplicate_drops(labeled: DataFrame, rules: list[Rule] | tuple[Rule, ...]) -> list[dict]:
    """Per `not_duplicate` rule: the rows it dropped under each method (a row may be a
    duplicate under several), and the duplicates it kept because their keeper had been
    dropped by an earlier rule (so that the picture stays). One aggregate for all."""
    labels = rule_labels(rules)
    aggs, found = [], []
    for i, (rule, label) in enumerate(zip(rules, labels, strict=True)):
        if rule.name != "not_duplicate":
            continue
        reason = F.col("reason")
        reached = reason.isNull() | reason.isin(labels[i:])
        any_dup = F.lit(False)
        for m in rule.methods:
            aggs.append(F.count_if((reason == label) & rule.is_duplicate(m)).alias(f"r{i}_{m}"))
            any_dup = any_dup | rule.is_duplicate(m)
        aggs.append(F.count_if(reached & (reason != label) & any_dup).alias(f"r{i}_kept"))
        aggs.append(F.count_if(reached & reason.isNull() & any_dup).alias(f"r{i}_kept_final"))
        found.append((i, label, rule))
    if not found:
        return []
    row = labeled.agg(*aggs).first()
    return [
        {
            "rule": label,
            "dropped_by_method": {m: int(row[f"r{i}_{m}"]) for m in rule.methods},
            "duplicates_kept_keeper_dropped_earlier": int(row[f"r{i}_kept_final"]),
        }
        for i, label, rule in found
    ]


def format_funnel(steps: list[FunnelStep]) -> str:
    """The funnel as a fixed-width table (for logs)."""
    width = max([len("rule")] + [len(s.rule) for s in steps])
    lines = [f"{'rule':<{width}} {'in':>12} {'dropped':>12} {'out':>12} {'kept':>7}"]
    for s in steps:
        frac = s.rows_out / s.rows_in if s.rows_in else 0.0
        lines.append(
            f"{s.rule:<{width}} {s.rows_in:>12,} {s.dropped:>12,} {s.rows_out:>12,} {frac:>7.2%}"
        )
    return "\n".join(lines)
