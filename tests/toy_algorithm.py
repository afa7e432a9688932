"""The third algorithm the tests run is a real package, tests/plainbc/ (plain behaviour cloning), importable because
pytest puts tests/ on sys.path. `copy_package` writes a copy of it under another name into a folder (a user's
"copy an algorithm and change it"), for the tests of the contract (common/algorithm.py)."""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

NAME = "plainbc"
PACKAGE = Path(__file__).resolve().parent / NAME
TESTS = PACKAGE.parent


def copy_package(folder: Path, name: str, algo: str | None = None) -> Path:
    """tests/plainbc copied to folder/<name>, its imports renamed to <name> and its ALGO set to `algo` (default: the
    new name, as a careful user would). The folder goes first on sys.path (PYTHONPATH for subprocesses)."""
    package = folder / name
    shutil.copytree(PACKAGE, package, ignore=shutil.ignore_patterns("__pycache__"))
    for path in package.glob("*.py"):
        text = path.read_text().replace(f"from {NAME}.", f"from {name}.")
        text = text.replace(f'ALGO = "{NAME}"', f'ALGO = "{algo or name}"')
        path.write_text(text)
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))
    return package
