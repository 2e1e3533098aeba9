"""The ingest job on real Spark and Delta: contents, ledger, re-runs, every format, the CLI."""

from __future__ import annotations

import io
import json
import tarfile

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from lakecurate.jobs import ingest
from lakecurate.runtime.config import replace
from lakecurate.runtime.errors import ConfigError


def configured(cfg, *sources: str, fmt: str = "auto", **ingest_changes):
    return replace(cfg, sources=[{"uri": s, "format": fmt} for s in sources], ingest=ingest_changes)


def table(spark, lake, name: str) -> list[dict]:
    return [r.asDict() for r in lake.read(spark, name).collect()]


def test_webdataset_ingest_matches_the_sample_and_reruns(spark, lake, cfg, wds_dir, sample_set):
    res = ingest.run(spark, configured(cfg, str(wds_dir)))
    expected = {r["uid"]: r for r in sample_set.pair_rows()}
    pairs = table(spark, lake, "pairs")
    assert {p["uid"] for p in pairs} == set(expected)
    for p in pairs:
        e = expected[p["uid"]]
        assert (p["width"], p["height"], p["image_sha256"]) == (
            e["width"],
            e["height"],
            e["image_sha256"],
        )
        assert p["image"] == e["image"] and p["url"] == e["url"]
        assert p["source_uri"].startswith(str(wds_dir)) and p["source_key"] == e["source_key"]
    bad = {k: kind for k, kind in sample_set.labels["bad"]}
    reasons = {
        "corrupt": "undecodable_image",
        "empty_caption": "empty_caption",
        "too_small": "too_small",
    }
    rejects = table(spark, lake, "rejects")
    assert {r["source_key"]: r["reason"] for r in rejects} == {
        k: reasons[v] for k, v in bad.items()
    }
    assert all(r["stage"] == "ingest" and r["detail"] for r in rejects)
    sources = table(spark, lake, "sources")
    assert sorted(s["source_uri"].rsplit("/", 1)[-1] for s in sources) == [
        "00000.tar",
        "00001.tar",
        "00002.tar",
    ]
    assert all(s["status"] == "ok" and s["checksum"].startswith("xxh3_128:") for s in sources)
    assert sum(s["rows_ok"] for s in sources) + sum(s["rows_rejected"] for s in sources) == len(
        sample_set.records
    )
    assert res.counts["pairs_added"] == len(expected)
    assert set(res.written_versions) == {"pairs", "rejects", "sources"}
    # the ledger commit is the last one written
    times = {t: lake.history(t)[0]["timestamp"] for t in ("pairs", "rejects", "sources")}
    assert times["sources"] >= max(times["pairs"], times["rejects"])

    # re-runs: same inputs skip, --force re-reads without adding, a changed shard is new
    c = configured(cfg, str(wds_dir))
    versions = lake.versions()
    counts = {t: lake.count(t) for t in ("pairs", "rejects", "sources")}

    again = ingest.run(spark, c)
    assert again.counts["skipped"] == 3 and again.counts["pairs_added"] == 0
    assert lake.versions() == versions  # nothing committed

    forced = ingest.run(spark, configured(cfg, str(wds_dir), force=True))
    assert forced.counts["sources"] == 3 and forced.counts["pairs_added"] == 0
    assert {t: lake.count(t) for t in counts} == counts

    # a changed shard is a new source version: one more ledger row, its new pair added
    shard = wds_dir / "00001.tar"
    with tarfile.open(shard, "a") as tar:
        buf = io.BytesIO()
        Image.new("RGB", (40, 40), (9, 99, 199)).save(buf, "JPEG")
        for name, data in (("new.jpg", buf.getvalue()), ("new.txt", b"a new blue image")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    changed = ingest.run(spark, c)
    assert changed.counts["skipped"] == 2 and changed.counts["pairs_added"] == 1
    rows = [s for s in table(spark, lake, "sources") if s["source_uri"] == str(shard)]
    assert len(rows) == 2 and len({s["checksum"] for s in rows}) == 2


def test_sources_checksummed_with_sha256_by_an_older_run_are_still_skipped(
    spark, lake, cfg, wds_dir
):
    import hashlib

    from lakecurate.deltaio.lake import Commit

    c = configured(cfg, str(wds_dir))
    ingest.run(spark, c)
    # the ledger as runs before xxh3 checksums wrote it: sha256 of each file
    old = lake.delta("sources").to_pyarrow_table()
    sha = [
        "sha256:" + hashlib.sha256(open(u, "rb").read()).hexdigest()
        for u in old.column("source_uri").to_pylist()
    ]
    old = old.set_column(old.schema.get_field_index("checksum"), "checksum", pa.array(sha))
    spec = lake.spec("sources")
    df = spark.createDataFrame(old.to_pandas(), spec.spark_schema())
    lake.write(df, "sources", Commit("fixture", "fixture-run"), mode="overwrite")
    versions = lake.versions()
    again = ingest.run(spark, c)
    assert again.counts["skipped"] == 3 and again.counts["pairs_added"] == 0
    assert again.message == "nothing new to ingest"
    assert lake.versions() == versions


def test_damaged_shards_are_partial_or_failed(spark, lake, cfg, wds_dir, tmp_path):
    whole = (wds_dir / "00000.tar").read_bytes()
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "cut.tar").write_bytes(whole[: len(whole) // 2])
    (bad / "junk.tar").write_bytes(b"not a tar" * 100)
    res = ingest.run(spark, configured(cfg, str(bad)))
    status = {s["source_uri"].rsplit("/", 1)[-1]: s for s in table(spark, lake, "sources")}
    assert status["cut.tar"]["status"] == "partial" and status["cut.tar"]["rows_ok"] > 10
    assert status["junk.tar"]["status"] == "failed" and status["junk.tar"]["rows_ok"] == 0
    assert res.counts["partial"] == 1 and res.counts["failed"] == 1
    assert lake.count("pairs") == status["cut.tar"]["rows_ok"]
    reasons = {r["reason"] for r in table(spark, lake, "rejects")}
    assert {"truncated_tar", "unreadable_source"} <= reasons


def test_folder_parquet_and_jsonl_sources(spark, lake, cfg, sample_set, tmp_path):
    records = sample_set.records[:40]  # clean records: the injected bad ones come last
    sample = type(sample_set)(records, sample_set.labels)
    folder = sample.write_folder(tmp_path / "folder")
    (tmp_path / "p.jpg").write_bytes(records[0].image)
    pq.write_table(
        pa.table(
            {
                "key": [r.key for r in records[:20]] + ["by-path"],
                "image": [r.image for r in records[:20]] + [None],
                "image_path": [None] * 20 + ["p.jpg"],
                "caption": [r.caption for r in records[:20]] + ["a path caption"],
            }
        ),
        tmp_path / "t.parquet",
    )
    lines = [json.dumps({"key": "j", "image_path": str(tmp_path / "p.jpg"), "caption": "jsonl"})]
    (tmp_path / "t.jsonl").write_text("\n".join(lines) + "\n")
    sources = [str(folder), str(tmp_path / "t.parquet"), str(tmp_path / "t.jsonl")]
    res = ingest.run(spark, configured(cfg, *sources))
    fmts = {s["source_uri"]: s["format"] for s in table(spark, lake, "sources")}
    assert fmts == {str(folder): "folder", sources[1]: "parquet", sources[2]: "jsonl"}
    pairs = table(spark, lake, "pairs")
    by_source = {}
    for p in pairs:
        by_source.setdefault(p["source_uri"], set()).add(p["source_key"])
    # the parquet rows repeat the folder's images and captions: same uids, kept once
    assert by_source[sources[1]] == {"by-path"} and by_source[sources[2]] == {"j"}
    assert res.counts["rows_ok"] == 40 + 21 + 1 and res.counts["rows_rejected"] == 0


def test_missing_source_is_a_config_error(spark, cfg, tmp_path):
    with pytest.raises(ConfigError) as e:
        ingest.run(spark, configured(cfg, str(tmp_path / "nowhere")))
    assert "nowhere" in str(e.value)
    with pytest.raises(ConfigError):
        ingest.run(spark, cfg)  # no sources at all


def test_cli_ingest_prints_json_and_exits_zero(spark, lake_path, wds_dir, capsys):
    from lakecurate.cli import main

    shard = str(wds_dir / "00000.tar")
    code = main(["--lake", lake_path, "--json", "ingest", shard, "--format", "webdataset"])
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert out["job"] == "ingest" and out["counts"]["sources"] == 1
    assert main(["--lake", lake_path, "ingest", str(wds_dir / "missing")]) == 2


@pytest.mark.parametrize("driver_keys", [ingest.DRIVER_KEYS, 0], ids=["driver", "spark"])
def test_pairs_files_are_exactly_the_committed_ones(
    spark, lake, cfg, wds_dir, lake_path, tmp_path, monkeypatch, driver_keys
):
    """Tasks write pairs files directly; files holding uids already present (or a second
    copy in the same run) are rewritten or dropped, on the driver for small runs and in
    Spark for large ones, so after a run (and a forced re-run) every file on disk is
    committed and no staging output is left."""
    import os
    import shutil

    from deltalake import DeltaTable

    monkeypatch.setattr(ingest, "DRIVER_KEYS", driver_keys)
    copy = tmp_path / "zz-copy.tar"  # sorts after wds_dir: its records are the second copies
    shutil.copy(wds_dir / "00001.tar", copy)
    res = ingest.run(spark, configured(cfg, str(wds_dir), str(copy)))
    before = lake.count("pairs")
    assert before == res.counts["pairs_added"]
    assert {r["source_uri"] for r in table(spark, lake, "pairs")} == {
        str(wds_dir / f"0000{i}.tar") for i in range(3)
    }
    forced = ingest.run(spark, configured(cfg, str(wds_dir), force=True))  # all present
    assert lake.count("pairs") == before and forced.counts["pairs_added"] == 0
    committed = {os.path.basename(u) for u in DeltaTable(lake.uri("pairs")).file_uris()}
    on_disk = {n for n in os.listdir(lake.uri("pairs")) if n.endswith(".parquet")}
    assert on_disk == committed
    assert not os.path.exists(os.path.join(lake_path, "_staging"))  # nothing staged on disk
    # image bytes are stored uncompressed, the other columns with zstd
    meta = pq.ParquetFile(os.path.join(lake.uri("pairs"), sorted(committed)[0])).metadata
    codecs = {
        meta.row_group(0).column(i).path_in_schema: meta.row_group(0).column(i).compression
        for i in range(meta.num_columns)
    }
    assert codecs["image"] == "UNCOMPRESSED" and codecs["caption"] == "ZSTD"


def test_fsspec_uris_are_ingested(spark, lake, cfg, wds_dir):
    """A non-local URI goes through fsspec for discovery, checksums and reads (here
    fsspec's `local://` protocol stands in for s3:// or gs://)."""
    uri = f"local://{wds_dir}/*.tar"
    res = ingest.run(spark, configured(cfg, uri))
    sources = table(spark, lake, "sources")
    assert len(sources) == 3 and all(s["source_uri"].startswith("local://") for s in sources)
    assert all(s["status"] == "ok" and s["checksum"].startswith("xxh3_128:") for s in sources)
    assert res.counts["pairs_added"] == lake.count("pairs") > 0
    assert ingest.run(spark, configured(cfg, uri)).counts["skipped"] == 3


@pytest.mark.parametrize("step", ["pairs_files", "commit_files"])
def test_a_failure_before_the_commit_leaves_no_file_and_the_lake_unchanged(
    spark, lake, cfg, wds_dir, monkeypatch, step
):
    """Pairs files written by the tasks are removed when the run fails before its commit
    (while choosing the files, or in the commit itself); the tables keep their versions,
    and the next run ingests everything."""
    import os

    def broken(*args, **kwargs):
        raise OSError("object store unavailable")

    monkeypatch.setattr(ingest, step, broken)
    with pytest.raises(OSError, match="unavailable"):
        ingest.run(spark, configured(cfg, str(wds_dir)))
    assert not lake.exists("pairs") and not lake.exists("sources")
    assert [n for n in os.listdir(lake.uri("pairs")) if not n.startswith("_")] == []
    monkeypatch.undo()
    res = ingest.run(spark, configured(cfg, str(wds_dir)))
    assert res.counts["pairs_added"] == lake.count("pairs") > 0
