"""URL + caption lists (CSV/TSV/Parquet/JSONL, like LAION or DataComp metadata).

Downloaded with img2dataset's Python API into WebDataset shards (bytes as
served: no resize, no re-encode), with its `pyspark` distributor on the active
Spark session, so downloads run in Spark tasks on a cluster too. Its output is
then ingested like any WebDataset. img2dataset's incremental mode makes a killed
download resume: a shard counts as done only when its `_stats.json` exists.
Failed downloads (HTTP errors, timeouts) become `download_failed` rejects
attributed to the URL list; a response that is not an image is downloaded as
is and rejected by validation.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field

from lakecurate.runtime.errors import ConfigError
from lakecurate.udfs.readers.base import SourceFile, local_path

log = logging.getLogger(__name__)

_INPUT_FORMATS = ("csv.gz", "tsv.gz", "jsonl.gz", "csv", "tsv", "jsonl", "parquet", "txt")


@dataclass(frozen=True)
class DownloadOptions:
    """img2dataset settings (from `IngestConfig`)."""

    url_column: str = "url"
    caption_column: str = "caption"
    timeout_s: int = 10
    threads: int = 16
    retries: int = 0
    shard_size: int = 10000


@dataclass
class DownloadResult:
    """The finished shards of one URL list and what failed to download."""

    shards: list[SourceFile] = field(default_factory=list)
    rejects: list[dict] = field(default_factory=list)
    ok: int = 0


def input_format(uri: str) -> str:
    low = uri.lower()
    for fmt in _INPUT_FORMATS:
        if low.endswith("." + fmt):
            return fmt
    raise ValueError(f"{uri}: a URL list must be one of .{', .'.join(_INPUT_FORMATS)}")


@contextlib.contextmanager
def _stdout_to_stderr() -> Iterator[None]:
    """img2dataset and its logger process print progress; our stdout is for --json."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    old_sigint = signal.getsignal(signal.SIGINT)
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)
        if signal.getsignal(signal.SIGINT) is not old_sigint:  # img2dataset installs its own
            signal.signal(signal.SIGINT, old_sigint)


INSTALL_HINT = "pip install 'lakecurate[urls]'"


def require_img2dataset(where: str) -> None:
    """Stop with a ConfigError naming `where` (a source) when img2dataset, an optional
    dependency (it pulls opencv, albumentations and wandb), is not installed."""
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    try:
        import img2dataset  # noqa: F401
    except ImportError as e:
        raise ConfigError(
            where,
            f"the urls format downloads with img2dataset, which is not installed ({e}); "
            f"install it with: {INSTALL_HINT}",
        ) from None


def run_img2dataset(src: SourceFile, out_dir: str, opts: DownloadOptions) -> None:
    require_img2dataset(src.uri)
    from img2dataset import download

    with _stdout_to_stderr():
        download(
            url_list=local_path(src.uri),
            output_folder=out_dir,
            input_format=input_format(src.uri),
            output_format="webdataset",
            url_col=opts.url_column,
            caption_col=opts.caption_column,
            resize_mode="no",
            disable_all_reencoding=True,
            extract_exif=False,
            compute_hash="sha256",
            timeout=opts.timeout_s,
            retries=opts.retries,
            thread_count=opts.threads,
            processes_count=1,
            number_sample_per_shard=opts.shard_size,
            distributor="pyspark",
            incremental_mode="incremental",
            enable_wandb=False,
        )


def _failures(parquet_path: str, list_uri: str) -> Iterator[dict]:
    import pyarrow.parquet as pq

    cols = pq.read_table(parquet_path, columns=["key", "url", "status", "error_message"])
    for r in cols.to_pylist():
        if r["status"] != "success":
            reason = (
                "download_failed" if r["status"] == "failed_to_download" else "undecodable_image"
            )
            yield {
                "kind": "reject",
                "source_uri": list_uri,
                "source_key": r["key"],
                "reason": reason,
                "detail": f"{r['url']}: {r['error_message']}",
            }


def collect(out_dir: str, list_uri: str) -> DownloadResult:
    """The shards img2dataset finished (their `_stats.json` exists) and their failures."""
    res = DownloadResult()
    names = sorted(os.listdir(out_dir)) if os.path.isdir(out_dir) else []
    for name in names:
        if not name.endswith("_stats.json"):
            continue
        shard = name[: -len("_stats.json")]
        with open(os.path.join(out_dir, name)) as f:
            res.ok += int(json.load(f).get("successes", 0))
        tar = os.path.join(out_dir, f"{shard}.tar")
        if os.path.exists(tar):
            res.shards.append(SourceFile(tar, "webdataset"))
        meta = os.path.join(out_dir, f"{shard}.parquet")
        if os.path.exists(meta):
            res.rejects += list(_failures(meta, list_uri))
    return res


def download_list(src: SourceFile, out_dir: str, opts: DownloadOptions) -> DownloadResult:
    """Download (or resume) one URL list into `out_dir`; return its finished shards."""
    log.info("downloading %s with img2dataset into %s", src.uri, out_dir)
    run_img2dataset(src, out_dir, opts)
    res = collect(out_dir, src.uri)
    log.info(
        "%s: %d downloaded, %d failed, %d shards",
        src.uri,
        res.ok,
        len(res.rejects),
        len(res.shards),
    )
    return res
