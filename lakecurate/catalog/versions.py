"""`lakecurate versions list|show|diff|tag|retire|materialize`: dataset versions as
things to trust.

Reads `datasets` (and, for `diff`, `selection`/`pairs`/`duplicates` at the versions each
dataset version pins). `tag` and `retire` write `datasets`: the rows of one dataset name
are replaced in one new commit (`Lake.replace_where`), so every earlier state stays in
the table's Delta history (`lakecurate history datasets`).

A tag names one version of a dataset at a time: tagging `demo@3 prod` moves `prod` off
whichever version had it. A retired version is no longer protected by `vacuum`.
`materialize` writes an exact copy of a version whose shards carry deletion lists
(`lakecurate.curation.publish.materialize`). Every subcommand takes `--json` (one JSON document on stdout).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable

from lakecurate.catalog.dataset import (
    RETIRED,
    DatasetVersion,
    check_tag,
    dataset_rows,
    kept_uids,
    parse_ref,
    resolve,
)
from lakecurate.deltaio.lake import Commit, Lake, new_run_id
from lakecurate.runtime import jobkit
from lakecurate.runtime.config import Config, config_hash
from lakecurate.runtime.errors import ConfigError

NAME = "versions"
HELP = "list, show, diff, tag and retire published dataset versions"
NEEDS_SPARK = True
SAMPLE = 10


def writes(args: argparse.Namespace) -> bool:
    """`tag` and `retire` write `datasets`; the rest only read."""
    return getattr(args, "action", None) in ("tag", "retire")


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    s = sub.add_parser("list", help="every version: status, tags, counts, date")
    s.add_argument("name", nargs="?", help="only this dataset")
    s = sub.add_parser("show", help="one version: manifest, pinned versions, recipe, funnel")
    s.add_argument("ref", metavar="NAME[@V|@TAG]")
    s = sub.add_parser("diff", help="uids added and removed between two versions, and why")
    s.add_argument("a", metavar="NAME@A")
    s.add_argument("b", metavar="NAME@B")
    s.add_argument("--sample", type=int, default=SAMPLE, help="uids listed per side")
    s.add_argument("--all", action="store_true", help="list every added/removed uid")
    s = sub.add_parser("tag", help="put TAG on NAME@V (moving it off any other version)")
    s.add_argument("ref", metavar="NAME@V")
    s.add_argument("tag", metavar="TAG")
    s.add_argument("--remove", action="store_true", help="take TAG off NAME@V instead")
    s = sub.add_parser("retire", help="mark NAME@V retired: vacuum may then drop its files")
    s.add_argument("ref", metavar="NAME@V")
    s = sub.add_parser(
        "materialize",
        help="write an exact copy of NAME@V (deletion lists applied) for readers that "
        "cannot filter",
    )
    s.add_argument("ref", metavar="NAME@V")
    s.add_argument("--out", required=True, help="directory (path or fsspec URI) for the copy")
    for sp in sub.choices.values():  # --json, --lake, ... also after the action
        jobkit.add_global_arguments(sp, suppress=True)


# --- list / show ---------------------------------------------------------------------------


def do_list(spark, lake: Lake, args) -> tuple[dict, str]:
    rows = dataset_rows(spark, lake, args.name)
    doc = {"datasets": [r.to_json() for r in rows]}
    lines = [f"{'dataset':<24} {'status':<9} {'samples':>8} {'shards':>6}  created            tags"]
    for r in rows:
        created = str(r.created_at)[:19] if r.created_at else "-"
        lines.append(
            f"{r.ref:<24} {r.status:<9} {r.num_samples:>8} {r.num_shards:>6}  "
            f"{created:<19} {','.join(r.tags)}"
        )
    if not rows:
        lines.append("(no dataset versions yet: `lakecurate publish NAME`)")
    return doc, "\n".join(lines)


def do_show(spark, lake: Lake, args) -> tuple[dict, str]:
    name, sel = parse_ref(args.ref)
    dv = resolve(spark, lake, name, sel)
    try:
        manifest = dv.manifest()
    except Exception as e:  # shards moved/deleted: the row still says what the version is
        manifest = {"error": str(e)}
    doc = {"dataset": dv.to_json(), "manifest": manifest}
    fun = manifest.get("funnel") or {}
    lines = [
        f"{dv.ref}  ({dv.status}{', tags: ' + ','.join(dv.tags) if dv.tags else ''})",
        f"  samples:  {dv.num_samples} in {dv.num_shards} shards at {dv.shard_uri}",
        f"  recipe:   {dv.recipe_id}   model: {dv.model_id or '-'}   config: {dv.config_hash}",
        "  pinned:   " + ", ".join(f"{t}@v{v}" for t, v in sorted(dv.pinned.items())),
        f"  created:  {dv.created_at}   run: {dv.run_id}",
        f"  selection_hash: {dv.selection_hash}",
        f"  layout:   {_layout(manifest.get('layout') or {}, dv.name)}",
    ]
    if manifest.get("exact") is False:
        lines.append(
            "  exact:    no (deletion lists: read with lakecurate.dataset, or "
            f"`lakecurate versions materialize {dv.ref} --out DIR`)"
        )
    if fun:
        lines.append(f"  funnel:   {fun.get('total')} rows -> {fun.get('kept')} kept")
        for reason, n in sorted(fun.get("dropped", {}).items(), key=lambda kv: -kv[1]):
            lines.append(f"            - {n:>7}  {reason}")
        for d in fun.get("duplicate_drops") or []:
            by = ", ".join(f"{m} {n}" for m, n in d["dropped_by_method"].items())
            kept = d["duplicates_kept_keeper_dropped_earlier"]
            lines.append(f"            {d['rule']} by method: {by}")
            lines.append(f"            {kept} duplicates kept: their keeper was dropped earlier")
    return doc, "\n".join(lines)


def _layout(lay: dict, name: str) -> str:
    if lay.get("mode") != "incremental":
        return lay.get("mode", "full")
    text = (
        f"incremental over {name}@{lay['parent_version']}: {lay['reuse_shards']} shards "
        f"reused, {lay['rewrite_shards']} rewritten, {lay['merge_shards']} merged, "
        f"{lay['drop_shards']} dropped; {lay['added']} samples added"
    )
    if lay.get("shards_with_deletions"):
        text += (
            f"; {lay['deleted']} samples in the deletion lists of "
            f"{lay['shards_with_deletions']} shards"
        )
    return text


# --- diff ----------------------------------------------------------------------------------


def published_uids(spark, lake: Lake, dv: DatasetVersion):
    """The uids a version holds, rebuilt from its pinned tables (kept and with a pairs row)."""
    uids = kept_uids(spark, lake, dv.pinned["selection"], dv.recipe_id)
    pairs = lake.read(spark, "pairs", dv.pinned["pairs"]).select("uid")
    return uids.join(pairs, "uid")


def _verdicts(spark, lake: Lake, dv: DatasetVersion):
    """uid, kept, reason of the version's recipe at its pinned selection, plus duplicates."""
    from pyspark.sql import functions as F

    sel = lake.read(spark, "selection", dv.pinned["selection"])
    sel = sel.filter(F.col("recipe_id") == dv.recipe_id).select("uid", "kept", "reason")
    if "duplicates" not in dv.pinned:
        return sel.withColumn("dup_method", F.lit(None).cast("string")).withColumn(
            "duplicate_of", F.lit(None).cast("string")
        )
    dup = lake.read(spark, "duplicates", dv.pinned["duplicates"])
    dup = (
        dup.filter(F.col("uid") != F.col("keeper_uid"))
        .groupBy("uid")
        .agg(
            F.concat_ws(",", F.array_sort(F.collect_set("method"))).alias("dup_method"),
            F.min("keeper_uid").alias("duplicate_of"),
        )
    )
    return sel.join(dup, "uid", "left")


