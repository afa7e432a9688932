"""Load a trained policy from any checkpoint of this repo, through the code the training scripts use.

    agent, info = load_agent("runs/spot/hopper-medium-v2/seed0/online/checkpoints/online.pt")
    result = evaluate(agent.act, info["env_id"], episodes=10, seed=0)
"""
from __future__ import annotations

import importlib
import os
from pathlib import Path

import torch

from common.checkpoint import CheckpointError, load_checkpoint

# algo id -> module whose `agent_from_checkpoint(payload, device)` rebuilds the agent
ALGORITHMS = {"adaptive_bc": "adaptive_bc.agent", "spot": "spot.agent"}


def newest_checkpoint(runs_dir: str | os.PathLike = "runs", algo: str | None = None) -> Path:
    """The most recently written online.pt / offline.pt under `runs_dir` (optionally one algorithm's)."""
    root = Path(runs_dir) / algo if algo else Path(runs_dir)
    found = [p for name in ("online.pt", "offline.pt") for p in root.glob(f"**/checkpoints/{name}")]
    if not found:
        raise FileNotFoundError(f"no offline.pt or online.pt under {root}; train a policy first or give a path")
    return max(found, key=lambda p: p.stat().st_mtime)


def load_agent(checkpoint: str | os.PathLike, device: str | torch.device = "cpu"):
    """Returns (agent, info): agent.act(obs_batch) is the deterministic policy, normalization included;
    info holds algo, env_id, dataset, phase, step and the run's config."""
    payload = load_checkpoint(checkpoint, kind="agent", map_location=device)
    algo = payload.get("algo")
    if algo not in ALGORITHMS:
        raise CheckpointError(f"{checkpoint}: unknown algorithm {algo!r} (known: {', '.join(ALGORITHMS)})")
    module = importlib.import_module(ALGORITHMS[algo])
    agent = module.agent_from_checkpoint(payload, torch.device(device))
    info = {k: payload.get(k) for k in ("algo", "env_id", "dataset", "phase", "step", "config")}
    info["checkpoint"] = str(checkpoint)
    return agent, info
