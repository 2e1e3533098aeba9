"""`dedup_index`: which uids each dedup method has matched, with their sketches.

One row per (uid, method) for `exact`, `exact_caption`, `phash`, `minhash` and
`semantic`, written by dedup after that method's `duplicates` rows (so a crash in
between only means the uid is matched again). `config_slug` names the matching
configuration (for semantic, also the k-means fit); rows of another slug mean the
method must re-match the whole lake. `signature` holds the MinHash signature (uint32
little-endian, num_perm * 4 bytes) so that a refresh computes signatures of new
captions only; it is null for the other methods (pHash lives in `signals`).
"""

import pyarrow as pa

from lakecurate.schemas.base import TableSpec, field

SPEC = TableSpec(
    name="dedup_index",
    schema=pa.schema(
        [
            field("uid", pa.string(), False),
            field("method", pa.string(), False),
            field("config_slug", pa.string(), False),
            field("signature", pa.binary()),
            field("run_id", pa.string()),
        ]
    ),
    key=("uid", "method"),
)