def _explain(spark, lake: Lake, uids, at: DatasetVersion, other_reasons: set[str]):
    """Why each uid is (not) in `at`: its reason there, the kind, and whether it is new."""
    from pyspark.sql import functions as F

    v = _verdicts(spark, lake, at)
    df = uids.join(v, "uid", "left")
    reason = (
        F.when(F.col("kept").isNull(), F.lit("not in selection"))
        .when(F.col("kept"), F.lit("kept, but no pairs row"))
        .otherwise(F.coalesce(F.col("reason"), F.lit("unknown")))
    )
    kind = (
        F.when(F.col("dup_method").isNotNull(), F.lit("duplicate"))
        .when(F.col("kept").isNull() | F.col("kept"), F.lit("missing"))
        .otherwise(F.lit("rule"))
    )
    return df.select(
        "uid",
        reason.alias("reason"),
        kind.alias("kind"),
        "dup_method",
        "duplicate_of",
        (~reason.isin(list(other_reasons) or [""])).alias("new_reason"),
    )


def diff_versions(
    spark, lake: Lake, a: DatasetVersion, b: DatasetVersion, sample: int | None
) -> dict:
    """Added and removed uids between two versions, with counts, a sample of each side
    (every uid if `sample` is None) and the reason of each listed uid."""
    ua, ub = published_uids(spark, lake, a), published_uids(spark, lake, b)
    added, removed = ub.join(ua, "uid", "left_anti"), ua.join(ub, "uid", "left_anti")
    reasons_a = set(_funnel(a).get("dropped", {}))
    reasons_b = set(_funnel(b).get("dropped", {}))
    # removed: why it left (its verdict at B); added: why it was out at A
    gone = _explain(spark, lake, removed, b, reasons_a).persist()
    came = _explain(spark, lake, added, a, reasons_b).persist()
    try:
        removed_side = _side(gone=True, df=gone, sample=sample)
        return {
            "a": a.ref,
            "b": b.ref,
            "recipe_changed": a.recipe_id != b.recipe_id,
            "pinned": {"a": a.pinned, "b": b.pinned},
            "num_samples": {"a": a.num_samples, "b": b.num_samples},
            "added": _side(gone=False, df=came, sample=sample),
            "removed": removed_side,
            "churn": churn_between(lake, a, b, removed_side["by_reason"]),
        }
    finally:
        gone.unpersist()
        came.unpersist()


