"""lakecurate: distributed, versioned curation of image-text training data (Spark + Delta).

Kept import-light: `import lakecurate` loads nothing heavy; `lakecurate.open_dataset`
imports its module (and Spark) only when first used.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> module that defines it (imported on first access)
_LAZY = {
    "open_dataset": "lakecurate.catalog.dataset",
    "Lake": "lakecurate.deltaio.lake",
    "load_config": "lakecurate.runtime.config",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'lakecurate' has no attribute {name!r}")
