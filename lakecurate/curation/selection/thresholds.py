"""Frozen thresholds of a recipe's fitted rules, the growth rule that refits them, and
the churn a selection run causes.

A percentile rule (CLIP-score top-k%, the Bunny bands, `sample`) fitted afresh every
night moves its boundary a little with each +1% of rows and flips the rows next to it
in and out of the dataset. So the select job fits once and freezes: the thresholds
each fitted rule used are stored in the `selection` commit (`thresholds`, with the
number of pairs and the model at the fit), and later runs of the same recipe reuse
them while the lake holds between `rows` and `rows * (1 + select.refit_growth)` pairs
and the scores come from the same model. Past that, or with `select --refit`, every
fitted rule of the recipe is fitted again (as semantic dedup refits its centroids).

Churn is what a run takes out of the previous selection of its recipe: uids that
were kept and no longer are, by cause:

  better_keeper    a `not_duplicate` rule dropped it: it became a duplicate of a
                   (new) better keeper;
  threshold_refit  a fitted rule dropped it in a run that refitted;
  concept_balance  MetaCLIP balancing dropped it: its concepts' counts grew;
  other            any other rule (its inputs changed: a new score, a caption group
                   that filled up).

`lakecurate versions diff` gives the same causes between two dataset versions, plus
`rule_change` when their recipes differ.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from lakecurate.curation.selection.rules import BalanceRule, FittedRule, NotDuplicateRule, Rule

BETTER_KEEPER, THRESHOLD_REFIT, RULE_CHANGE, CONCEPT_BALANCE, OTHER = (
    "better_keeper",
    "threshold_refit",
    "rule_change",
    "concept_balance",
    "other",
)


@dataclass
class Thresholds:
    """The thresholds of one run's fitted rules: `frozen` ones by rule label, the rest
    fitted on the rows in play (`get`). `used` records what every fitted rule used."""

    frozen: dict[str, Any] = field(default_factory=dict)
    used: dict[str, Any] = field(default_factory=dict)
    fitted: list[str] = field(default_factory=list)

    def get(self, label: str, rule: FittedRule, in_play) -> Any:
        if label in self.frozen:
            value = self.frozen[label]
        else:
            value = rule.fit(in_play)
            self.fitted.append(label)
        self.used[label] = value
        return value


@dataclass(frozen=True)
class Fit:
    """A stored fit: the thresholds by rule label, and the lake it was fitted on."""

    values: dict[str, Any]
    rows: int  # pairs in the lake at the fit
    model_id: str  # the model whose scores were fitted ("" when no rule reads one)
    run_id: str = ""

    def to_json(self) -> str:
        doc = {"values": self.values, "rows": self.rows, "model_id": self.model_id}
        return json.dumps({**doc, "run_id": self.run_id}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Fit:
        d = json.loads(text)
        return cls(d["values"], int(d["rows"]), d.get("model_id") or "", d.get("run_id") or "")


def fitted_labels(rules, labels: list[str]) -> list[str]:
    return [lab for r, lab in zip(rules, labels, strict=True) if isinstance(r, FittedRule)]


def stored_fit(history: list[dict], recipe_id: str, at_version: int | None = None) -> Fit | None:
    """The fit recorded by the newest `selection` commit of `recipe_id` (at or before
    `at_version`, if given) that recorded one."""
    runs = [
        h
        for h in history
        if h.get("recipe_id") == recipe_id
        and h.get("thresholds")
        and (at_version is None or (h.get("version") or 0) <= at_version)
    ]
    if not runs:
        return None
    return Fit.from_json(max(runs, key=lambda h: h["version"])["thresholds"])


def refit_reason(
    fit: Fit | None, rows: int, model_id: str, growth: float, force: bool = False
) -> str | None:
    """Why the fitted rules must be fitted again (None: reuse `fit`)."""
    if force:
        return "asked for (--refit)"
    if fit is None:
        return "no earlier fit of this recipe"
    if fit.model_id != model_id:
        return f"scores now come from {model_id or 'no model'}, the fit used {fit.model_id}"
    if rows < fit.rows:
        return f"the lake holds {rows} pairs, fewer than the {fit.rows} of the fit"
    if rows > fit.rows * (1.0 + growth):
        return f"the lake grew from {fit.rows} to {rows} pairs, past select.refit_growth {growth:g}"
    return None


def cause_of(rule: Rule | type[Rule] | None, refitted: bool) -> str:
    """The churn cause of a uid dropped by `rule` (a rule or its class) that the
    previous selection kept."""
    if rule is None:
        return OTHER
    cls = rule if isinstance(rule, type) else type(rule)
    if issubclass(cls, NotDuplicateRule):
        return BETTER_KEEPER
    if issubclass(cls, BalanceRule):
        return CONCEPT_BALANCE
    if issubclass(cls, FittedRule) and refitted:
        return THRESHOLD_REFIT
    return OTHER


def rule_classes(canonical_rules: list[dict]) -> dict[str, type[Rule]]:
    """Rule label -> rule class, from a recipe's canonical rules (as a selection commit
    records them in `recipe_rules`); unknown rule names are left out."""
    from lakecurate.curation.selection.rules import RULES

    out, seen = {}, set()
    for i, r in enumerate(canonical_rules, 1):
        name = r.get("rule", "")
        base = (RULES[name].label or name) if name in RULES else name
        label = base if base not in seen else f"{base}#{i}"
        seen.add(base)
        if name in RULES:
            out[label] = RULES[name]
    return out


def count_by_cause(by_rule: dict[str, int], classes: dict, refitted: bool) -> dict[str, int]:
    """Dropped counts by rule label -> counts by churn cause."""
    by_cause: dict[str, int] = {}
    for label, n in by_rule.items():
        cause = cause_of(classes.get(label), refitted)
        by_cause[cause] = by_cause.get(cause, 0) + n
    return dict(sorted(by_cause.items()))


def churn(previous_kept, labeled, rules, labels: list[str], refitted: bool) -> dict:
    """What this run takes out of the previous selection: the uids of `previous_kept`
    (a DataFrame of uid) that `labeled` drops, counted by cause and by rule label."""
    from pyspark.sql import functions as F

    rows = (
        previous_kept.join(labeled.select("uid", "reason"), "uid")
        .filter(F.col("reason").isNotNull())
        .groupBy("reason")
        .count()
        .collect()
    )
    by_rule = {r["reason"]: int(r["count"]) for r in rows}
    classes = {label: type(rule) for label, rule in zip(labels, rules, strict=True)}
    return {
        "removed": sum(by_rule.values()),
        "by_cause": count_by_cause(by_rule, classes, refitted),
        "by_rule": dict(sorted(by_rule.items())),
    }
