"""Long runs commit in chunks: `embed` every `embed.commit_every` pairs, `ingest` every
`ingest.commit_every_files` source files. A run killed mid-way keeps every chunk it
committed, and the re-run does only the rest, nothing twice."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from lakecurate.jobs import embed, ingest
from lakecurate.runtime.config import replace


def _uids(lake) -> list[str]:
    return lake.delta("embeddings").to_pyarrow_table(columns=["uid"]).column(0).to_pylist()


def _todo(lake) -> int:
    """Pairs embed must cover: all pairs but the embed-stage rejects."""
    return lake.count("pairs") - lake.count("rejects")


def test_a_run_commits_chunk_by_chunk(spark, pairs_lake, cfg):
    res = embed.run(spark, replace(cfg, embed={"commit_every": 100}))
    n = pairs_lake.count("pairs")
    assert res.counts["embedded"] + res.counts["rejected"] == n
    commits = [h for h in pairs_lake.history("embeddings") if h.get("job") == "embed"]
    assert len(commits) == -(-n // 100)  # one commit per chunk
    uids = _uids(pairs_lake)
    assert len(uids) == len(set(uids)) == _todo(pairs_lake)


def test_ingest_commits_every_few_source_files(spark, lake, cfg, tmp_path, sample_set):
    src = tmp_path / "wds"
    sample_set.write_webdataset(src, shard_size=100)
    shards = sorted(p.name for p in src.iterdir() if p.suffix == ".tar")
    c = replace(cfg, sources=[{"uri": str(src)}], ingest={"commit_every_files": 2})
    res = ingest.run(spark, c)
    commits = [h for h in lake.history("sources") if h.get("job") == "ingest"]
    assert len(shards) == 3 and len(commits) == 2  # ledger rows land with their chunk
    assert lake.count("sources") == 3 and res.counts["sources"] == 3
    uids = lake.delta("pairs").to_pyarrow_table(columns=["uid"]).column(0).to_pylist()
    assert len(uids) == len(set(uids)) == res.counts["pairs_added"]
    assert ingest.run(spark, c).counts["pairs_added"] == 0  # all in the ledger


@pytest.mark.slow
def test_a_killed_run_keeps_its_chunks_and_the_rerun_adds_the_rest(pairs_lake, tmp_path):
    conf = tmp_path / "lakecurate.yaml"
    conf.write_text(
        "spark: {master: 'local[1]', shuffle_partitions: 2}\n"
        "model: {name: lakecurate-tiny, pretrained: none, batch_size: 16}\n"
        "embed: {commit_every: 40}\n"
    )
    cmd = [sys.executable, "-m", "lakecurate.cli", "--lake", pairs_lake.root]
    cmd += ["--config", str(conf), "embed"]
    env = {**os.environ, "SPARK_LOCAL_IP": "127.0.0.1"}
    first = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    log0 = f"{pairs_lake.root}/embeddings/_delta_log/00000000000000000000.json"
    deadline = time.time() + 300
    while not os.path.exists(log0) and first.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert first.poll() is None, first.stderr.read().decode()[-3000:]
    os.kill(first.pid, signal.SIGKILL)  # mid-run: after the first chunk's commit
    first.wait()
    kept = _uids(pairs_lake)
    assert 0 < len(kept) < _todo(pairs_lake) and len(kept) == len(set(kept))

    again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]  # takes over the dead run's lease
    uids = _uids(pairs_lake)
    assert len(uids) == len(set(uids)) == _todo(pairs_lake)
    assert set(kept) <= set(uids)
