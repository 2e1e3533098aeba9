"""Duplicate detection: candidate pairs per method (`methods`, `near`, `semantic`),
connected components (`components`), keeper verdicts (`groups`) and `explain`."""
