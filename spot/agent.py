"""SPOT (Wu et al. 2022): TD3 whose actor is kept in the support of the data by a VAE density penalty.

Actor loss = −Q1(s, π(s)).mean() / |Q1(s, π(s))|.mean().detach() + λ · D(s, π(s)).mean(), where D is the
frozen VAE's loss (≈ −log β(a|s) up to an affine map) or, with `iwae`, an importance-weighted −log p̂(a|s).
Gradients reach the action through the VAE; the VAE's weights have requires_grad False, so none are
computed for them. `VaeTrainer` fits the VAE first (the offline script's "vae" stage).
"""
from __future__ import annotations

import copy
import dataclasses
import numpy as np
import torch
import torch.nn.functional as F

from common.buffer import Batch
from common.checkpoint import load_checkpoint, load_module_state
from common.algorithm import config_from_payload
from common.config import BaseConfig, ConfigError
from common.datasets import env_family
from common.errors import RunError
from common.normalizer import ObsNormalizer
from common.utils import compile_in_place, compiled, set_learning_rate
from spot.networks import (VAE, Actor, TwinCritic, is_legacy_critic_state, kl_to_standard_normal,
                           upgrade_critic_optimizer_state, upgrade_critic_state)

ALGO = "spot"
WEIGHT_METRIC = "train/lambda"  # the support-constraint weight λ: plots draw it under the scores
# Adam(fused=True): one kernel over all parameters; on CPU it makes the 750-wide VAE's update ~1.6x faster.

# λ per environment (official configs, medium and medium-replay alike); used when `lambd` is null.
DEFAULT_LAMBDA = {"hopper": 0.1, "walker2d": 0.2, "halfcheetah": 0.05}


@dataclasses.dataclass
class Config(BaseConfig):
    # VAE (behaviour density)
    vae_steps: int = 100_000  # VAE updates before the policy stage (skipped with vae_checkpoint)
    vae_lr: float = 1e-3  # Adam learning rate of the VAE
    vae_hidden: int = 750  # units of the VAE's hidden layers
    vae_latent_dim: int | None = None  # null: 2 · action_dim
    beta: float = 0.5  # KL weight; the density's decoder std is √(β/4)
    vae_checkpoint: str | None = None  # null: train a VAE; else a checkpoints/vae.pt to reuse
    # SPOT
    # Support-constraint weight λ (named lambd: lambda is a Python keyword). null: the value for the
    # dataset's environment, hopper 0.1, walker2d 0.2, halfcheetah 0.05 (the offline script saves it resolved).
    lambd: float | None = None  # support-constraint weight λ; null: hopper 0.1, walker2d 0.2, halfcheetah 0.05
    iwae: bool = False  # density penalty: false = VAE loss (ELBO surrogate), true = importance-weighted −log p̂
    num_samples: int = 1  # latent samples per state for the density penalty
    q_divergence_limit: float = 1e4  # stop with an error when the mean Q1(s, π(s)) exceeds this
    # TD3
    hidden_dim: int = 256  # units of the actor's and critics' hidden layers
    actor_dropout: float = 0.1  # after each hidden actor layer; on in updates, off when acting
    dropout_masks: str = "uniform"  # uniform: both layers' masks in one draw (fast); bernoulli: F.dropout (official stream)
    gamma: float = 0.99  # discount
    tau: float = 0.005  # Polyak rate of the target networks
    actor_lr: float = 3e-4  # Adam learning rate of the actor
    critic_lr: float = 3e-4  # Adam learning rate of the critics
    policy_delay: int = 2  # actor and target updates every this many critic updates
    target_noise: float = 0.2  # × max_action
    noise_clip: float = 0.5  # × max_action
    normalize_states: bool = True  # observations normalized with the dataset's mean and std
    # online fine-tuning
    exploration_noise: float = 0.1  # Gaussian std × max_action, action clipped to bounds
    lambda_end: float = 0.2  # λ_t = λ · max(lambda_end, 1 − t / lambda_decay_steps)
    lambda_decay_steps: int | None = None  # null: online_steps
    reset_optimizers: bool = False  # true: fresh Adam states online instead of the offline ones

    _choices = {"dropout_masks": ("uniform", "bernoulli")}

    def resolve(self, env_id: str, dataset_name: str) -> None:
        self.lambd = resolve_lambda(self.lambd, env_id, dataset_name)  # null: the environment's λ

    def validate(self) -> None:
        super().validate()
        positive = ("vae_hidden", "beta", "num_samples", "hidden_dim", "policy_delay", "q_divergence_limit")
        for key in positive:
            if getattr(self, key) <= 0:
                raise ConfigError(f"{key} must be > 0, got {getattr(self, key)}")
        for key in ("vae_latent_dim", "lambda_decay_steps"):
            value = getattr(self, key)
            if value is not None and value < 1:
                raise ConfigError(f"{key} must be >= 1 or null, got {value}")
        if self.vae_steps < 0 or (self.vae_steps == 0 and not self.vae_checkpoint):
            raise ConfigError(f"vae_steps must be >= 1 (or give vae_checkpoint), got {self.vae_steps}")
        if self.lambd is not None and self.lambd < 0:
            raise ConfigError(f"lambd must be >= 0, got {self.lambd}")
        if not 0.0 <= self.actor_dropout < 1.0:
            raise ConfigError(f"actor_dropout must be in [0, 1), got {self.actor_dropout}")
        if not 0.0 <= self.lambda_end <= 1.0:
            raise ConfigError(f"lambda_end must be in [0, 1], got {self.lambda_end}")
        for key in ("target_noise", "noise_clip", "exploration_noise"):
            if getattr(self, key) < 0:
                raise ConfigError(f"{key} must be >= 0, got {getattr(self, key)}")


