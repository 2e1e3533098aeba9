"""`pairs`: one row per image-text pair (bronze). Never deleted from."""

import pyarrow as pa

from lakecurate.schemas.base import TIMESTAMP, TableSpec, field

SPEC = TableSpec(
    name="pairs",
    schema=pa.schema(
        [
            field("uid", pa.string(), False),
            field("image_sha256", pa.string(), False),
            field("caption", pa.string()),
            field("image", pa.binary()),
            field("image_format", pa.string()),  # jpeg | png | webp | ...
            field("width", pa.int32()),
            field("height", pa.int32()),
            field("url", pa.string()),
            field("source_uri", pa.string()),
            field("source_key", pa.string()),
            field("meta_json", pa.string()),
            field("run_id", pa.string()),
            field("ingested_at", TIMESTAMP),
        ]
    ),
    key=("uid",),
)
