"""A third algorithm is one new folder: the plain-BC package of tests/toy_algorithm.py, written into a temporary
folder (no file of the repository edited), runs offline -> online -> load_agent -> plots -> a sweep trial."""
from __future__ import annotations

import os

import numpy as np
import pytest
import yaml

from common.inference import load_agent
from common.layout import read_metrics
from tools import plots, sweep
from toy_algorithm import NAME, write_package


@pytest.mark.slow  # the sweep trial starts the training scripts as subprocesses
def test_a_new_algorithm_folder_runs_everywhere(tmp_path, tiny_hopper_file, monkeypatch):
    folder = tmp_path / "pkg"
    package = write_package(folder)
    assert sorted(p.name for p in package.iterdir() if p.suffix == ".py") == [
        "__init__.py", "agent.py", "networks.py", "train_offline.py", "train_online.py"]
    import importlib

    offline, online = (importlib.import_module(f"{NAME}.train_{phase}") for phase in ("offline", "online"))
    common_args = ["--dataset", str(tiny_hopper_file), "--eval_episodes", "2", "--wandb_mode", "disabled",
                   "--batch_size", "16"]
    offline_ckpt = offline.main([*common_args, "--offline_steps", "40", "--eval_every", "20",
                                 "--run_dir", str(tmp_path / "runs" / "offline")])
    online_ckpt = online.main(["--checkpoint", str(offline_ckpt), "--online_steps", "60", "--eval_every", "30"])
    assert online_ckpt == tmp_path / "runs" / "online" / "checkpoints" / "online.pt"

    # load_agent finds the package from the checkpoint: no list of algorithms to extend
    agent, info = load_agent(online_ckpt)
    assert info["algo"] == NAME and type(agent).__module__ == f"{NAME}.agent"
    obs = np.zeros((3, 11), np.float32)
    assert agent.act(obs).shape == (3, 3)

    # plots: both phases joined, the algorithm's own weight metric drawn under the scores
    fig = plots.plot(plots.load_trials([tmp_path / "runs" / "offline", tmp_path / "runs" / "online"]),
                     tmp_path / "curves.png")
    assert {line.get_label() for line in fig.axes[0].lines} >= {f"{NAME} (n=1)"}
    assert [line.get_label() for line in fig.axes[1].lines if not line.get_label().startswith("_")] == [
        f"{NAME} exploration"]
    online_records = read_metrics(tmp_path / "runs" / "online")
    assert [r["train/exploration"] for r in online_records if "train/exploration" in r] == [0.1, 0.1, 0.1]

    # one sweep trial with it: the sweep runs its scripts as subprocesses (PYTHONPATH from the sweep's env)
    sweep_file = tmp_path / "s.yaml"
    sweep_file.write_text(yaml.safe_dump({
        "root": "sweep", "seeds": 1, "datasets": [str(tiny_hopper_file)], "algorithms": {NAME: {}},
        "overrides": {"offline_steps": 20, "online_steps": 30, "eval_every": 10, "eval_episodes": 1,
                      "wandb_mode": "disabled", "batch_size": 16},
        "env": {"PYTHONPATH": str(folder)}}))
    [trial] = sweep.load_sweep(sweep_file, cwd=tmp_path)
    monkeypatch.setenv("MUJOCO_GL", os.environ.get("MUJOCO_GL", "egl"))
    result = sweep.run_trial(trial)
    assert result["status"] == "done", result
    assert all(trial.final_checkpoint(phase).is_file() for phase in ("offline", "online"))
