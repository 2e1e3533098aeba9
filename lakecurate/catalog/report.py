"""`lakecurate report NAME[@V]`: one self-contained HTML page about a dataset version.

Reads, at the versions the dataset pins: `selection` (its recipe's verdicts), `pairs`
(captions, sizes, thumbnails), `embeddings` (clip_score of its model), `signals`
(semantic clusters) and `duplicates`. Writes one HTML file (default
`<lake>/_reports/<name>-v<N>.html`) with inline SVG plots and JPEG thumbnails as data
URIs, so it opens offline and can be mailed around. Sections: the selection funnel,
CLIP-score histogram kept vs dropped, duplicate group sizes per method, cluster sizes,
caption length and resolution distributions, and a grid of kept and dropped samples
with their reasons. `deploy/report_screenshot.sh` renders it in headless Chromium.
"""

from __future__ import annotations

import argparse
import base64
import html
import io
import json
import sys
from dataclasses import dataclass, field

from lakecurate.catalog.dataset import DatasetVersion, parse_ref, resolve
from lakecurate.deltaio.lake import Lake
from lakecurate.runtime import jobkit
from lakecurate.runtime.config import Config

NAME = "report"
HELP = "write a self-contained HTML report of a dataset version (plots and thumbnails)"
NEEDS_SPARK = True
SECTIONS = (
    "funnel",
    "clip-score",
    "duplicates",
    "duplicate-pairs",
    "clusters",
    "captions",
    "resolution",
    "samples",
    "concepts",
    "probes",
)
KEPT_COLOR, DROP_COLOR = "#2b8a3e", "#c92a2a"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("ref", metavar="NAME[@V]", help="dataset version (default: latest)")
    p.add_argument("--out", help="HTML file (path or fsspec URI)")
    p.add_argument("--thumbs", type=int, default=24, help="thumbnails per side (default 24)")


# --- plots: small inline SVG, no plotting dependency -----------------------------------


