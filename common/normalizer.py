"""Observation normalization with the dataset's statistics, used everywhere in a run (agent, buffer batches,
evaluation) and saved with the agent."""
from __future__ import annotations

import numpy as np
import torch


class ObsNormalizer:
    """(obs - mean) / std with the dataset's statistics (std + 1e-3), as used everywhere in a run."""

    def __init__(self, mean, std, device: torch.device | str = "cpu"):
        self.mean = torch.as_tensor(mean, dtype=torch.float32, device=device).clone()
        self.std = torch.as_tensor(std, dtype=torch.float32, device=device).clone()

    @classmethod
    def from_observations(cls, observations: np.ndarray, eps: float = 1e-3, device="cpu") -> "ObsNormalizer":
        obs = np.asarray(observations, dtype=np.float64)
        return cls(obs.mean(0), obs.std(0) + eps, device)

    @classmethod
    def for_dataset(cls, dataset, normalize: bool, device="cpu") -> "ObsNormalizer":
        """A run's normalizer: the dataset's statistics when `normalize` (config key normalize_states), else none."""
        if normalize:
            return cls.from_observations(dataset.observations, device=device)
        return cls.identity(dataset.obs_dim, device=device)

    @classmethod
    def identity(cls, dim: int, device="cpu") -> "ObsNormalizer":
        return cls(np.zeros(dim), np.ones(dim), device)

    def __call__(self, obs: torch.Tensor) -> torch.Tensor:
        return (obs - self.mean) / self.std

    def unnormalize(self, obs: torch.Tensor) -> torch.Tensor:
        return obs * self.std + self.mean

    def to(self, device) -> "ObsNormalizer":
        return ObsNormalizer(self.mean, self.std, device)

    def state_dict(self) -> dict:
        return {"mean": self.mean.cpu(), "std": self.std.cpu()}

    @classmethod
    def from_state_dict(cls, state: dict, device="cpu") -> "ObsNormalizer":
        return cls(state["mean"], state["std"], device)

    def matches(self, other: "ObsNormalizer", atol: float = 1e-5) -> bool:
        return (self.mean.shape == other.mean.shape
                and torch.allclose(self.mean.cpu(), other.mean.cpu(), atol=atol)
                and torch.allclose(self.std.cpu(), other.std.cpu(), atol=atol))
