"""Model identity shared by the driver-side jobs: which `model_id` a ModelConfig means.

`embed` writes rows under this id; `dedup` (semantic) and `select` read the rows of
the same id. The loading code itself lives in `udfs/clip.py` (executor side).
"""

from __future__ import annotations

import hashlib
import logging
import os
import re

from lakecurate.runtime.config import Config, ModelConfig, replace
from lakecurate.runtime.errors import ConfigError

log = logging.getLogger(__name__)

TINY_MODEL = "lakecurate-tiny"
OWN_CONFIGS = "lakecurate-"  # udfs/model_configs/*.json: the tiny model and the probes
DEFAULT_MODEL = "ViT-B-32"


def resolve_device(cfg: ModelConfig, gpu_scheduled: bool = False) -> str:
    """The device the embed tasks will use; `gpu_scheduled`: Spark assigns GPUs to tasks."""
    if cfg.device != "auto":
        return cfg.device
    if gpu_scheduled:
        return "cuda"
    try:
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    except ImportError:
        return "cpu"


def resolve_precision(cfg: ModelConfig, device: str | None = None) -> str:
    """`auto`: fp16 on GPU; on CPU bf16 (measured ~4x faster than fp32 for ViT-B-32 here),
    except lakecurate's own small configs (the tiny test model, the probes), which stay
    fp32 as they were trained."""
    if cfg.precision != "auto":
        return cfg.precision
    device = device or resolve_device(cfg)
    if device == "cuda":
        return "fp16"
    return "fp32" if cfg.name.startswith(OWN_CONFIGS) else "bf16"


