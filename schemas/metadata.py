"""`metadata`: the concept entries captions are matched against (MetaCLIP's metadata).

Each `lakecurate metadata import|build` adds a whole entry list as a new `version`; the
newest version is the one matching and balancing use. `entry_id` is the entry's
position in its list (0-based, as MetaCLIP's `metadata.json` numbers them)."""

import pyarrow as pa

from lakecurate.schemas.base import TableSpec, field

SPEC = TableSpec(
    name="metadata",
    schema=pa.schema(
        [
            field("version", pa.int32(), False),
            field("entry_id", pa.int32(), False),
            field("entry", pa.string(), False),
            # where the entry came from: the imported file's name, or for `build`
            # `words:<package>`, `unigram` or `bigram`
            field("source", pa.string()),
            field("run_id", pa.string()),
        ]
    ),
    key=("version", "entry_id"),
)
