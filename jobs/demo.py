"""`lakecurate demo`: the whole curation path on generated sample data, offline.

Generates ~2,000 Pillow-drawn image-text pairs (with injected exact duplicates,
re-encoded near-duplicates, near-duplicate captions, swapped captions and bad
records) as WebDataset tars and an image folder, then runs ingest -> embed ->
dedup -> select -> publish in one Spark session with the `lakecurate-tiny` model,
and prints what each stage kept and how to inspect the result.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from lakecurate.curation.models import TINY_MODEL
from lakecurate.runtime.config import Config, replace
from lakecurate.runtime.jobkit import JobResult, run_job

NAME = "demo"
WRITES = True
HELP = "run the whole curation end to end on generated sample data (offline, tiny model)"
NEEDS_SPARK = True

log = logging.getLogger(__name__)

BANNER = """
  !!! The demo embeds with `lakecurate-tiny`: an open_clip model with RANDOM weights,
  !!! so its CLIP scores and semantic neighbours carry no meaning. It exists to show
  !!! the pipeline offline. For real curation use e.g. `--model ViT-B-32 --pretrained
  !!! laion2b_s34b_b79k` on a networked machine, or `--pretrained /path/to/ckpt`.
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--pairs", type=int, default=2000, help="how many sample pairs (default 2000)")
    p.add_argument("--seed", type=int, default=0, help="sample generator seed")
    p.add_argument("--name", default="demo", help="dataset name to publish (default: demo)")


def apply_args(cfg: Config, args: argparse.Namespace) -> Config:
    lake = Path(cfg.lake.path)
    data = lake / "_demo_sources"
    return replace(
        cfg,
        sources=[
            {"uri": str(data / "webdataset"), "format": "webdataset"},
            {"uri": str(data / "folder"), "format": "folder"},
        ],
        model={"name": TINY_MODEL, "pretrained": "none"},
        publish={"name": args.name, "shard_size": 500},
        dedup={"methods": ["exact", "phash", "minhash", "semantic"]},
    )


def generate_sources(cfg: Config, n: int, seed: int) -> None:
    """Write the sample pairs: 90% as WebDataset tars, 10% as a captioned image folder."""
    from lakecurate.demo.sample import generate

    wds = Path(cfg.sources[0].uri)
    if wds.exists():
        log.info("sample sources already at %s (re-run: ingest will skip them)", wds.parent)
        return
    samples = generate(n=n, seed=seed)
    cut = int(len(samples.records) * 0.9)
    folder = type(samples)(samples.records[cut:], {})
    samples.records = samples.records[:cut]
    samples.write_webdataset(wds, shard_size=300)
    folder.write_folder(cfg.sources[1].uri)
    log.info("generated %d sample pairs under %s", n, wds.parent)


def stages() -> list[tuple[str, object]]:
    from lakecurate.jobs import dedup, embed, ingest, publish, selection

    return [
        ("ingest", ingest),
        ("embed", embed),
        ("dedup", dedup),
        ("select", selection),
        ("publish", publish),
    ]


def command(spark, cfg: Config, args: argparse.Namespace) -> int:
    t0 = time.time()
    print(BANNER)
    generate_sources(cfg, args.pairs, args.seed)
    results: list[JobResult] = []
    for name, job in stages():
        print(f"== {name} ...", flush=True)
        res = run_job(job, spark, cfg)
        results.append(res)
        print(res.summary(), flush=True)
    print(_closing(cfg, results[-1], time.time() - t0))
    return 0


def _closing(cfg: Config, pub: JobResult, seconds: float) -> str:
    lake = cfg.lake.path
    version = pub.counts.get("version")
    name = cfg.publish.name
    shards = pub.counts.get("shard_dir")
    return "\n".join(
        [
            "",
            f"Demo finished in {seconds:.0f} s. Inspect it with:",
            f"  lakecurate --lake {lake} tables",
            f"  lakecurate --lake {lake} history pairs",
            f"  lakecurate --lake {lake} versions show {name}@{version}",
            f"  lakecurate --lake {lake} dedup explain UID   # why a pair is (not) a duplicate",
            "The default recipe drops a pair as a duplicate only when its image is the same",
            "picture as a kept pair's (exact bytes, or a pHash match verified by colour and",
            "by shape at the smaller image's resolution; a crop or border is found by a",
            "window of the bigger frame and registered before it is compared);",
            "shared captions are capped at 10 per caption, never treated as duplicates, and",
            "the demo's semantic and minhash verdicts are recorded but drop nothing.",
            f"Shards: {shards}",
            f"Published dataset version: {name}@{version} ({pub.counts.get('num_samples')} samples)",
        ]
    )
