"""REDQ+BC's update written plainly from Zhao et al. 2022 (arXiv 2210.13846) and adaptive_bc/README.md.

Deliberately slow and obvious: N separate critic MLPs in a Python list, every target critic evaluated,
torch.optim.Adam (not fused), the soft update written out. The random draws come from torch.randn_like
(target noise) and torch.randperm (the M target critics), which tests inject (reference/draws.py).
"""
from __future__ import annotations

import copy
import itertools

import torch
from torch import nn


class MLP(nn.Module):
    """Linear layers with a ReLU between each pair."""

    def __init__(self, sizes: list[int]):
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(i, o) for i, o in zip(sizes[:-1], sizes[1:]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = torch.relu(x)
        return x


class ReferenceRedqBc:
    def __init__(self, obs_dim: int, act_dim: int, max_action: float, *, num_critics: int, num_target_critics: int,
                 hidden_dim: int, gamma: float, tau: float, actor_lr: float, critic_lr: float, policy_delay: int,
                 target_noise: float, noise_clip: float, alpha: float, obs_mean: torch.Tensor, obs_std: torch.Tensor,
                 use_min_target: bool):
        self.max_action, self.gamma, self.tau = max_action, gamma, tau
        self.num_critics, self.num_target_critics = num_critics, num_target_critics
        self.policy_delay, self.target_noise, self.noise_clip = policy_delay, target_noise, noise_clip
        self.alpha, self.use_min_target = alpha, use_min_target
        self.obs_mean, self.obs_std = obs_mean, obs_std
        self.actor = MLP([obs_dim, hidden_dim, hidden_dim, act_dim])
        self.critics = [MLP([obs_dim + act_dim, hidden_dim, hidden_dim, 1]) for _ in range(num_critics)]
        self.actor_target = copy.deepcopy(self.actor)
        self.critic_targets = [copy.deepcopy(c) for c in self.critics]
        self.actor_optimizer = torch.optim.Adam(self.actor.parameters(), lr=actor_lr, foreach=False)
        critic_params = itertools.chain(*(c.parameters() for c in self.critics))
        self.critic_optimizer = torch.optim.Adam(critic_params, lr=critic_lr, foreach=False)
        self.updates = 0

    def policy(self, actor: MLP, obs: torch.Tensor) -> torch.Tensor:
        return self.max_action * torch.tanh(actor(obs))

    @staticmethod
    def q(critic: MLP, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        return critic(torch.cat([obs, action], dim=1)).squeeze(1)

    def update(self, obs, actions, rewards, next_obs, terminals) -> dict[str, float]:
        obs = (obs - self.obs_mean) / self.obs_std
        next_obs = (next_obs - self.obs_mean) / self.obs_std

        # TD target: y = r + γ (1 − done) min over the chosen target critics of Q'_i(s', π'(s') + clipped noise)
        with torch.no_grad():
            noise = torch.randn_like(actions) * (self.target_noise * self.max_action)
            noise = noise.clamp(-self.noise_clip * self.max_action, self.noise_clip * self.max_action)
            next_actions = (self.policy(self.actor_target, next_obs) + noise).clamp(-self.max_action, self.max_action)
            all_target_q = torch.stack([self.q(c, next_obs, next_actions) for c in self.critic_targets])  # [N, B]
            if self.use_min_target:
                chosen = torch.arange(self.num_critics)
            else:
                chosen = torch.randperm(self.num_critics)[:self.num_target_critics]
            y = rewards + self.gamma * (1.0 - terminals) * all_target_q[chosen].min(dim=0).values

        # critic loss: mean over the N members of each member's mean squared TD error
        member_losses = [((self.q(c, obs, actions) - y) ** 2).mean() for c in self.critics]
        critic_loss = sum(member_losses) / self.num_critics
        self.critic_optimizer.zero_grad()
        critic_loss.backward()
        self.critic_optimizer.step()
        self.updates += 1
        out = {"critic_loss": critic_loss.item()}

        if self.updates % self.policy_delay == 0:
            pi = self.policy(self.actor, obs)
            q_bar = torch.stack([self.q(c, obs, pi) for c in self.critics]).mean(dim=0)  # ensemble mean
            q_term = -q_bar.mean() / q_bar.abs().mean().detach()
            bc_mse = ((pi - actions) ** 2).mean()
            actor_loss = q_term + self.alpha * bc_mse
            self.actor_optimizer.zero_grad()
            actor_loss.backward()
            self.critic_optimizer.zero_grad()  # the actor's backward reached the critics: discard those gradients
            self.actor_optimizer.step()
            # Polyak averaging of every target network: p̄ ← τ p + (1 − τ) p̄
            with torch.no_grad():
                pairs = [(self.actor, self.actor_target)] + list(zip(self.critics, self.critic_targets))
                for net, target in pairs:
                    for p, p_bar in zip(net.parameters(), target.parameters()):
                        p_bar.copy_(self.tau * p + (1.0 - self.tau) * p_bar)
            out["actor_loss"] = actor_loss.item()
        return out


def reference_alpha_trajectory(initial_score: float, episodes, *, alpha_max: float, kp: float, kd: float,
                               r_target: float) -> list[tuple[float, float]]:
    """The adaptive BC weight, re-derived from the paper's rule and adaptive_bc/README.md: α starts at α_max and
    R̄ at the pretrained policy's score; after each episode (score c as a fraction, length T)
      α ← clip(α + T·(Kp·(R̄ − R_target) + Kd·max(0, R̄ − c)), 0, α_max),   then   R̄ ← 0.95·R̄ + 0.05·c.
    Returns (α, R̄) after every episode."""
    alpha, r_avg = alpha_max, initial_score
    out = []
    for score, length in episodes:
        proportional = kp * (r_avg - r_target)  # below target: α falls (less BC)
        derivative = kd * max(0.0, r_avg - score)  # an episode worse than the running score: α rises
        alpha = alpha + length * proportional + length * derivative
        alpha = max(0.0, min(alpha_max, alpha))
        r_avg = 0.95 * r_avg + 0.05 * score
        out.append((alpha, r_avg))
    return out
