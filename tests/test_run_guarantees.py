"""The run-folder guarantees, for each of the four training scripts: a finished run is never overwritten, and
an unfinished one resumes only with the same config."""
from __future__ import annotations

import importlib

import pytest

from common.layout import checkpoint_path
from common.run_folder import RunExistsError

SMALL = {"adaptive_bc": ["--hidden_dim", "16", "--num_critics", "4", "--utd", "1", "--prefill_min", "64"],
         "spot": ["--hidden_dim", "16", "--vae_hidden", "16", "--vae_steps", "10", "--lambd", "0.1"]}
AGENTS = {"adaptive_bc": "RedqBcAgent", "spot": "SpotAgent"}


@pytest.mark.parametrize("algo", ["adaptive_bc", "spot"])
def test_finished_runs_kept_and_changed_config_refused_in_both_phases(algo, tmp_path, tiny_hopper_file, monkeypatch):
    offline = importlib.import_module(f"{algo}.train_offline")
    online = importlib.import_module(f"{algo}.train_online")
    agent_class = getattr(importlib.import_module(f"{algo}.agent"), AGENTS[algo])
    common = ["--batch_size", "16", "--eval_episodes", "1", "--wandb_mode", "disabled", *SMALL[algo]]
    off_args = ["--dataset", str(tiny_hopper_file), "--offline_steps", "20", "--eval_every", "10",
                "--checkpoint_every", "10", "--run_dir", str(tmp_path / "off"), *common]
    ckpt = offline.main(off_args)
    on_args = ["--checkpoint", str(ckpt), "--online_steps", "150", "--eval_every", "75", "--checkpoint_every", "20",
               *SMALL[algo]]
    online.main([*on_args, "--run_dir", str(tmp_path / "on")])

    for main, args, folder in ((offline.main, off_args, tmp_path / "off"),
                               (online.main, [*on_args, "--run_dir", str(tmp_path / "on")], tmp_path / "on")):
        before = (folder / "metrics.jsonl").read_bytes()
        with pytest.raises(RunExistsError, match="finished"):
            main(args)
        assert (folder / "metrics.jsonl").read_bytes() == before

    # an interrupted run (last.pt present) resumes only with the same config
    calls = {"n": 0}
    update = agent_class.update

    def interrupted(self, batch):
        calls["n"] += 1
        if calls["n"] > 60:
            raise KeyboardInterrupt("simulated kill")
        return update(self, batch)

    with monkeypatch.context() as patch:
        patch.setattr(agent_class, "update", interrupted)
        with pytest.raises(KeyboardInterrupt):
            online.main([*on_args, "--run_dir", str(tmp_path / "killed")])
    assert checkpoint_path(tmp_path / "killed", "last").is_file()
    with pytest.raises(RunExistsError, match="seed differ"):
        online.main([*on_args, "--run_dir", str(tmp_path / "killed"), "--seed", "5"])
    online.main([*on_args, "--run_dir", str(tmp_path / "killed")])  # the same config resumes and finishes
    assert (tmp_path / "killed" / "metrics.jsonl").read_bytes() == (tmp_path / "on" / "metrics.jsonl").read_bytes()
