"""The generator of synthetic image-text pairs (`sample`) that `lakecurate demo`
(jobs/demo.py), the tests and the benchmarks ingest."""
