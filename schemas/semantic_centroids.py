"""`semantic_centroids`: the k-means fit semantic dedup assigns new embeddings to.

One row per cluster of the current fit, written by dedup (the whole table is replaced
on each fit, before that fit's `duplicates`, `signals` and `dedup_index` rows).
`config_slug` names the clustering configuration (clusters, sample, iterations, seed,
model), `fit_id` the fit itself (a hash of the centroids; semantic `dedup_index` and
`duplicates` rows carry it in their slug), `fitted_rows` the embeddings in the lake
when it was fitted (the base of `dedup.semantic_refit_growth`).
"""

import pyarrow as pa

from lakecurate.schemas.base import TIMESTAMP, TableSpec, field

SPEC = TableSpec(
    name="semantic_centroids",
    schema=pa.schema(
        [
            field("config_slug", pa.string(), False),
            field("model_id", pa.string(), False),
            field("cluster", pa.int32(), False),
            field("fit_id", pa.string(), False),
            field("centroid", pa.list_(pa.float32())),  # unit vector
            field("fitted_rows", pa.int64()),
            field("run_id", pa.string()),
            field("created_at", TIMESTAMP),
        ]
    ),
    key=("config_slug", "model_id", "cluster"),
)
