"""plainbc's one network."""
import torch
from torch import nn


class Actor(nn.Module):
    def __init__(self, obs_dim: int, act_dim: int, max_action: float, hidden_dim: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(obs_dim, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, act_dim))
        self.max_action = max_action

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.max_action * torch.tanh(self.net(obs))
