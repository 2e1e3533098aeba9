"""`lakecurate probe train|eval|compare`: prove a curation by the model it trains.

* `probe train NAME@V` trains a small open_clip model (default `lakecurate-probe-s`:
  64 px images, about 8M parameters; the default 60,000 samples take 4 minutes on 2
  CPU cores) on a published
  version, read through `lakecurate.dataset` and a multi-worker DataLoader, for
  `--samples` samples seen (`lakecurate/probe/train.py`); it writes the checkpoint
  under `<lake>/_probes/<probe_id>/`, evaluates it (`--eval`, default `builtin`) and
  adds rows to the `probes` table: the run, and one per eval set.
* `probe eval PROBE_ID|CHECKPOINT --eval SET` measures a probe (or any checkpoint of an
  open_clip config, `--model`) on eval sets (`lakecurate/probe/evalsets.py`): zero-shot
  top-1/top-5, retrieval R@1/R@5 both ways.
* `probe compare A B ...` prints the probes side by side (`--json`: one document).

Runs without Spark. A probe checkpoint is an embed model:
`lakecurate embed --model lakecurate-probe-s --pretrained <checkpoint>`.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa

from lakecurate.catalog.dataset import dataset_rows, parse_ref, pick
from lakecurate.deltaio.lake import Commit, Lake, new_run_id
from lakecurate.runtime.config import Config, config_hash
from lakecurate.runtime.errors import ConfigError
from lakecurate.schemas import TABLES

NAME = "probe"
HELP = "train a small CLIP on a dataset version, evaluate it, compare probes"
NEEDS_SPARK = False
PROBES_DIR = "_probes"
log = logging.getLogger(__name__)


def writes(args: argparse.Namespace) -> bool:
    return getattr(args, "action", None) in ("train", "eval")


def add_arguments(p: argparse.ArgumentParser) -> None:
    from lakecurate.probe.train import PROBE_MODEL, ProbeConfig

    d = ProbeConfig()
    p.add_argument("action", choices=["train", "eval", "compare"])
    p.add_argument(
        "targets",
        nargs="+",
        metavar="TARGET",
        help="train: NAME@V; eval: a probe id or a checkpoint file; compare: probe ids",
    )
    p.add_argument(
        "--eval",
        action="append",
        dest="evals",
        metavar="SET",
        help="eval set: `builtin` (held-out generated pictures) or a clip_benchmark-style "
        "WebDataset directory; repeatable (default: builtin; train: `none` skips)",
    )
    g = p.add_argument_group("train")
    g.add_argument("--model", help=f"open_clip config (default {PROBE_MODEL})")
    g.add_argument("--init", help="checkpoint to start from (default: from scratch)")
    g.add_argument("--samples", type=int, default=d.samples, help="budget: samples seen")
    g.add_argument("--batch-size", type=int, default=d.batch_size)
    g.add_argument("--lr", type=float, default=d.lr)
    g.add_argument("--weight-decay", type=float, default=d.weight_decay)
    g.add_argument("--warmup", type=float, default=d.warmup, help="share of steps warming up")
    g.add_argument("--seed", type=int, default=d.seed)
    g.add_argument("--workers", type=int, default=d.workers, help="DataLoader workers")
    g.add_argument("--device", default=d.device, choices=["auto", "cpu", "cuda"])
    g.add_argument(
        "--out",
        help="checkpoint directory (default <lake>/_probes/<probe_id>; for a lake in an "
        "object store ~/.cache/lakecurate/probes/<probe_id>)",
    )


def probe_config(args: argparse.Namespace):
    from lakecurate.probe.train import PROBE_MODEL, ProbeConfig

    return ProbeConfig(
        model=args.model or PROBE_MODEL,
        samples=args.samples,
        batch_size=args.batch_size,
        lr=args.lr,
        weight_decay=args.weight_decay,
        warmup=args.warmup,
        seed=args.seed,
        workers=args.workers,
        device=args.device,
        init=args.init,
    ).check()


def apply_args(cfg: Config, args: argparse.Namespace) -> Config:
    if args.action == "train":
        if len(args.targets) != 1:
            raise ConfigError("probe train", "name one dataset version: probe train NAME@V")
        parse_ref(args.targets[0])
        probe_config(args)
    if args.action == "compare" and len(args.targets) < 1:
        raise ConfigError("probe compare", "name the probes to compare")
    return cfg


def command(spark, cfg: Config, args: argparse.Namespace) -> int:
    lake = Lake(cfg.lake.path, cfg.lake.engine, cfg.lake.read_path)
    if args.action == "train":
        doc = do_train(lake, cfg, args)
    elif args.action == "eval":
        doc = do_eval(lake, cfg, args)
    else:
        doc = do_compare(lake, args.targets)
    if getattr(args, "json", False):
        print(json.dumps(doc, default=str))
    else:
        print(doc["text"])
    return 0


# --- train ----------------------------------------------------------------------------------


def _eval_specs(args: argparse.Namespace) -> list[str]:
    specs = args.evals or ["builtin"]
    return [] if specs == ["none"] else specs


def do_train(lake: Lake, cfg: Config, args: argparse.Namespace) -> dict:
    from lakecurate.probe import evalsets
    from lakecurate.probe.train import create_model, train

    pcfg = probe_config(args)
    name, sel = parse_ref(args.targets[0])
    dv = pick(dataset_rows(None, lake, name), name, sel) if _has(lake, name) else None
    if dv is None:
        raise ConfigError(
            "NAME", f"no dataset named {name!r}; `lakecurate versions list` shows them"
        )
    sets = [evalsets.load(s) for s in _eval_specs(args)]  # bad eval sets fail before training
    probe_id = new_run_id("probe")
    out = Path(args.out) if args.out else default_out(lake, probe_id)
    log.info("probe %s: training %s on %s (%d samples)", probe_id, pcfg.model, dv.ref, pcfg.samples)

    def report(step: int, steps: int, loss: float) -> None:
        print(f"probe {probe_id}: step {step}/{steps} loss {loss:.4f}", file=sys.stderr, flush=True)

    res = train(dv.manifest_uri, pcfg, out, report)
    model, _, eval_tf, tokenizer = create_model(pcfg.model, res.checkpoint, res.device)
    results = _evaluate(model, eval_tf, tokenizer, sets, res.device)
    base = {
        "probe_id": probe_id,
        "dataset": dv.ref,
        "pinned_versions": json.dumps(dv.pinned, sort_keys=True),
        "model": pcfg.model,
        "model_cfg": json.dumps(json.loads(Path(res.model_config).read_text())["model_cfg"]),
        "init": pcfg.init,
        "samples": res.samples_seen,
        "hparams": json.dumps(pcfg.hparams(), sort_keys=True),
        "seed": pcfg.seed,
        "device": res.device,
        "seconds": round(res.seconds, 2),
        "final_loss": res.final_loss,
        "checkpoint_uri": res.checkpoint,
    }
    rows = [
        {
            **base,
            "event": "train",
            "loss_curve": json.dumps(res.loss_curve),
            "metrics": json.dumps(
                {f"{s}/{k}": v for s, m in results.items() for k, v in m.items()}
            ),
        }
    ]
    rows += [
        {**base, "event": f"eval:{s}", "eval_set": s, "metrics": json.dumps(m)}
        for s, m in results.items()
    ]
    _append(lake, cfg, rows, probe_id)
    text = [
        f"probe {probe_id}: {pcfg.model} on {dv.ref}, {res.samples_seen:,} samples in "
        f"{res.seconds:.0f} s ({res.device}); final loss {res.final_loss:.4f}",
        f"  checkpoint: {res.checkpoint}",
        f"  embed with it: lakecurate embed --model {pcfg.model} --pretrained {res.checkpoint}",
    ]
    text += [f"  {s}: {_fmt(m)}" for s, m in results.items()]
    return {
        "probe_id": probe_id,
        "checkpoint": res.checkpoint,
        "evals": results,
        "text": "\n".join(text),
    }


def default_out(lake: Lake, probe_id: str) -> Path:
    """`<lake>/_probes/<probe_id>` for a lake on this filesystem; for a lake in an object
    store, `~/.cache/lakecurate/probes/<probe_id>` (the checkpoint is written locally;
    `--out` picks another place, and `probes` records where it is)."""
    root = lake.root.removeprefix("file://")
    if "://" in root:
        return Path.home() / ".cache" / "lakecurate" / "probes" / probe_id
    return Path(root) / PROBES_DIR / probe_id


def _has(lake: Lake, name: str) -> bool:
    return bool(dataset_rows(None, lake, name))


def _evaluate(model, transform, tokenizer, sets, device: str) -> dict[str, dict]:
    from lakecurate.probe.evaluate import evaluate

    return {s.name: evaluate(model, transform, tokenizer, s, device) for s in sets}


def _fmt(m: dict) -> str:
    return ", ".join(f"{k} {v:.3f}" for k, v in m.items() if k != "images")


def _append(lake: Lake, cfg: Config, rows: list[dict], probe_id: str) -> None:
    now = datetime.now(UTC)
    spec = TABLES["probes"]
    full = [
        {c: r.get(c) for c in spec.columns} | {"run_id": probe_id, "created_at": now} for r in rows
    ]
    table = pa.Table.from_pylist(full, schema=spec.schema)
    commit = Commit(job=NAME, run_id=probe_id, config_hash=config_hash(cfg))
    lake.append_new_rows(None, table, "probes", commit, within="probe_id")


# --- eval -----------------------------------------------------------------------------------


def probe_rows(lake: Lake, probe_id: str | None = None) -> list[dict]:
    if not lake.exists("probes"):
        return []
    rows = lake.delta("probes").to_pyarrow_table().to_pylist()
    return [r for r in rows if probe_id is None or r["probe_id"] == probe_id]


def _train_row(lake: Lake, probe_id: str) -> dict | None:
    return next((r for r in probe_rows(lake, probe_id) if r["event"] == "train"), None)


def do_eval(lake: Lake, cfg: Config, args: argparse.Namespace) -> dict:
    from lakecurate.curation.models import weights_id
    from lakecurate.probe import evalsets
    from lakecurate.probe.train import MODEL_CONFIG, create_model, resolve_device

    sets = [evalsets.load(s) for s in (args.evals or ["builtin"])]
    device = resolve_device(args.device)
    docs, text = {}, []
    for target in args.targets:
        row = _train_row(lake, target)
        if row is not None:
            ckpt, model_name, probe_id = row["checkpoint_uri"], row["model"], target
            base = {
                k: row[k]
                for k in (
                    "dataset",
                    "pinned_versions",
                    "model",
                    "model_cfg",
                    "init",
                    "samples",
                    "hparams",
                    "seed",
                )
            }
        elif Path(target).is_file():
            ckpt = target
            config = Path(target).with_name(MODEL_CONFIG)
            model_name = args.model or (
                json.loads(config.read_text())["model_name"] if config.is_file() else None
            )
            if not model_name:
                raise ConfigError(
                    "--model",
                    f"{target}: name its open_clip config with --model (no {MODEL_CONFIG} beside it)",
                )
            probe_id = f"checkpoint:{weights_id(target)}"
            base = {"model": model_name}
        else:
            raise ConfigError(
                "TARGET", f"{target!r} is neither a probe id in `probes` nor a checkpoint file"
            )
        model, _, eval_tf, tokenizer = create_model(model_name, ckpt, device)
        results = _evaluate(model, eval_tf, tokenizer, sets, device)
        rows = [
            {
                **base,
                "probe_id": probe_id,
                "event": f"eval:{s}",
                "eval_set": s,
                "metrics": json.dumps(m),
                "checkpoint_uri": ckpt,
                "device": device,
            }
            for s, m in results.items()
        ]
        _append(lake, cfg, rows, probe_id)
        docs[probe_id] = results
        text += [f"{probe_id}:"] + [f"  {s}: {_fmt(m)}" for s, m in results.items()]
    return {"evals": docs, "text": "\n".join(text)}


# --- compare --------------------------------------------------------------------------------


def do_compare(lake: Lake, probe_ids: list[str]) -> dict:
    table = []
    for pid in probe_ids:
        rows = probe_rows(lake, pid)
        train = next((r for r in rows if r["event"] == "train"), None)
        if not rows:
            raise ConfigError(
                "TARGET", f"no probe {pid!r} in `probes` (`lakecurate probe train` makes one)"
            )
        entry = {
            "probe_id": pid,
            "dataset": (train or rows[0]).get("dataset"),
            "model": (train or rows[0]).get("model"),
            "samples": train.get("samples") if train else None,
            "seed": train.get("seed") if train else None,
            "final_loss": train.get("final_loss") if train else None,
            "seconds": train.get("seconds") if train else None,
        }
        latest: dict[str, dict] = {}
        for r in sorted(rows, key=lambda r: r["created_at"]):
            if r["event"].startswith("eval:"):
                latest[r["eval_set"]] = json.loads(r["metrics"] or "{}")
        entry["evals"] = latest
        table.append(entry)
    metrics = sorted(
        {(s, k) for e in table for s, m in e["evals"].items() for k in m if k != "images"}
    )
    head = ["", *[e["probe_id"][-14:] for e in table]]
    lines = [head]
    for label, key in (
        ("dataset", "dataset"),
        ("model", "model"),
        ("samples", "samples"),
        ("seed", "seed"),
        ("final loss", "final_loss"),
        ("seconds", "seconds"),
    ):
        lines.append([label, *[_cell(e[key]) for e in table]])
    for s, k in metrics:
        lines.append([f"{s} {k}", *[_cell(e["evals"].get(s, {}).get(k)) for e in table]])
    widths = [max(len(row[i]) for row in lines) for i in range(len(head))]
    text = "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in lines
    )
    return {"probes": table, "text": text}


def _cell(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4f}"
    return str(v)
