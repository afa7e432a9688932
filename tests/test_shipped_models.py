"""Every model file shipped in models/ loads safely, acts, is listed in the README with its score, and scores what it
says: its run's last evaluation, replayed with the run's own evaluation seeds, gives the recorded score."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch

from common.evaluation import evaluate
from common.inference import load_agent
from common.run import EVAL_SEED_OFFSET

ROOT = Path(__file__).resolve().parents[1]
MODELS = sorted((ROOT / "models").glob("*.pt"))
NAME = re.compile(r"^(?P<dataset>[\w.-]+)_(?P<algo>adaptive_bc|spot)_(?P<phase>offline|online)\.pt$")


def test_models_ship():
    assert len(MODELS) >= 4, "models/ should hold an offline and an online policy per dataset of the study"


@pytest.mark.parametrize("path", MODELS, ids=[p.name for p in MODELS])
def test_shipped_model_loads_and_acts(path):
    assert path.stat().st_size < 1_000_000
    raw = torch.load(path, weights_only=True)
    assert raw["kind"] == "policy" and set(raw["policy"]) == {"actor", "normalizer", "dims"}
    name = NAME.match(path.name)
    assert name, f"{path.name}: models are named <dataset>_<algo>_<phase>.pt"
    agent, info = load_agent(path)
    assert (info["algo"], info["phase"]) == (name["algo"], name["phase"])
    assert Path(info["dataset"]).stem == name["dataset"]
    assert info["budget"] and isinstance(info["score"], float)
    obs = np.random.default_rng(0).normal(size=(3, raw["policy"]["dims"]["obs"])).astype(np.float32)
    actions = agent.act(obs)
    assert actions.shape == (3, raw["policy"]["dims"]["act"]) and np.all(np.abs(actions) <= 1.0)
    readme = (ROOT / "README.md").read_text()
    row = next((line for line in readme.splitlines() if f"`models/{path.name}`" in line), None)
    assert row is not None, f"README lists no models/{path.name}"
    assert f"{info['score']:.1f}" in row, f"README's row for {path.name} does not give its score {info['score']:.1f}"


@pytest.mark.slow
@pytest.mark.parametrize("path", MODELS, ids=[p.name for p in MODELS])
def test_shipped_model_scores_what_it_says(path):
    agent, info = load_agent(path)
    cfg = info["config"]
    result = evaluate(agent.act, info["env_id"], cfg["eval_episodes"], cfg["seed"] + EVAL_SEED_OFFSET)
    assert result.normalized_score == pytest.approx(info["score"], abs=1e-6)
