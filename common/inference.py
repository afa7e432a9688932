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


PROBE_STATES = 32  # observations in a model file's probe
PROBE_ATOL = 1e-4  # |Δ action| allowed across CPUs: measured ≤ 1.5e-6 across torch/MKL kernel paths (float32 MLPs)


def policy_probe(agent, env_id: str, seed: int) -> dict:
    """A fingerprint of a policy that holds on any machine: up to PROBE_STATES observations that one deterministic
    episode of it visits (evenly spaced over the episode) and its actions on them. Another CPU gives the same
    actions on these stored observations to PROBE_ATOL (a whole rollout would diverge; see tools.score_bands)."""
    import numpy as np

    from common.envs import make_env

    env = make_env(env_id, seed=seed)
    try:
        obs, _ = env.reset(seed=seed)
        visited, done = [obs], False
        while not done:
            obs, _, terminated, truncated, _ = env.step(agent.act(obs[None].astype(np.float32))[0])
            done = terminated or truncated
            if not done:
                visited.append(obs)
    finally:
        env.close()
    pick = np.unique(np.linspace(0, len(visited) - 1, PROBE_STATES).round().astype(int))
    observations = np.stack([visited[i] for i in pick]).astype(np.float32)
    return {"observations": torch.from_numpy(observations), "actions": torch.from_numpy(agent.act(observations)),
            "env_seed": int(seed)}


def add_probe(model: str | os.PathLike) -> Path:
    """Writes (or rewrites) the probe of an existing model file; its weights and every other entry stay as they are."""
    payload = load_checkpoint(model, kind=("policy",))
    agent, info = load_agent(model)
    payload["probe"] = policy_probe(agent, info["env_id"], int(info["config"]["seed"]))
    return save_checkpoint(model, payload)


def export_policy(checkpoint: str | os.PathLike, out: str | os.PathLike, budget: str, score: float | None) -> Path:
    """An inference-only model file from a run's checkpoint: the agent's actor and normalizer (every agent has
    `actor`, `normalizer`, obs_dim, act_dim, max_action), env id, dataset, config, the training budget and its
    measured score and its probe (policy_probe); a few hundred KB, loadable with weights_only=True and by load_agent,
    whose algorithm's agent.agent_from_policy(payload, device) rebuilds an agent that acts with it."""
    payload = load_checkpoint(checkpoint, kind=("agent", "resume"))
    agent = _agent_module(payload, checkpoint, "agent_from_checkpoint")(payload, torch.device("cpu"))
    policy = {"actor": agent.actor.state_dict(), "normalizer": agent.normalizer.state_dict(),
              "dims": {"obs": agent.obs_dim, "act": agent.act_dim, "max_action": agent.max_action}}
    parts = {k: payload.get(k) for k in ("algo", "module", "env_id", "dataset", "phase", "step", "config",
                                          "dataset_fingerprint")}
    env_id = parts["env_id"]
    probe = policy_probe(agent, env_id, int(payload["config"]["seed"]))
    return save_checkpoint(out, {**parts, "kind": "policy", "budget": budget, "score": score, "policy": policy,
                                 "probe": probe})
