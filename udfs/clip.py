"""CLIP embeddings on executors: plain batch functions plus the iterator pandas UDF around them.

Executor-side code: it never imports the lake or the Spark session. The model loads
once per Python worker (`load_model`, a module-level cache keyed by `ClipSpec` and
device), never at import time and never in an object that gets pickled.

Inside one task the work is a pipeline: a thread pool decodes and preprocesses the
next chunks of images (Pillow releases the GIL; `Image.draft` lets libjpeg decode
large JPEGs at a reduced scale) and tokenizes their captions while the model runs
on the current chunk (torch releases the GIL too).

Vectors are L2-normalised float32; `clip_score` is their cosine (a dot product).

Device per task: the GPU Spark assigned to the task (`TaskContext.resources()["gpu"]`)
when GPU scheduling is configured, else `cuda` if visible, else CPU. Torch threads
per task follow `spark.task.cpus` (passed in `ClipSpec.torch_threads`).

One GPU per executor (Spark standalone, YARN or Kubernetes)::

    spark.executor.resource.gpu.amount=1
    spark.executor.resource.gpu.discoveryScript=$SPARK_HOME/examples/src/main/scripts/getGpusResources.sh
    spark.task.resource.gpu.amount=1       # one embedding task owns the GPU
    spark.executor.cores=8                 # cores for JPEG decode in that task ...
    spark.task.cpus=8                      # ... all given to the one task
    spark.sql.execution.arrow.maxRecordsPerBatch=1024
    # workers: SPARK_WORKER_OPTS="-Dspark.worker.resource.gpu.amount=1
    #   -Dspark.worker.resource.gpu.discoveryScript=/path/to/getGpusResources.sh"

and run `lakecurate embed --device auto --batch-size 256` (precision `auto` = fp16
on GPU). To share one GPU between two tasks use `spark.task.resource.gpu.amount=0.5`
and `spark.task.cpus=4`; each task's Python worker then loads its own model copy.
"""

from __future__ import annotations

import io
import logging
import math
import os
import tempfile
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lakecurate.udfs.heads import SCORE_COLUMNS, cached_head, head_scores

log = logging.getLogger(__name__)

DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}
RANDOM_WEIGHTS_SEED = 0
PREFETCH_CHUNKS = 2  # chunks being decoded while one is on the model
REASON_DECODE = "undecodable_image"
REASON_MISSING = "missing_image"
RESULT_FIELDS = (
    "image_emb", "text_emb", "clip_score", "aesthetic_score", "unsafe_score",
    "reject_reason", "reject_detail",
)  # fmt: skip
RESULT_DDL = (
    "image_emb array<float>, text_emb array<float>, clip_score float, "
    "aesthetic_score float, unsafe_score float, reject_reason string, reject_detail string"
)


@dataclass(frozen=True)
class ClipSpec:
    """What to load and how to run it; small and picklable (sent to every task)."""

    name: str
    pretrained: str = "none"  # an open_clip tag, a checkpoint path, or "none"
    precision: str = "fp32"  # fp32 | bf16 | fp16 (resolved on the driver)
    device: str = "auto"  # auto | cpu | cuda
    batch_size: int = 64
    decode_threads: int = 2
    torch_threads: int = 0  # 0: leave torch's default
    hub_offline: bool = False  # the driver found the model hub unreachable
    heads: tuple[tuple[str, str], ...] = ()  # (aesthetic | unsafe, state dict path)


@dataclass
class LoadedClip:
    """A model ready for inference with its preprocessing and tokenizer."""

    model: Any
    preprocess: Any
    tokenizer: Any
    device: str
    image_size: int


_MODELS: dict[tuple, LoadedClip] = {}


# --- model loading ----------------------------------------------------------------------


def register_model_configs() -> None:
    """Make lakecurate's own open_clip configs (`lakecurate-tiny`) known to open_clip."""
    import open_clip

    if "lakecurate-tiny" in open_clip.list_models():
        return
    # Copied out by name: inside a zip (the code shipped with spark-submit --py-files)
    # there is no directory to point open_clip at, and open_clip names a model by its
    # file's stem.
    for entry in (resources.files("lakecurate.udfs") / "model_configs").iterdir():
        if entry.name.endswith(".json"):
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / entry.name
                path.write_text(entry.read_text())
                open_clip.add_model_config(path)


def is_random_weights(pretrained: str) -> bool:
    return pretrained.strip().lower() in ("", "none")


def task_gpus() -> list[str]:
    """GPU addresses Spark assigned to the running task ([] outside Spark or without GPUs)."""
    try:
        from pyspark import TaskContext
    except ImportError:
        return []
    ctx = TaskContext.get()
    if ctx is None:
        return []
    gpu = ctx.resources().get("gpu")
    return list(gpu.addresses) if gpu is not None else []


