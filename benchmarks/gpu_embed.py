"""Embedding throughput on one GPU: the embed UDF's task pipeline against the model's
forward pass alone, and the CPU decode rate that feeds it (issue #25).

Run it through `benchmarks/gpu_embed.sh` on a GPU machine (that script installs the
project and its carried wheels, nothing from a network). Direct use:

    python benchmarks/gpu_embed.py [--n 8192] [--models ViT-B-32,ViT-L-14]
                                   [--batch-size 256] [--device cuda] [--precision fp16]

For each model (random weights, so nothing is downloaded):

* `pipeline`: images/s of `udfs.clip.embed_batches` — exactly what each Spark task of
  `lakecurate embed` runs (decode in a thread pool with JPEG draft mode, preprocess,
  tokenize, a prefetch of two chunks, both towers, clip scores) — over Arrow-sized
  batches of stored JPEGs and their captions. The GPU machines here have no JVM, so the
  Spark job around it (reading `pairs`, writing `embeddings`) is not part of the run.
* `forward_only`: images/s of the image and text towers alone on already-preprocessed
  tensors resident on the device, same batch size and precision.
* `pipeline_vs_forward` = pipeline / forward_only: 1.0 means the GPU never waits.

And per image size: `cpu_decode`: images/s of decode + resize + normalise + tokenise
alone (the model's preprocess and tokenizer, no model) in a process pool over every
core: the most the CPU side can feed.

Images: `--n` generated JPEGs of about web size (500x400, quality 90: smooth colour
fields, shapes and noise), captions of 8-20 words. Prints the GPU's name and, last,
one JSON object. The target (#25): >= 5,000 img/s for ViT-B-32 on one H100.

Recorded: not yet run on a GPU (no device was lent in the session that wrote it). Its
CPU dry run there (`--n 256 --models lakecurate-tiny --device cpu --precision fp32
--batch-size 32 --workers 2`, 2 shared cores): pipeline 422 img/s, forward only 2,631,
CPU decode (2 processes) 1,393 img/s: the task pipeline reaches 0.30 of what the cores
can decode, so on a GPU the CPU side, not the model, is what to work on first.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor

import numpy as np

WORDS = (
    "a photo of the red blue green small large dog cat car house tree river street "
    "mountain person table window city beach night morning old new wooden bright dark"
).split()


def make_jpeg(seed: int, size: tuple[int, int] = (500, 400), quality: int = 90) -> bytes:
    """A web-sized JPEG: a smooth colour field, a few shapes and sensor-like noise."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    base = np.stack(
        [
            np.sin(xx / rng.uniform(20, 120) + c) * np.cos(yy / rng.uniform(20, 120))
            for c in range(3)
        ],
        axis=-1,
    )
    pixels = ((base + 1) * 110 + rng.normal(0, 8, (h, w, 3))).clip(0, 255).astype(np.uint8)
    im = Image.fromarray(pixels)
    draw = ImageDraw.Draw(im)
    for _ in range(int(rng.integers(2, 6))):
        x0, y0 = int(rng.integers(0, w - 40)), int(rng.integers(0, h - 40))
        box = (x0, y0, x0 + int(rng.integers(20, 200)), y0 + int(rng.integers(20, 160)))
        draw.ellipse(box, fill=tuple(int(v) for v in rng.integers(0, 255, 3)))
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def make_caption(seed: int) -> str:
    rng = np.random.default_rng(seed)
    return " ".join(rng.choice(WORDS, int(rng.integers(8, 21))))


_PRE: dict = {}


def _decode_one(args: tuple[bytes, str, int, str]) -> int:
    """Decode + preprocess one image and tokenize its caption as the embed UDF does
    (in a worker process; no model)."""
    import open_clip

    from lakecurate.udfs.clip import decode_image, register_model_configs

    data, caption, size, name = args
    if (size, name) not in _PRE:
        register_model_configs()
        transform = open_clip.image_transform(size, is_train=False)
        _PRE[(size, name)] = (transform, open_clip.get_tokenizer(name))
    transform, tokenizer = _PRE[(size, name)]
    return int(transform(decode_image(data, size)).numel()) + int(tokenizer([caption]).numel())


