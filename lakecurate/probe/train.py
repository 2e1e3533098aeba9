"""Train a probe: a small open_clip model, from scratch or from a checkpoint, on a
published dataset version, for a fixed budget of samples seen.

The version is read the way a training script reads it (`lakecurate.dataset`, with
deletion lists), through a multi-worker torch DataLoader. Each epoch the workers take
the shards in a seeded order and shuffle samples in a buffer. The loss is open_clip's
`ClipLoss`; AdamW (no weight decay on gains, biases and the logit scale), linear
warmup then cosine decay, the logit scale clamped at 100 as open_clip does. A run is
reproducible: same version, configuration, seed and worker count give the same
weights on a CPU.

The checkpoint is `open_clip_model.safetensors` with `open_clip_config.json` (the
model config) beside it: `open_clip.create_model_and_transforms(<model>,
pretrained=<the safetensors file>)` loads it, and so does `lakecurate embed --model
<model> --pretrained <file>`.
"""

from __future__ import annotations

import io
import json
import logging
import math
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lakecurate.runtime.errors import ConfigError

log = logging.getLogger(__name__)

PROBE_MODEL = "lakecurate-probe-s"
CHECKPOINT = "open_clip_model.safetensors"
MODEL_CONFIG = "open_clip_config.json"
IMAGE_KEYS = ("jpg", "jpeg", "png", "webp")


@dataclass(frozen=True)
class ProbeConfig:
    """What a probe run trains and how; `check()` validates it in one place."""

    model: str = PROBE_MODEL
    samples: int = 60_000  # budget: samples seen (4 minutes on 2 CPU cores: 256/s measured)
    batch_size: int = 256
    lr: float = 2e-3
    weight_decay: float = 0.1
    warmup: float = 0.1  # share of the steps spent warming the learning rate up
    seed: int = 0
    workers: int = 2
    device: str = "auto"  # auto | cpu | cuda
    init: str | None = None  # a checkpoint to start from
    shuffle_buffer: int = 2000
    log_every: int = 10  # steps between loss points

    def check(self) -> ProbeConfig:
        if self.samples < self.batch_size:
            raise ConfigError(
                "--samples", f"{self.samples} is less than one batch ({self.batch_size})"
            )
        if self.batch_size < 2:
            raise ConfigError("--batch-size", "a contrastive loss needs at least 2 pairs a batch")
        if not 0 < self.lr < 1:
            raise ConfigError("--lr", f"{self.lr} is not in (0, 1)")
        if not 0 <= self.warmup < 1:
            raise ConfigError("--warmup", f"{self.warmup} is not in [0, 1)")
        if self.workers < 0:
            raise ConfigError("--workers", "must be 0 or more")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ConfigError("--device", f"{self.device!r}: one of auto, cpu, cuda")
        if self.init and not Path(self.init).is_file():
            raise ConfigError("--init", f"checkpoint not found: {self.init}")
        return self

    @property
    def steps(self) -> int:
        return self.samples // self.batch_size

    def hparams(self) -> dict[str, Any]:
        keys = ("batch_size", "lr", "weight_decay", "warmup", "workers", "shuffle_buffer")
        return {k: v for k, v in asdict(self).items() if k in keys}


@dataclass
class TrainResult:
    checkpoint: str
    model_config: str
    steps: int
    samples_seen: int
    seconds: float
    final_loss: float
    loss_curve: list[tuple[int, float]] = field(default_factory=list)
    device: str = "cpu"


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device", "cuda was asked for and torch sees no GPU")
    return device


def create_model(name: str, init: str | None = None, device: str = "cpu"):
    """(model, train transform, eval transform, tokenizer) of an open_clip config."""
    import open_clip

    from lakecurate.udfs.clip import register_model_configs

    register_model_configs()
    if name not in open_clip.list_models():
        raise ConfigError("--model", f"open_clip has no model {name!r} (e.g. {PROBE_MODEL})")
    model, train_tf, eval_tf = open_clip.create_model_and_transforms(
        name, pretrained=init, device=device, output_dict=True
    )
    return model, train_tf, eval_tf, open_clip.get_tokenizer(name)


class Decode:
    """sample dict -> (image tensor, token ids); picklable for DataLoader workers."""

    def __init__(self, transform: Callable, tokenizer: Callable):
        self.transform, self.tokenizer = transform, tokenizer

    def __call__(self, sample: dict) -> tuple[Any, Any] | None:
        from PIL import Image

        data = next((sample[k] for k in IMAGE_KEYS if k in sample), None)
        text = sample.get("txt", b"").decode("utf-8", "replace").strip()
        if data is None or not text:
            return None
        try:
            img = Image.open(io.BytesIO(data)).convert("RGB")
        except Exception:  # a sample the loader cannot decode is skipped, as webdataset does
            return None
        return self.transform(img), self.tokenizer([text])[0]


