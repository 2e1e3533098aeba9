"""MetaCLIP curation without a model: metadata entries, caption matching, balancing."""