def cpu_decode_rate(
    jpegs: list[bytes], captions: list[str], size: int, name: str, workers: int
) -> float:
    """Images/s of decode + resize + normalise + tokenise alone, in `workers` processes:
    the most those cores can feed a model."""
    work = [(j, c, size, name) for j, c in zip(jpegs, captions, strict=True)]
    with ProcessPoolExecutor(workers) as pool:
        list(pool.map(_decode_one, work[: workers * 4], chunksize=4))  # warm-up
        t0 = time.perf_counter()
        list(pool.map(_decode_one, work, chunksize=32))
        return len(jpegs) / (time.perf_counter() - t0)


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def forward_rate(clip, jpegs: list[bytes], captions: list[str], batch: int, device: str) -> float:
    """Both towers on device-resident preprocessed batches (cycled over the images)."""
    import torch

    from lakecurate.udfs.clip import decode_image

    k = min(len(jpegs), batch)
    pixels = torch.stack([clip.preprocess(decode_image(j, clip.image_size)) for j in jpegs[:k]])
    dtype = next(clip.model.parameters()).dtype
    pixels = pixels.to(device=device, dtype=dtype)
    tokens = clip.tokenizer(captions[:k]).to(device)
    rounds = max(3, len(jpegs) // k)
    with torch.inference_mode():
        for _ in range(2):  # warm-up (kernels, allocator)
            clip.model.encode_image(pixels), clip.model.encode_text(tokens)
        _sync(device)
        t0 = time.perf_counter()
        for _ in range(rounds):
            clip.model.encode_image(pixels), clip.model.encode_text(tokens)
        _sync(device)
    return rounds * k / (time.perf_counter() - t0)


def pipeline_rate(spec, jpegs: list[bytes], captions: list[str], arrow_rows: int) -> float:
    """`embed_batches` (one Spark task's body) over Arrow-sized batches."""
    import pandas as pd

    from lakecurate.udfs.clip import embed_batches

    def batches(n: int):
        for i in range(0, n, arrow_rows):
            yield pd.Series(jpegs[i : i + arrow_rows]), pd.Series(captions[i : i + arrow_rows])

    warm = min(len(jpegs), spec.batch_size * 2)
    for _ in embed_batches(batches(warm), spec):
        pass
    t0 = time.perf_counter()
    rows = sum(len(f) for f in embed_batches(batches(len(jpegs)), spec))
    _sync(spec.device)
    return rows / (time.perf_counter() - t0)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=8192, help="images per model run")
    p.add_argument("--models", default="ViT-B-32,ViT-L-14")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--device", default="cuda")
    p.add_argument("--precision", default="fp16", choices=["fp16", "bf16", "fp32"])
    p.add_argument("--arrow-rows", type=int, default=1024, help="rows per Arrow batch")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = p.parse_args()

    import torch

    from lakecurate.udfs.clip import ClipSpec, load_model, register_model_configs

    register_model_configs()
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    print(f"GPU: {gpu}; torch {torch.__version__}; {args.workers} CPU cores", flush=True)
    t0 = time.perf_counter()
    with ProcessPoolExecutor(args.workers) as pool:
        jpegs = list(pool.map(make_jpeg, range(args.n), chunksize=64))
    captions = [make_caption(i) for i in range(args.n)]
    kb = sum(map(len, jpegs)) / len(jpegs) / 1024
    print(f"{args.n} JPEGs of 500x400 (mean {kb:.0f} KiB) in {time.perf_counter() - t0:.1f} s")

    doc: dict = {"metric": "gpu_embed", "gpu": gpu, "n": args.n, "cpu_cores": args.workers}
    doc["batch_size"], doc["precision"], doc["models"] = args.batch_size, args.precision, {}
    decode_sizes: dict[int, float] = {}
    for name in [m for m in args.models.split(",") if m]:
        spec = ClipSpec(
            name=name,
            pretrained="none",
            precision=args.precision,
            device=args.device,
            batch_size=args.batch_size,
            decode_threads=args.workers,
        )
        clip = load_model(spec, args.device)
        if clip.image_size not in decode_sizes:
            decode_sizes[clip.image_size] = cpu_decode_rate(
                jpegs, captions, clip.image_size, name, args.workers
            )
        fwd = forward_rate(clip, jpegs, captions, args.batch_size, args.device)
        ours = pipeline_rate(spec, jpegs, captions, args.arrow_rows)
        row = {
            "pipeline_img_s": round(ours),
            "forward_only_img_s": round(fwd),
            "pipeline_vs_forward": round(ours / fwd, 3),
            "cpu_decode_img_s": round(decode_sizes[clip.image_size]),
            "image_size": clip.image_size,
        }
        doc["models"][name] = row
        print(f"{name}: {json.dumps(row)}", flush=True)
        del clip
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    doc["target_vit_b_32_img_s"] = 5000
    print(json.dumps(doc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
