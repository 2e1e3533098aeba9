"""`duplicates`: one row per (uid, method) for every member of a duplicate group."""

import pyarrow as pa

from lakecurate.schemas.base import TableSpec, field

METHODS = ("exact", "exact_caption", "phash", "minhash", "semantic")

SPEC = TableSpec(
    name="duplicates",
    schema=pa.schema(
        [
            field("uid", pa.string(), False),
            field("method", pa.string(), False),
            field("group_id", pa.string(), False),
            field("keeper_uid", pa.string(), False),
            # to its keeper; 1.0 for the group's best member. A near-duplicate group may
            # have other keepers (udfs/keepers.py): theirs is the highest similarity to
            # the keepers ranked before them, below the method's threshold.
            field("similarity", pa.float32()),
            field("config_slug", pa.string()),
            field("run_id", pa.string()),
        ]
    ),
    key=("uid", "method"),
)
