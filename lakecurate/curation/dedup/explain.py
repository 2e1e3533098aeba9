"""`lakecurate dedup explain UID`: why a pair is, or is not, a duplicate.

For one uid: its caption and size, then per `duplicates` method its group (size), its
keeper and the similarity to it; for `phash`, the verification figures against the
keeper (pHash bit distance, how many levels the colour thumbnails and the grey detail
images differ by after the brightness gain, against their limits, and the verdict); how many pairs share
its normalised caption; and what each recipe's selection decided.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lakecurate.deltaio.lake import Lake
from lakecurate.runtime.errors import JobError


@dataclass
class Explanation:
    uid: str
    caption: str | None = None
    size: tuple[int, int] | None = None
    caption_shared_by: int = 0
    methods: list[dict[str, Any]] = field(default_factory=list)
    selection: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "uid": self.uid,
            "caption": self.caption,
            "size": list(self.size) if self.size else None,
            "caption_shared_by": self.caption_shared_by,
            "methods": self.methods,
            "selection": self.selection,
        }

    def lines(self) -> list[str]:
        w, h = self.size or (None, None)
        out = [f"uid {self.uid}: {self.caption!r} ({w}x{h})"]
        if self.caption_shared_by > 1:
            out.append(
                f"  its normalised caption is shared by {self.caption_shared_by} pairs "
                "(a signal, not a duplicate)"
            )
        if not self.methods:
            out.append("  no duplicate group under any method: it is nobody's duplicate")
        for m in self.methods:
            if m["method"] == "exact_caption":  # a caption group: a signal, not a verdict
                role = f"caption group of {m['keeper_uid']} (not a duplicate)"
            elif m["keeper_uid"] == self.uid:
                role = "keeper"
            else:
                role = f"duplicate of {m['keeper_uid']}"
            out.append(
                f"  {m['method']:<14} {role}; group {m['group_id']} of {m['group_size']}, "
                f"similarity {m['similarity']:.3f}"
            )
            v = m.get("verification")
            if v:
                verdict = "verified copy" if v["verified"] else "NOT the same picture"
                if v.get("route") == "crop or border":
                    r = v["rectangle"]
                    figures = (
                        f"whole frames differ; a window is {v['window_distance']} bits away, "
                        f"the smaller picture lies at x {r['x']}, y {r['y']} of the "
                        f"{v['bigger']}'s frame, colour differs by {v['colour_levels']:g} "
                        f"levels (<= {v['colour_tau']}), detail by {v['detail_levels']:g} "
                        f"(<= {v['detail_tau']:g})"
                    )
                elif "colour_levels" in v:
                    figures = (
                        f"colour differs by {v['colour_levels']:g} levels (<= {v['colour_tau']}), "
                        f"detail by {v['detail_levels']:g} (<= {v['detail_tau']}, blur "
                        f"{v['detail_blur']:g} px, gain {v['gain']:.2f})"
                    )
                else:
                    figures = v["note"]
                out.append(
                    f"  {'':<14} pHash distance {v['phash_distance']} bits; {figures}: {verdict}"
                )
        for s in self.selection:
            verdict = "kept" if s["kept"] else f"dropped by {s['reason']}"
            out.append(f"  recipe {s['recipe_id']}: {verdict}")
        return out


def _row(signals: dict) -> np.ndarray:
    """The `phash_verified` row of a signals row, as dedup builds it (with windows)."""
    from lakecurate.udfs import phash as ph

    vector = int(signals["phash"]).to_bytes(8, "big", signed=True)
    blob, windows = signals.get("thumb") or b"", signals.get("phash_windows") or b""
    if len(blob) == ph.VERIFY_BYTES:
        vector += blob + (windows if len(windows) == ph.WINDOW_BYTES else b"")
    return ph.verification_rows([vector])


def _verification(a: dict, b: dict) -> dict[str, Any] | None:
    """pHash distance and the verification figures of signals rows a (the uid) and b (its
    keeper): colour and detail differences after the brightness gain, against their tau;
    where the whole frames do not verify and window hashes are there, the crop route
    (window distance, the registered rectangle, the figures after the warp)."""
    from lakecurate.udfs import phash as ph
    from lakecurate.udfs import registration as reg

    if a.get("phash") is None or b.get("phash") is None:
        return None
    member, keeper = _row(a), _row(b)
    full, crop = ph.distances(keeper, member[0])
    out: dict[str, Any] = {
        "phash_distance": int(full[0]),
        "colour_tau": ph.COLOUR_TAU,
        "detail_tau": ph.DETAIL_TAU,
    }
    if not (member[0, -1] & keeper[0, -1] & ph.HAS_BLOB):
        return {**out, "verified": False, "note": "signals made before this verification"}
    figures = ph.compare(keeper[:, ph.BLOB], member[:, ph.BLOB])  # keeper mapped onto member
    out.update(
        route="whole frame",
        colour_levels=round(float(figures["colour"][0]), 1),
        detail_levels=round(float(figures["detail"][0]), 1),
        gain=round(float(figures["detail_gain"][0]), 3),
        detail_blur=float(figures["sigma"][0]),
        verified=bool(figures["verified"][0]),
    )
    if out["verified"] or not (member[0, -1] & keeper[0, -1] & ph.HAS_WINDOWS):
        return out
    warp = ph.crop_check(keeper, member)
    sx, tx, sy, ty = (round(float(v), 3) for v in warp["params"][0])
    return {
        **out,
        "route": "crop or border",
        "window_distance": int(crop[0]),
        "bigger": "keeper" if warp["a_bigger"][0] else "this pair",
        "rectangle": {"x": [tx, round(tx + sx, 3)], "y": [ty, round(ty + sy, 3)]},
        "colour_levels": round(float(warp["colour"][0]), 1),
        "detail_levels": round(float(warp["detail"][0]), 1),
        "detail_tau": reg.WARP_DETAIL_TAU,
        "verified": bool(warp["verified"][0]),
    }


def explain(spark, lake: Lake, uid: str) -> Explanation:
    from pyspark.sql import functions as F

    if not lake.exists("pairs"):
        raise JobError(f"lake {lake.root} has no `pairs` table: run `lakecurate ingest` first")
    pair = (
        lake.read(spark, "pairs")
        .filter(F.col("uid") == uid)
        .select("caption", "width", "height")
        .first()
    )
    if pair is None:
        raise JobError(
            f"no pair with uid {uid!r} in {lake.root}/pairs; find uids with "
            '`lakecurate sql "SELECT uid, caption FROM pairs LIMIT 10"`'
        )
    ex = Explanation(uid, pair["caption"], (pair["width"], pair["height"]))
    if not lake.exists("duplicates"):
        return ex
    dups = lake.read(spark, "duplicates")
    mine = [r.asDict() for r in dups.filter(F.col("uid") == uid).collect()]
    groups = [(r["method"], r["group_id"]) for r in mine]
    sizes: dict[tuple[str, str], int] = {}
    if groups:
        cond = F.lit(False)
        for m, g in groups:
            cond = cond | ((F.col("method") == m) & (F.col("group_id") == g))
        for r in dups.filter(cond).groupBy("method", "group_id").count().collect():
            sizes[(r["method"], r["group_id"])] = r["count"]
    signals: dict[str, dict] = {}
    if lake.exists("signals"):
        wanted = {uid} | {r["keeper_uid"] for r in mine}
        rows = lake.read(spark, "signals").filter(F.col("uid").isin(sorted(wanted))).collect()
        signals = {r["uid"]: r.asDict() for r in rows}
        sha = signals.get(uid, {}).get("caption_sha256")
        if sha:
            shared = lake.read(spark, "signals").filter(F.col("caption_sha256") == sha)
            ex.caption_shared_by = shared.count()
    for r in sorted(mine, key=lambda r: r["method"]):
        entry = {k: r[k] for k in ("method", "group_id", "keeper_uid", "similarity", "config_slug")}
        entry["group_size"] = sizes.get((r["method"], r["group_id"]), 1)
        if r["method"] == "phash" and r["keeper_uid"] != uid:
            v = _verification(signals.get(uid, {}), signals.get(r["keeper_uid"], {}))
            if v:
                entry["verification"] = v
        ex.methods.append(entry)
    if lake.exists("selection"):
        sel = lake.read(spark, "selection").filter(F.col("uid") == uid).collect()
        ex.selection = [
            {"recipe_id": r["recipe_id"], "kept": bool(r["kept"]), "reason": r["reason"]}
            for r in sorted(sel, key=lambda r: r["recipe_id"])
        ]
    return ex
