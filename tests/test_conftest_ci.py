"""Tests that need $SHARED_DIR/datasets skip where it is absent and fail under CI, which always has it."""
from __future__ import annotations

import subprocess
import sys

from conftest import REPO

PROBE = """
from conftest import shared_dataset
def test_needs_shared_data():
    shared_dataset("hopper-medium-gen.hdf5")
"""


def _run(tmp_path, ci: str | None):
    (tmp_path / "test_probe.py").write_text(PROBE)
    (tmp_path / "conftest.py").write_text((REPO / "tests" / "conftest.py").read_text())
    env = {"PATH": "/usr/bin:/bin", "SHARED_DIR": str(tmp_path / "nowhere"), "PYTHONPATH": str(REPO)}
    if ci is not None:
        env["CI"] = ci
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs", str(tmp_path)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)


def test_missing_shared_datasets_skip_locally_and_fail_under_ci(tmp_path):
    local = _run(tmp_path, None)
    assert local.returncode == 0 and "1 skipped" in local.stdout, local.stdout[-1500:]
    ci = _run(tmp_path, "true")
    assert ci.returncode == 1 and "1 failed" in ci.stdout and "CI always has it" in ci.stdout, ci.stdout[-1500:]
