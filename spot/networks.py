"""SPOT's networks: the behaviour-density VAE, the dropout actor and TD3's twin critics.

Shapes follow the official code (thuml/SPOT): VAE 750-750 with latent 2·act_dim, actor and critics
256-256. The twin critics are one batched ensemble (a single bmm per layer for both Q-networks).
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from common.ensemble import EnsembleMLP

LOG_STD_MIN, LOG_STD_MAX = -4.0, 15.0  # encoder log-std clamp (official code)
LATENT_CLIP = 0.5  # z ~ N(0, I) clipped to ±0.5 when decoding without a given z
LOG_2PI = math.log(2 * math.pi)


def kl_to_standard_normal(mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """Per-dimension KL(N(mean, std²) || N(0, 1)) = −½(1 + log σ² − μ² − σ²); same shape as mean."""
    return -0.5 * (1.0 + 2.0 * torch.log(std) - mean.pow(2) - std.pow(2))


class VAE(nn.Module):
    """Conditional VAE of the behaviour policy β(a|s), used as a density estimator."""

    def __init__(self, obs_dim: int, act_dim: int, max_action: float, hidden_dim: int = 750,
                 latent_dim: int | None = None):
        super().__init__()
        self.obs_dim, self.act_dim = obs_dim, act_dim
        self.latent_dim = latent_dim or 2 * act_dim
        self.max_action = float(max_action)
        self.encoder = nn.Sequential(
            nn.Linear(obs_dim + act_dim, hidden_dim), nn.ReLU(),
            nn.Linear(hidden_dim, hidden_dim), nn.ReLU(),
            nn.Linear(hidden_dim, 2 * self.latent_dim),  # mean and log-std heads in one matmul
        )
        self.decoder = nn.Sequential(
            nn.Linear(obs_dim + self.latent_dim, hidden_dim), nn.ReLU(),
            nn.Linear(hidden_dim, hidden_dim), nn.ReLU(),
            nn.Linear(hidden_dim, act_dim),
        )

    def encode(self, obs: torch.Tensor, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, log_std = self.encoder(torch.cat([obs, action], -1)).chunk(2, dim=-1)
        return mean, log_std.clamp(LOG_STD_MIN, LOG_STD_MAX).exp()

    def decode(self, obs: torch.Tensor, z: torch.Tensor | None = None) -> torch.Tensor:
        """Decoder mean; obs (..., obs_dim) and z (..., latent_dim) share leading dims."""
        if z is None:
            z = torch.randn(*obs.shape[:-1], self.latent_dim, device=obs.device).clamp(-LATENT_CLIP, LATENT_CLIP)
        return self.max_action * torch.tanh(self.decoder(torch.cat([obs, z], -1)))

    def forward(self, obs: torch.Tensor, action: torch.Tensor):
        """One reparameterized pass: (reconstruction, mean, std)."""
        mean, std = self.encode(obs, action)
        z = mean + std * torch.randn_like(std)
        return self.decode(obs, z), mean, std

    def _sample_and_decode(self, obs, action, num_samples):
        """Encodes once, draws `num_samples` z per row, decodes all of them in one batch.

        Returns mean, std (B, latent), z (B, L, latent) and the decoded actions (B, L, act_dim).
        """
        mean, std = self.encode(obs, action)
        eps = torch.randn(mean.shape[0], num_samples, mean.shape[1], device=mean.device)
        z = mean.unsqueeze(1) + std.unsqueeze(1) * eps
        recon = self.decode(obs.unsqueeze(1).expand(-1, num_samples, -1), z)
        return mean, std, z, recon

    def loss(self, obs: torch.Tensor, action: torch.Tensor, beta: float, num_samples: int = 1) -> torch.Tensor:
        """Per-row VAE loss (B,): squared error averaged over samples and action dims + β·KL averaged
        over latent dims. This is the VAE's training loss and SPOT's default density penalty D(s, a)."""
        mean, std, _, recon = self._sample_and_decode(obs, action, num_samples)
        recon_loss = (recon - action.unsqueeze(1)).pow(2).mean(dim=(1, 2))
        return recon_loss + beta * kl_to_standard_normal(mean, std).mean(-1)

    def decoder_std(self, beta: float) -> float:
        """The Gaussian decoder's fixed std √(β/4): with it and latent 2·act_dim, −ELBO in nats equals
        (2·act_dim/β) · `loss` + act_dim · (log σ + ½ log 2π), so minimizing `loss` maximizes the ELBO."""
        return math.sqrt(beta / 4.0)

    def _decoder_nll(self, recon: torch.Tensor, action: torch.Tensor, beta: float) -> torch.Tensor:
        """−log N(a; recon, β/4·I) summed over action dims: (B, L)."""
        sigma = self.decoder_std(beta)
        squared = ((recon - action.unsqueeze(1)) / sigma).pow(2).sum(-1)
        return 0.5 * squared + self.act_dim * (math.log(sigma) + 0.5 * LOG_2PI)

    def neg_elbo(self, obs: torch.Tensor, action: torch.Tensor, beta: float, num_samples: int = 1) -> torch.Tensor:
        """−ELBO in nats (B,): E_q[−log p(a|z)] (Monte Carlo, `num_samples` z) + KL(q(z|s,a) || N(0, I)) (exact)."""
        mean, std, _, recon = self._sample_and_decode(obs, action, num_samples)
        return self._decoder_nll(recon, action, beta).mean(-1) + kl_to_standard_normal(mean, std).sum(-1)

    def iwae_neg_log_prob(self, obs: torch.Tensor, action: torch.Tensor, beta: float,
                          num_samples: int) -> torch.Tensor:
        """Importance-weighted −log p̂(a|s) in nats (B,) from L samples of q(z|s,a):
        −[logsumexp_l (log p(a|z_l) + log p(z_l) − log q(z_l|s,a)) − log L]. L = 1 gives an unbiased −ELBO
        estimate; the bound tightens (decreases in expectation) as L grows."""
        mean, std, z, recon = self._sample_and_decode(obs, action, num_samples)
        log_p_z = -0.5 * z.pow(2).sum(-1)  # the ½ log 2π terms of p(z) and q(z|s,a) cancel
        eps = (z - mean.unsqueeze(1)) / std.unsqueeze(1)
        log_q_z = -0.5 * eps.pow(2).sum(-1) - torch.log(std).sum(-1, keepdim=True)
        log_w = -self._decoder_nll(recon, action, beta) + log_p_z - log_q_z
        return -(torch.logsumexp(log_w, dim=-1) - math.log(num_samples))


def dropout_keep_masks(layers: int, shape: tuple[int, ...], p: float, device, dtype) -> torch.Tensor:
    """`layers` dropout keep-masks of `shape` (1 = kept, probability 1 − p, independent per element), drawn in one
    call: uniform floats compared with p, about 1.7× cheaper on a CPU than a bernoulli_ draw per mask (PyTorch's CPU
    generator runs on one thread), with the same distribution (tests/test_spot.py checks it)."""
    return (torch.rand((layers, *shape), device=device) >= p).to(dtype)


class Actor(nn.Module):
    """state → 256 → 256 → action, ReLU, dropout after each hidden layer, max_action·tanh."""

    def __init__(self, obs_dim: int, act_dim: int, max_action: float, hidden_dim: int = 256, dropout: float = 0.1,
                 masks: str = "uniform"):
        super().__init__()
        self.max_action, self.dropout, self.masks = float(max_action), float(dropout), masks
        self.l1 = nn.Linear(obs_dim, hidden_dim)
        self.l2 = nn.Linear(hidden_dim, hidden_dim)
        self.l3 = nn.Linear(hidden_dim, act_dim)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        # Dropout (inverted: kept units ÷ (1 − p)) is active only in train mode (the update), as in the official code;
        # both layers' masks come from one draw.
        x = F.relu(self.l1(obs))
        if not (self.training and self.dropout > 0):
            return self.max_action * torch.tanh(self.l3(F.relu(self.l2(x))))
        if self.masks == "bernoulli":  # F.dropout's own masks, one bernoulli_ draw per layer
            x = F.relu(self.l2(F.dropout(x, self.dropout, True)))
            return self.max_action * torch.tanh(self.l3(F.dropout(x, self.dropout, True)))
        keep = dropout_keep_masks(2, x.shape, self.dropout, x.device, x.dtype)
        scale = 1.0 / (1.0 - self.dropout)
        x = F.relu(self.l2(x * keep[0] * scale))
        return self.max_action * torch.tanh(self.l3(x * keep[1] * scale))


class TwinCritic(nn.Module):
    """TD3's two Q-networks state‖action → 256 → 256 → 1, evaluated together (a common.ensemble.EnsembleMLP of 2,
    nn.Linear's initialization)."""

    def __init__(self, obs_dim: int, act_dim: int, hidden_dim: int = 256, num_critics: int = 2):
        super().__init__()
        self.net = EnsembleMLP(num_critics, [obs_dim + act_dim, hidden_dim, hidden_dim, 1])

    def forward(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """(num_critics, B) Q-values."""
        return self.net(torch.cat([obs, action], -1)).squeeze(-1)

    def q1(self, obs: torch.Tensor, action: torch.Tensor, detach_params: bool = False) -> torch.Tensor:
        """The first critic only (B,). detach_params: gradients reach the action but not the critic's
        weights (the actor loss needs no critic gradients, so none are computed)."""
        return self.net.member(torch.cat([obs, action], -1), 0, detach_params).squeeze(-1)


# Checkpoints written before the critics moved into common.ensemble.EnsembleMLP (commit 5baebbe and earlier) hold
# the twin critic as layers l1..l3, each an ensemble `weight` [2, in, out] and `bias` [2, 1, out]: the same tensors,
# now `net.weights.k` / `net.biases.k`. Their optimizer listed the parameters layer by layer (l1.weight, l1.bias,
# l2.weight, ...); EnsembleMLP lists all weights, then all biases. LEGACY_PARAM_ORDER[i] is the old index of the
# current i-th parameter.
LEGACY_PARAM_ORDER = (0, 2, 4, 1, 3, 5)


def is_legacy_critic_state(state: dict) -> bool:
    return "l1.weight" in state


def upgrade_critic_state(state: dict) -> dict:
    """A TwinCritic state_dict in this code's layout (a legacy one renamed; a current one unchanged)."""
    if not is_legacy_critic_state(state):
        return state
    names = {"weight": "weights", "bias": "biases"}
    return {f"net.{names[kind]}.{int(layer[1:]) - 1}": value
            for layer, kind, value in ((*key.split("."), value) for key, value in state.items())}


def upgrade_critic_optimizer_state(state: dict) -> dict:
    """The legacy critic optimizer's state_dict with its parameters in EnsembleMLP's order."""
    (group,) = state["param_groups"]
    old = group["params"]
    return {"state": {new: state["state"][old[i]] for new, i in enumerate(LEGACY_PARAM_ORDER) if old[i] in state["state"]},
            "param_groups": [{**group, "params": list(range(len(old)))}]}
