"""The code layout's rules that a reader relies on, checked on the source tree."""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGE_DIRS = ("lakecurate", "jobs", "udfs", "schemas")


def _module_names(folder: Path) -> set[str]:
    names = {p.stem for p in folder.glob("*.py")}
    return names | {p.name for p in folder.iterdir() if (p / "__init__.py").exists()}


def test_no_module_shadows_the_standard_library():
    """`spark-submit jobs/x.py` (or lakecurate/cli.py) puts that folder first on
    sys.path: a module there named like a stdlib one (`select`, `inspect`) would
    replace it for pyspark and pyarrow too."""
    clashes = {
        f"{d}/{name}"
        for d in PACKAGE_DIRS
        for name in _module_names(REPO / d)
        if name in sys.stdlib_module_names
    }
    assert not clashes, f"rename these modules: {sorted(clashes)}"
