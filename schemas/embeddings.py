"""`embeddings`: one row per (uid, model_id); L2-normalised float32 vectors, their
cosine, and the scores of the heads `embed.heads` names (null without one)."""

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
            field("aesthetic_score", pa.float32()),
            field("unsafe_score", pa.float32()),
            field("run_id", pa.string()),
            field("embedded_at", TIMESTAMP),
        ]
    ),
    key=("uid", "model_id"),
)
