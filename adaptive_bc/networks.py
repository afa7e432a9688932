"""Networks of REDQ+BC: a deterministic actor and an ensemble of Q-networks evaluated in one call."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from common.ensemble import EnsembleMLP


class Actor(nn.Module):
    """state -> hidden -> hidden -> max_action * tanh(action); torch's default Linear init (as the official code)."""

    def __init__(self, obs_dim: int, act_dim: int, max_action: float, hidden_dim: int = 256):
        super().__init__()
        self.l1 = nn.Linear(obs_dim, hidden_dim)
        self.l2 = nn.Linear(hidden_dim, hidden_dim)
        self.l3 = nn.Linear(hidden_dim, act_dim)
        self.max_action = float(max_action)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.l1(obs))
        h = F.relu(self.l2(h))
        return self.max_action * torch.tanh(self.l3(h))


def ensemble_init_(weight: torch.Tensor, bias: torch.Tensor) -> None:
    """trunc_normal_ with std 1/(2 sqrt(fan_in)) and torch's default absolute bounds +-2; bias 0."""
    fan_in = weight.shape[1]
    nn.init.trunc_normal_(weight, std=1.0 / (2.0 * math.sqrt(fan_in)))
    nn.init.zeros_(bias)


class EnsembleCritic(nn.Module):
    """N Q-networks (state||action -> hidden -> hidden -> 1) in one common.ensemble.EnsembleMLP, whose
    weights are stacked as [N, in, out]: all members (or a chosen subset) run together, one baddbmm per layer."""

    def __init__(self, obs_dim: int, act_dim: int, num_critics: int = 10, hidden_dim: int = 256):
        super().__init__()
        self.num_critics = num_critics
        self.net = EnsembleMLP(num_critics, [obs_dim + act_dim, hidden_dim, hidden_dim, 1], init=ensemble_init_)

    def forward(self, obs: torch.Tensor, action: torch.Tensor, members: torch.Tensor | None = None,
                detach_params: bool = False) -> torch.Tensor:
        """Q-values [n, B] of the `members` (indices; all N when None).

        detach_params: use the weights as constants, so a loss on the output (the actor's) builds no
        graph into, and computes no gradient for, the critic's parameters.
        """
        return self.net(torch.cat([obs, action], dim=-1), members, detach_params).squeeze(-1)


def upgrade_critic_state(state: dict) -> dict:
    """A critic state_dict in this code's layout. Checkpoints written before the critics moved into
    common.ensemble.EnsembleMLP (commit 5baebbe and earlier) hold `weights.N` / `biases.N`, now `net.weights.N` /
    `net.biases.N`: the same tensors in the same parameter order (so the optimizer state needs no change)."""
    if any(key.startswith("net.") for key in state):
        return state
    return {f"net.{key}": value for key, value in state.items()}
