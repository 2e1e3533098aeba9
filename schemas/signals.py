"""`signals`: one row per uid of cheap per-sample signals used by dedup and select."""

import pyarrow as pa

from lakecurate.schemas.base import TableSpec, field

SPEC = TableSpec(
    name="signals",
    schema=pa.schema(
        [
            field("uid", pa.string(), False),
            field("phash", pa.int64()),  # 64-bit DCT perceptual hash, as signed int64
            # what verifies a pHash match (udfs/phash.py, VERIFY_BYTES): 16x16 RGB
            # thumbnail, 64x64 grey detail image, short side as uint16 big-endian. Null
            # or shorter in rows of older versions: recomputed on the next full phash run
            field("thumb", pa.binary()),
            # pHash of each window of udfs/phash.py WINDOWS (sub-rectangles of the
            # frame that find crops and borders), big-endian int64s; null in rows of
            # older versions: recomputed like `thumb`
            field("phash_windows", pa.binary()),
            field("caption_sha256", pa.string()),  # of the normalised caption
            field("caption_chars", pa.int32()),
            field("caption_words", pa.int32()),
            field("width", pa.int32()),
            field("height", pa.int32()),
            field("aspect", pa.float32()),  # max(w, h) / min(w, h)
            field("resolution", pa.int32()),  # min(w, h)
            field("semantic_cluster", pa.int32()),  # k-means cluster of the image embedding
            field("centroid_sim", pa.float32()),  # cosine(image_emb, its cluster centroid)
            field("run_id", pa.string()),
        ]
    ),
    key=("uid",),
)