def task_device(requested: str) -> str:
    """The torch device for this task: Spark's GPU, else any CUDA, else CPU."""
    if requested == "cpu":
        return "cpu"
    import torch

    gpus = task_gpus()
    if gpus:
        return f"cuda:{gpus[0]}"
    if torch.cuda.is_available():
        return "cuda"
    if requested == "cuda":
        raise RuntimeError("device=cuda was asked for but no CUDA device is visible to this task")
    return "cpu"


def _image_size(model: Any) -> int:
    size = getattr(getattr(model, "visual", None), "image_size", 224)
    return int(size[0] if isinstance(size, tuple | list) else size)


def load_model(spec: ClipSpec, device: str | None = None) -> LoadedClip:
    """The model of `spec` on `device`, loaded once per Python worker and then reused."""
    import torch

    device = device or task_device(spec.device)
    key = (spec.name, spec.pretrained, spec.precision, device)
    if key in _MODELS:
        return _MODELS[key]
    _MODELS.clear()  # one model per worker: free the previous one (GPU memory)
    if spec.hub_offline:  # the driver found no hub: read the cache, do not wait on the network
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if spec.torch_threads > 0:
        torch.set_num_threads(spec.torch_threads)
    model, preprocess = _create(spec)
    # A plain cast of the whole model: on CPU bf16 it beat autocast ~4x (ENVIRONMENT.md).
    model = model.to(device=device, dtype=getattr(torch, DTYPES[spec.precision])).eval()
    import open_clip

    tokenizer = open_clip.get_tokenizer(spec.name)
    loaded = LoadedClip(model, preprocess, tokenizer, device, _image_size(model))
    _MODELS[key] = loaded
    log.info("loaded %s (%s, %s) on %s", spec.name, spec.pretrained, spec.precision, device)
    return loaded


def _create(spec: ClipSpec) -> tuple[Any, Any]:
    """open_clip model + eval preprocessing on CPU in fp32 (cast afterwards)."""
    import open_clip
    import torch

    register_model_configs()
    if not is_random_weights(spec.pretrained):
        model, _, preprocess = open_clip.create_model_and_transforms(
            spec.name, pretrained=spec.pretrained, device="cpu", weights_only=True
        )
        return model, preprocess
    # Random weights from a fixed seed: every worker (and a test without Spark) builds
    # the same model, so rows embedded by different tasks are comparable.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(RANDOM_WEIGHTS_SEED)
        model, _, preprocess = open_clip.create_model_and_transforms(spec.name, pretrained=None)
    return model, preprocess


# --- plain batch functions (tests call these without Spark) ------------------------------


def decode_image(data: bytes, min_side: int = 224) -> Any:
    """Decode to RGB; a JPEG is decoded at the smallest DCT scale that keeps `min_side`."""
    from PIL import Image

    im = Image.open(io.BytesIO(data))
    if im.format == "JPEG":
        w, h = im.size
        scale = min_side / max(1, min(w, h))
        if scale < 1:
            im.draft("RGB", (math.ceil(w * scale), math.ceil(h * scale)))
    return im.convert("RGB")


def _normalize(x: Any) -> np.ndarray:
    v = x.float().cpu().numpy().astype(np.float32, copy=False)
    norms = np.linalg.norm(v, axis=1, keepdims=True)
    return v / np.maximum(norms, 1e-12)


def _param(model: Any) -> Any:
    return next(model.parameters())


def encode_image_tensor(pixels: Any, model: Any) -> np.ndarray:
    """Preprocessed pixels (N, 3, H, W) -> L2-normalised float32 (N, D)."""
    import torch

    p = _param(model)
    with torch.inference_mode():
        return _normalize(model.encode_image(pixels.to(device=p.device, dtype=p.dtype)))


def encode_text_tokens(tokens: Any, model: Any) -> np.ndarray:
    """Token ids (N, L) -> L2-normalised float32 (N, D)."""
    import torch

    with torch.inference_mode():
        return _normalize(model.encode_text(tokens.to(_param(model).device)))


def embed_images(images: list, model: Any, preprocess: Any) -> np.ndarray:
    """PIL images -> L2-normalised float32 image embeddings (N, D)."""
    import torch

    return encode_image_tensor(torch.stack([preprocess(im) for im in images]), model)


def embed_texts(texts: list[str], model: Any, tokenizer: Any) -> np.ndarray:
    """Captions -> L2-normalised float32 text embeddings (N, D); tokenized as one batch."""
    return encode_text_tokens(tokenizer([t or "" for t in texts]), model)


def clip_scores(image_emb: np.ndarray, text_emb: np.ndarray) -> np.ndarray:
    """Row-wise cosine of unit vectors."""
    return np.einsum("ij,ij->i", image_emb, text_emb).astype(np.float32)


# --- the pipeline inside one task --------------------------------------------------------


