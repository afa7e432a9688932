"""Replay buffer and observation normalizer, both living on the run's device.

One ring buffer serves both schemes the algorithms need:
  * `from_dataset(dataset, capacity=...)`: every offline transition kept, online ones appended (spot);
  * `prefilled(dataset, n, capacity)`: n offline transitions drawn uniformly with replacement,
    online ones appended, oldest evicted first once full (adaptive_bc).
Transitions are stored packed in one float32 tensor, so a batch is a single gather on the device.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch


class Batch(NamedTuple):
    observations: torch.Tensor
    actions: torch.Tensor
    rewards: torch.Tensor  # (B,)
    next_observations: torch.Tensor
    terminals: torch.Tensor  # (B,) float 1.0 where the episode truly ended (no bootstrapping)


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


class ReplayBuffer:
    def __init__(self, capacity: int, obs_dim: int, act_dim: int, device: torch.device | str = "cpu", seed: int = 0):
        if capacity < 1:
            raise ValueError(f"buffer capacity must be >= 1, got {capacity}")
        self.capacity, self.obs_dim, self.act_dim = int(capacity), int(obs_dim), int(act_dim)
        self.device = torch.device(device)
        self.width = 2 * obs_dim + act_dim + 2
        self.data = torch.zeros(self.capacity, self.width, dtype=torch.float32, device=self.device)
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(int(seed))
        self.size = 0  # rows holding data
        self.ptr = 0  # next row to write
        self.num_fixed = 0  # leading rows rebuilt from the dataset on resume, so not checkpointed
        self.total_added = 0  # online transitions ever appended

    # --- filling -------------------------------------------------------------------------------
    @staticmethod
    def _pack(obs, act, rew, next_obs, term) -> np.ndarray:
        return np.concatenate([
            np.asarray(obs, np.float32).reshape(len(rew), -1), np.asarray(act, np.float32).reshape(len(rew), -1),
            np.asarray(rew, np.float32).reshape(-1, 1), np.asarray(next_obs, np.float32).reshape(len(rew), -1),
            np.asarray(term, np.float32).reshape(-1, 1)], axis=1)

    def _write_rows(self, rows: torch.Tensor) -> None:
        n = rows.shape[0]
        if n > self.capacity:
            raise ValueError(f"cannot write {n} rows into a buffer of capacity {self.capacity}")
        end = self.ptr + n
        if end <= self.capacity:
            self.data[self.ptr:end] = rows
        else:
            first = self.capacity - self.ptr
            self.data[self.ptr:] = rows[:first]
            self.data[:n - first] = rows[first:]
        self.ptr = end % self.capacity
        self.size = min(self.size + n, self.capacity)

    @classmethod
    def from_dataset(cls, dataset, extra_capacity: int, device="cpu", seed: int = 0) -> "ReplayBuffer":
        """All offline transitions, then room for `extra_capacity` online ones (nothing evicted)."""
        buf = cls(len(dataset) + max(int(extra_capacity), 0), dataset.obs_dim, dataset.act_dim, device, seed)
        rows = cls._pack(dataset.observations, dataset.actions, dataset.rewards,
                         dataset.next_observations, dataset.terminals)
        buf._write_rows(torch.from_numpy(rows).to(buf.device))
        buf.num_fixed = len(dataset)
        return buf

    @classmethod
    def prefilled(cls, dataset, num_prefill: int, capacity: int, device="cpu", seed: int = 0) -> "ReplayBuffer":
        """`num_prefill` offline transitions drawn uniformly with replacement; FIFO afterwards.

        Capacity is raised to the prefill size if smaller, so no offline row is evicted before use.
        """
        capacity = max(int(capacity), int(num_prefill))
        buf = cls(capacity, dataset.obs_dim, dataset.act_dim, device, seed)
        rng = np.random.default_rng(seed)
        idx = rng.integers(0, len(dataset), size=int(num_prefill))
        rows = cls._pack(dataset.observations[idx], dataset.actions[idx], dataset.rewards[idx],
                         dataset.next_observations[idx], dataset.terminals[idx])
        buf._write_rows(torch.from_numpy(rows).to(buf.device))
        return buf

    def add(self, obs, action, reward: float, next_obs, terminal: bool) -> None:
        row = torch.from_numpy(self._pack(obs, action, [reward], next_obs, [terminal])).to(self.device)
        if self.size == self.capacity and self.ptr < self.num_fixed:
            raise RuntimeError("replay buffer full: offline rows would be overwritten; raise its capacity")
        self._write_rows(row)
        self.total_added += 1

    # --- sampling ------------------------------------------------------------------------------
    def sample(self, batch_size: int) -> Batch:
        idx = torch.randint(0, self.size, (batch_size,), device=self.device, generator=self.generator)
        return self.unpack(self.data.index_select(0, idx))

    def unpack(self, rows: torch.Tensor) -> Batch:
        o, a = self.obs_dim, self.act_dim
        return Batch(rows[:, :o], rows[:, o:o + a], rows[:, o + a], rows[:, o + a + 1:2 * o + a + 1], rows[:, -1])

    def __len__(self) -> int:
        return self.size

    # --- checkpointing -------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """Everything but the leading `num_fixed` rows, which are rebuilt from the dataset."""
        return {
            "capacity": self.capacity, "width": self.width, "size": self.size, "ptr": self.ptr,
            "num_fixed": self.num_fixed, "total_added": self.total_added,
            "rows": self.data[self.num_fixed:self.size].cpu().clone(),
            "generator": self.generator.get_state(),
        }

    def load_state_dict(self, state: dict) -> None:
        if (state["capacity"], state["width"], state["num_fixed"]) != (self.capacity, self.width, self.num_fixed):
            raise ValueError(
                f"checkpointed buffer (capacity {state['capacity']}, width {state['width']}, offline rows "
                f"{state['num_fixed']}) does not match this run's ({self.capacity}, {self.width}, {self.num_fixed})")
        self.data[self.num_fixed:state["size"]] = state["rows"].to(self.device)
        self.size, self.ptr, self.total_added = state["size"], state["ptr"], state["total_added"]
        self.generator.set_state(state["generator"])
