"""REDQ+BC (Zhao et al. 2022): TD3-style actor-critic with a 10-critic ensemble and a BC term.

One `update(batch)` serves offline pretraining and online fine-tuning; only `alpha` (the BC weight,
set by the adaptive controller online) and `use_min_target` change between the phases.
"""
from __future__ import annotations

import copy
import dataclasses

import numpy as np
import torch
import torch.nn.functional as F

from adaptive_bc.networks import Actor, EnsembleCritic, upgrade_critic_state
from common.buffer import Batch
from common.checkpoint import load_module_state
from common.algorithm import config_from_payload
from common.config import BaseConfig, ConfigError
from common.normalizer import ObsNormalizer
from common.utils import compile_in_place, compiled, set_learning_rate

ALGO = "adaptive_bc"
WEIGHT_METRIC = "train/alpha"  # the BC weight α: plots draw it under the scores


@dataclasses.dataclass
class Config(BaseConfig):
    # networks
    num_critics: int = 10  # N: Q-networks in the ensemble
    num_target_critics: int = 2  # M: random target critics whose minimum forms the TD target
    hidden_dim: int = 256  # units of each hidden layer (actor and critics)
    normalize_states: bool = False  # official code: false
    # TD3 update
    gamma: float = 0.99  # discount
    tau: float = 0.005  # Polyak rate of the target networks
    actor_lr: float = 3e-4  # Adam learning rate of the actor
    critic_lr: float = 3e-4  # Adam learning rate of the critics
    policy_delay: int = 2  # actor and target updates every this many critic updates
    target_noise: float = 0.2  # std of the target policy smoothing noise (x max_action)
    noise_clip: float = 0.5  # (x max_action)
    # behaviour cloning weight
    alpha_offline: float = 0.4  # fixed during pretraining
    alpha_max: float = 0.4  # online: the controller starts here and never exceeds it
    kp: float = 3e-5  # proportional gain of the α controller (per episode step)
    kd: float = 1e-4  # gain on a drop below the running score (per episode step)
    r_target: float = 1.05  # target normalized score (fraction)
    # online fine-tuning
    exploration_noise: float = 0.1  # Gaussian action noise std (x max_action)
    utd: int = 10  # updates per environment step
    target: str = "redq"  # online TD target: redq (min of M random) | min (min over all N); offline: redq
    prefill_fraction: float = 0.05  # offline transitions put in the online buffer: max(fraction*|D|, prefill_min)
    prefill_min: int = 50_000  # at least this many offline transitions prefilled
    # online FIFO buffer size (prefill included); null: online_steps. The paper's protocol holds 250k, so a run
    # truncated to its first N steps sets buffer_capacity 250000 to keep the paper's buffer.
    buffer_capacity: int | None = None  # online FIFO size, prefill included; null: online_steps

    _choices = {"target": ("redq", "min")}

    def validate(self) -> None:
        super().validate()
        for key in ("num_critics", "num_target_critics", "hidden_dim", "policy_delay", "utd"):
            if getattr(self, key) < 1:
                raise ConfigError(f"{key} must be >= 1, got {getattr(self, key)}")
        if self.buffer_capacity is not None and self.buffer_capacity < 1:
            raise ConfigError(f"buffer_capacity must be >= 1 or null, got {self.buffer_capacity}")
        if self.num_target_critics > self.num_critics:
            raise ConfigError(f"num_target_critics={self.num_target_critics} exceeds num_critics={self.num_critics}")
        for key in ("alpha_offline", "alpha_max", "kp", "kd", "target_noise", "noise_clip", "exploration_noise",
                    "prefill_fraction", "prefill_min"):
            if getattr(self, key) < 0:
                raise ConfigError(f"{key} must be >= 0, got {getattr(self, key)}")


def _actor_metrics(actor_loss: torch.Tensor, q_term: torch.Tensor, bc_mse: torch.Tensor) -> dict[str, torch.Tensor]:
    """Detached 0-dim tensors: the update never waits for the device (common.recorder reads them in bulk)."""
    return {"actor_loss": actor_loss.detach(), "actor_q_term": q_term.detach(), "bc_mse": bc_mse.detach()}


