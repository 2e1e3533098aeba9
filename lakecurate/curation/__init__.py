"""The curation decisions, driver side: `dedup/` (which pairs are copies, and which
one is kept), `selection/` (quality rules and recipes), `publish/` (shard layout and
files), and `models` (which embeddings a model's rows are)."""
