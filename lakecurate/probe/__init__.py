"""Probes: small CLIP models trained on a dataset version to measure what curation buys.

`train.py` trains one, `evaluate.py` and `metrics.py` measure it on the eval sets of
`evalsets.py`; the `lakecurate probe` command (`command.py`) records both in `probes`.
"""