@dataclass
class PreparedChunk:
    """One model batch after decode/preprocess/tokenize; rows that failed carry a reason."""

    n: int
    pixels: Any  # (k, 3, H, W) for the k rows that decoded, or None
    tokens: Any  # (k, L) for the same rows, or None
    ok: list[int]  # positions (in 0..n-1) of those rows
    reasons: list[tuple[str, str] | None]  # per row: (reason, detail) or None


def prepare_chunk(
    images: list, captions: list, clip: LoadedClip, decode_pool: ThreadPoolExecutor | None = None
) -> PreparedChunk:
    """Decode + preprocess every image (errors become reasons) and tokenize the good rows."""
    import torch

    mapper = decode_pool.map if decode_pool is not None else map
    results = list(mapper(lambda b: _prepare_one(b, clip), images))
    ok = [i for i, r in enumerate(results) if not isinstance(r, tuple)]
    reasons = [r if isinstance(r, tuple) else None for r in results]
    if not ok:
        return PreparedChunk(len(images), None, None, ok, reasons)
    pixels = torch.stack([results[i] for i in ok])
    tokens = clip.tokenizer([captions[i] or "" for i in ok])
    return PreparedChunk(len(images), pixels, tokens, ok, reasons)


def _prepare_one(data: Any, clip: LoadedClip) -> Any:
    if data is None or len(data) == 0:
        return (REASON_MISSING, "no image bytes in pairs")
    try:
        return clip.preprocess(decode_image(bytes(data), clip.image_size))
    except Exception as e:  # any decoder failure is a property of the record
        return (REASON_DECODE, f"{type(e).__name__}: {e}"[:500])


def finish_chunk(
    chunk: PreparedChunk, clip: LoadedClip, heads: tuple[tuple[str, str], ...] = ()
) -> pd.DataFrame:
    """Run the model (and the score `heads` on its image vectors) on a prepared chunk;
    one output row per input row, in order."""
    image_emb: list = [None] * chunk.n
    text_emb: list = [None] * chunk.n
    scores = np.full(chunk.n, np.nan, dtype=np.float32)
    head_cols = {c: np.full(chunk.n, np.nan, dtype=np.float32) for c in SCORE_COLUMNS.values()}
    if chunk.ok:
        img = encode_image_tensor(chunk.pixels, clip.model)
        txt = encode_text_tokens(chunk.tokens, clip.model)
        scores[chunk.ok] = clip_scores(img, txt)
        for column, values in head_scores(heads, img).items():
            head_cols[column][chunk.ok] = values
        for j, i in enumerate(chunk.ok):
            image_emb[i], text_emb[i] = img[j], txt[j]
    return pd.DataFrame(
        {
            "image_emb": image_emb,
            "text_emb": text_emb,
            "clip_score": scores,
            **head_cols,
            "reject_reason": [r[0] if r else None for r in chunk.reasons],
            "reject_detail": [r[1] if r else None for r in chunk.reasons],
        }
    )


def _rechunk(batches: Iterable[tuple[pd.Series, pd.Series]], size: int) -> Iterator[tuple]:
    """Arrow batches of any size -> (images, captions) lists of exactly `size` (last: less)."""
    imgs: list = []
    caps: list = []
    for images, captions in batches:
        imgs.extend(images.tolist())
        caps.extend(captions.tolist())
        while len(imgs) >= size:
            yield imgs[:size], caps[:size]
            imgs, caps = imgs[size:], caps[size:]
    if imgs:
        yield imgs, caps


def embed_batches(
    batches: Iterable[tuple[pd.Series, pd.Series]], spec: ClipSpec
) -> Iterator[pd.DataFrame]:
    """(image bytes, caption) batches -> result frames, decode overlapped with inference."""
    clip = load_model(spec)
    for name, path in spec.heads:  # a bad head fails the task before any decoding
        cached_head(name, path)
    with (
        ThreadPoolExecutor(max(1, spec.decode_threads), "clip-decode") as decode_pool,
        ThreadPoolExecutor(PREFETCH_CHUNKS, "clip-chunk") as chunk_pool,
    ):
        pending: deque[Future] = deque()
        for images, captions in _rechunk(batches, spec.batch_size):
            pending.append(chunk_pool.submit(prepare_chunk, images, captions, clip, decode_pool))
            if len(pending) > PREFETCH_CHUNKS:
                yield finish_chunk(pending.popleft().result(), clip, spec.heads)
        while pending:
            yield finish_chunk(pending.popleft().result(), clip, spec.heads)


def clip_udf(spec: ClipSpec, counter=None):
    """An iterator pandas UDF `(image binary, caption string) -> struct<RESULT_DDL>`;
    `counter` (a Spark accumulator, or None) gets each batch's rows as it is done."""
    from pyspark.sql.functions import pandas_udf

    @pandas_udf(RESULT_DDL)
    def embed(batches: Iterator[tuple[pd.Series, pd.Series]]) -> Iterator[pd.DataFrame]:
        for frame in embed_batches(batches, spec):
            if counter is not None:
                counter.add(len(frame))
            yield frame

    return embed
