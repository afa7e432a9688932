"""Inference-only model files (tools.export_model): small, safe to load, and acting exactly as the run's policy."""
from __future__ import annotations

import importlib

import numpy as np
import pytest
import torch

from common.inference import load_agent
from tools import export_model

SMALL = {"adaptive_bc": ["--num_critics", "4"], "spot": ["--vae_steps", "10", "--lambd", "0.1", "--vae_hidden", "32"]}


@pytest.mark.parametrize("algo", ["adaptive_bc", "spot"])
def test_exported_policy_acts_as_the_checkpoint(algo, tmp_path, tiny_hopper_file):
    train = importlib.import_module(f"{algo}.train_offline").main
    checkpoint = train(["--dataset", str(tiny_hopper_file), "--run_dir", str(tmp_path / "run"), "--offline_steps", "20",
                        "--eval_every", "10", "--eval_episodes", "1", "--batch_size", "16", "--wandb_mode", "disabled",
                        *SMALL[algo]])
    model = export_model.main([str(checkpoint), str(tmp_path / "models" / f"{algo}.pt"), "--budget", "20 updates"])
    raw = torch.load(model, weights_only=True)  # plain tensors and data only
    assert raw["kind"] == "policy" and set(raw["policy"]) == {"actor", "normalizer", "dims"}
    assert model.stat().st_size < checkpoint.stat().st_size / 3  # actor only: no critics, no optimizer state
    agent, info = load_agent(model)
    full, _ = load_agent(checkpoint)
    obs = np.random.default_rng(0).normal(size=(7, 11)).astype(np.float32)
    np.testing.assert_array_equal(agent.act(obs), full.act(obs))
    records = [line for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines() if "eval/" in line]
    assert info["budget"] == "20 updates" and info["score"] is not None and str(info["score"])[:6] in records[-1]
    assert info["env_id"] == "Hopper-v4" and info["algo"] == algo
