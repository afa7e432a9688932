"""Shared test helpers: one torch thread per test process, tiny D4RL-format files, the shared datasets."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("WANDB_MODE", "disabled")

import h5py  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
torch.set_num_threads(1)

from common.datasets import shared_dir  # noqa: E402


def write_d4rl_file(path: Path, episodes=((5, "terminal"), (4, "timeout"), (3, "open")), obs_dim=11, act_dim=3,
                    next_obs=False, env_id="Hopper-v4", seed=0, extra=None) -> dict:
    """A D4RL-format file with the given episodes (length, how it ends); returns the raw arrays."""
    rng = np.random.default_rng(seed)
    obs, terms, touts = [], [], []
    for length, end in episodes:
        obs.append(rng.normal(size=(length, obs_dim)).astype(np.float32))
        t = np.zeros(length, bool)
        o = np.zeros(length, bool)
        if end == "terminal":
            t[-1] = True
        elif end == "timeout":
            o[-1] = True
        terms.append(t)
        touts.append(o)
    raw = {
        "observations": np.concatenate(obs),
        "terminals": np.concatenate(terms),
        "timeouts": np.concatenate(touts),
    }
    n = len(raw["observations"])
    raw["actions"] = rng.uniform(-1, 1, size=(n, act_dim)).astype(np.float32)
    raw["rewards"] = rng.normal(size=n).astype(np.float32)
    if next_obs:
        raw["next_observations"] = rng.normal(size=(n, obs_dim)).astype(np.float32)
    raw.update(extra or {})
    with h5py.File(path, "w") as f:
        for k, v in raw.items():
            f.create_dataset(k, data=v)
        if env_id:
            f.create_dataset("metadata/generation", data=json.dumps({"env_id": env_id}))
    return raw


@pytest.fixture
def tiny_hopper_file(tmp_path) -> Path:
    path = tmp_path / "tiny-hopper.hdf5"
    write_d4rl_file(path, episodes=[(40, "terminal"), (60, "timeout"), (30, "terminal")], next_obs=True)
    return path


def missing_shared_data(what: str) -> None:
    """A test that needs $SHARED_DIR/datasets: skipped where the folder is absent, but failed under CI (CI=true),
    which always has it, so a broken path cannot silently skip the only real-data tests."""
    message = f"{what} not present (set SHARED_DIR; it defaults to ../shared beside the repository)"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{message}; CI always has it, so this is a broken path, not a missing optional folder")
    pytest.skip(message)


def shared_dataset(name: str) -> Path:
    """Path of a regenerated dataset in $SHARED_DIR/datasets; see missing_shared_data when it is absent."""
    path = shared_dir() / "datasets" / name
    if not path.is_file():
        missing_shared_data(str(path))
    return path