@dataclass
class Chart:
    """A bar chart: categories on x, one or more series drawn side by side."""

    title: str
    labels: list[str]
    series: dict[str, list[float]]
    colors: list[str] = field(default_factory=lambda: [KEPT_COLOR, DROP_COLOR, "#1864ab"])
    xlabel: str = ""
    width: int = 640
    height: int = 260

    def svg(self) -> str:
        pad_l, pad_b, pad_t = 48, 46, 24
        w, h = self.width - pad_l - 10, self.height - pad_b - pad_t
        top = max([max(v, default=0) for v in self.series.values()] + [1])
        n, k = max(len(self.labels), 1), max(len(self.series), 1)
        slot = w / n
        bar = max(slot * 0.8 / k, 0.5)
        out = _frame(self.title, self.width, self.height, pad_l, pad_t, w, h, top)
        for s, (name, values) in enumerate(self.series.items()):
            color = self.colors[s % len(self.colors)]
            for i, v in enumerate(values):
                bh = h * v / top
                x = pad_l + i * slot + slot * 0.1 + s * bar
                out.append(
                    f'<rect x="{x:.1f}" y="{pad_t + h - bh:.1f}" width="{bar:.1f}" '
                    f'height="{bh:.1f}" fill="{color}"><title>{html.escape(name)} '
                    f"{html.escape(self.labels[i])}: {_num(v)}</title></rect>"
                )
            lx = self.width - 80 * (k - s)  # legend in the title row, right-aligned
            out.append(
                f'<rect x="{lx}" y="6" width="10" height="10" fill="{color}"/>'
                f'<text x="{lx + 14}" y="15" font-size="11">{html.escape(name)}</text>'
            )
        every = max(1, n // 12)
        for i, label in enumerate(self.labels):
            if i % every == 0:
                x = pad_l + i * slot + slot / 2
                out.append(
                    f'<text x="{x:.1f}" y="{pad_t + h + 14}" font-size="10" '
                    f'text-anchor="middle">{html.escape(label[:14])}</text>'
                )
        out.append(
            f'<text x="{pad_l + w / 2}" y="{self.height - 6}" font-size="11" '
            f'text-anchor="middle">{html.escape(self.xlabel)}</text></svg>'
        )
        return "".join(out)


@dataclass
class Lines:
    """A line chart: one polyline per series of (x, y) points."""

    title: str
    series: dict[str, list[tuple[float, float]]]
    xlabel: str = ""
    colors: list[str] = field(default_factory=lambda: ["#1864ab", "#c92a2a", "#2b8a3e", "#e67700"])
    width: int = 640
    height: int = 260

    def svg(self) -> str:
        pad_l, pad_b, pad_t = 48, 46, 24
        w, h = self.width - pad_l - 10, self.height - pad_b - pad_t
        pts = [p for v in self.series.values() for p in v]
        x1 = max([p[0] for p in pts] + [1])
        y1 = max([p[1] for p in pts] + [1e-9])
        out = _frame(self.title, self.width, self.height, pad_l, pad_t, w, h, y1)
        out.append(
            f'<text x="{pad_l + w}" y="{pad_t + h + 14}" font-size="10" text-anchor="end">'
            f"{_num(x1)}</text>"
        )
        for s, (name, points) in enumerate(self.series.items()):
            color = self.colors[s % len(self.colors)]
            xy = " ".join(
                f"{pad_l + w * x / x1:.1f},{pad_t + h - h * y / y1:.1f}" for x, y in points
            )
            out.append(f'<polyline fill="none" stroke="{color}" stroke-width="1.5" points="{xy}"/>')
            out.append(
                f'<text x="{pad_l + 8}" y="{pad_t + 14 + 13 * s}" font-size="11" '
                f'fill="{color}">{html.escape(name)}</text>'
            )
        out.append(
            f'<text x="{pad_l + w / 2}" y="{self.height - 6}" font-size="11" '
            f'text-anchor="middle">{html.escape(self.xlabel)}</text></svg>'
        )
        return "".join(out)


def _frame(title: str, width: int, height: int, x0: int, y0: int, w: float, h: float, top):
    """The opening of a chart: the svg element, its title, the x axis, the y maximum."""
    return [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" '
        f'height="{height}" role="img" aria-label="{html.escape(title)}">',
        f'<text x="{x0}" y="15" font-size="13" font-weight="bold">{html.escape(title)}</text>',
        f'<line x1="{x0}" y1="{y0 + h}" x2="{x0 + w}" y2="{y0 + h}" stroke="#333"/>',
        f'<text x="{x0 - 4}" y="{y0 + 8}" font-size="10" text-anchor="end">{_num(top)}</text>',
    ]


def _num(v: float) -> str:
    return f"{v:.0f}" if float(v).is_integer() else f"{v:.3g}"


def histogram(rows: list[dict], width: float, key: str = "bin") -> tuple[list[str], dict]:
    """Rows of (bin, kept, n) -> labels and {kept, dropped} count series over every bin."""
    bins = sorted({r[key] for r in rows if r[key] is not None})
    if not bins:
        return [], {"kept": [], "dropped": []}
    all_bins = [bins[0] + i for i in range(int(bins[-1] - bins[0]) + 1)]
    series = {"kept": [0.0] * len(all_bins), "dropped": [0.0] * len(all_bins)}
    for r in rows:
        if r[key] is not None:
            series["kept" if r["kept"] else "dropped"][int(r[key] - bins[0])] += r["n"]
    return [_num(b * width) for b in all_bins], series


# --- data at the pinned versions --------------------------------------------------------


def verdict_frame(spark, lake: Lake, dv: DatasetVersion):
    """uid, kept, reason, caption_chars, resolution, clip_score, cluster for the recipe."""
    from pyspark.sql import functions as F

    p = dv.pinned
    sel = lake.read(spark, "selection", p["selection"]).filter(F.col("recipe_id") == dv.recipe_id)
    df = sel.select("uid", "kept", "reason").join(
        lake.read(spark, "pairs", p["pairs"]).select(
            "uid",
            F.length("caption").alias("caption_chars"),
            F.least("width", "height").alias("resolution"),
        ),
        "uid",
        "left",
    )
    if "embeddings" in p and dv.model_id:
        emb = lake.read(spark, "embeddings", p["embeddings"])
        emb = emb.filter(F.col("model_id") == dv.model_id).select("uid", "clip_score")
        df = df.join(emb.dropDuplicates(["uid"]), "uid", "left")
    else:
        df = df.withColumn("clip_score", F.lit(None).cast("float"))
    if "signals" in p:
        sig = lake.read(spark, "signals", p["signals"]).select("uid", "semantic_cluster")
        df = df.join(sig, "uid", "left")
    else:
        df = df.withColumn("semantic_cluster", F.lit(None).cast("int"))
    return df


def _binned(df, column: str, width: float) -> list[dict]:
    from pyspark.sql import functions as F

    b = F.floor(F.col(column) / F.lit(width)).cast("long").alias("bin")
    rows = df.groupBy(b, "kept").agg(F.count("*").alias("n")).collect()
    return [r.asDict() for r in rows]


def duplicate_sizes(spark, lake: Lake, dv: DatasetVersion) -> dict[str, dict[int, int]]:
    """method -> {group size: number of groups}."""
    from pyspark.sql import functions as F

    if "duplicates" not in dv.pinned:
        return {}
    dup = lake.read(spark, "duplicates", dv.pinned["duplicates"])
    sizes = dup.groupBy("method", "group_id").agg(F.count("*").alias("size"))
    rows = sizes.groupBy("method", "size").agg(F.count("*").alias("groups")).collect()
    out: dict[str, dict[int, int]] = {}
    for r in rows:
        out.setdefault(r["method"], {})[int(r["size"])] = int(r["groups"])
    return out


def thumbnails(spark, lake: Lake, dv: DatasetVersion, frame, n: int) -> dict[str, list[dict]]:
    """Up to `n` kept and `n` dropped samples (a fixed pseudo-random pick by uid)."""
    from pyspark.sql import functions as F

    pairs = lake.read(spark, "pairs", dv.pinned["pairs"]).select("uid", "caption", "image")
    out = {}
    for side, cond in (("kept", F.col("kept")), ("dropped", ~F.col("kept"))):
        pick = frame.filter(cond).select("uid", "reason", "clip_score")
        pick = pick.orderBy(F.sha2("uid", 256)).limit(n).join(pairs, "uid")
        out[side] = [_thumb(r.asDict()) for r in pick.orderBy("uid").collect()]
    return out


def duplicate_pairs(spark, lake: Lake, dv: DatasetVersion, frame, n: int) -> list[dict]:
    """Up to `n` rows dropped as duplicates (a fixed pseudo-random pick by uid), each
    with the keeper it was dropped for, the method and the similarity: a person can see
    at a glance whether the drops are right."""
    from pyspark.sql import functions as F

    if "duplicates" not in dv.pinned:
        return []
    # the labels of duplicate rules: not_duplicate (or not_duplicate#N when used twice)
    dropped = frame.filter(~F.col("kept") & F.col("reason").contains("duplicate")).select("uid")
    dups = lake.read(spark, "duplicates", dv.pinned["duplicates"])
    dups = dups.filter((F.col("uid") != F.col("keeper_uid")) & (F.col("method") != "exact_caption"))
    pick = (
        dups.join(dropped, "uid", "left_semi")
        .dropDuplicates(["uid"])
        .orderBy(F.sha2("uid", 256))
        .limit(n)
        .select("uid", "keeper_uid", "method", "similarity")
        .collect()
    )
    if not pick:
        return []
    uids = sorted({r["uid"] for r in pick} | {r["keeper_uid"] for r in pick})
    pairs = lake.read(spark, "pairs", dv.pinned["pairs"]).select("uid", "caption", "image")
    thumbs = {r["uid"]: _thumb(r.asDict()) for r in pairs.filter(F.col("uid").isin(uids)).collect()}
    empty = {"src": "", "caption": ""}
    return [
        {
            "method": r["method"],
            "similarity": r["similarity"],
            "dropped": thumbs.get(r["uid"], {**empty, "uid": r["uid"]}),
            "keeper": thumbs.get(r["keeper_uid"], {**empty, "uid": r["keeper_uid"]}),
        }
        for r in sorted(pick, key=lambda r: r["uid"])
    ]


def _thumb(r: dict, size: int = 112) -> dict:
    from PIL import Image

    try:
        with Image.open(io.BytesIO(r["image"])) as im:
            im = im.convert("RGB")
            im.thumbnail((size, size))
            buf = io.BytesIO()
            im.save(buf, "JPEG", quality=80)
        r["src"] = "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()
    except Exception:  # an undecodable image is shown as such, the report still renders
        r["src"] = ""
    r.pop("image", None)
    return r


# --- the page ------------------------------------------------------------------------------


def build_report(spark, lake: Lake, dv: DatasetVersion, thumbs: int = 24) -> str:
    """The HTML of the report (a string; nothing written)."""
    frame = verdict_frame(spark, lake, dv).persist()
    try:
        funnel = frame.groupBy("kept", "reason").count().collect()
        parts = {
            "funnel": _funnel_html(funnel),
            "clip-score": _hist_html(frame, "clip_score", 0.02, "CLIP score (cosine)"),
            "duplicates": _dups_html(duplicate_sizes(spark, lake, dv)),
            "duplicate-pairs": _pairs_html(duplicate_pairs(spark, lake, dv, frame, thumbs)),
            "clusters": _clusters_html(frame),
            "captions": _hist_html(frame, "caption_chars", 10, "caption length (characters)"),
            "resolution": _hist_html(frame, "resolution", 32, "resolution: min(width, height) px"),
            "samples": _samples_html(thumbnails(spark, lake, dv, frame, thumbs)),
            "concepts": _concepts_html(concept_ranks(spark, lake, dv, frame)),
            "probes": _probes_html(lake, dv),
        }
    finally:
        frame.unpersist()
    return _page(dv, parts)


def _funnel_html(rows) -> str:
    kept = sum(r["count"] for r in rows if r["kept"])
    dropped = sorted(
        ((r["reason"] or "unknown", r["count"]) for r in rows if not r["kept"]),
        key=lambda kv: -kv[1],
    )
    total = kept + sum(n for _, n in dropped)
    chart = Chart(
        "rows per outcome",
        ["kept"] + [r for r, _ in dropped],
        {"rows": [kept] + [n for _, n in dropped]},
        colors=["#1864ab"],
    )
    table = "".join(f"<tr><td>{html.escape(r)}</td><td>{n}</td></tr>" for r, n in dropped)
    return (
        f"<p>{total} rows in the selection, <b>{kept}</b> kept.</p>{chart.svg()}"
        f"<table><tr><th>dropped by</th><th>rows</th></tr>{table}</table>"
    )


def _hist_html(frame, column: str, width: float, xlabel: str) -> str:
    labels, series = histogram(_binned(frame, column, width), width)
    if not labels:
        return f"<p class=none>no {html.escape(column)} values at the pinned versions.</p>"
    return Chart(f"{xlabel}: kept vs dropped", labels, series, xlabel=xlabel).svg()


def _dups_html(sizes: dict[str, dict[int, int]]) -> str:
    if not sizes:
        return "<p class=none>no duplicate groups at the pinned versions.</p>"
    out = []
    for method, hist in sorted(sizes.items()):
        xs = sorted(hist)
        out.append(
            Chart(
                f"{method}: groups by size",
                [str(x) for x in xs],
                {"groups": [hist[x] for x in xs]},
                colors=["#5f3dc4"],
                xlabel="group size",
                width=420,
                height=220,
            ).svg()
        )
    return "".join(out)


def _clusters_html(frame) -> str:
    from pyspark.sql import functions as F

    rows = (
        frame.filter(F.col("semantic_cluster").isNotNull())
        .groupBy("semantic_cluster")
        .agg(F.sum(F.col("kept").cast("int")).alias("kept"), F.count("*").alias("n"))
        .orderBy(F.desc("n"))
        .limit(60)
        .collect()
    )
    if not rows:
        return "<p class=none>no semantic clusters at the pinned versions.</p>"
    return Chart(
        "rows per semantic cluster (largest 60)",
        [str(r["semantic_cluster"]) for r in rows],
        {"kept": [r["kept"] for r in rows], "dropped": [r["n"] - r["kept"] for r in rows]},
        xlabel="cluster",
    ).svg()


def _figure(t: dict, side: str, label: str) -> str:
    img = f'<img src="{t["src"]}" alt="{html.escape(t["uid"][:12])}">' if t["src"] else "?"
    caption = html.escape((t.get("caption") or "")[:80])
    return (
        f'<figure class="{side}">{img}<figcaption><b>{label}</b><br>{caption}</figcaption></figure>'
    )


def _pairs_html(pairs: list[dict]) -> str:
    if not pairs:
        return "<p class=none>no rows dropped as duplicates at the pinned versions.</p>"
    cells = []
    for p in pairs:
        sim = "" if p["similarity"] is None else f" {p['similarity']:.3f}"
        cells.append(
            '<div class="pair">'
            + _figure(p["dropped"], "dropped", f"dropped ({html.escape(p['method'])}{sim})")
            + _figure(p["keeper"], "kept", "its keeper")
            + "</div>"
        )
    return (
        "<p>Each row dropped as a duplicate, next to the keeper it was dropped for "
        "(`lakecurate dedup explain UID` shows the figures behind a verdict).</p>"
        f"<div class=grid>{''.join(cells)}</div>"
    )


def _samples_html(thumbs: dict[str, list[dict]]) -> str:
    out = []
    for side in ("kept", "dropped"):
        cells = []
        for t in thumbs.get(side, []):
            why = "kept" if side == "kept" else html.escape(t.get("reason") or "unknown")
            score = "" if t.get("clip_score") is None else f" · clip {t['clip_score']:.3f}"
            img = f'<img src="{t["src"]}" alt="{html.escape(t["uid"][:12])}">' if t["src"] else "?"
            cells.append(
                f'<figure class="{side}">{img}<figcaption><b>{why}</b>{score}<br>'
                f"{html.escape((t.get('caption') or '')[:80])}</figcaption></figure>"
            )
        out.append(f"<h3>{side} ({len(cells)})</h3><div class=grid>{''.join(cells)}</div>")
    return "".join(out)


CSS = """body{font-family:sans-serif;margin:24px;max-width:1100px;color:#222}
h1{font-size:22px}h2{border-bottom:1px solid #ccc;padding-bottom:4px;margin-top:28px}
table{border-collapse:collapse;margin-top:8px}td,th{border:1px solid #ddd;padding:3px 8px;
font-size:13px;text-align:left}.grid{display:flex;flex-wrap:wrap;gap:8px}
figure{margin:0;width:128px;font-size:11px}figure img{width:112px;height:112px;
object-fit:cover;border:3px solid #ccc}figure.kept img{border-color:#2b8a3e}
figure.dropped img{border-color:#c92a2a}.none{color:#777}code{font-size:12px}
.pair{display:flex;gap:4px;padding:4px;border:1px dashed #bbb}"""

TITLES = {
    "funnel": "Selection funnel",
    "clip-score": "CLIP score, kept vs dropped",
    "duplicates": "Duplicate group sizes per method",
    "duplicate-pairs": "Dropped duplicates next to their keepers",
    "clusters": "Semantic cluster sizes",
    "captions": "Caption length",
    "resolution": "Resolution",
    "samples": "Samples kept and dropped",
    "concepts": "Concept counts before and after balancing (MetaCLIP)",
    "probes": "Probes trained on this version",
}


def concept_ranks(spark, lake: Lake, dv: DatasetVersion, frame) -> dict[str, list[int]] | None:
    """Per metadata entry, the pairs of the pool matching it and the kept ones, each
    sorted high to low (None: the version pins no concept matches)."""
    from pyspark.sql import functions as F

    if "concepts" not in dv.pinned:
        return None
    c = lake.read(spark, "concepts", dv.pinned["concepts"])
    mv = c.agg(F.max("metadata_version")).first()[0]
    if mv is None:
        return None
    per_entry = (
        c.filter(F.col("metadata_version") == mv)
        .select("uid", F.explode("entry_ids").alias("e"))
        .join(frame.select("uid", "kept"), "uid")
        .groupBy("e")
        .agg(F.count("*").alias("pool"), F.count_if("kept").alias("kept"))
        .collect()
    )
    return {
        k: sorted((int(r[k]) for r in per_entry if r[k]), reverse=True) for k in ("pool", "kept")
    }


def _concepts_html(ranks: dict[str, list[int]] | None) -> str:
    """A log-log rank plot of per-entry counts: the head flattened to about t, the tail
    (the long part on the right) kept whole."""
    import math

    if not ranks or not ranks["pool"]:
        return (
            "<p class=none>no concept matches pinned: the MetaCLIP recipe (`--recipe "
            "metaclip`) matches captions with <code>lakecurate concepts</code>.</p>"
        )
    series = {
        f"{name} ({len(v):,} entries, {sum(v):,} matches)": [
            (math.log10(i), math.log10(n)) for i, n in enumerate(v, 1)
        ]
        for name, v in (("pool", ranks["pool"]), ("kept", ranks["kept"]))
    }
    chart = Lines("pairs per entry by rank (log10 / log10)", series, xlabel="log10 rank").svg()
    top = ranks["pool"][:5], ranks["kept"][:5]
    return f"{chart}<p>largest entries: pool {top[0]}, kept {top[1]}</p>"


def _probes_html(lake: Lake, dv: DatasetVersion) -> str:
    """The probes trained on this version (`lakecurate probe train`): their loss curves
    and their latest figures on each eval set."""
    import json as _json

    if not lake.exists("probes"):
        return _NO_PROBES.format(ref=html.escape(dv.ref))
    rows = lake.delta("probes").to_pyarrow_table().to_pylist()
    ids = [r["probe_id"] for r in rows if r["event"] == "train" and r["dataset"] == dv.ref]
    if not ids:
        return _NO_PROBES.format(ref=html.escape(dv.ref))
    curves = {}
    evals: dict[tuple[str, str], dict] = {}
    for r in sorted(rows, key=lambda r: r["created_at"]):
        if r["probe_id"] not in ids:
            continue
        if r["event"] == "train":
            label = f"{r['probe_id'][-8:]} {r['model']} seed {r['seed']}"
            curves[label] = [tuple(p) for p in _json.loads(r["loss_curve"] or "[]")]
        elif r["event"].startswith("eval:"):
            evals[(r["probe_id"], r["eval_set"])] = _json.loads(r["metrics"] or "{}")
    chart = Lines("training loss", curves, xlabel="samples seen").svg()
    keys = sorted({k for m in evals.values() for k in m if k != "images"})
    head = "".join(f"<th>{html.escape(k)}</th>" for k in ["probe", "eval set", *keys])
    body = "".join(
        "<tr>"
        + f"<td>{html.escape(pid)}</td><td>{html.escape(es)}</td>"
        + "".join(f"<td>{m[k]:.3f}</td>" if k in m else "<td>-</td>" for k in keys)
        + "</tr>"
        for (pid, es), m in sorted(evals.items())
    )
    return f"{chart}<table><tr>{head}</tr>{body}</table>"


_NO_PROBES = (
    "<p class=none>no probe trained on {ref} yet: <code>lakecurate probe train {ref}</code>"
    " trains one.</p>"
)


def _page(dv: DatasetVersion, parts: dict[str, str]) -> str:
    pins = ", ".join(f"{t}@v{v}" for t, v in sorted(dv.pinned.items()))
    body = "".join(f'<section id="{k}"><h2>{TITLES[k]}</h2>{parts[k]}</section>' for k in SECTIONS)
    return (
        f"<!doctype html><html><head><meta charset=utf-8><title>{html.escape(dv.ref)}</title>"
        f"<style>{CSS}</style></head><body><h1>lakecurate report: {html.escape(dv.ref)}</h1>"
        f"<p>{dv.num_samples} samples in {dv.num_shards} shards · status {dv.status} · "
        f"recipe <code>{html.escape(dv.recipe_id)}</code> · model "
        f"<code>{html.escape(dv.model_id or '-')}</code><br>pinned: <code>{pins}</code> · "
        f"created {html.escape(str(dv.created_at))}</p>{body}</body></html>"
    )


def command(spark, cfg: Config, args: argparse.Namespace) -> int:
    from lakecurate.runtime.errors import ConfigError
    from lakecurate.udfs.storage import url_to_fs

    if args.thumbs < 0:
        raise ConfigError("--thumbs", "must be >= 0")
    lake = Lake(cfg.lake.path)
    name, sel = parse_ref(args.ref)
    dv = resolve(spark, lake, name, sel)
    out = args.out or f"{lake.root}/_reports/{dv.name}-v{dv.version}.html"
    page = build_report(spark, lake, dv, args.thumbs)
    fs, path = url_to_fs(out)
    parent = path.rsplit("/", 1)[0] if "/" in path else "."
    fs.makedirs(parent, exist_ok=True)
    with fs.open(path, "w", encoding="utf-8") as f:
        f.write(page)
    doc = {"report": out, "dataset": dv.ref, "sections": list(SECTIONS), "bytes": len(page)}
    print(json.dumps(doc) if getattr(args, "json", False) else f"wrote {out} ({len(page)} bytes)")
    return 0


build_parser, main = jobkit.entry_points(__name__)


if __name__ == "__main__":
    sys.exit(main())
