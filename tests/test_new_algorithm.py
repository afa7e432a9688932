"""A third algorithm is one new folder: tests/plainbc/ (nothing in common/ or tools/ names it) runs offline -> online
-> load_agent -> export -> plots -> a sweep trial; and an algorithm that breaks the contract of common/algorithm.py
is stopped at start-up with one line."""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import yaml

from common.algorithm import AlgorithmError, check_algorithm
from common.inference import export_policy, load_agent
from common.layout import read_metrics
from conftest import REPO
from tools import plots, sweep
from toy_algorithm import NAME, PACKAGE, TESTS, copy_package


def test_the_toy_algorithm_keeps_the_contract_and_nothing_shared_names_it():
    assert sorted(p.name for p in PACKAGE.glob("*.py")) == [
        "__init__.py", "agent.py", "networks.py", "train_offline.py", "train_online.py"]
    module = check_algorithm(NAME)
    assert module.ALGO == NAME and module.WEIGHT_METRIC == "train/exploration"
    for folder in ("common", "tools"):
        for path in (REPO / folder).glob("*.py"):
            text = path.read_text()
            assert not any(use in text for use in (f'"{NAME}"', f"'{NAME}'", f"import {NAME}", f"from {NAME}")), path


def _start(tmp_path, package: str, dataset) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(REPO)])}
    return subprocess.run([sys.executable, "-m", f"{package}.train_offline", "--dataset", str(dataset),
                           "--run_dir", str(tmp_path / "run"), "--wandb_mode", "disabled", "--offline_steps", "4",
                           "--eval_every", "4", "--eval_episodes", "1", "--batch_size", "8"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)


def test_an_algorithm_whose_algo_is_not_its_package_name_stops_at_start(tmp_path, tiny_hopper_file):
    """Copied from plainbc, imports renamed, ALGO forgotten: one line at start-up, exit 2, no run folder."""
    copy_package(tmp_path, "copiedbc", algo=NAME)
    result = _start(tmp_path, "copiedbc", tiny_hopper_file)
    assert result.returncode == 2, result.stderr
    [line] = result.stderr.strip().splitlines()
    assert "ALGO = 'plainbc'" in line and "package's name 'copiedbc'" in line and "set ALGO = 'copiedbc'" in line
    assert not (tmp_path / "run").exists()


def test_an_algorithm_without_a_hook_stops_at_start(tmp_path, tiny_hopper_file):
    package = copy_package(tmp_path, "nohookbc")
    agent = package / "agent.py"
    text = agent.read_text()
    agent.write_text(text[:text.index("def agent_from_policy")])  # the export hook left out
    result = _start(tmp_path, "nohookbc", tiny_hopper_file)
    assert result.returncode == 2, result.stderr
    [line] = result.stderr.strip().splitlines()
    assert "nohookbc.agent must define agent_from_policy(payload, device)" in line and "common/algorithm.py" in line
    assert not (tmp_path / "run").exists()


def test_the_contract_names_every_problem(tmp_path):
    package = copy_package(tmp_path, "brokenbc")
    agent = package / "agent.py"
    text = agent.read_text().replace("class Config(BaseConfig):", "class Config:")
    text = text.replace('WEIGHT_METRIC = "train/exploration"', "WEIGHT_METRIC = 3")
    agent.write_text(text.replace("def agent_from_checkpoint(", "def _agent_from_checkpoint("))
    with pytest.raises(AlgorithmError) as error:
        check_algorithm("brokenbc")
    message = str(error.value)
    assert "Config (a dataclass subclassing common.config.BaseConfig)" in message
    assert "agent_from_checkpoint(payload, device)" in message and "WEIGHT_METRIC" in message
    with pytest.raises(AlgorithmError, match="no importable package nosuchalgo.agent"):
        check_algorithm("nosuchalgo")


@pytest.mark.slow  # the sweep trial starts the training scripts as subprocesses
def test_a_new_algorithm_folder_runs_everywhere(tmp_path, tiny_hopper_file, monkeypatch):
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
    model = export_policy(online_ckpt, tmp_path / "model.pt", budget="tiny", score=None)  # its agent_from_policy
    exported, _ = load_agent(model)
    np.testing.assert_array_equal(exported.act(obs), agent.act(obs))

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
        "env": {"PYTHONPATH": str(TESTS)}}))
    [trial] = sweep.load_sweep(sweep_file, cwd=tmp_path)
    monkeypatch.setenv("MUJOCO_GL", os.environ.get("MUJOCO_GL", "egl"))
    result = sweep.run_trial(trial)
    assert result["status"] == "done", result
    assert all(trial.final_checkpoint(phase).is_file() for phase in ("offline", "online"))
