"""File systems for lake URIs, the same on the driver and in executor tasks.

`url_to_fs(uri)` is fsspec's, so a store with its own fsspec driver (s3fs, gcsfs,
adlfs) uses it. Where that driver is not installed, pyarrow's filesystem for the URI
(S3, GCS, HDFS, built into pyarrow) serves through fsspec's wrapper, so an `s3://`
lake needs no package beyond the project's own. Both read the standard environment
(`AWS_ENDPOINT_URL`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`, ...).

Executor-safe: imports fsspec and pyarrow only.
"""

from __future__ import annotations


def url_to_fs(uri: str):
    """(fsspec filesystem, path within it) for a path or URI."""
    import fsspec

    try:
        return fsspec.core.url_to_fs(uri)
    except ImportError:  # no fsspec driver for the scheme: pyarrow's own filesystem
        import pyarrow.fs as pafs
        from fsspec.implementations.arrow import ArrowFSWrapper

        fs, path = pafs.FileSystem.from_uri(uri)
        return ArrowFSWrapper(fs), path


def open_uri(uri: str, mode: str = "rb"):
    """An open file for a path or URI (a context manager)."""
    fs, path = url_to_fs(uri)
    return fs.open(path, mode)
