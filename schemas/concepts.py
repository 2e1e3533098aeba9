"""`concepts`: the metadata entries each caption matches, one row per (uid, version).

Written by `lakecurate concepts` for uids of `pairs` without a row for the newest
`metadata` version; `entry_ids` is empty when the caption matches no entry."""

import pyarrow as pa

from lakecurate.schemas.base import TableSpec, field

SPEC = TableSpec(
    name="concepts",
    schema=pa.schema(
        [
            field("uid", pa.string(), False),
            field("metadata_version", pa.int32(), False),
            field("entry_ids", pa.list_(pa.int32())),  # sorted, distinct
            field("run_id", pa.string()),
        ]
    ),
    key=("uid", "metadata_version"),
)