def resolve_lambda(lambd: float | None, *names: str | None) -> float:
    """`lambd`, or when null the issue's per-environment value for the first name naming an env."""
    if lambd is not None:
        return float(lambd)
    for name in names:
        family = env_family(name or "")
        if family in DEFAULT_LAMBDA:
            return DEFAULT_LAMBDA[family]
    raise ConfigError(f"lambd is null and none of {[n for n in names if n]} names hopper, walker2d or halfcheetah; "
                      "set --lambd")


def lambda_schedule(lambd: float, t: int, lambda_end: float, decay_steps: int) -> float:
    """Online λ_t = λ · max(lambda_end, 1 − t / decay_steps)."""
    return lambd * max(lambda_end, 1.0 - t / decay_steps)


class QDivergenceError(RunError, RuntimeError):
    pass


class VaeTrainer:
    """Fits the VAE to the data's (normalized state, action) pairs; `update(batch)` is one Adam step.

    After `total_steps` updates the VAE is frozen (requires_grad False) for the policy stage.
    """

    def __init__(self, vae: VAE, normalizer: ObsNormalizer, lr: float = 1e-3, beta: float = 0.5,
                 total_steps: int | None = None):
        self.vae, self.normalizer, self.beta = vae, normalizer, float(beta)
        self.optimizer = torch.optim.Adam(vae.parameters(), lr=lr, fused=True)
        self.total_steps = total_steps
        self.steps = 0

    @property
    def finished(self) -> bool:
        return self.total_steps is not None and self.steps >= self.total_steps

    def update(self, batch: Batch) -> dict[str, torch.Tensor]:
        if not self.vae.encoder[0].weight.requires_grad:  # frozen by default (SpotAgent); train it here
            self.vae.requires_grad_(True)
        obs, actions = self.normalizer(batch.observations), batch.actions
        recon, mean, std = self.vae(obs, actions)
        recon_loss = F.mse_loss(recon, actions)
        kl_loss = kl_to_standard_normal(mean, std).mean()
        loss = recon_loss + self.beta * kl_loss
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.steps += 1
        if self.finished:
            self.vae.requires_grad_(False)
        # detached 0-dim tensors: nothing here waits for the device (common.recorder reads them in bulk)
        return {"vae_loss": loss.detach(), "vae_recon_loss": recon_loss.detach(), "vae_kl_loss": kl_loss.detach()}

    def state_dict(self) -> dict:
        return {"optimizer": self.optimizer.state_dict(), "steps": self.steps}

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.steps = int(state["steps"])


