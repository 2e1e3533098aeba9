"""`selection`: one row per (uid, recipe_id): kept, or the first rule that dropped it."""

import pyarrow as pa

from lakecurate.schemas.base import TableSpec, field

SPEC = TableSpec(
    name="selection",
    schema=pa.schema(
        [
            field("uid", pa.string(), False),
            field("recipe_id", pa.string(), False),
            field("kept", pa.bool_(), False),
            field("reason", pa.string()),  # null when kept
            field("run_id", pa.string()),
        ]
    ),
    key=("uid", "recipe_id"),
)
