"""One module per Delta table of the lake; `TABLES` maps table name -> TableSpec."""

from lakecurate.schemas import (
    concept_counts,
    concepts,
    datasets,
    dedup_index,
    duplicates,
    embeddings,
    metadata,
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
        metadata,
        concepts,
        concept_counts,
        selection,
        datasets,
        probes,
    )
}

__all__ = ["TABLES", "TableSpec"]