class SpotAgent:
    """TD3 + SPOT's density penalty. `update(batch)` is one critic step and, every `policy_delay`
    updates, one actor step and the target networks' Polyak update."""

    ACTOR_METRICS = ("actor_loss", "q_pi", "density_loss", "density_loss_max")

    def __init__(self, obs_dim: int, act_dim: int, max_action: float, cfg: Config,
                 device: torch.device | str = "cpu", normalizer: ObsNormalizer | None = None):
        self.cfg, self.device = cfg, torch.device(device)
        self.obs_dim, self.act_dim, self.max_action = obs_dim, act_dim, float(max_action)
        self.normalizer = (normalizer or ObsNormalizer.identity(obs_dim)).to(self.device)
        self.actor = Actor(obs_dim, act_dim, max_action, cfg.hidden_dim, cfg.actor_dropout,
                           cfg.dropout_masks).to(self.device)
        self.critic = TwinCritic(obs_dim, act_dim, cfg.hidden_dim).to(self.device)
        # The target actor keeps dropout on inside updates, as the official code's deep copy does.
        self.actor_target = copy.deepcopy(self.actor).requires_grad_(False)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.vae = VAE(obs_dim, act_dim, max_action, cfg.vae_hidden, cfg.vae_latent_dim).to(self.device)
        self.vae.requires_grad_(False)  # frozen in the policy stage: gradients flow to the action only
        self.actor_optimizer, self.critic_optimizer = self._make_optimizers()
        if cfg.compile:  # the losses whole (e.g. the actor, Q1 and the VAE's penalty: their element-wise work fused)
            compile_in_place((self.actor, self.critic, self.actor_target, self.critic_target, self.vae), self.device)
            self.actor_loss = compiled(self.actor_loss, self.device)
            self.critic_loss = compiled(self.critic_loss, self.device)
        self.lambd = resolve_lambda(cfg.lambd, cfg.env, cfg.dataset)
        self.updates = 0
        self._diverged_at: torch.Tensor | None = None  # first update past q_divergence_limit (-1: none), on device
        self._diverged_q: torch.Tensor | None = None

    def _make_optimizers(self):
        return (torch.optim.Adam(self.actor.parameters(), lr=self.cfg.actor_lr, fused=True),
                torch.optim.Adam(self.critic.parameters(), lr=self.cfg.critic_lr, fused=True))

    def reset_optimizers(self) -> None:
        self.actor_optimizer, self.critic_optimizer = self._make_optimizers()

    # --- acting ----------------------------------------------------------------------------------
    @torch.inference_mode()
    def act(self, obs: np.ndarray) -> np.ndarray:
        """Deterministic batched actions (n, act_dim), dropout off."""
        obs_t = torch.as_tensor(obs, dtype=torch.float32, device=self.device)
        self.actor.eval()
        try:
            return self.actor(self.normalizer(obs_t)).cpu().numpy()
        finally:
            self.actor.train()

    # --- learning --------------------------------------------------------------------------------
    def density_loss(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """D(s, a) per row: the VAE loss, or the importance-weighted −log p̂(a|s) with `iwae`."""
        if self.cfg.iwae:
            return self.vae.iwae_neg_log_prob(obs, actions, self.cfg.beta, self.cfg.num_samples)
        return self.vae.loss(obs, actions, self.cfg.beta, self.cfg.num_samples)

    def critic_loss(self, obs: torch.Tensor, actions: torch.Tensor, rewards: torch.Tensor, terminals: torch.Tensor,
                    next_obs: torch.Tensor) -> torch.Tensor:
        """Sum of the two critics' MSEs against TD3's target: the target actor (dropout on) with clipped noise, the min
        of the two target critics."""
        cfg, max_action = self.cfg, self.max_action
        with torch.no_grad():
            noise = (torch.randn_like(actions) * (cfg.target_noise * max_action)).clamp(
                -cfg.noise_clip * max_action, cfg.noise_clip * max_action)
            next_actions = (self.actor_target(next_obs) + noise).clamp(-max_action, max_action)
            next_q = self.critic_target(next_obs, next_actions).min(0).values
            target_q = rewards + cfg.gamma * (1.0 - terminals) * next_q
        q = self.critic(obs, actions)  # (2, B)
        return (q - target_q).pow(2).mean(1).sum()

    def actor_loss(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(loss, Q1(s, π(s)), D(s, π(s))) for normalized states; dropout follows the actor's mode."""
        pi = self.actor(obs)
        q = self.critic.q1(obs, pi, detach_params=True)
        density = self.density_loss(obs, pi)
        loss = -q.mean() / q.abs().mean().detach() + self.lambd * density.mean()
        return loss, q, density

    def update(self, batch: Batch) -> dict[str, torch.Tensor]:
        """One critic step (and every policy_delay-th call an actor step + Polyak update); its metrics as detached
        0-dim tensors, so nothing here waits for the device."""
        self.updates += 1
        cfg = self.cfg
        obs, next_obs = self.normalizer(batch.observations), self.normalizer(batch.next_observations)
        critic_loss = self.critic_loss(obs, batch.actions, batch.rewards, batch.terminals, next_obs)
        self.critic_optimizer.zero_grad(set_to_none=True)
        critic_loss.backward()
        self.critic_optimizer.step()

        if self.updates % cfg.policy_delay == 0:
            actor_loss, q_pi, density = self.actor_loss(obs)
            self.actor_optimizer.zero_grad(set_to_none=True)
            actor_loss.backward()
            self.actor_optimizer.step()
            with torch.no_grad():
                for net, target in ((self.critic, self.critic_target), (self.actor, self.actor_target)):
                    torch._foreach_lerp_(list(target.parameters()), list(net.parameters()), cfg.tau)
            q_mean = q_pi.detach().mean()
            self._watch_divergence(q_mean)
            actor_metrics = dict(zip(self.ACTOR_METRICS, (actor_loss.detach(), q_mean, density.detach().mean(),
                                                          density.detach().max())))
            return {"critic_loss": critic_loss.detach(), **actor_metrics}
        # The loop averages each metric over the updates that report it: actor metrics every policy_delay.
        return {"critic_loss": critic_loss.detach()}

    def _watch_divergence(self, q_mean: torch.Tensor) -> None:
        """Notes, on the device, the first update whose mean Q1(s, π(s)) exceeds q_divergence_limit (no sync);
        `check_divergence` reads it."""
        if self._diverged_at is None:
            self._diverged_at = torch.full((), -1, dtype=torch.int64, device=q_mean.device)
            self._diverged_q = torch.zeros((), dtype=q_mean.dtype, device=q_mean.device)
        first = (q_mean > self.cfg.q_divergence_limit) & (self._diverged_at < 0)
        self._diverged_at = torch.where(first, self.updates, self._diverged_at)
        self._diverged_q = torch.where(first, q_mean, self._diverged_q)

    def check_divergence(self) -> None:
        """Raises QDivergenceError if an update since the start exceeded the limit: the official code stops there.
        Called by the recorder before each record and checkpoint (one read of two numbers), so no record or
        checkpoint after the divergence is written, and the message names the update where it happened."""
        if self._diverged_at is None:
            return
        update, q_mean = torch.stack([self._diverged_at.double(), self._diverged_q.double()]).tolist()
        if update >= 0:
            raise QDivergenceError(
                f"SPOT diverged at update {int(update)}: the mean Q1(s, π(s)) is {q_mean:.6g}, above "
                f"q_divergence_limit={self.cfg.q_divergence_limit:g} (the official code stops here too). "
                "Checkpoints written so far are kept. Raise lambd (a stronger support constraint), lower "
                "actor_lr/critic_lr, or raise q_divergence_limit if returns this large are expected.")

    # --- checkpointing ---------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {
            "actor": self.actor.state_dict(), "actor_target": self.actor_target.state_dict(),
            "critic": self.critic.state_dict(), "critic_target": self.critic_target.state_dict(),
            "vae": self.vae.state_dict(),
            "actor_optimizer": self.actor_optimizer.state_dict(),
            "critic_optimizer": self.critic_optimizer.state_dict(),
            "normalizer": self.normalizer.state_dict(),
            "obs_dim": self.obs_dim, "act_dim": self.act_dim, "max_action": self.max_action,
            "updates": self.updates, "lambd": self.lambd,
        }

    def load_state_dict(self, state: dict) -> None:
        dims = (state["obs_dim"], state["act_dim"], state["max_action"])
        if dims != (self.obs_dim, self.act_dim, self.max_action):
            raise ValueError(f"checkpointed agent has (obs_dim, act_dim, max_action) = {dims}, "
                             f"this one {(self.obs_dim, self.act_dim, self.max_action)}")
        for name in ("actor", "actor_target", "vae"):
            load_module_state(getattr(self, name), state[name], name)
        load_module_state(self.critic, upgrade_critic_state(state["critic"]), "critic")
        load_module_state(self.critic_target, upgrade_critic_state(state["critic_target"]), "critic_target")
        self.actor_optimizer.load_state_dict(state["actor_optimizer"])
        critic_optimizer = state["critic_optimizer"]
        if is_legacy_critic_state(state["critic"]):
            critic_optimizer = upgrade_critic_optimizer_state(critic_optimizer)
        self.critic_optimizer.load_state_dict(critic_optimizer)
        set_learning_rate(self.actor_optimizer, self.cfg.actor_lr)  # the config's, not the saved run's
        set_learning_rate(self.critic_optimizer, self.cfg.critic_lr)
        self.normalizer = ObsNormalizer.from_state_dict(state["normalizer"], self.device)
        self.updates, self.lambd = int(state["updates"]), float(state["lambd"])


def agent_from_policy(payload: dict, device: torch.device | str = "cpu") -> SpotAgent:
    """An agent that acts as the exported policy (critics and VAE untrained: it is for acting only)."""
    cfg = config_from_payload(Config, payload, where="model config")
    cfg.lambd = cfg.lambd if cfg.lambd is not None else 0.0  # unused when acting
    state = payload["policy"]
    dims = state["dims"]
    agent = SpotAgent(dims["obs"], dims["act"], dims["max_action"], cfg, device,
                      ObsNormalizer.from_state_dict(state["normalizer"], device))
    agent.actor.load_state_dict(state["actor"])
    return agent


def agent_from_checkpoint(payload: dict, device: torch.device | str = "cpu") -> SpotAgent:
    """Rebuilds the agent of an offline.pt / online.pt payload (used by common.inference.load_agent)."""
    cfg = config_from_payload(Config, payload)
    state = payload["agent"]
    cfg.lambd = float(state["lambd"])
    normalizer = ObsNormalizer.from_state_dict(state["normalizer"], device)
    agent = SpotAgent(state["obs_dim"], state["act_dim"], state["max_action"], cfg, device, normalizer)
    agent.load_state_dict(state)
    return agent


# --- the VAE on its own: checkpoints/vae.pt -------------------------------------------------------
def vae_checkpoint_payload(vae: VAE, normalizer: ObsNormalizer, cfg: Config) -> dict:
    return {"vae": vae.state_dict(), "normalizer": normalizer.state_dict(), "obs_dim": vae.obs_dim,
            "act_dim": vae.act_dim, "latent_dim": vae.latent_dim, "hidden_dim": cfg.vae_hidden,
            "max_action": vae.max_action, "beta": cfg.beta}


class VaeMismatchError(RunError, ValueError):
    pass


def load_vae_checkpoint(path: str, agent: SpotAgent) -> dict:
    """Loads a vae.pt into `agent.vae`; its normalizer and shapes must match this run's."""
    payload = load_checkpoint(path, algo=ALGO, kind="vae")
    vae = agent.vae
    want = {"obs_dim": vae.obs_dim, "act_dim": vae.act_dim, "latent_dim": vae.latent_dim,
            "hidden_dim": agent.cfg.vae_hidden}
    got = {k: payload.get(k) for k in want}
    if got != want:
        raise VaeMismatchError(f"VAE checkpoint {path} has shapes {got}, this run needs {want} "
                               "(vae_hidden / vae_latent_dim / dataset differ)")
    saved_normalizer = ObsNormalizer.from_state_dict(payload["normalizer"])
    if not saved_normalizer.matches(agent.normalizer):
        raise VaeMismatchError(
            f"VAE checkpoint {path} was trained on states normalized differently from this run's "
            f"(it came from dataset {payload.get('dataset')!r}; this run uses {agent.cfg.dataset!r} with "
            f"normalize_states={agent.cfg.normalize_states}). A VAE only fits the dataset and normalization it "
            "was trained with: point vae_checkpoint at that dataset's vae.pt, or set vae_checkpoint null to train one.")
    vae.load_state_dict(payload["vae"])
    vae.requires_grad_(False)
    return payload


__all__ = ["ALGO", "WEIGHT_METRIC", "Config", "SpotAgent", "VaeTrainer", "QDivergenceError", "VaeMismatchError", "lambda_schedule",
           "resolve_lambda", "agent_from_checkpoint", "agent_from_policy", "load_vae_checkpoint",
           "vae_checkpoint_payload"]
