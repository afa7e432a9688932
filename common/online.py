"""The online phase: its run (`start_online_run`), its environment and the state a killed online run resumes with.

`start_online_run(cfg, algo, checkpoint)` is `start_run` for fine-tuning: the run folder defaults to the offline
run's sibling `online`; config.yaml records the offline checkpoint the run started from and the algorithm's weight
metric (its WEIGHT_METRIC); and `run.env` is an `OnlineEnv` that owns what an online loop would otherwise checkpoint
by hand: the episode counter (each training episode resets with its own seed), the exploration noise generator and
the episode in progress, so a checkpoint may fall in the middle of an episode. `run.save_last(...)` stores them with the loop's objects,
and a resumed run's `run.env` starts where the killed one stood.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from common.envs import make_env
from common.layout import online_run_dir_for, run_dir_of_checkpoint

if TYPE_CHECKING:
    from common.config import BaseConfig
    from common.run import Run


def start_online_run(cfg: "BaseConfig", algo: str, checkpoint: Path) -> "Run":
    """start_run for the online phase, from the offline checkpoint `checkpoint`; the run's `env` is its OnlineEnv."""
    from common.algorithm import weight_metric
    from common.run import start_run

    run = start_run(cfg, algo, "online", run_dir=online_run_dir_for(run_dir_of_checkpoint(checkpoint)),
                    extra_config={"offline_checkpoint": str(Path(checkpoint).resolve()),
                                  "regularization_metric": weight_metric(algo)})
    run.env = OnlineEnv(run, run.resume)
    return run


def episode_seed(seed: int, episode: int) -> int:
    """Each training episode resets with its own seed, so no env state needs checkpointing."""
    return int(np.random.SeedSequence([seed, episode]).generate_state(1)[0])


class OnlineEnv:
    """The online training env: episode k resets with episode_seed(seed, k); tracks the episode's return/length.
    Time-limit truncation ends an episode but is not a terminal (the caller stores `terminated` only).

    Also the online loop's resume state: the episode counter, the exploration noise generator (`explore`), and the
    episode in progress: MuJoCo's integration state (which continues a simulation bit for bit), the time limit's
    step count, the observation, return and length. `state_dict()` goes into last.pt and `resume` (a last.pt
    payload) restores it, so a checkpoint may fall in the middle of an episode (`checkpoint_due`: every
    checkpoint_every env steps) and `start()` continues that episode."""

    def __init__(self, run: "Run", resume: dict[str, Any] | None = None):
        cfg = run.cfg
        self.env = make_env(run.env_id, seed=cfg.seed)
        self.seed, self.dataset, self.max_action = cfg.seed, run.dataset, run.max_action
        self.total, self.checkpoint_every = cfg.online_steps, cfg.checkpoint_every
        self.episode = 0
        self.noise_rng = np.random.default_rng(cfg.seed)
        self.episode_return, self.episode_length = 0.0, 0
        self.obs: np.ndarray | None = None  # the observation the next action answers (None: reset first)
        if resume:
            self.load_state_dict(resume)

    def start(self) -> np.ndarray:
        """The observation to act on first: the restored episode's when resuming in the middle of one, else a reset."""
        return self.obs if self.obs is not None else self.reset()

    def reset(self) -> np.ndarray:
        obs, _ = self.env.reset(seed=episode_seed(self.seed, self.episode))
        self.episode_return, self.episode_length = 0.0, 0
        self.obs = obs
        return obs

    def explore(self, action: np.ndarray, std: float) -> np.ndarray:
        """The policy's action plus Gaussian exploration noise (std × max_action), clipped (see `explore`)."""
        return explore(action, self.noise_rng, std, self.max_action)

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool]:
        next_obs, reward, terminated, truncated, _ = self.env.step(action)
        self.episode_return += float(reward)
        self.episode_length += 1
        self.obs = None if (terminated or truncated) else next_obs
        return next_obs, float(reward), bool(terminated), bool(truncated)

    def end_episode(self) -> dict[str, float]:
        """The finished episode's record (return, length, normalized score); the next reset starts a new one."""
        record = {"online/episode_return": self.episode_return, "online/episode_length": float(self.episode_length),
                  "online/episode_normalized_score": float(self.dataset.normalized_score(self.episode_return))}
        self.episode += 1
        return record

    def checkpoint_due(self, step: int) -> bool:
        """Every checkpoint_every env steps, never at the last step (the run finishes there). Asked once per env
        step, after the step's transition, updates, records and (at an episode end) the reset."""
        return step % self.checkpoint_every == 0 and step < self.total

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {"noise_rng": self.noise_rng.bit_generator.state, "episode": self.episode,
                                 "episode_in_progress": None}
        if self.obs is not None:
            import mujoco

            model, data = self.env.unwrapped.model, self.env.unwrapped.data
            physics = np.empty(mujoco.mj_stateSize(model, mujoco.mjtState.mjSTATE_INTEGRATION))
            mujoco.mj_getState(model, data, physics, mujoco.mjtState.mjSTATE_INTEGRATION)
            state["episode_in_progress"] = {  # tensors: checkpoints load with weights_only (no numpy objects)
                "physics": torch.from_numpy(physics), "elapsed_steps": int(_time_limit(self.env)._elapsed_steps),
                "obs": torch.from_numpy(np.array(self.obs, copy=True)), "return": float(self.episode_return),
                "length": int(self.episode_length)}
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.noise_rng.bit_generator.state = state["noise_rng"]
        self.episode = int(state["episode"])
        current = state.get("episode_in_progress")  # absent in checkpoints written only at episode ends
        if current is None:
            self.obs = None
            return
        import mujoco

        self.reset()  # the episode's own reset (wrappers' flags, RNG), then its physics as it was at the checkpoint
        model, data = self.env.unwrapped.model, self.env.unwrapped.data
        mujoco.mj_setState(model, data, current["physics"].numpy().astype(np.float64),
                           mujoco.mjtState.mjSTATE_INTEGRATION)
        _time_limit(self.env)._elapsed_steps = int(current["elapsed_steps"])
        self.obs = current["obs"].numpy().copy()
        self.episode_return, self.episode_length = float(current["return"]), int(current["length"])

    def close(self) -> None:
        self.env.close()


def _time_limit(env):
    """The env's gymnasium TimeLimit wrapper (its step count is part of an episode's state)."""
    import gymnasium as gym

    wrapper = env
    while isinstance(wrapper, gym.Wrapper):
        if isinstance(wrapper, gym.wrappers.TimeLimit):
            return wrapper
        wrapper = wrapper.env
    raise TypeError(f"{env} has no TimeLimit wrapper; online episodes need one")


def explore(action: np.ndarray, rng: np.random.Generator, std: float, max_action: float) -> np.ndarray:
    """Gaussian exploration noise (std × max_action), clipped to the action bounds, as float32."""
    if std > 0:
        action = action + rng.normal(0.0, std * max_action, action.shape[-1])
    return np.clip(action, -max_action, max_action).astype(np.float32)
