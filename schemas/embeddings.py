"""`embeddings`: one row per (uid, model_id); L2-normalised float32 vectors."""

import pyarrow as pa

from lakecurate.schemas.base import TIMESTAMP, TableSpec, field

SPEC = TableSpec(
    name="embeddings",
    schema=pa.schema(
        [
            field("uid", pa.string(), False),
            field("model_id", pa.string(), False),
            field("image_emb", pa.list_(pa.float32())),
            field("text_emb", pa.list_(pa.float32())),
            field("clip_score", pa.float32()),
            field("run_id", pa.string()),
            field("embedded_at", TIMESTAMP),
        ]
    ),
    key=("uid", "model_id"),
)
