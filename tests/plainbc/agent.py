"""plainbc's config, agent and the hooks common/ needs (see the contract in common/algorithm.py)."""
import dataclasses

import numpy as np
import torch

from common.algorithm import config_from_payload
from common.config import BaseConfig
from common.normalizer import ObsNormalizer
from plainbc.networks import Actor

ALGO = "plainbc"
WEIGHT_METRIC = "train/exploration"  # its "regularisation weight" for the plots: the exploration noise


@dataclasses.dataclass
class Config(BaseConfig):
    hidden_dim: int = 16  # the actor's hidden width
    lr: float = 1e-3  # Adam learning rate
    exploration_noise: float = 0.1  # online: Gaussian action noise std, times max_action
    utd: int = 2  # online: updates per env step


class BcAgent:
    def __init__(self, obs_dim, act_dim, max_action, cfg, device="cpu", normalizer=None):
        self.cfg, self.obs_dim, self.act_dim, self.max_action = cfg, obs_dim, act_dim, float(max_action)
        self.normalizer = normalizer or ObsNormalizer.identity(obs_dim)
        self.actor = Actor(obs_dim, act_dim, max_action, cfg.hidden_dim)
        self.optimizer = torch.optim.Adam(self.actor.parameters(), lr=cfg.lr)
        self.updates = 0

    def update(self, batch) -> dict[str, float]:
        noise = torch.randn(()) * 1e-3  # the global torch RNG, which a resumed run must restore
        loss = ((self.actor(self.normalizer(batch.observations)) - batch.actions) ** 2).mean() + noise
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        self.updates += 1
        return {"loss": loss.item()}

    @torch.no_grad()
    def act(self, obs: np.ndarray) -> np.ndarray:
        return self.actor(self.normalizer(torch.as_tensor(obs, dtype=torch.float32))).numpy()

    def state_dict(self) -> dict:
        return {"actor": self.actor.state_dict(), "optimizer": self.optimizer.state_dict(),
                "updates": self.updates, "normalizer": self.normalizer.state_dict(),
                "dims": [self.obs_dim, self.act_dim, self.max_action]}

    def load_state_dict(self, state: dict) -> None:
        self.actor.load_state_dict(state["actor"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.updates = state["updates"]
        self.normalizer = ObsNormalizer.from_state_dict(state["normalizer"])


def agent_from_checkpoint(payload: dict, device="cpu") -> BcAgent:
    obs_dim, act_dim, max_action = payload["agent"]["dims"]
    agent = BcAgent(obs_dim, act_dim, max_action, config_from_payload(Config, payload), device)
    agent.load_state_dict(payload["agent"])
    return agent


def agent_from_policy(payload: dict, device="cpu") -> BcAgent:
    """An agent that acts as an exported model file's policy (common.inference.export_policy)."""
    dims = payload["policy"]["dims"]
    agent = BcAgent(dims["obs"], dims["act"], dims["max_action"], config_from_payload(Config, payload, "model config"),
                    device, ObsNormalizer.from_state_dict(payload["policy"]["normalizer"], device))
    agent.actor.load_state_dict(payload["policy"]["actor"])
    return agent
