"""Soft Actor-Critic as D4RL used it to collect its MuJoCo datasets (rlkit's SAC).

Tanh-Gaussian actor and twin Q critics (256-256 MLPs), Polyak-averaged target critics, automatic
entropy tuning towards -act_dim, Adam 3e-4, one update per environment step (Haarnoja et al. 2018).

All randomness (action noise, minibatch indices) comes from one `torch.Generator` owned by the
agent and stored in its state dict, so a resumed run draws exactly the numbers an uninterrupted one
would have drawn.
"""
from __future__ import annotations

import copy
import dataclasses
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from common.ensemble import EnsembleMLP

LOG_STD_MIN, LOG_STD_MAX = -20.0, 2.0  # rlkit's clamp


@dataclasses.dataclass
class SACConfig:
    hidden: int = 256
    lr: float = 3e-4
    gamma: float = 0.99
    tau: float = 0.005


class TanhGaussianActor(nn.Module):
    """a = tanh(u) * scale + bias with u ~ N(mean(s), std(s)); one MLP outputs [mean, log_std]."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: int, action_low, action_high):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(obs_dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                                 nn.Linear(hidden, 2 * act_dim))
        low = torch.as_tensor(np.asarray(action_low), dtype=torch.float32)
        high = torch.as_tensor(np.asarray(action_high), dtype=torch.float32)
        # Not persistent: the state dict holds only net.* (the layout of the files' metadata/policy).
        self.register_buffer("action_scale", (high - low) / 2, persistent=False)
        self.register_buffer("action_bias", (high + low) / 2, persistent=False)

    def forward(self, obs: torch.Tensor, generator: torch.Generator | None,
                deterministic: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """(action, log_prob of that action); deterministic gives tanh(mean) and its log density."""
        mean, log_std = self.net(obs).chunk(2, dim=-1)
        log_std = log_std.clamp(LOG_STD_MIN, LOG_STD_MAX)
        noise = torch.zeros_like(mean) if deterministic else torch.randn(mean.shape, generator=generator)
        u = mean + log_std.exp() * noise
        gaussian_log_prob = (-0.5 * noise.pow(2) - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)
        # log |d tanh(u)/du| = log(1 - tanh(u)^2), written in a form that stays finite for large |u|.
        log_det_tanh = (2.0 * (math.log(2.0) - u - F.softplus(-2.0 * u))).sum(-1)
        action = torch.tanh(u) * self.action_scale + self.action_bias
        log_prob = gaussian_log_prob - log_det_tanh - self.action_scale.log().sum()
        return action, log_prob


class TwinCritic(nn.Module):
    """Q1 and Q2 evaluated together (a common.ensemble.EnsembleMLP of 2); returns (2, B)."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: int, n: int = 2):
        super().__init__()
        self.net = EnsembleMLP(n, [obs_dim + act_dim, hidden, hidden, 1])

    def forward(self, obs: torch.Tensor, actions: torch.Tensor, detach_params: bool = False) -> torch.Tensor:
        return self.net(torch.cat([obs, actions], dim=-1), detach_params=detach_params).squeeze(-1)


def soft_td_target(rewards: torch.Tensor, terminals: torch.Tensor, next_q: torch.Tensor,
                   next_log_prob: torch.Tensor, alpha: float | torch.Tensor, gamma: float) -> torch.Tensor:
    """r + gamma * (1 - done) * (min_i Q_i'(s', a') - alpha * log pi(a'|s')), with next_q = (2, B)."""
    soft_value = next_q.min(dim=0).values - alpha * next_log_prob
    return rewards + gamma * (1.0 - terminals) * soft_value


class SAC:
    def __init__(self, obs_dim: int, act_dim: int, action_low, action_high, cfg: SACConfig, seed: int):
        self.cfg = cfg
        self.actor = TanhGaussianActor(obs_dim, act_dim, cfg.hidden, action_low, action_high)
        self.critic = TwinCritic(obs_dim, act_dim, cfg.hidden)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.log_alpha = torch.zeros((), requires_grad=True)  # alpha starts at 1, as in rlkit
        self.target_entropy = -float(act_dim)
        self.actor_optim = torch.optim.Adam(self.actor.parameters(), lr=cfg.lr)
        self.critic_optim = torch.optim.Adam(self.critic.parameters(), lr=cfg.lr)
        self.alpha_optim = torch.optim.Adam([self.log_alpha], lr=cfg.lr)
        self.generator = torch.Generator().manual_seed(seed)
        self.updates = 0

    @property
    def alpha(self) -> float:
        return float(self.log_alpha.detach().exp())

    @torch.no_grad()
    def act(self, obs: np.ndarray, deterministic: bool = False,
            generator: torch.Generator | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Batched (n, obs_dim) -> (actions (n, act_dim), log_probs (n,)); noise from the agent's generator."""
        obs_t = torch.as_tensor(obs, dtype=torch.float32)
        action, log_prob = self.actor(obs_t, generator or self.generator, deterministic)
        return action.numpy(), log_prob.numpy()

    def update(self, obs, actions, rewards, next_obs, terminals) -> dict[str, float]:
        alpha = self.log_alpha.exp().detach()

        with torch.no_grad():
            next_actions, next_log_prob = self.actor(next_obs, self.generator)
            target = soft_td_target(rewards, terminals, self.critic_target(next_obs, next_actions),
                                    next_log_prob, alpha, self.cfg.gamma)
        q = self.critic(obs, actions)
        critic_loss = (q - target).pow(2).mean(dim=1).sum()  # each critic's MSE, summed
        self.critic_optim.zero_grad(set_to_none=True)
        critic_loss.backward()
        self.critic_optim.step()

        new_actions, log_prob = self.actor(obs, self.generator)
        # the actor loss only needs dQ/da, not critic weight grads
        q_new = self.critic(obs, new_actions, detach_params=True).min(dim=0).values
        actor_loss = (alpha * log_prob - q_new).mean()
        self.actor_optim.zero_grad(set_to_none=True)
        actor_loss.backward()
        self.actor_optim.step()

        alpha_loss = -(self.log_alpha * (log_prob.detach() + self.target_entropy)).mean()
        self.alpha_optim.zero_grad(set_to_none=True)
        alpha_loss.backward()
        self.alpha_optim.step()

        with torch.no_grad():
            torch._foreach_lerp_(list(self.critic_target.parameters()), list(self.critic.parameters()), self.cfg.tau)
        self.updates += 1
        return {"critic_loss": critic_loss.item(), "actor_loss": actor_loss.item(), "alpha": alpha.item(),
                "q_mean": q.detach().mean().item(), "entropy": -log_prob.detach().mean().item()}

    def state_dict(self) -> dict:
        return {"actor": self.actor.state_dict(), "critic": self.critic.state_dict(),
                "critic_target": self.critic_target.state_dict(), "log_alpha": self.log_alpha.detach().clone(),
                "actor_optim": self.actor_optim.state_dict(), "critic_optim": self.critic_optim.state_dict(),
                "alpha_optim": self.alpha_optim.state_dict(), "generator": self.generator.get_state(),
                "updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        self.actor.load_state_dict(state["actor"])
        self.critic.load_state_dict(state["critic"])
        self.critic_target.load_state_dict(state["critic_target"])
        with torch.no_grad():
            self.log_alpha.copy_(state["log_alpha"])
        self.actor_optim.load_state_dict(state["actor_optim"])
        self.critic_optim.load_state_dict(state["critic_optim"])
        self.alpha_optim.load_state_dict(state["alpha_optim"])
        self.generator.set_state(state["generator"])
        self.updates = int(state["updates"])
