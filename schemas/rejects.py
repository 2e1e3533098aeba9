"""`rejects`: one row per input record that failed validation, with its reason."""

import pyarrow as pa

from lakecurate.schemas.base import TIMESTAMP, TableSpec, field

SPEC = TableSpec(
    name="rejects",
    schema=pa.schema(
        [
            field("source_uri", pa.string()),
            field("source_key", pa.string()),
            field("reason", pa.string(), False),
            field("detail", pa.string()),
            field("stage", pa.string()),  # ingest | embed
            field("uid", pa.string()),
            field("run_id", pa.string()),
            field("rejected_at", TIMESTAMP),
        ]
    ),
    key=("stage", "source_uri", "source_key", "reason"),
)
