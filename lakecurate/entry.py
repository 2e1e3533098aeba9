"""Job files run as scripts: `spark-submit jobs/<job>.py ...`.

Python puts a script's own folder first on `sys.path`. For a file in `jobs/` that
folder holds `select.py`, which would then shadow the standard library's `select`
(imported by subprocess and socket, so by pyspark and pyarrow). Each job file calls
`unshadow_stdlib(__file__)` before its other imports; this module imports nothing
that could reach `select`.
"""

import os
import sys


def unshadow_stdlib(script: str) -> None:
    """Drop the script's folder from `sys.path` (the job imports itself by package name)."""
    here = os.path.dirname(os.path.abspath(script))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != here]
