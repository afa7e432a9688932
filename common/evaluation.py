"""Deterministic evaluation: all episodes stepped together in a gymnasium vector env."""
from __future__ import annotations

import dataclasses
from typing import Callable

import gymnasium as gym
import numpy as np

from common.datasets import normalized_score
from common.envs import gym_make, ref_returns

PolicyFn = Callable[[np.ndarray], np.ndarray]  # (n, obs_dim) float32 -> (n, act_dim)
EVAL_SEED_OFFSET = 1_000_000  # a run's evaluation episodes use seeds seed + this + i: never a training episode's


@dataclasses.dataclass
class EvalResult:
    returns: np.ndarray
    lengths: np.ndarray
    normalized_scores: np.ndarray

    @property
    def return_mean(self) -> float:
        return float(self.returns.mean())

    @property
    def return_std(self) -> float:
        return float(self.returns.std())

    @property
    def normalized_score(self) -> float:
        return float(self.normalized_scores.mean())

    @property
    def normalized_score_std(self) -> float:
        return float(self.normalized_scores.std())

    def metrics(self) -> dict[str, float]:
        return {"eval/return_mean": self.return_mean, "eval/return_std": self.return_std,
                "eval/normalized_score": self.normalized_score,
                "eval/normalized_score_std": self.normalized_score_std}


class Evaluator:
    """Runs `episodes` episodes side by side: one batched policy call per environment step."""

    def __init__(self, env_id: str, episodes: int, ref: tuple[float, float] | None = None):
        self.env_id, self.episodes = env_id, int(episodes)
        self.ref = ref or ref_returns(env_id)
        self.envs = gym.vector.SyncVectorEnv([lambda: gym_make(env_id) for _ in range(self.episodes)],
                                             autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)

    def run(self, policy: PolicyFn, seed: int) -> EvalResult:
        n = self.episodes
        obs, _ = self.envs.reset(seed=[seed + i for i in range(n)])
        returns = np.zeros(n)
        lengths = np.zeros(n, dtype=np.int64)
        active = np.ones(n, dtype=bool)
        while active.any():
            actions = np.asarray(policy(obs.astype(np.float32)), dtype=np.float32)
            obs, reward, terminated, truncated, _ = self.envs.step(actions)
            returns += np.where(active, reward, 0.0)
            lengths += active
            active &= ~(terminated | truncated)
        return EvalResult(returns, lengths, normalized_score(returns, *self.ref))

    def close(self) -> None:
        self.envs.close()


def evaluate(policy: PolicyFn, env_id: str, episodes: int, seed: int) -> EvalResult:
    evaluator = Evaluator(env_id, episodes)
    try:
        return evaluator.run(policy, seed)
    finally:
        evaluator.close()
