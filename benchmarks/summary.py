"""The last-line JSON (DESIGN.md) of a benchmark that times two ways of doing one job.

Imported by the benchmark scripts in this directory (run as `python benchmarks/x.py`,
so this directory is on `sys.path`).
"""

from __future__ import annotations

import json
import os


def per_hour(metric: str, ours_s: float, baseline_s: float, unit: str, **extra) -> str:
    """Both timings as runs per hour, so ratio = ours/baseline = baseline s / ours s."""
    return json.dumps(
        {
            "metric": metric,
            "ours": round(3600 / ours_s, 2),
            "baseline": round(3600 / baseline_s, 2),
            "ratio": round(baseline_s / ours_s, 2),
            "unit": unit,
            **extra,
            "cores": os.cpu_count(),
        }
    )
