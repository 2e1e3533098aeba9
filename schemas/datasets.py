"""`datasets`: one row per published dataset version (the last thing publish writes)."""

import pyarrow as pa

from lakecurate.schemas.base import TIMESTAMP, TableSpec, field

SPEC = TableSpec(
    name="datasets",
    schema=pa.schema(
        [
            field("name", pa.string(), False),
            field("version", pa.int32(), False),
            field("status", pa.string()),  # published | retired
            field("recipe_id", pa.string()),
            field("config_hash", pa.string()),
            field("num_samples", pa.int64()),
            field("num_shards", pa.int32()),
            field("shard_uri", pa.string()),
            field("manifest_uri", pa.string()),
            field("pinned_versions", pa.string()),  # JSON {table: delta version}
            field("selection_hash", pa.string()),  # sha256 over the kept uids
            field("model_id", pa.string()),  # embeddings model whose clip_score it carries
            field("tags", pa.list_(pa.string())),
            field("run_id", pa.string()),
            field("created_at", TIMESTAMP),
        ]
    ),
    key=("name", "version"),
)
