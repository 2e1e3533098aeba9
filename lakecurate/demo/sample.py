"""Generated sample data: Pillow-drawn scenes whose captions describe them.

Used by `lakecurate demo`, the tests and the benchmarks. Besides clean pairs it
injects what a curation pipeline must catch, and records the truth in
`labels.json` so tests can check what was found:

* exact image duplicates (same bytes, reworded caption),
* near-duplicate images (re-encoded at another JPEG quality, resized, cropped),
* near-duplicate captions (one or two words changed on a different image),
* swapped captions (a pair whose caption describes another image),
* bad records (corrupt bytes, empty caption, an image below the size floor),
* on request (`WebFaults`), the faults of web alt text: generic captions, captions of
  one short word, thumbnails and banners.
"""

from __future__ import annotations

import io
import json
import random
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, ImageDraw

COLORS = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (235, 210, 40),
    "purple": (140, 60, 170),
    "orange": (245, 140, 30),
    "white": (245, 245, 245),
    "black": (20, 20, 20),
    "gray": (128, 128, 128),
    "pink": (240, 150, 190),
}
SHAPES = ("circle", "square", "triangle", "ring", "bar")
SIZES = ("small", "large")
PLACES = ("on the left", "on the right", "at the top", "at the bottom", "in the middle")
TEMPLATES = (
    "a {size} {color} {shape} {place} of a {bg} background",
    "photo of a {size} {color} {shape} {place}, {bg} backdrop",
    "{color} {shape}, {size}, drawn {place} over {bg}",
)


# Titles make captions as distinct as web captions are: without them, captions
# built from a small vocabulary chain into one giant near-duplicate component. Two
# title words plus four made-up words (syllables below), and a caption that describes
# the main object only, leave about 3% of 3,000 captions with an accidental near-
# duplicate (Jaccard >= 0.45 on character 5-grams); two title words alone and every
# object described left 90% (and 19,583 of 20,000 captions in one MinHash group).
TITLE_WORDS = (
    "amber harbor meadow lantern granite willow comet orchard velvet canyon ember "
    "glacier saffron thistle beacon cobalt driftwood falcon juniper lagoon marble "
    "nectar obsidian pebble quartz raven sierra tundra umber vapor walnut yarrow "
    "zephyr atlas bramble cedar delta fjord grove heron island jasper kestrel lotus "
    "mosaic nimbus opal prairie quill ridge summit timber upland valley wharf "
    "autumn breeze cinder dune echo fern gale haven indigo jetty kelp lichen "
    "mango nova onyx pine quarry reef shale tide urchin vista wren basalt coral "
    "dawn estuary flint garnet hollow iris jade knoll lark mesa"
).split()
SYLLABLES = tuple(c + v for c in "bdfgklmnprstvz" for v in "aeiou")
FRAMES = (
    "{title}: {body}",
    "{body} ({title})",
    "from the {title} series, {body}",
    "{body}, titled {title}",
)


@dataclass
class Scene:
    bg: str
    objects: list[tuple[str, str, str, str]]  # (size, color, shape, place)
    size: tuple[int, int]
    title: str = ""
    bg2: str = "white"  # the background is a gradient from bg to bg2
    angle: int = 0  # gradient direction, degrees

    def caption(self, rng: random.Random) -> str:
        """The title and the main (first) object, as alt text names a picture's subject."""
        sz, color, shape, place = self.objects[0]
        t = rng.choice(TEMPLATES)
        body = t.format(size=sz, color=color, shape=shape, place=place, bg=self.bg)
        return rng.choice(FRAMES).format(title=self.title, body=body)


def made_up_word(rng: random.Random) -> str:
    return "".join(rng.choice(SYLLABLES) for _ in range(rng.randint(2, 3)))


