"""Every model file shipped in models/ loads safely, acts, is listed in the README with its score and its score band,
and is the policy it claims to be on any machine: its actions on its probe (states its own rollout visited, stored in
the file) match the stored ones to PROBE_ATOL. A whole 10-episode score is not compared across machines: MuJoCo turns
a 1e-8 difference in an action into another episode, so the README gives each score with the band that
tools.score_bands measured over three kernel paths and five seed sets (benchmarks/results/score_bands.json)."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from common.inference import PROBE_ATOL, load_agent
from tools.score_bands import band_text

ROOT = Path(__file__).resolve().parents[1]
MODELS = sorted((ROOT / "models").glob("*.pt"))
BANDS = ROOT / "benchmarks" / "results" / "score_bands.json"
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
    probe = raw["probe"]
    assert probe["observations"].shape == (32, raw["policy"]["dims"]["obs"])
    np.testing.assert_allclose(agent.act(probe["observations"].numpy()), probe["actions"].numpy(), rtol=0,
                               atol=PROBE_ATOL)
    readme = (ROOT / "README.md").read_text()
    row = next((line for line in readme.splitlines() if f"`models/{path.name}`" in line), None)
    assert row is not None, f"README lists no models/{path.name}"
    assert f"{info['score']:.1f}" in row, f"README's row for {path.name} does not give its score {info['score']:.1f}"
    band = json.loads(BANDS.read_text())["models"][path.name]
    assert band["recorded"] == info["score"] and len(band["scores"]) == 3 and all(
        len(v) == 5 for v in band["scores"].values())
    assert band_text(band) in row, f"README's row for {path.name} does not give its band {band_text(band)}"


def test_probes_tell_the_policies_apart():
    """The tolerance is far below the gap between two policies: each shipped model differs from every other model
    of its dataset (offline vs online, one algorithm vs the other) on the other's probe by much more than PROBE_ATOL."""
    by_dataset: dict[str, list[Path]] = {}
    for path in MODELS:
        by_dataset.setdefault(NAME.match(path.name)["dataset"], []).append(path)
    pairs = 0
    for paths in by_dataset.values():
        for path in paths:
            agent, _ = load_agent(path)
            for other_path in paths:
                if other_path == path:
                    continue
                other = torch.load(other_path, weights_only=True)["probe"]
                gap = np.abs(agent.act(other["observations"].numpy()) - other["actions"].numpy()).max()
                assert gap > 100 * PROBE_ATOL, f"{path.name} on {other_path.name}'s probe: {gap}"
                pairs += 1
    assert pairs >= len(MODELS)
