"""`sources`: one row per input shard/file ingested (the ingest ledger).

Written last by ingest, after `pairs` and `rejects`: a row here means the source
is fully in the lake, so a re-run skips it (same `source_uri` and `checksum`).
`status`: ok (read to the end), partial (damaged after some records), failed.
"""

import pyarrow as pa

from lakecurate.schemas.base import TIMESTAMP, TableSpec, field

SPEC = TableSpec(
    name="sources",
    schema=pa.schema(
        [
            field("source_uri", pa.string(), False),
            field("checksum", pa.string(), False),
            field("format", pa.string()),
            field("size_bytes", pa.int64()),
            field("status", pa.string()),  # ok | partial | failed
            field("rows_ok", pa.int64()),
            field("rows_rejected", pa.int64()),
            field("error", pa.string()),
            field("run_id", pa.string()),
            field("ingested_at", TIMESTAMP),
        ]
    ),
    key=("source_uri", "checksum"),
)

STATUSES = ("ok", "partial", "failed")
