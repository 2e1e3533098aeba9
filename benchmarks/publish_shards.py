"""Shard writing: lakecurate's deterministic tar writer vs webdataset's TarWriter.

Both write the same samples (JPEG bytes, caption, JSON sidecar) into 1000-sample tars
on local disk, in one process; the metric is samples written per second (best of 3).
lakecurate's writer also hashes every byte (sha256 for the manifest) and records each
sample's offset for the Parquet index; webdataset's does neither. The last line also
says whether writing the same samples twice gave byte-identical shards (lakecurate
fixes mtime/uid/gid/names; webdataset stamps the current time unless told otherwise).

    .venv/bin/python benchmarks/publish_shards.py [N]
"""

from __future__ import annotations

import hashlib
import json
import sys
import tempfile
import time
from pathlib import Path

import webdataset as wds

from lakecurate.demo.sample import generate
from lakecurate.udfs import shards
from lakecurate.udfs.text import make_uid, sha256_hex

SHARD = 1000


def samples(n: int) -> list[dict]:
    rows = []
    for i, r in enumerate(generate(n=n, seed=3, bad_rate=0).records):
        if r.caption is None:
            continue
        uid = make_uid(sha256_hex(r.image), r.caption) + f"{i:x}"
        rows.append(
            {
                "uid": uid,
                "pos": i,
                "image": r.image,
                "image_format": "jpeg",
                "caption": r.caption,
                "url": r.meta.get("url"),
                "width": 128,
                "height": 96,
                "clip_score": 0.25,
            }
        )
    return rows


def ours(rows: list[dict], out: Path) -> list[str]:
    digests = []
    for s in range(0, len(rows), SHARD):
        with open(out / f"ours-{s // SHARD:06d}.tar", "wb") as f:
            sha, _, _ = shards.write_tar(rows[s : s + SHARD], f)
        digests.append(sha)
    return digests


def baseline(rows: list[dict], out: Path) -> list[str]:
    paths = []
    for s in range(0, len(rows), SHARD):
        path = out / f"wds-{s // SHARD:06d}.tar"
        with wds.TarWriter(str(path)) as w:
            for r in rows[s : s + SHARD]:
                meta = {k: r[k] for k in ("uid", "url", "caption", "width", "height", "clip_score")}
                w.write({"__key__": r["uid"], "jpg": r["image"], "txt": r["caption"], "json": meta})
        paths.append(path)
    return [hashlib.sha256(p.read_bytes()).hexdigest() for p in paths]


def best(fn, rows, out) -> tuple[float, list[str]]:
    times, digests = [], []
    for _ in range(3):
        t = time.perf_counter()
        digests.append(fn(rows, out))
        times.append(time.perf_counter() - t)
        time.sleep(1.1)  # so a writer that stamps the clock gets a different second
    return min(times), digests


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 5000
    rows = samples(n)
    with tempfile.TemporaryDirectory() as d:
        t_ours, d_ours = best(ours, rows, Path(d))
        t_base, d_base = best(baseline, rows, Path(d))
    ours_rate, base_rate = len(rows) / t_ours, len(rows) / t_base
    print(
        f"lakecurate write_tar: {ours_rate:,.0f} samples/s   webdataset TarWriter: {base_rate:,.0f}"
    )
    print(
        json.dumps(
            {
                "metric": "shard_write_samples_per_s",
                "ours": round(ours_rate, 1),
                "baseline": round(base_rate, 1),
                "ratio": round(ours_rate / base_rate, 3),
                "n": len(rows),
                "unit": "samples/s",
                "ours_byte_identical_rewrite": len({tuple(x) for x in d_ours}) == 1,
                "baseline_byte_identical_rewrite": len({tuple(x) for x in d_base}) == 1,
            }
        )
    )


if __name__ == "__main__":
    main()
