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

from common.checkpoint import CheckpointError, load_checkpoint, save_checkpoint


def newest_checkpoint(runs_dir: str | os.PathLike = "runs", algo: str | None = None) -> Path:
    """The most recently written online.pt / offline.pt under `runs_dir` (optionally one algorithm's)."""
    root = Path(runs_dir) / algo if algo else Path(runs_dir)
    found = [p for name in ("online.pt", "offline.pt") for p in root.glob(f"**/checkpoints/{name}")]
    if not found:
        raise FileNotFoundError(f"no offline.pt or online.pt under {root}; train a policy first or give a path")
    return max(found, key=lambda p: p.stat().st_mtime)


def _agent_module(payload: dict, checkpoint, function: str):
    module_name = payload.get("module") or payload.get("algo")  # checkpoints before `module` was recorded
    try:
        return getattr(importlib.import_module(f"{module_name}.agent"), function)
    except (ImportError, AttributeError, TypeError) as exc:
        raise CheckpointError(f"{checkpoint}: cannot rebuild its agent: the package {module_name!r} that wrote it has "
                              f"no importable agent.{function} ({exc})") from None


def load_agent(checkpoint: str | os.PathLike, device: str | torch.device = "cpu"):
    """Returns (agent, info): agent.act(obs_batch) is the deterministic policy, normalization included;
    info holds algo, env_id, dataset, phase, step and the run's config (and a model file's budget and score).
    Takes offline.pt / online.pt / last.pt, and the inference-only model files of export_policy."""
    payload = load_checkpoint(checkpoint, kind=("agent", "resume", "policy"), map_location=device)
    function = "agent_from_policy" if payload["kind"] == "policy" else "agent_from_checkpoint"
    agent = _agent_module(payload, checkpoint, function)(payload, torch.device(device))
    info = {k: payload.get(k) for k in ("algo", "env_id", "dataset", "phase", "step", "config", "budget", "score")}
    info["checkpoint"] = str(checkpoint)
    return agent, info


def export_policy(checkpoint: str | os.PathLike, out: str | os.PathLike, budget: str, score: float | None) -> Path:
    """An inference-only model file from a run's checkpoint: the agent's actor and normalizer (every agent has
    `actor`, `normalizer`, obs_dim, act_dim, max_action), env id, dataset, config, the training budget and its
    measured score; a few hundred KB, loadable with weights_only=True and by load_agent, whose algorithm's
    agent.agent_from_policy(payload, device) rebuilds an agent that acts with it."""
    payload = load_checkpoint(checkpoint, kind=("agent", "resume"))
    agent = _agent_module(payload, checkpoint, "agent_from_checkpoint")(payload, torch.device("cpu"))
    policy = {"actor": agent.actor.state_dict(), "normalizer": agent.normalizer.state_dict(),
              "dims": {"obs": agent.obs_dim, "act": agent.act_dim, "max_action": agent.max_action}}
    parts = {k: payload.get(k) for k in ("algo", "module", "env_id", "dataset", "phase", "step", "config",
                                          "dataset_fingerprint")}
    return save_checkpoint(out, {**parts, "kind": "policy", "budget": budget, "score": score, "policy": policy})