class RedqBcAgent:
    def __init__(self, obs_dim: int, act_dim: int, max_action: float, cfg: Config,
                 device: torch.device | str = "cpu", normalizer: ObsNormalizer | None = None):
        self.cfg, self.device = cfg, torch.device(device)
        self.obs_dim, self.act_dim, self.max_action = obs_dim, act_dim, float(max_action)
        self.normalizer = (normalizer or ObsNormalizer.identity(obs_dim)).to(self.device)

        self.actor = Actor(obs_dim, act_dim, max_action, cfg.hidden_dim).to(self.device)
        self.critic = EnsembleCritic(obs_dim, act_dim, cfg.num_critics, cfg.hidden_dim).to(self.device)
        self.actor_target = copy.deepcopy(self.actor).requires_grad_(False)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        # fused: one kernel per tensor for the whole Adam step (~10% faster updates on CPU than the default)
        self.actor_optimizer = torch.optim.Adam(self.actor.parameters(), lr=cfg.actor_lr, fused=True)
        self.critic_optimizer = torch.optim.Adam(self.critic.parameters(), lr=cfg.critic_lr, fused=True)
        # Polyak averaging of both networks in one multi-tensor call.
        self._online_params = [*self.actor.parameters(), *self.critic.parameters()]
        self._target_params = [*self.actor_target.parameters(), *self.critic_target.parameters()]

        if cfg.compile:  # the networks, and the losses whole (their element-wise work fused)
            compile_in_place((self.actor, self.critic, self.actor_target, self.critic_target), self.device)
            self.td_target = compiled(self.td_target, self.device)
            self.critic_loss = compiled(self.critic_loss, self.device)
            self.actor_loss = compiled(self.actor_loss, self.device)
        self.alpha = cfg.alpha_offline  # BC weight; the online controller changes it
        self.use_min_target = False  # online with target=min: min over all N target critics
        self.num_updates = 0
        self._actor_metrics: dict[str, torch.Tensor] | None = None  # last actor step's, reported on every update

    # --- acting --------------------------------------------------------------------------------
    @torch.no_grad()
    def act(self, obs: np.ndarray) -> np.ndarray:
        """Deterministic actions for a batch of raw observations (n, obs_dim)."""
        obs_t = torch.as_tensor(obs, dtype=torch.float32, device=self.device)
        return self.actor(self.normalizer(obs_t)).cpu().numpy()

    # --- losses --------------------------------------------------------------------------------
    def target_members(self) -> torch.Tensor | None:
        """Indices of the target critics to evaluate: M distinct at random (REDQ), or None = all N."""
        if self.use_min_target:
            return None
        return torch.randperm(self.cfg.num_critics, device=self.device)[:self.cfg.num_target_critics]

    @torch.no_grad()
    def td_target(self, next_obs: torch.Tensor, rewards: torch.Tensor, terminals: torch.Tensor,
                  noise: torch.Tensor, members: torch.Tensor | None) -> torch.Tensor:
        """y = r + gamma (1 - terminal) min_{i in members} Q'_i(s', clip(pi'(s') + noise)); only `members` run."""
        next_actions = (self.actor_target(next_obs) + noise).clamp(-self.max_action, self.max_action)
        next_q = self.critic_target(next_obs, next_actions, members).amin(dim=0)
        return rewards + self.cfg.gamma * (1.0 - terminals) * next_q

    def critic_loss(self, obs: torch.Tensor, actions: torch.Tensor, target: torch.Tensor):
        """Mean over members and batch of (Q_i(s, a) - y)^2 (the official F.mse_loss on [N, B]); also Q [N, B]."""
        q = self.critic(obs, actions)
        return (q - target).square().mean(), q

    def actor_loss(self, obs: torch.Tensor, actions: torch.Tensor):
        """-mean Qbar(s, pi(s)) / mean|Qbar| + alpha * MSE(pi(s), a); Qbar = ensemble mean.

        The critic runs with detached weights: the graph reaches the actor only, so backward computes
        no gradient for the N critics' weights (the official code computes and discards them).
        """
        pi = self.actor(obs)
        q_pi = self.critic(obs, pi, detach_params=True).mean(dim=0)
        q_term = -q_pi.mean() / q_pi.abs().mean().detach()
        bc_mse = F.mse_loss(pi, actions)
        return q_term + self.alpha * bc_mse, q_term, bc_mse

    # --- update --------------------------------------------------------------------------------
    def update(self, batch: Batch) -> dict[str, torch.Tensor]:
        """One critic step (and every policy_delay-th call an actor step + Polyak update); its metrics as detached
        0-dim tensors, so nothing here waits for the device."""
        cfg = self.cfg
        obs, next_obs = self.normalizer(batch.observations), self.normalizer(batch.next_observations)
        actions = batch.actions

        noise_limit = cfg.noise_clip * self.max_action
        noise = (torch.randn_like(actions) * (cfg.target_noise * self.max_action)).clamp(-noise_limit, noise_limit)
        target = self.td_target(next_obs, batch.rewards, batch.terminals, noise, self.target_members())
        critic_loss, q = self.critic_loss(obs, actions, target)
        self.critic_optimizer.zero_grad(set_to_none=True)
        critic_loss.backward()
        self.critic_optimizer.step()
        self.critic_optimizer.zero_grad(set_to_none=True)  # nothing below may touch the critic's grads
        self.num_updates += 1

        if self.num_updates % cfg.policy_delay == 0:
            actor_terms = self.actor_loss(obs, actions)
            self.actor_optimizer.zero_grad(set_to_none=True)
            actor_terms[0].backward()
            self.actor_optimizer.step()
            with torch.no_grad():
                torch._foreach_lerp_(self._target_params, self._online_params, cfg.tau)
            self._actor_metrics = _actor_metrics(*actor_terms)
        elif self._actor_metrics is None:  # before the first actor step: report the current values
            with torch.no_grad():
                self._actor_metrics = _actor_metrics(*self.actor_loss(obs, actions))
        # Every key on every update (the loop averages over all updates); actor values are the last step's.
        return {"critic_loss": critic_loss.detach(), "q_mean": q.detach().mean(), **self._actor_metrics}

    # --- checkpointing -------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {
            "actor": self.actor.state_dict(), "critic": self.critic.state_dict(),
            "actor_target": self.actor_target.state_dict(), "critic_target": self.critic_target.state_dict(),
            "actor_optimizer": self.actor_optimizer.state_dict(),
            "critic_optimizer": self.critic_optimizer.state_dict(),
            "normalizer": self.normalizer.state_dict(), "alpha": float(self.alpha),
            "num_updates": int(self.num_updates),
            "actor_metrics": None if self._actor_metrics is None else {
                k: float(v) for k, v in self._actor_metrics.items()},  # one read per checkpoint
            "dims": {"obs": self.obs_dim, "act": self.act_dim, "max_action": self.max_action},
        }

    def load_state_dict(self, state: dict) -> None:
        dims = state["dims"]
        if (dims["obs"], dims["act"]) != (self.obs_dim, self.act_dim):
            raise ValueError(f"checkpoint agent has obs_dim={dims['obs']}, act_dim={dims['act']}; "
                             f"this agent {self.obs_dim}, {self.act_dim}")
        load_module_state(self.actor, state["actor"], "actor")
        load_module_state(self.critic, upgrade_critic_state(state["critic"]), "critic")
        load_module_state(self.actor_target, state["actor_target"], "target actor")
        load_module_state(self.critic_target, upgrade_critic_state(state["critic_target"]), "target critic")
        self.actor_optimizer.load_state_dict(state["actor_optimizer"])
        self.critic_optimizer.load_state_dict(state["critic_optimizer"])
        set_learning_rate(self.actor_optimizer, self.cfg.actor_lr)  # the config's, not the saved run's
        set_learning_rate(self.critic_optimizer, self.cfg.critic_lr)
        self.normalizer = ObsNormalizer.from_state_dict(state["normalizer"], self.device)
        self.alpha = float(state["alpha"])
        self.num_updates = int(state["num_updates"])
        saved = state["actor_metrics"]
        self._actor_metrics = None if saved is None else {
            k: torch.tensor(v, dtype=torch.float32, device=self.device) for k, v in saved.items()}


def agent_from_policy(payload: dict, device: torch.device | str = "cpu") -> RedqBcAgent:
    """An agent that acts as the exported policy (its critics are untrained: it is for acting only)."""
    cfg = config_from_payload(Config, payload, where="model config")
    state = payload["policy"]
    dims = state["dims"]
    agent = RedqBcAgent(dims["obs"], dims["act"], dims["max_action"], cfg, device,
                        ObsNormalizer.from_state_dict(state["normalizer"], device))
    agent.actor.load_state_dict(state["actor"])
    return agent


def agent_from_checkpoint(payload: dict, device: torch.device | str = "cpu") -> RedqBcAgent:
    """Rebuilds the agent of an offline.pt / online.pt payload (used by common.inference.load_agent)."""
    cfg = config_from_payload(Config, payload)
    state = payload["agent"]
    dims = state["dims"]
    normalizer = ObsNormalizer.from_state_dict(state["normalizer"], device)
    agent = RedqBcAgent(dims["obs"], dims["act"], dims["max_action"], cfg, device, normalizer)
    agent.load_state_dict(state)
    agent.use_min_target = payload.get("phase") == "online" and cfg.target == "min"
    return agent