def churn_between(lake: Lake, a: DatasetVersion, b: DatasetVersion, by_reason: dict) -> dict:
    """The samples of A missing from B, by cause (see `selection.thresholds`): every
    one is a `rule_change` when the recipes differ; else a refit is a change of the
    recipe's frozen thresholds between the selections A and B pin."""
    from lakecurate.curation.selection.thresholds import (
        RULE_CHANGE,
        count_by_cause,
        rule_classes,
        stored_fit,
    )

    removed = sum(by_reason.values())
    if a.recipe_id != b.recipe_id:
        return {"removed": removed, "by_cause": {RULE_CHANGE: removed} if removed else {}}
    history = lake.history("selection")
    fits = [stored_fit(history, b.recipe_id, dv.pinned["selection"]) for dv in (a, b)]
    refitted = fits[0] != fits[1]
    runs = [
        h
        for h in history
        if h.get("recipe_id") == b.recipe_id and h["version"] <= b.pinned["selection"]
    ]
    rules = (
        json.loads(max(runs, key=lambda h: h["version"]).get("recipe_rules") or "[]")
        if runs
        else []
    )
    causes = count_by_cause(by_reason, rule_classes(rules), refitted)
    return {"removed": removed, "by_cause": causes, "thresholds_refitted": refitted}


def _side(gone: bool, df, sample: int | None) -> dict:
    by_reason = {r["reason"]: int(r["count"]) for r in df.groupBy("reason").count().collect()}
    ordered = df.orderBy("uid")
    rows = [r.asDict() for r in (ordered if sample is None else ordered.limit(sample)).collect()]
    key = "reason_at_b" if gone else "reason_at_a"
    for r in rows:
        r[key] = r.pop("reason")
    return {
        "count": sum(by_reason.values()),
        "by_reason": dict(sorted(by_reason.items(), key=lambda kv: (-kv[1], kv[0]))),
        "sample": rows,
    }


def _funnel(dv: DatasetVersion) -> dict:
    try:
        return dv.manifest().get("funnel") or {}
    except Exception:
        return {}


def do_diff(spark, lake: Lake, args) -> tuple[dict, str]:
    if args.sample < 0:
        raise ConfigError("--sample", "must be >= 0")
    (na, sa), (nb, sb) = parse_ref(args.a, None), parse_ref(args.b, None)
    if sa is None or sb is None:
        raise ConfigError(
            "NAME@A NAME@B", "give a version or tag on both sides, e.g. demo@1 demo@2"
        )
    a, b = resolve(spark, lake, na, sa), resolve(spark, lake, nb, sb)
    doc = diff_versions(spark, lake, a, b, None if args.all else args.sample)
    lines = [f"{a.ref} ({a.num_samples}) -> {b.ref} ({b.num_samples})"]
    for side, label in (("added", "reason at A"), ("removed", "reason at B")):
        d = doc[side]
        lines.append(f"  {side}: {d['count']}  ({label})")
        for reason, n in d["by_reason"].items():
            lines.append(f"    {n:>7}  {reason}")
    causes = ", ".join(f"{k} {v}" for k, v in doc["churn"]["by_cause"].items())
    lines.append(
        f"  churn: {doc['churn']['removed']} of {a.ref} missing from {b.ref}"
        + (f" ({causes})" if causes else "")
    )
    return doc, "\n".join(lines)


