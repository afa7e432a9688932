"""Load a trained policy from any checkpoint of this repo, through the code the training scripts use.

    agent, info = load_agent("runs/spot/hopper-medium-v2/seed0/online/checkpoints/online.pt")
    result = evaluate(agent.act, info["env_id"], episodes=10, seed=0)

A checkpoint records the package of the algorithm that wrote it (`module`); its `agent` module's
`agent_from_checkpoint(payload, device)` rebuilds the agent, so any algorithm folder works here unchanged.
"""
from __future__ import annotations

import importlib
import os
from pathlib import Path

import torch

from common.checkpoint import CheckpointError, load_checkpoint


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
    payload = load_checkpoint(checkpoint, kind=("agent", "resume"), map_location=device)  # offline/online/last.pt
    module_name = payload.get("module") or payload.get("algo")  # checkpoints before `module` was recorded
    try:
        module = importlib.import_module(f"{module_name}.agent")
        rebuild = module.agent_from_checkpoint
    except (ImportError, AttributeError, TypeError) as exc:
        raise CheckpointError(f"{checkpoint}: cannot rebuild its agent: the package {module_name!r} that wrote it has "
                              f"no importable agent.agent_from_checkpoint ({exc})") from None
    agent = rebuild(payload, torch.device(device))
    info = {k: payload.get(k) for k in ("algo", "env_id", "dataset", "phase", "step", "config")}
    info["checkpoint"] = str(checkpoint)
    return agent, info
