"""Builders for the publish/versions/dataset/report tests: a small curated lake.

`pairs` comes from the session sample set (the `pairs_lake` fixture); `selection`,
`embeddings`, `signals` and `duplicates` rows are written directly with `lake.write`,
so these tests do not depend on the ingest/embed/dedup/select jobs.
"""

from __future__ import annotations

import hashlib

import pyarrow as pa

from lakecurate.curation.models import model_id
from lakecurate.deltaio.lake import Commit
from lakecurate.schemas import TABLES

COMMIT = Commit("test", "test-run")


def recipe_id(cfg) -> str:
    """The recipe id publish will look for (select's `recipe_id_for` once it exists)."""
    try:
        from lakecurate.curation.selection.recipes import recipe_id_for
    except ImportError:
        return "test-recipe"
    return recipe_id_for(cfg)


def _h(uid: str, salt: str = "") -> int:
    return int(hashlib.sha256((salt + uid).encode()).hexdigest()[:8], 16)


def verdict(uid: str, round_: int = 0) -> tuple[bool, str | None]:
    """A deterministic stand-in for a recipe: ~70% kept; reasons like a real recipe's.

    Round 1 relaxes the caption rule (some uids come back) and finds new near
    duplicates (some uids leave), so versions 1 and 2 differ both ways.
    """
    h = _h(uid) % 100
    if h < 10:
        return False, "duplicate:exact"
    if h < 20:
        return False, "clip_score<0.2"
    if h < (25 if round_ else 30):
        return False, "caption_words<3"
    if round_ >= 1 and 30 <= h < 38:
        return False, "duplicate:phash"
    return True, None


def write_rows(spark, lake, table: str, rows: list[dict], mode: str = "append") -> int:
    spec = TABLES[table]
    t = pa.Table.from_pylist(rows, schema=spec.schema)
    df = spark.createDataFrame(t.to_pandas(), spec.spark_schema())
    return lake.write(df, table, COMMIT, mode=mode)


def selection_rows(uids: list[str], rid: str, round_: int = 0) -> list[dict]:
    rows = []
    for u in uids:
        kept, reason = verdict(u, round_)
        rows.append({"uid": u, "recipe_id": rid, "kept": kept, "reason": reason, "run_id": "r"})
    return rows


def write_selection(spark, lake, cfg, uids: list[str], round_: int = 0) -> int:
    rows = selection_rows(uids, recipe_id(cfg), round_)
    return write_rows(spark, lake, "selection", rows, mode="overwrite")


def build_curated_lake(spark, lake, cfg, sample_set) -> list[str]:
    """pairs (the `pairs_lake` fixture already wrote them) + the other tables; returns uids."""
    pairs = sample_set.pair_rows()
    uids = [r["uid"] for r in pairs]
    mid = model_id(cfg.model)
    emb, sig, dup = [], [], []
    for i, r in enumerate(pairs):
        u = r["uid"]
        score = (_h(u, "s") % 1000) / 1000 * 0.4
        emb.append(
            {
                "uid": u,
                "model_id": mid,
                "image_emb": [0.1, 0.2],
                "text_emb": [0.3, 0.4],
                "clip_score": score,
                "run_id": "r",
                "embedded_at": None,
            }
        )
        w, hgt = r["width"], r["height"]
        sig.append(
            {
                "uid": u,
                "phash": _h(u, "p"),
                "caption_sha256": u[:16],
                "caption_chars": len(r["caption"]),
                "caption_words": len(r["caption"].split()),
                "width": w,
                "height": hgt,
                "aspect": max(w, hgt) / min(w, hgt),
                "resolution": min(w, hgt),
                "semantic_cluster": i % 5,
                "centroid_sim": 0.5,
                "run_id": "r",
            }
        )
        if verdict(u)[1] == "duplicate:exact":
            keeper = uids[0]
            dup.append(
                {
                    "uid": u,
                    "method": "exact",
                    "group_id": "g" + keeper[:8],
                    "keeper_uid": keeper,
                    "similarity": 1.0,
                    "config_slug": "x",
                    "run_id": "r",
                }
            )
    write_rows(spark, lake, "embeddings", emb)
    write_rows(spark, lake, "signals", sig)
    write_rows(spark, lake, "duplicates", dup)
    write_selection(spark, lake, cfg, uids)
    return uids


_TEMPLATE: dict = {}


def publish_config(path: str, name: str, shard_size: int):
    """A config for these tests: the lake at `path`, the tiny model, dataset `name`."""
    from lakecurate.runtime.config import load_config

    return load_config(
        None,
        {
            "lake.path": path,
            "model.name": "lakecurate-tiny",
            "model.pretrained": "none",
            "spark.shuffle_partitions": 2,
            "publish.name": name,
            "publish.shard_size": shard_size,
        },
    )


def curated_template(spark, tmp_path_factory, sample_set) -> dict:
    """Once per test session: a curated lake with `demo@1` (round 0) and `demo@2` (round 1).

    Tests that only read use it as is; tests that change it work on `copy_lake`.
    """
    if _TEMPLATE:
        return _TEMPLATE
    from lakecurate.deltaio.lake import Lake
    from lakecurate.jobs import publish

    root = tmp_path_factory.mktemp("curated")
    path = str(root / "lake")
    cfg = publish_config(path, "demo", 64)
    lake = Lake(path)
    pairs = sample_set.pair_rows()
    write_rows(spark, lake, "pairs", pairs)
    uids = build_curated_lake(spark, lake, cfg, sample_set)
    r1 = publish.run(spark, cfg)
    write_selection(spark, lake, cfg, uids, round_=1)
    r2 = publish.run(spark, cfg)
    _TEMPLATE.update(
        path=path,
        cfg=cfg,
        uids=uids,
        results={1: r1, 2: r2},
        kept={r: sorted(u for u in uids if verdict(u, r)[0]) for r in (0, 1)},
    )
    return _TEMPLATE


def copy_lake(template: dict, dest) -> tuple:
    """A private copy of the template's tables (shards stay where the template wrote them)."""
    import shutil

    from lakecurate.deltaio.lake import Lake
    from lakecurate.runtime.config import replace

    path = str(dest / "lake")
    shutil.copytree(template["path"], path, ignore=shutil.ignore_patterns("_published"))
    return Lake(path), replace(template["cfg"], lake={"path": path})
