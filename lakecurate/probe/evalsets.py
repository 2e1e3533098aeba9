"""Eval sets a probe is measured on; none of them ever enters a pool.

* `builtin`: drawn by the sample generator (`lakecurate.demo.sample`) from a seed no
  pool uses, one object per picture and no title: 50 classes (`{colour} {shape}` of the
  object) for zero-shot, and a caption per picture that describes it (size, colour,
  shape, place, background) for retrieval.
* a directory laid out the clip_benchmark way: WebDataset tars (`*.tar`) whose samples
  hold an image (`jpg`/`jpeg`/`png`/`webp`) and a caption (`txt`, one or more lines:
  retrieval) and/or a class index (`cls`: zero-shot), with `classnames.txt` (one
  name per line) and `zeroshot_classification_templates.txt` (one template per line,
  `{c}` where the class name goes) next to them for zero-shot.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from lakecurate.runtime.errors import ConfigError

IMAGE_KEYS = ("jpg", "jpeg", "png", "webp")
BUILTIN = "builtin"
BUILTIN_SEED = 90_210_001  # no pool is generated from this seed
BUILTIN_SIZE = 500
BUILTIN_TEMPLATES = (
    "a photo of a {c}.",
    "a {c} on a background.",
    "a drawing of a {c}.",
    "a picture showing a {c}.",
)


@dataclass(frozen=True)
class EvalSet:
    """Images with, for retrieval, texts and the image of each; for zero-shot, a label
    per image, the class names and the templates."""

    name: str
    images: list[bytes]
    texts: list[str] | None = None
    text_image: list[int] | None = None
    labels: list[int] | None = None
    classnames: list[str] | None = None
    templates: tuple[str, ...] = ()

    @property
    def tasks(self) -> list[str]:
        return [t for t, ok in (("retrieval", self.texts), ("zeroshot", self.labels)) if ok]


def builtin(n: int = BUILTIN_SIZE, seed: int = BUILTIN_SEED) -> EvalSet:
    """The generator's held-out set: one object per picture, no title."""
    from lakecurate.demo import sample

    rng = random.Random(seed)
    classes = [f"{c} {s}" for c in sample.COLORS for s in sample.SHAPES]
    images, texts, labels = [], [], []
    for _ in range(n):
        scene = sample.random_scene(rng)
        size, color, shape, place = scene.objects[0]
        scene.objects = [(size, color, shape, place)]
        scene.title = ""
        images.append(sample.jpeg(sample.render(scene, rng), 90))
        texts.append(f"a {size} {color} {shape} {place} of a {scene.bg} background")
        labels.append(classes.index(f"{color} {shape}"))
    return EvalSet(
        BUILTIN,
        images,
        texts=texts,
        text_image=list(range(n)),
        labels=labels,
        classnames=classes,
        templates=BUILTIN_TEMPLATES,
    )


def from_directory(path: str) -> EvalSet:
    """A clip_benchmark-style WebDataset directory (see the module docstring)."""
    from lakecurate.dataset.readers import read_shard

    root = Path(path)
    tars = sorted(root.glob("*.tar"))
    if not tars:
        raise ConfigError("--eval", f"{path}: no *.tar shards (expected a WebDataset directory)")
    images: list[bytes] = []
    texts: list[str] = []
    text_image: list[int] = []
    labels: list[int] = []
    for tar in tars:
        for s in read_shard(str(tar)):
            img = next((s[k] for k in IMAGE_KEYS if k in s), None)
            if img is None:
                continue
            i = len(images)
            images.append(img)
            for line in s.get("txt", b"").decode("utf-8", "replace").splitlines():
                if line.strip():
                    texts.append(line.strip())
                    text_image.append(i)
            if "cls" in s:
                labels.append(int(s["cls"].decode().strip()))
    if not images:
        raise ConfigError("--eval", f"{path}: the shards hold no images")
    zero_shot = bool(labels)
    if zero_shot and len(labels) != len(images):
        raise ConfigError("--eval", f"{path}: some samples have a `cls` and others not")
    classnames = templates = None
    if zero_shot:
        classnames = _lines(root / "classnames.txt", path)
        templates = tuple(
            t.replace("{}", "{c}")
            for t in _lines(root / "zeroshot_classification_templates.txt", path)
        )
        bad = [x for x in labels if not 0 <= x < len(classnames)]
        if bad:
            raise ConfigError(
                "--eval",
                f"{path}: class index {bad[0]} is not in classnames.txt ({len(classnames)})",
            )
    if not texts and not zero_shot:
        raise ConfigError("--eval", f"{path}: samples hold neither `txt` captions nor `cls` labels")
    return EvalSet(
        root.name,
        images,
        texts=texts or None,
        text_image=text_image or None,
        labels=labels or None,
        classnames=classnames,
        templates=templates or (),
    )


def _lines(path: Path, where: str) -> list[str]:
    if not path.is_file():
        raise ConfigError("--eval", f"{where}: `cls` labels need {path.name} next to the shards")
    return [x.strip() for x in path.read_text().splitlines() if x.strip()]


def load(spec: str) -> EvalSet:
    """`builtin` or a directory."""
    if spec == BUILTIN:
        return builtin()
    if not Path(spec).is_dir():
        raise ConfigError("--eval", f"{spec!r} is neither `builtin` nor a directory of eval shards")
    return from_directory(spec)
