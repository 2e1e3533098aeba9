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


def _lakecurate_imports(path: Path) -> set[str]:
    import ast

    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
    return {n for n in names if n == "lakecurate" or n.startswith("lakecurate.")}


def test_executor_code_imports_only_executor_code():
    """udfs/ runs on executors: it may use schemas/ and itself, never the driver's
    lake, jobs or commands (so core -> udfs is the only direction)."""
    allowed = ("lakecurate.udfs", "lakecurate.schemas")
    bad = {
        f"{path.relative_to(REPO)} imports {name}"
        for folder in ("udfs", "schemas")
        for path in (REPO / folder).rglob("*.py")
        for name in _lakecurate_imports(path)
        if not name.startswith(allowed)
    }
    assert not bad, sorted(bad)


def test_core_does_not_import_jobs():
    """jobs/ holds the entry points (arguments, then `run(spark, cfg)`); they use the
    core, never the other way round. Only the CLI's command table names them."""
    bad = {
        f"{path.relative_to(REPO)} imports {name}"
        for path in (REPO / "lakecurate").rglob("*.py")
        if path.name != "cli.py"
        for name in _lakecurate_imports(path)
        if name.startswith("lakecurate.jobs")
    }
    assert not bad, sorted(bad)


def test_core_is_grouped_by_role():
    """The core package holds subpackages by role, not a flat grab bag of modules."""
    loose = sorted(p.name for p in (REPO / "lakecurate").glob("*.py"))
    assert loose == ["__init__.py", "cli.py"], loose
    roles = {p.name for p in (REPO / "lakecurate").iterdir() if (p / "__init__.py").exists()}
    # dataset: what a training script imports to read a published version;
    # probe: the small CLIPs trained on a version to measure it
    expected = {"runtime", "deltaio", "curation", "catalog", "sources", "demo", "dataset", "probe"}
    assert roles == expected, roles


OPTIONAL = ("img2dataset", "cv2", "albumentations", "wandb", "datasketch", "delta")


def test_the_default_install_imports_no_optional_dependency():
    """`pip install lakecurate` (no extras) runs every command but urls ingest: no module
    imports an extra's package at import time (img2dataset pulls opencv and wandb)."""
    import subprocess

    code = f"""
import importlib, importlib.abc, pkgutil, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {OPTIONAL!r}:
            raise ImportError("blocked optional dependency: " + name)
sys.meta_path.insert(0, Block())
import lakecurate
for m in pkgutil.walk_packages(lakecurate.__path__, "lakecurate."):
    importlib.import_module(m.name)
from lakecurate.cli import build_parser
build_parser()
print("ok")
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]
