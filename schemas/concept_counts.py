"""`concept_counts`: how many pairs match each metadata entry, kept by increments.

Each `lakecurate concepts` run appends, per entry, the number of `concepts` rows it
has not counted yet that match it (`count`), with the `concepts` table version those
increments bring the counts up to (`concepts_version`). An entry's count is the sum of
its rows: counts are additive, so a night adds what its new captions match and never
re-reads the old ones."""

import pyarrow as pa

from lakecurate.schemas.base import TableSpec, field

SPEC = TableSpec(
    name="concept_counts",
    schema=pa.schema(
        [
            field("metadata_version", pa.int32(), False),
            field("entry_id", pa.int32(), False),
            field("count", pa.int64(), False),
            field("concepts_version", pa.int64(), False),
            field("run_id", pa.string()),
        ]
    ),
    key=("metadata_version", "entry_id", "concepts_version"),
)
