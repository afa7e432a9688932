"""The replay buffer, living on the run's device.

One ring buffer serves both schemes the algorithms need:
  * `from_dataset(dataset, online_capacity=...)`: every offline transition kept, room for that many online
    ones appended after them, nothing evicted (spot);
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
    def from_dataset(cls, dataset, online_capacity: int, device="cpu", seed: int = 0) -> "ReplayBuffer":
        """All offline transitions, then room for `online_capacity` online ones (nothing evicted)."""
        buf = cls(len(dataset) + max(int(online_capacity), 0), dataset.obs_dim, dataset.act_dim, device, seed)
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
            "num_fixed": self.num_fixed,
            "rows": self.data[self.num_fixed:self.size].cpu().clone(),
            "generator": self.generator.get_state(),
        }

    def load_state_dict(self, state: dict) -> None:
        if (state["capacity"], state["width"], state["num_fixed"]) != (self.capacity, self.width, self.num_fixed):
            raise ValueError(
                f"checkpointed buffer (capacity {state['capacity']}, width {state['width']}, offline rows "
                f"{state['num_fixed']}) does not match this run's ({self.capacity}, {self.width}, {self.num_fixed})")
        self.data[self.num_fixed:state["size"]] = state["rows"].to(self.device)
        self.size, self.ptr = state["size"], state["ptr"]
        self.generator.set_state(state["generator"])
