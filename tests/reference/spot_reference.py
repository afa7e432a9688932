"""SPOT's updates written plainly from Wu et al. 2022 (arXiv 2202.06239) and spot/README.md.

Separate Q1 and Q2 modules, an encoder with separate mean and log-std heads, the VAE loss and both density
penalties written term by term, the actor's dropout as nn.Dropout, torch.optim.Adam (not fused). The VAE is
frozen in the policy update: the penalty's gradient reaches the action, never the VAE's weights. Random draws
(torch.randn_like / torch.randn, dropout masks) are injected by tests (reference/draws.py).
"""
from __future__ import annotations

import copy
import itertools
import math

import torch
from torch import nn

LOG_STD_MIN, LOG_STD_MAX = -4.0, 15.0  # the encoder's log-std clamp (official code)


class Actor(nn.Module):
    """s → 256 → 256 → a with ReLU, dropout after each hidden layer, max_action · tanh."""

    def __init__(self, obs_dim, act_dim, max_action, hidden_dim, dropout):
        super().__init__()
        self.max_action = max_action
        self.l1, self.l2, self.l3 = nn.Linear(obs_dim, hidden_dim), nn.Linear(hidden_dim, hidden_dim), \
            nn.Linear(hidden_dim, act_dim)
        self.drop1, self.drop2 = nn.Dropout(dropout), nn.Dropout(dropout)

    def forward(self, obs):
        h = self.drop1(torch.relu(self.l1(obs)))
        h = self.drop2(torch.relu(self.l2(h)))
        return self.max_action * torch.tanh(self.l3(h))


class Critic(nn.Module):
    """One Q-network: s‖a → 256 → 256 → 1."""

    def __init__(self, obs_dim, act_dim, hidden_dim):
        super().__init__()
        self.l1, self.l2, self.l3 = nn.Linear(obs_dim + act_dim, hidden_dim), nn.Linear(hidden_dim, hidden_dim), \
            nn.Linear(hidden_dim, 1)

    def forward(self, obs, action):
        h = torch.relu(self.l1(torch.cat([obs, action], dim=1)))
        h = torch.relu(self.l2(h))
        return self.l3(h).squeeze(1)


class VAE(nn.Module):
    """q(z|s,a) = N(μ, σ²) with separate mean and log-std heads; decoder mean max_action · tanh(·)."""

    def __init__(self, obs_dim, act_dim, max_action, hidden_dim, latent_dim):
        super().__init__()
        self.max_action, self.latent_dim = max_action, latent_dim
        self.e1, self.e2 = nn.Linear(obs_dim + act_dim, hidden_dim), nn.Linear(hidden_dim, hidden_dim)
        self.mean_head, self.log_std_head = nn.Linear(hidden_dim, latent_dim), nn.Linear(hidden_dim, latent_dim)
        self.d1, self.d2 = nn.Linear(obs_dim + latent_dim, hidden_dim), nn.Linear(hidden_dim, hidden_dim)
        self.d3 = nn.Linear(hidden_dim, act_dim)

    def encode(self, obs, action):
        h = torch.relu(self.e2(torch.relu(self.e1(torch.cat([obs, action], dim=-1)))))
        return self.mean_head(h), torch.exp(self.log_std_head(h).clamp(LOG_STD_MIN, LOG_STD_MAX))

    def decode(self, obs, z):
        h = torch.relu(self.d2(torch.relu(self.d1(torch.cat([obs, z], dim=-1)))))
        return self.max_action * torch.tanh(self.d3(h))


def kl_per_dim(mean, std):
    """KL(N(μ, σ²) ‖ N(0, 1)) per latent dimension = ½(μ² + σ² − 1 − log σ²)."""
    return 0.5 * (mean ** 2 + std ** 2 - 1.0 - torch.log(std ** 2))


def vae_training_loss(vae: VAE, obs, actions, beta: float):
    """BCQ/SPOT VAE loss: mean squared reconstruction error + β · KL averaged over batch and latent dims."""
    mean, std = vae.encode(obs, actions)
    z = mean + std * torch.randn_like(std)
    recon = vae.decode(obs, z)
    recon_loss = ((recon - actions) ** 2).mean()
    kl = kl_per_dim(mean, std).mean()
    return recon_loss + beta * kl, recon_loss, kl


def _latent_samples(vae: VAE, obs, actions, num_samples: int):
    mean, std = vae.encode(obs, actions)
    eps = torch.randn(obs.shape[0], num_samples, vae.latent_dim)
    z = mean[:, None, :] + std[:, None, :] * eps  # [B, L, latent]
    recon = vae.decode(obs[:, None, :].expand(-1, num_samples, -1), z)  # [B, L, act]
    return mean, std, z, recon


def elbo_penalty(vae: VAE, obs, actions, beta: float, num_samples: int):
    """SPOT's default D(s, a) per row: the VAE loss with L latent samples (squared error averaged over samples
    and action dims, + β · KL averaged over latent dims), an affine function of −ELBO."""
    mean, std, _, recon = _latent_samples(vae, obs, actions, num_samples)
    recon_term = ((recon - actions[:, None, :]) ** 2).mean(dim=(1, 2))
    return recon_term + beta * kl_per_dim(mean, std).mean(dim=1)


