"""Driver-side sources: what `ingest` reads, found before any task starts.

`discover` expands a source URI (a file, a folder, a glob, a manifest) into the list
of files that executor tasks read with `lakecurate.udfs.readers`; `urls` downloads a
URL list with img2dataset into WebDataset shards (the `lakecurate[urls]` extra).
"""
