"""Delta I/O: the `Lake` (tables, reads pinned to versions, delta-rs commits from
Spark), reads of a few uids from a wide table, and table maintenance (vacuum)."""
