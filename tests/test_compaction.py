"""`lakecurate compact`: small files packed, rows and pinned versions unchanged, and the
incremental steps carry on after the rewrite."""

from __future__ import annotations

import subprocess
import sys

import pyarrow.parquet as pq
from test_dedup import _write

from lakecurate.deltaio import compaction
from lakecurate.jobs import dedup
from lakecurate.runtime.jobkit import JobContext


def _rows(spark, lake, table, version=None) -> list[tuple]:
    cols = ["uid", "caption", "image_sha256"]
    return sorted(tuple(r) for r in lake.read(spark, table, version).select(*cols).collect())


def test_small_files_are_packed_and_dedup_goes_on_incrementally(
    spark, lake, cfg, sample_set, monkeypatch
):
    rows = sample_set.pair_rows()
    for k in range(10):  # ten appends of two small files (local[2])
        _write(spark, lake, "pairs", rows[k * 20 : (k + 1) * 20])
    first = dedup.run(spark, cfg)
    before_version, before = lake.version("pairs"), _rows(spark, lake, "pairs")
    assert len(lake.add_actions("pairs")) == 20

    dry = compaction.compact(cfg, 8, 8, True, ["pairs", "signals"])
    assert [t["compacted"] for t in dry["tables"]] == [False, False]
    assert lake.version("pairs") == before_version  # a dry run writes nothing
    assert dry["tables"][0]["small_files"] == 20
    assert dry["tables"][1]["small_files"] < 8  # one dedup run: one signals file

    monkeypatch.setattr(compaction, "ROW_GROUP_MB", 1e-6)  # the fewest rows per group
    done = compaction.compact(cfg, 8, 8, False, ["pairs", "signals"])
    packed = {t["table"]: t for t in done["tables"]}
    assert packed["pairs"]["compacted"] and packed["pairs"]["files_after"] == 1
    assert packed["pairs"]["files_removed"] == 20
    assert not packed["signals"]["compacted"]  # fewer small files than --min-files
    assert _rows(spark, lake, "pairs") == before  # the same rows
    (packed_file,) = lake.delta("pairs").file_uris()
    groups = pq.ParquetFile(packed_file.removeprefix("file://")).metadata
    assert groups.num_rows == 200 and groups.num_row_groups == 4  # groups of 64 rows
    assert _rows(spark, lake, "pairs", before_version) == before  # the old version reads
    hist = lake.history("pairs")
    assert max(hist, key=lambda h: h["version"]).get("job") == "compact"

    # the rewrite is not an append: the next dedup looks at every pair once, then only
    # at what arrives
    ctx = JobContext("dedup", cfg)
    assert dedup.arrivals(spark, ctx, cfg) is None
    _write(spark, lake, "pairs", rows[200:230])
    second = dedup.run(spark, cfg)
    assert second.counts["new_rows"] == 30
    assert second.counts["rows"] == first.counts["rows"] + 30
    _write(spark, lake, "pairs", rows[230:240])
    assert dedup.arrivals(spark, ctx, cfg).count() == 10


def test_row_groups_hold_about_row_group_mb():
    # 23,000 generated pairs in 135 MB (one group as delta-rs writes by default): ~16 MiB
    assert compaction.row_group_rows([{"num_records": 23_000, "size_bytes": 135_682_186}]) == 2843
    assert compaction.row_group_rows([{"num_records": 10, "size_bytes": 10**9}]) == 64
    assert compaction.row_group_rows([]) == 1 << 20


def test_command_line(cfg, tmp_path):
    def cli(*args):
        cmd = [sys.executable, "-m", "lakecurate.cli", "compact", "--lake", cfg.lake.path]
        return subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=300)

    helped = cli("--help")
    assert helped.returncode == 0 and "--target-mb" in helped.stdout
    bad = cli("--tables", "pairs,nope")
    assert bad.returncode != 0 and "nope" in bad.stderr
    assert "at least 2" in cli("--min-files", "1").stderr
    empty = cli("--dry-run")  # no tables yet: nothing to do, no error
    assert empty.returncode == 0, empty.stderr
