"""Inference-only model files (tools.export_model): small, safe to load, acting exactly as the run's policy, with a
probe of visited states; and tools.score_bands, which measures how a model's score moves across kernel paths."""
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
    export_and_check(algo, tmp_path, tiny_hopper_file)


def export_and_check(algo, tmp_path, tiny_hopper_file):
    """A tiny run exported to a model file, checked against its checkpoint; returns the model's path."""
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
    # The probe: states one deterministic episode (reset with the run's seed) visits, and the policy's actions there.
    probe = raw["probe"]
    n = probe["observations"].shape[0]
    assert 2 <= n <= 32 and probe["actions"].shape == (n, 3) and probe["env_seed"] == 0
    np.testing.assert_array_equal(agent.act(probe["observations"].numpy()), probe["actions"].numpy())
    from common.envs import make_env

    env = make_env("Hopper-v4", seed=0)
    first, _ = env.reset(seed=0)
    env.close()
    np.testing.assert_array_equal(probe["observations"][0].numpy(), first.astype(np.float32))
    # --add-probe rewrites it and nothing else
    before = torch.load(model, weights_only=True)
    del before["probe"]
    torch.save(before, model)
    export_model.main(["--add-probe", str(model)])
    after = torch.load(model, weights_only=True)
    torch.testing.assert_close(after["probe"], probe, rtol=0, atol=0)
    assert after["score"] == raw["score"] and after["policy"]["actor"].keys() == raw["policy"]["actor"].keys()
    return model


def test_score_bands_scores_each_kernel_path_and_seed_set(tmp_path, tiny_hopper_file):
    """tools.score_bands on one tiny model, this machine's own kernel path, 2 seed sets of 2 episodes: the same
    scores as evaluating here directly with seeds (run seed + EVAL_SEED_OFFSET + k · 1000), and its min–max."""
    import json

    from common.evaluation import evaluate
    from common.evaluation import EVAL_SEED_OFFSET
    from tools import score_bands

    model = export_and_check("adaptive_bc", tmp_path, tiny_hopper_file)
    out = tmp_path / "bands.json"
    score_bands.main([str(model), "--paths", "native", "--eval-seeds", "2", "--episodes", "2", "--out", str(out)])
    report = json.loads(out.read_text())
    entry = report["models"][model.name]
    agent, _ = load_agent(model)
    expected = [evaluate(agent.act, "Hopper-v4", 2, EVAL_SEED_OFFSET + k * 1000).normalized_score for k in (0, 1)]
    assert entry["scores"] == {"native": expected}
    assert (entry["min"], entry["max"]) == (min(expected), max(expected)) and expected[0] != expected[1]
    assert score_bands.band_text(entry) == f"{min(expected):.1f}–{max(expected):.1f}"
    with pytest.raises(SystemExit):
        score_bands.main([str(model), "--paths", "sse9"])
    # --merge adds a model to the report and keeps the others; a report measured differently is refused, untouched
    second = model.with_name("second.pt")
    second.write_bytes(model.read_bytes())
    score_bands.main([str(second), "--paths", "native", "--eval-seeds", "2", "--episodes", "2", "--out", str(out),
                      "--merge"])
    merged = json.loads(out.read_text())
    assert merged["models"][model.name] == entry and merged["models"]["second.pt"]["scores"] == {"native": expected}
    before = out.read_text()
    with pytest.raises(SystemExit, match=r"measured differently \(eval_seeds: 2 there, 1 now\)"):
        score_bands.main([str(second), "--paths", "native", "--eval-seeds", "1", "--episodes", "2", "--out", str(out),
                          "--merge"])
    assert out.read_text() == before
