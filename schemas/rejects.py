"""`rejects`: one row per input record that failed validation, with its reason.

`reason` is a short stable code from `REASONS` (other jobs and reports group by
it); `detail` is the human explanation for that one record.
"""

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

# Reason codes written by ingest (stage="ingest"). Stable: never rename one.
REASONS: dict[str, str] = {
    "missing_image": "a caption (or metadata) without an image",
    "missing_caption": "an image without a caption",
    "empty_caption": "the caption is empty or only whitespace",
    "caption_not_utf8": "the caption bytes are not valid UTF-8",
    "caption_too_long": "the caption is longer than ingest.max_caption_chars",
    "empty_image": "the image has zero bytes",
    "image_too_large": "the image file is larger than ingest.max_image_bytes",
    "meta_too_large": "the sample's .json member is over 1 MiB",
    "undecodable_image": "the image bytes are not an image Pillow can read",
    "truncated_image": "the image data ends early",
    "unsupported_format": "an image format not in ingest.image_formats",
    "too_many_pixels": "width*height over ingest.max_pixels (decompression-bomb guard)",
    "too_small": "the shorter side is below ingest.min_side",
    "duplicate_key": "a key seen before in the same source shard",
    "unsafe_member": "a tar member that is a link/device, or an absolute or '..' name",
    "truncated_tar": "the tar (or its gzip stream) ends or breaks here; later records are lost",
    "truncated_source": "a compressed file ends or breaks here; later records are lost",
    "unreadable_source": "the source file could not be opened or read",
    "bad_record": "a row or line that is not a record (e.g. not a JSON object)",
    "download_failed": "img2dataset could not download the URL",
}