def weights_id(pretrained: str) -> str:
    """A tag as is; a checkpoint file by its name and a short content hash; `none`."""
    if pretrained.lower() in ("", "none"):
        return "none"
    if os.path.isfile(pretrained):
        h = hashlib.sha256()
        with open(pretrained, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        return f"{os.path.basename(pretrained)}@{h.hexdigest()[:12]}"
    return pretrained


def model_id(cfg: ModelConfig, device: str | None = None) -> str:
    """`<name>/<weights>/<precision>`, e.g. `ViT-B-32/laion2b_s34b_b79k/bf16`."""
    if not cfg.name:
        raise ValueError("model_id of an unresolved model: call resolve_model(lake, cfg) first")
    return f"{cfg.name}/{weights_id(cfg.pretrained)}/{resolve_precision(cfg, device)}"


def split_model_id(mid: str) -> tuple[str, str, str]:
    """(name, weights, precision) of a `model_id`; a name may hold "/" (hf-hub:org/x),
    weights and precision never do."""
    name, weights, precision = mid.rsplit("/", 2)
    return name, weights, precision


def resolve_model(lake, cfg: Config) -> Config:
    """`cfg` with the model a command works with. A named model (`--model`, or
    `model.name` in the config) is used as named. Otherwise the lake decides: the one
    model its embeddings hold (said in the log), ViT-B-32 when it holds none, and an
    error that lists them when it holds several."""
    if cfg.model.name:
        return cfg
    held = lake.distinct_values("embeddings", "model_id")
    if not held:
        return replace(cfg, model={"name": DEFAULT_MODEL})
    if len(held) > 1:
        raise ConfigError(
            "model.name",
            f"the lake holds embeddings of {len(held)} models ({', '.join(held)}); name "
            "the one to use with --model NAME --pretrained WEIGHTS (or model: in the config)",
        )
    name, weights, precision = split_model_id(held[0])
    log.info("using the lake's model %s (the only one its embeddings hold)", held[0])
    return replace(cfg, model={"name": name, "pretrained": weights, "precision": precision})


def add_model_arguments(p) -> None:
    """--model/--pretrained for a command that reads a model's embeddings."""
    p.add_argument(
        "--model",
        help="open_clip model name (default: the model the lake's embeddings hold; "
        f"{DEFAULT_MODEL} on a lake without embeddings)",
    )
    p.add_argument("--pretrained", help="weights: an open_clip tag, a checkpoint file, or none")


def apply_model_args(cfg: Config, args) -> Config:
    model = {}
    if getattr(args, "model", None):
        model["name"] = args.model
    if getattr(args, "pretrained", None):
        model["pretrained"] = args.pretrained
        model.setdefault("name", cfg.model.name or DEFAULT_MODEL)
    return replace(cfg, model=model) if model else cfg


# --- weights: checked on the driver before any Spark work --------------------------------

CHECKPOINT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin")
CONTENT_HASHED = re.compile(r"[^/]+@[0-9a-f]{12}")  # weights_id of a checkpoint file
PROBE_TIMEOUT_S = 3.0
HOW_TO_POINT = (
    "download the checkpoint on a networked machine (e.g. open_clip.create_model('{name}', "
    "pretrained='{tag}') caches it under ~/.cache/huggingface) and pass its file with "
    "`--pretrained /path/to/open_clip_model.safetensors` (or `model.pretrained` in "
    "lakecurate.yaml); a `.pt` file is read with torch.load(weights_only=True). The file "
    "must be readable at the same path on every executor."
)


def _open_clip():
    import open_clip

    from lakecurate.udfs.clip import register_model_configs

    register_model_configs()
    return open_clip


def check_model_name(name: str) -> None:
    open_clip = _open_clip()
    if name not in open_clip.list_models():
        raise ConfigError(
            "model.name",
            f"open_clip has no model {name!r}; see open_clip.list_models() "
            f"(e.g. ViT-B-32, ViT-L-14, {TINY_MODEL})",
        )


def _looks_like_path(pretrained: str) -> bool:
    return os.sep in pretrained or pretrained.endswith(CHECKPOINT_SUFFIXES)


def _check_checkpoint_file(path: str) -> None:
    if not os.path.isfile(path):
        raise ConfigError("model.pretrained", f"checkpoint file not found: {path}")
    if not path.endswith(CHECKPOINT_SUFFIXES):
        raise ConfigError(
            "model.pretrained",
            f"{path}: expected a {' / '.join(CHECKPOINT_SUFFIXES)} checkpoint file",
        )


def _reachable(host: str) -> bool:
    import socket

    try:
        socket.create_connection((host, 443), timeout=PROBE_TIMEOUT_S).close()
        return True
    except OSError:
        return False


def _hub_host() -> str:
    from urllib.parse import urlparse

    return urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or ""


def hub_offline() -> bool:
    """True when the model hub cannot be used: HF_HUB_OFFLINE set, or no route within 3 s."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        return True
    return not _reachable(_hub_host())


def _cached_hf_file(hf_hub: str) -> str | None:
    from huggingface_hub import hf_hub_download

    repo, filename = os.path.split(hf_hub)
    for name in ("open_clip_model.safetensors", filename or "open_clip_pytorch_model.bin"):
        try:
            return hf_hub_download(repo_id=repo, filename=name, local_files_only=True)
        except Exception:  # not in the local cache under this name
            continue
    return None


def _fetch_tag(name: str, tag: str, offline: bool) -> str:
    open_clip = _open_clip()
    pcfg = open_clip.pretrained.get_pretrained_cfg(name, tag)
    if not pcfg:
        tags = ", ".join(open_clip.list_pretrained_tags_by_model(name)) or "none"
        raise ConfigError(
            "model.pretrained",
            f"{tag!r} is neither a pretrained tag of {name} (tags: {tags}) nor an existing "
            f"checkpoint file; or pass `--pretrained none` for random weights (tests only)",
        )
    if offline:
        path = _cached_hf_file(pcfg["hf_hub"]) if pcfg.get("hf_hub") else None
    else:
        try:
            path = open_clip.pretrained.download_pretrained(pcfg)
        except Exception as e:
            log.warning("downloading %s/%s failed: %s", name, tag, e)
            path = None
    if not path:
        why = "the model hub is unreachable (offline)" if offline else "the download failed"
        raise ConfigError(
            "model.pretrained",
            f"weights {name}/{tag} are not available: {why} and they are not in the local "
            f"cache. To use them, {HOW_TO_POINT.format(name=name, tag=tag)}",
        )
    return path


def ensure_weights(cfg: ModelConfig) -> tuple[str | None, bool]:
    """Check, within seconds, that the weights of `cfg` can be had; fetch a tag into the cache.

    Returns (local checkpoint path or None for random weights, hub_offline). Raises
    ConfigError naming `model.pretrained` and how to point at a local checkpoint; never
    falls back to random weights.
    """
    check_model_name(cfg.name)
    pretrained = cfg.pretrained.strip()
    if pretrained.lower() in ("", "none"):
        log.warning(
            "MODEL %s HAS RANDOM WEIGHTS (--pretrained none): its embeddings and CLIP scores "
            "are meaningless; use it for tests and the demo only",
            cfg.name,
        )
        return None, False
    if CONTENT_HASHED.fullmatch(pretrained) and not os.path.exists(pretrained):
        raise ConfigError(
            "model.pretrained",
            f"{pretrained!r} is how a model_id names a checkpoint file (its name and a "
            f"content hash), not a file: pass the file itself with --pretrained PATH",
        )
    if os.path.exists(pretrained) or _looks_like_path(pretrained):
        _check_checkpoint_file(pretrained)
        return pretrained, False
    offline = hub_offline()
    return _fetch_tag(cfg.name, pretrained, offline), offline
