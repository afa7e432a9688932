"""Checkpoints written before the critics moved into common.ensemble.EnsembleMLP (commit 5baebbe) still load, act
and fine-tune as they did with the code that wrote them.

tests/data/legacy/<algo>/ was made by that commit's code, on another machine (tests/data/legacy/README.md): a
20-update offline.pt on the tiny hopper file, the actions it gave on 5 fixed observations, and the metrics.jsonl of a
150-step online run started from it. Values stored from another machine are compared with a tolerance, not byte for
byte: across torch/MKL kernel paths (../shared/tools/other-cpu) the actions differ by ≤ 3e-8 and every metric of the
short online run by a relative ≤ 3e-7, so actions must agree to 1e-5 and metrics to a relative 1e-5 (absolute 1e-6
near 0). A wrong mapping of the critics' weights or Adam moments (whose parameter order changed for SPOT) changes
the losses far beyond that, as does a critic started afresh.
"""
from __future__ import annotations

import importlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from common.inference import load_agent

LEGACY = Path(__file__).parent / "data" / "legacy"
ACTION_ATOL, METRIC_RTOL, METRIC_ATOL = 1e-5, 1e-5, 1e-6
SMALL = {"adaptive_bc": ["--hidden_dim", "16", "--num_critics", "4", "--utd", "1", "--prefill_min", "64"],
         # the legacy run drew its dropout masks with F.dropout (spot's dropout_masks: bernoulli)
         "spot": ["--hidden_dim", "16", "--vae_hidden", "16", "--vae_steps", "10", "--lambd", "0.1",
                  "--dropout_masks", "bernoulli"]}


@pytest.mark.parametrize("algo", ["adaptive_bc", "spot"])
def test_legacy_checkpoint_acts_as_before(algo):
    raw = torch.load(LEGACY / algo / "offline.pt", weights_only=False)
    assert not any(key.startswith("net.") for key in raw["agent"]["critic"])  # really the old layout
    agent, _ = load_agent(LEGACY / algo / "offline.pt")
    obs = np.random.default_rng(0).normal(size=(5, 11)).astype(np.float32)
    expected = np.array(json.loads((LEGACY / algo / "actions.json").read_text()), dtype=np.float32)
    np.testing.assert_allclose(agent.act(obs), expected, rtol=0, atol=ACTION_ATOL)
    for name in ("critic", "critic_target"):  # every tensor arrives, renamed
        old = sorted(float(t.double().sum()) for t in raw["agent"][name].values())
        new = sorted(float(t.double().sum()) for t in getattr(agent, name).state_dict().values())
        assert old == new


@pytest.mark.parametrize("algo", ["adaptive_bc", "spot"])
def test_fine_tuning_a_legacy_checkpoint_gives_the_old_codes_metrics(algo, tmp_path, tiny_hopper_file):
    online = importlib.import_module(f"{algo}.train_online").main
    online(["--checkpoint", str(LEGACY / algo / "offline.pt"), "--dataset", str(tiny_hopper_file),
            "--online_steps", "150", "--eval_every", "75", "--checkpoint_every", "200", *SMALL[algo],
            "--run_dir", str(tmp_path / "on")])
    new = [json.loads(line) for line in (tmp_path / "on" / "metrics.jsonl").read_text().splitlines()]
    old = [json.loads(line) for line in (LEGACY / algo / "online-metrics.jsonl").read_text().splitlines()]
    assert_records_close(new, old)


def assert_records_close(new: list[dict], old: list[dict]) -> None:
    """Same records, same keys, same steps and integers; floats within the cross-machine tolerance."""
    assert [(r["phase"], r["step"], sorted(r)) for r in new] == [(r["phase"], r["step"], sorted(r)) for r in old]
    for r_new, r_old in zip(new, old):
        for key, value in r_old.items():
            if key.startswith("time/"):  # wall-clock rates: never comparable
                continue
            if isinstance(value, float):
                assert r_new[key] == pytest.approx(value, rel=METRIC_RTOL, abs=METRIC_ATOL), (r_old["step"], key)
            else:
                assert r_new[key] == value, (r_old["step"], key)


@pytest.mark.parametrize("algo", ["adaptive_bc", "spot"])
def test_a_checkpoint_that_does_not_fit_is_a_clear_error(algo, tmp_path):
    from common.checkpoint import CheckpointError, save_checkpoint
    payload = torch.load(LEGACY / algo / "offline.pt", weights_only=False)
    critic = payload["agent"]["critic"]
    key = next(iter(critic))
    critic[key] = critic[key][..., :-1]  # one unit short: no layout this code knows
    save_checkpoint(tmp_path / "offline.pt", payload)
    with pytest.raises(CheckpointError, match="checkpoint's critic does not fit this agent.*size mismatch"):
        load_agent(tmp_path / "offline.pt")
