"""One module per Delta table of the lake; `TABLES` maps table name -> TableSpec."""

from lakecurate.schemas import (
    datasets,
    dedup_index,
    duplicates,
    embeddings,
    pairs,
    probes,
    rejects,
    selection,
    semantic_centroids,
    signals,
    sources,
)
from lakecurate.schemas.base import TableSpec

TABLES: dict[str, TableSpec] = {
    m.SPEC.name: m.SPEC
    for m in (
        sources,
        pairs,
        rejects,
        embeddings,
        signals,
        duplicates,
        dedup_index,
        semantic_centroids,
        selection,
        datasets,
        probes,
    )
}

__all__ = ["TABLES", "TableSpec"]