def learning_rate(step: int, cfg: ProbeConfig) -> float:
    """Linear warmup to `lr`, then cosine decay to 0 over the remaining steps."""
    warm = max(1, int(cfg.steps * cfg.warmup))
    if step < warm:
        return cfg.lr * (step + 1) / warm
    done = (step - warm) / max(1, cfg.steps - warm)
    return 0.5 * cfg.lr * (1 + math.cos(math.pi * min(1.0, done)))


def _optimizer(model, cfg: ProbeConfig):
    import torch

    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        plain = (
            p.ndim < 2 or "bn" in name or "ln" in name or "bias" in name or "logit_scale" in name
        )
        (no_decay if plain else decay).append(p)
    groups = [
        {"params": no_decay, "weight_decay": 0.0},
        {"params": decay, "weight_decay": cfg.weight_decay},
    ]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.98), eps=1e-6)


def _batches(path: str, decode: Decode, cfg: ProbeConfig, device: str) -> Iterator[tuple]:
    """Batches for as many epochs as the budget needs (`TrainStream`: each epoch a new
    seeded order), from one DataLoader whose workers live across epochs."""
    import torch

    from lakecurate.probe.stream import TrainStream

    workers = {"multiprocessing_context": "forkserver", "persistent_workers": True}
    loader = torch.utils.data.DataLoader(
        TrainStream(path, decode, cfg.seed, cfg.shuffle_buffer),
        batch_size=cfg.batch_size,
        num_workers=cfg.workers,
        drop_last=True,
        generator=torch.Generator().manual_seed(cfg.seed),
        pin_memory=device == "cuda",
        **(workers if cfg.workers else {}),
    )
    while True:
        n = 0
        for images, texts in loader:
            n += 1
            yield images, texts
        if n == 0:
            raise ConfigError(
                "probe train",
                f"{path} gives no full batch of {cfg.batch_size} decodable samples: "
                "lower --batch-size or train on a larger version",
            )


def train(
    version_path: str,
    cfg: ProbeConfig,
    out_dir: str | Path,
    report: Callable[[int, int, float], None] | None = None,
) -> TrainResult:
    """Train a probe on the version at `version_path`; write its checkpoint to `out_dir`.

    `report(step, steps, loss)` is called every `cfg.log_every` steps (progress)."""
    import torch
    from open_clip.loss import ClipLoss
    from safetensors.torch import save_file

    cfg = cfg.check()
    device = resolve_device(cfg.device)
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    model, train_tf, _, tokenizer = create_model(cfg.model, cfg.init, device)
    model.train()
    opt = _optimizer(model, cfg)
    loss_fn = ClipLoss()
    autocast = (
        torch.autocast("cuda", dtype=torch.bfloat16)
        if device == "cuda"
        else torch.autocast("cpu", enabled=False)
    )
    curve: list[tuple[int, float]] = []
    t0 = time.time()
    loss_value = float("nan")
    batches = _batches(version_path, Decode(train_tf, tokenizer), cfg, device)
    for step in range(cfg.steps):
        images, texts = next(batches)
        images = images.to(device, non_blocking=True)
        texts = texts.to(device, non_blocking=True)
        for g in opt.param_groups:
            g["lr"] = learning_rate(step, cfg)
        with autocast:
            out = model(images, texts)
            loss = loss_fn(out["image_features"], out["text_features"], out["logit_scale"])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        loss_value = float(loss.detach())
        if step % cfg.log_every == 0 or step == cfg.steps - 1:
            curve.append(((step + 1) * cfg.batch_size, round(loss_value, 5)))
            if report is not None:
                report(step + 1, cfg.steps, loss_value)
    seconds = time.time() - t0
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ckpt = out / CHECKPOINT
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(ckpt.with_suffix(".tmp")))
    ckpt.with_suffix(".tmp").replace(ckpt)  # whole or absent
    config_path = out / MODEL_CONFIG
    config_path.write_text(json.dumps(model_config_doc(cfg.model), indent=2) + "\n")
    return TrainResult(
        checkpoint=str(ckpt),
        model_config=str(config_path),
        steps=cfg.steps,
        samples_seen=cfg.steps * cfg.batch_size,
        seconds=seconds,
        final_loss=loss_value,
        loss_curve=curve,
        device=device,
    )


def model_config_doc(name: str) -> dict:
    """The open_clip config of `name` in the hub's `open_clip_config.json` layout."""
    import open_clip

    from lakecurate.udfs.clip import register_model_configs

    register_model_configs()
    return {
        "model_name": name,
        "model_cfg": open_clip.get_model_config(name),
        "preprocess_cfg": {
            "mean": list(open_clip.OPENAI_DATASET_MEAN),
            "std": list(open_clip.OPENAI_DATASET_STD),
        },
    }