def random_scene(rng: random.Random) -> Scene:
    bg = rng.choice(list(COLORS))
    n = rng.randint(1, 3)
    objs = []
    for _ in range(n):
        color = rng.choice([c for c in COLORS if c != bg])
        objs.append((rng.choice(SIZES), color, rng.choice(SHAPES), rng.choice(PLACES)))
    w, h = rng.choice([(128, 128), (160, 120), (120, 160), (192, 144), (144, 144)])
    title = " ".join(rng.sample(TITLE_WORDS, 2) + [made_up_word(rng) for _ in range(4)])
    bg2 = rng.choice([c for c in COLORS if c != bg])
    return Scene(bg, objs, (w, h), title, bg2, rng.randrange(0, 360, 15))


def _background(scene: Scene, rng: random.Random) -> Image.Image:
    """A two-colour gradient in a random direction plus soft blobs: distinct low frequencies."""
    import math

    w, h = scene.size
    a, b = COLORS[scene.bg], COLORS[scene.bg2]
    grad = (
        Image.linear_gradient("L").resize((w, h)).rotate(scene.angle, expand=False, fillcolor=128)
    )
    img = Image.composite(Image.new("RGB", (w, h), b), Image.new("RGB", (w, h), a), grad)
    d = ImageDraw.Draw(img)
    for _ in range(3):
        x, y = rng.randrange(w), rng.randrange(h)
        r = int(min(w, h) * rng.uniform(0.15, 0.35))
        tone = tuple(int(c * 0.7 + 255 * 0.3 * math.sin(x + y) ** 2) for c in a)
        d.ellipse((x - r, y - r, x + r, y + r), fill=tone)
    return img