# --- tag / retire ------------------------------------------------------------------------


def _rewrite(spark, lake: Lake, cfg: Config, dv: DatasetVersion, change, action: str) -> int:
    """Replace the rows of `dv.name` with `change(df)` in one commit; return the version."""
    from pyspark.sql import functions as F

    rows = lake.read(spark, "datasets").filter(F.col("name") == dv.name)
    commit = Commit(NAME, new_run_id(NAME), config_hash(cfg))
    version, _ = lake.replace_where(
        change(rows), "datasets", "name", dv.name, commit, action=action, dataset=dv.ref
    )
    return version


def do_tag(spark, lake: Lake, args, cfg: Config) -> tuple[dict, str]:
    from pyspark.sql import functions as F

    name, sel = parse_ref(args.ref, None)
    if sel is None:
        raise ConfigError("NAME@V", f"{args.ref!r}: say which version to tag, e.g. {name}@1")
    tag = check_tag(args.tag)
    dv = resolve(spark, lake, name, sel)
    tags = F.coalesce(F.col("tags"), F.array().cast("array<string>"))
    this = F.col("version") == dv.version
    if args.remove:
        new = F.when(this, F.array_remove(tags, tag)).otherwise(tags)
    else:
        new = F.when(this, F.array_sort(F.array_union(tags, F.array(F.lit(tag))))).otherwise(
            F.array_remove(tags, tag)
        )
    v = _rewrite(spark, lake, cfg, dv, lambda df: df.withColumn("tags", new), "tag")
    after = resolve(spark, lake, name, dv.version)
    verb = "removed from" if args.remove else "on"
    return {"dataset": after.to_json(), "datasets_version": v}, f"{tag} {verb} {after.ref}"


def do_retire(spark, lake: Lake, args, cfg: Config) -> tuple[dict, str]:
    from pyspark.sql import functions as F

    name, sel = parse_ref(args.ref, None)
    if sel is None:
        raise ConfigError("NAME@V", f"{args.ref!r}: say which version to retire, e.g. {name}@1")
    dv = resolve(spark, lake, name, sel)
    status = F.when(F.col("version") == dv.version, F.lit(RETIRED)).otherwise(F.col("status"))
    v = _rewrite(spark, lake, cfg, dv, lambda df: df.withColumn("status", status), "retire")
    after = resolve(spark, lake, name, dv.version)
    return {"dataset": after.to_json(), "datasets_version": v}, f"retired {after.ref}"


def do_materialize(spark, lake: Lake, args, cfg: Config) -> tuple[dict, str]:
    from lakecurate.curation.publish.materialize import materialize

    name, sel = parse_ref(args.ref, default=None)
    if sel is None:
        raise ConfigError("NAME@V", f"{args.ref!r}: name the version (NAME@V or NAME@TAG)")
    dv = resolve(spark, lake, name, sel)
    man = materialize(spark, dv, args.out)
    done = man["materialized_from"]
    text = (
        f"{dv.ref}: exact copy at {args.out}: {man['counts']['num_samples']} samples in "
        f"{man['counts']['num_shards']} shards ({done['rewritten_shards']} rewritten "
        "without their deleted samples)"
    )
    return {"dataset": dv.ref, "out": args.out, "manifest": man}, text


ACTIONS: dict[str, Callable] = {
    "list": lambda spark, lake, args, cfg: do_list(spark, lake, args),
    "show": lambda spark, lake, args, cfg: do_show(spark, lake, args),
    "diff": lambda spark, lake, args, cfg: do_diff(spark, lake, args),
    "tag": do_tag,
    "retire": do_retire,
    "materialize": do_materialize,
}


def command(spark, cfg: Config, args: argparse.Namespace) -> int:
    doc, text = ACTIONS[args.action](spark, Lake(cfg.lake.path), args, cfg)
    if getattr(args, "json", False):
        print(json.dumps(doc, default=str))
    else:
        print(text)
    return 0


build_parser, main = jobkit.entry_points(__name__)


if __name__ == "__main__":
    sys.exit(main())