def iwae_penalty(vae: VAE, obs, actions, beta: float, num_samples: int):
    """Importance-weighted −log p̂(a|s) per row, with a Gaussian decoder of std √(β/4):
    −log( (1/L) Σ_l p(a|z_l) p(z_l) / q(z_l|s,a) ), every density written out with its constants."""
    mean, std, z, recon = _latent_samples(vae, obs, actions, num_samples)
    sigma = math.sqrt(beta / 4.0)
    half_log_2pi = 0.5 * math.log(2.0 * math.pi)
    log_p_a = (-0.5 * ((actions[:, None, :] - recon) / sigma) ** 2 - math.log(sigma) - half_log_2pi).sum(-1)
    log_p_z = (-0.5 * z ** 2 - half_log_2pi).sum(-1)
    m, s = mean[:, None, :], std[:, None, :]
    log_q_z = (-0.5 * ((z - m) / s) ** 2 - torch.log(s) - half_log_2pi).sum(-1)
    log_w = log_p_a + log_p_z - log_q_z  # [B, L]
    return -(torch.logsumexp(log_w, dim=1) - math.log(num_samples))


class ReferenceSpot:
    def __init__(self, obs_dim, act_dim, max_action, *, hidden_dim, dropout, vae_hidden, latent_dim, gamma, tau,
                 actor_lr, critic_lr, policy_delay, target_noise, noise_clip, lambd, beta, iwae, num_samples,
                 obs_mean, obs_std):
        self.max_action, self.gamma, self.tau, self.policy_delay = max_action, gamma, tau, policy_delay
        self.target_noise, self.noise_clip, self.lambd, self.beta = target_noise, noise_clip, lambd, beta
        self.iwae, self.num_samples = iwae, num_samples
        self.obs_mean, self.obs_std = obs_mean, obs_std
        self.actor = Actor(obs_dim, act_dim, max_action, hidden_dim, dropout)
        self.q1, self.q2 = Critic(obs_dim, act_dim, hidden_dim), Critic(obs_dim, act_dim, hidden_dim)
        self.actor_target = copy.deepcopy(self.actor)  # dropout stays on in updates, as the official deep copy
        self.q1_target, self.q2_target = copy.deepcopy(self.q1), copy.deepcopy(self.q2)
        self.vae = VAE(obs_dim, act_dim, max_action, vae_hidden, latent_dim)
        self.vae.requires_grad_(False)  # frozen during the policy stage
        self.actor_optimizer = torch.optim.Adam(self.actor.parameters(), lr=actor_lr, foreach=False)
        self.critic_optimizer = torch.optim.Adam(itertools.chain(self.q1.parameters(), self.q2.parameters()),
                                                 lr=critic_lr, foreach=False)
        self.updates = 0

    def update(self, obs, actions, rewards, next_obs, terminals) -> dict[str, float]:
        obs = (obs - self.obs_mean) / self.obs_std
        next_obs = (next_obs - self.obs_mean) / self.obs_std
        self.updates += 1
        with torch.no_grad():
            noise = (torch.randn_like(actions) * self.target_noise * self.max_action).clamp(
                -self.noise_clip * self.max_action, self.noise_clip * self.max_action)
            next_actions = (self.actor_target(next_obs) + noise).clamp(-self.max_action, self.max_action)
            next_q = torch.min(self.q1_target(next_obs, next_actions), self.q2_target(next_obs, next_actions))
            y = rewards + self.gamma * (1.0 - terminals) * next_q
        critic_loss = ((self.q1(obs, actions) - y) ** 2).mean() + ((self.q2(obs, actions) - y) ** 2).mean()
        self.critic_optimizer.zero_grad()
        critic_loss.backward()
        self.critic_optimizer.step()
        out = {"critic_loss": critic_loss.item()}

        if self.updates % self.policy_delay == 0:
            pi = self.actor(obs)
            q = self.q1(obs, pi)
            penalty = iwae_penalty if self.iwae else elbo_penalty
            density = penalty(self.vae, obs, pi, self.beta, self.num_samples)
            actor_loss = -q.mean() / q.abs().mean().detach() + self.lambd * density.mean()
            self.actor_optimizer.zero_grad()
            actor_loss.backward()
            self.critic_optimizer.zero_grad()  # gradients the actor loss left in Q1 are discarded
            self.actor_optimizer.step()
            with torch.no_grad():
                for net, target in ((self.q1, self.q1_target), (self.q2, self.q2_target),
                                    (self.actor, self.actor_target)):
                    for p, p_bar in zip(net.parameters(), target.parameters()):
                        p_bar.copy_(self.tau * p + (1.0 - self.tau) * p_bar)
            out.update(actor_loss=actor_loss.item(), density_loss=density.mean().item())
        return out