def _center(place: str, w: int, h: int, rng: random.Random) -> tuple[int, int]:
    jitter = lambda s: rng.randint(-s // 12, s // 12)  # noqa: E731
    x, y = {
        "on the left": (w // 4, h // 2),
        "on the right": (3 * w // 4, h // 2),
        "at the top": (w // 2, h // 4),
        "at the bottom": (w // 2, 3 * h // 4),
        "in the middle": (w // 2, h // 2),
    }[place]
    return x + jitter(w), y + jitter(h)


def render(scene: Scene, rng: random.Random) -> Image.Image:
    w, h = scene.size
    img = _background(scene, rng)
    d = ImageDraw.Draw(img)
    for sz, color, shape, place in scene.objects:
        cx, cy = _center(place, w, h, rng)
        r = (min(w, h) // 5) if sz == "large" else (min(w, h) // 10)
        box = (cx - r, cy - r, cx + r, cy + r)
        fill = COLORS[color]
        if shape == "circle":
            d.ellipse(box, fill=fill)
        elif shape == "square":
            d.rectangle(box, fill=fill)
        elif shape == "triangle":
            d.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=fill)
        elif shape == "ring":
            d.ellipse(box, outline=fill, width=max(2, r // 3))
        else:
            d.rectangle((cx - r, cy - r // 3, cx + r, cy + r // 3), fill=fill)
    # texture so that perceptual hashes of different scenes differ
    for _ in range(6):
        x, y = rng.randrange(w), rng.randrange(h)
        d.line((x, y, rng.randrange(w), rng.randrange(h)), fill=rng.choice(list(COLORS.values())))
    return img


def jpeg(img: Image.Image, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def edit_caption(caption: str, rng: random.Random, n_words: int = 1) -> str:
    words = caption.split()
    vocab = list(COLORS) + list(SHAPES) + ["tiny", "huge", "bright", "pale", "faded", "glossy"]
    for _ in range(n_words):
        i = rng.randrange(len(words))
        words[i] = rng.choice([v for v in vocab if v != words[i]])
    return " ".join(words)


@dataclass
class Record:
    key: str
    image: bytes
    caption: str | None
    meta: dict = field(default_factory=dict)


@dataclass
class SampleSet:
    records: list[Record]
    labels: dict[str, list]

    def write_webdataset(self, out_dir: str | Path, shard_size: int = 500) -> list[Path]:
        """Write img2dataset-style tars (`key.jpg`, `key.txt`, `key.json`)."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        paths = []
        for s in range(0, len(self.records), shard_size):
            path = out / f"{s // shard_size:05d}.tar"
            with tarfile.open(path, "w") as tar:
                for r in self.records[s : s + shard_size]:
                    members = {"jpg": r.image, "json": json.dumps(r.meta).encode()}
                    if r.caption is not None:
                        members["txt"] = r.caption.encode("utf-8")
                    for ext, data in members.items():
                        info = tarfile.TarInfo(f"{r.key}.{ext}")
                        info.size = len(data)
                        tar.addfile(info, io.BytesIO(data))
            paths.append(path)
        (out / "labels.json").write_text(json.dumps(self.labels))
        return paths

    def pair_rows(self) -> list[dict]:
        """Rows of the `pairs` table for the decodable, captioned records (no ingest needed).

        For tests of later stages; ingest itself is the real path into the lake.
        """
        from lakecurate.udfs.text import make_uid, sha256_hex

        rows, seen = [], set()
        for r in self.records:
            try:
                with Image.open(io.BytesIO(r.image)) as im:
                    w, h = im.size
            except OSError:
                continue
            if not r.caption or min(w, h) < 16:
                continue
            sha = sha256_hex(r.image)
            uid = make_uid(sha, r.caption)
            if uid in seen:
                continue
            seen.add(uid)
            rows.append(
                {
                    "uid": uid,
                    "image_sha256": sha,
                    "caption": r.caption,
                    "image": r.image,
                    "image_format": "jpeg",
                    "width": w,
                    "height": h,
                    "url": r.meta.get("url"),
                    "source_uri": "generated",
                    "source_key": r.key,
                    "meta_json": json.dumps(r.meta),
                    "run_id": "sample",
                    "ingested_at": None,
                }
            )
        return rows

    def write_folder(self, out_dir: str | Path) -> Path:
        """Write an image folder with sidecar `.txt` captions."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        for r in self.records:
            (out / f"{r.key}.jpg").write_bytes(r.image)
            if r.caption is not None:
                (out / f"{r.key}.txt").write_text(r.caption, encoding="utf-8")
        return out


# Web faults (`generate(..., web=WebFaults(...))`, none by default): alt text that says
# nothing about the picture, captions of a word or less, thumbnails, banners.
GENERIC_CAPTIONS = (
    "click to enlarge",
    "stock photo",
    "image of the day",
    "view full size image",
    "see more photos",
    "untitled image",
    "photo by our staff",
    "product image placeholder",
)
NEAR_EMPTY_CAPTIONS = ("img", "a", "jpg", "photo", "-", "image1")


@dataclass(frozen=True)
class WebFaults:
    """Shares of the pool given each web fault (labelled in `labels.json`)."""

    generic: float = 0.0  # a caption from GENERIC_CAPTIONS, unrelated to the picture
    near_empty: float = 0.0  # a caption of one short word
    tiny: float = 0.0  # the picture drawn at 24-48 px
    banner: float = 0.0  # the picture squeezed into a 4:1 to 6:1 strip

    @property
    def total(self) -> float:
        return self.generic + self.near_empty + self.tiny + self.banner


def generate(
    n: int = 2000,
    seed: int = 0,
    dup_rate: float = 0.05,
    near_dup_rate: float = 0.05,
    caption_dup_rate: float = 0.05,
    swap_rate: float = 0.03,
    bad_rate: float = 0.01,
    prefix: str = "s",
    web: WebFaults = WebFaults(),
) -> SampleSet:
    """About `n` records: clean pairs plus the injected cases listed in the module doc
    (and the web faults of `web`)."""
    rng = random.Random(seed)
    labels: dict[str, list] = {
        "exact": [],
        "near_image": [],
        "near_caption": [],
        "swapped": [],
        "bad": [],
    }
    if web.total:
        labels |= {"generic": [], "near_empty": [], "tiny": [], "banner": []}
    records: list[Record] = []
    base: list[tuple[Scene, Image.Image, Record]] = []

    def key() -> str:
        return f"{prefix}{len(records):07d}"

    rates = dup_rate + near_dup_rate + caption_dup_rate + swap_rate + bad_rate + web.total
    n_special = int(n * rates)
    for _ in range(max(1, n - n_special)):
        scene = random_scene(rng)
        img = render(scene, rng)
        rec = Record(key(), jpeg(img, rng.choice([85, 90, 95])), scene.caption(rng))
        rec.meta = {"url": f"https://example.com/img/{rec.key}.jpg", "source": "generated"}
        records.append(rec)
        base.append((scene, img, rec))

    def pick() -> tuple[Scene, Image.Image, Record]:
        return base[rng.randrange(len(base))]

    for _ in range(int(n * dup_rate)):
        _, _, orig = pick()
        rec = Record(key(), orig.image, edit_caption(orig.caption, rng, 3), {"dup_of": orig.key})
        records.append(rec)
        labels["exact"].append([orig.key, rec.key])
    for _ in range(int(n * near_dup_rate)):
        scene, img, orig = pick()
        w, h = img.size
        how = rng.choice(["reencode", "resize", "crop"])
        if how == "resize":
            img2 = img.resize((int(w * 0.75), int(h * 0.75)))
        elif how == "crop":
            img2 = img.crop((2, 2, w - 2, h - 2))
        else:
            img2 = img
        rec = Record(key(), jpeg(img2, rng.choice([60, 70])), orig.caption, {"near_of": orig.key})
        records.append(rec)
        labels["near_image"].append([orig.key, rec.key, how])
    for _ in range(int(n * caption_dup_rate)):
        scene = random_scene(rng)
        _, _, orig = pick()
        rec = Record(key(), jpeg(render(scene, rng)), edit_caption(orig.caption, rng, 1))
        records.append(rec)
        labels["near_caption"].append([orig.key, rec.key])
    for _ in range(int(n * swap_rate)):
        scene = random_scene(rng)
        _, _, other = pick()
        rec = Record(key(), jpeg(render(scene, rng)), other.caption + " ")
        records.append(rec)
        labels["swapped"].append([rec.key])
    for i in range(int(n * bad_rate)):
        kind = ["corrupt", "empty_caption", "too_small"][i % 3]
        if kind == "corrupt":
            rec = Record(key(), b"\xff\xd8\xff\xe0 this is not a jpeg", "a broken image")
        elif kind == "empty_caption":
            rec = Record(key(), jpeg(render(random_scene(rng), rng)), "")
        else:
            rec = Record(key(), jpeg(Image.new("RGB", (8, 8), (1, 2, 3))), "a tiny gray dot")
        records.append(rec)
        labels["bad"].append([rec.key, kind])
    _web_faults(web, n, rng, records, labels, key)
    return SampleSet(records, labels)


def _web_faults(web: WebFaults, n: int, rng, records: list, labels: dict, key) -> None:
    def fresh() -> tuple[Scene, Image.Image]:
        scene = random_scene(rng)
        return scene, render(scene, rng)

    for kind, rate in (("generic", web.generic), ("near_empty", web.near_empty)):
        words = GENERIC_CAPTIONS if kind == "generic" else NEAR_EMPTY_CAPTIONS
        for _ in range(int(n * rate)):
            _, img = fresh()
            records.append(Record(key(), jpeg(img), rng.choice(words)))
            labels[kind].append([records[-1].key])
    for _ in range(int(n * web.tiny)):
        scene, img = fresh()
        side = rng.randint(24, 48)
        small = img.resize((side, max(8, side * img.height // img.width)))
        records.append(Record(key(), jpeg(small), scene.caption(rng)))
        labels["tiny"].append([records[-1].key])
    for _ in range(int(n * web.banner)):
        scene, img = fresh()
        w = rng.choice([240, 288, 320])
        strip = img.resize((w, w // rng.randint(4, 6)))
        records.append(Record(key(), jpeg(strip), scene.caption(rng)))
        labels["banner"].append([records[-1].key])
