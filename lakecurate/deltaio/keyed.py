"""Reading the rows of a few uids from a wide table without reading the whole table.

`pairs` holds every image's bytes; a nightly refresh needs those of 1% of the uids
(embed: the uids not yet embedded; publish: the samples added since the parent
version). Filters on `uid` prune nothing (uids are hashes, so every file's min/max
spans them all), and a join of the wide table with the uids makes Spark read, and
often shuffle, every image. `rows_for_uids` instead finds the files that hold the
uids with a narrow scan (uid and file name only), reads just those files, and keeps
their rows with a broadcast semi-join: the cost follows the new data, not the lake.
New uids come from newly ingested sources, so they sit in new files.

`replace_rows` is the matching write: one commit that swaps the rows of some keys,
rewriting only the files that held them.
"""

from __future__ import annotations

import posixpath
from urllib.parse import unquote

from lakecurate.deltaio.conflicts import ReadScope
from lakecurate.deltaio.lake import Lake
from lakecurate.runtime.errors import JobError

BROADCAST_UIDS = 200_000  # more uids than this: a plain semi-join (a full run, say)


def basename(uri: str) -> str:
    """A data file's name from its URI or log path (either may be URL-encoded)."""
    return posixpath.basename(unquote(uri))


def files_holding(spark, lake: Lake, table: str, version: int, uids) -> list[str]:
    """URIs of the files of `table@version` that hold any uid of `uids` (a frame with a
    `uid` column), from a scan of the uid column alone."""
    files = lake.delta(table, version).file_uris()
    if not files:
        return []
    located = lake.read_files(spark, table, files, ["uid"], file_column="f")
    hits = located.join(uids, "uid", "left_semi").select("f").distinct().collect()
    names = {basename(r["f"]) for r in hits}
    return [u for u in files if basename(u) in names]


def rows_for_uids(spark, lake: Lake, table: str, version: int, uids, n: int, columns):
    """`columns` of the rows of `table@version` whose uid is in `uids` (`n` of them).

    Few uids (at most BROADCAST_UIDS, deltalake engine): only the files holding them are
    read, joined with a broadcast of the uids. Otherwise a semi-join with the table.
    Same rows either way.
    """
    from pyspark.sql import functions as F

    if n > BROADCAST_UIDS or lake.engine != "deltalake":
        return lake.read(spark, table, version).select(*columns).join(uids, "uid", "left_semi")
    files = files_holding(spark, lake, table, version, uids)
    schema = lake.spec(table).spark_schema()
    if not files:
        return spark.createDataFrame([], schema).select(*columns)
    rows = lake.read_files(spark, table, files, columns).select(*columns)
    return rows.join(F.broadcast(uids), "uid", "left_semi")


def changed_keys(
    spark, lake: Lake, table: str, since: int | None, columns: list[str], where=None, until=None
):
    """(the version compared, the uids whose rows of `table` differ in `columns`, after
    the filter `where`, between versions `since` and `until` (default the latest)); None
    when the log cannot tell (no `since`, its log cleaned up, a file vacuumed).

    Only the files one version holds and the other lacks are read: a rewrite carries
    most of its rows over unchanged, and those cancel out."""
    changes = lake.changes_since(table, since, until)
    if changes is None:
        return None
    version, added, removed = changes
    cols = ["uid", *columns]

    def rows(files: list[str]):
        if not files:
            return None
        df = lake.read_files(spark, table, files, cols).select(*cols)
        return df if where is None else df.filter(where)

    new, old = rows(added), rows(removed)
    if new is None and old is None:
        from pyspark.sql.types import StringType, StructField, StructType

        empty = StructType([StructField("uid", StringType(), False)])
        return version, spark.createDataFrame([], empty)
    if old is None:
        return version, new.select("uid")
    if new is None:
        return version, old.select("uid")
    return version, new.subtract(old).unionByName(old.subtract(new)).select("uid")


def replace_rows(spark, lake: Lake, commit, table: str, rows, drop, **metadata) -> int:
    """One commit: remove the rows whose key is in `drop`, add `rows`; return the version.
    `metadata`: added to the commit's.

    Only the files holding a dropped row are rewritten (their other rows are carried
    over); the delta-spark engine, whose writes take no remove list, rewrites the table.
    """
    spec = lake.spec(table)
    key = list(spec.key)
    drop = drop.select(*key).distinct()
    read = lake.version(table)  # one snapshot: the rows read, the files removed, the commit
    if lake.engine == "delta-spark" or not lake.exists(table):
        current = lake.read(spark, table, read)
        whole = current.join(drop, key, "left_anti").unionByName(rows.select(*spec.columns))
        return lake.write(whole, table, commit, mode="overwrite", read_version=read, **metadata)
    # tables keyed by uid first: the files that hold a dropped uid (maybe more of its rows)
    files = files_holding(spark, lake, table, read, drop.select("uid").distinct())
    names = {basename(u) for u in files}
    remove = [
        {"path": a["path"], "size": a["size_bytes"]}
        for a in lake.add_actions(table, read)
        if basename(a["path"]) in names
    ]
    if len(remove) != len(names):
        raise JobError(f"{table}: files {sorted(names)} are not all in the table's current version")
    out = rows.select(*spec.columns)
    if files:
        carried = lake.read_files(spark, table, files)
        out = out.unionByName(carried.join(drop, key, "left_anti").select(*spec.columns))
    # as many files as there are cores: unions of small parts would add one file each
    out = out.coalesce(spark.sparkContext.defaultParallelism)
    scope = ReadScope.whole()
    return lake.write(out, table, commit, remove=remove, read_version=read, scope=scope, **metadata)
