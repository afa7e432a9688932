"""Gymnasium environments: creation, seeding, and checks against the dataset."""
from __future__ import annotations

import contextlib
import warnings

import gymnasium as gym

from common.datasets import REF_RETURNS, env_family
from common.errors import RunError


class EnvMismatchError(RunError, ValueError):
    pass


# MuJoCo warnings about gymnasium's own model files, printed once per env made: not ours to fix, and they bury the
# run's own lines. Every other MuJoCo warning still reaches the console (as a Python warning).
KNOWN_MUJOCO_WARNINGS = ("compiler attribute 'settotalmass' is deprecated",)  # half_cheetah.xml, mujoco>=3.3


@contextlib.contextmanager
def _known_mujoco_warnings_dropped():
    import mujoco

    previous = mujoco.get_mju_user_warning()

    def handler(message: str) -> None:
        if not message.startswith(KNOWN_MUJOCO_WARNINGS):
            warnings.warn(f"MuJoCo: {message}", RuntimeWarning, stacklevel=2)

    mujoco.set_mju_user_warning(handler)
    try:
        yield
    finally:
        mujoco.set_mju_user_warning(previous)


def gym_make(env_id: str, **kwargs) -> gym.Env:
    with warnings.catch_warnings(), _known_mujoco_warnings_dropped():
        warnings.filterwarnings("ignore", message=".*is out of date.*")  # v4 envs are deliberate (D4RL)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        try:
            return gym.make(env_id, **kwargs)
        except gym.error.Error as exc:
            raise EnvMismatchError(f"cannot make environment {env_id!r}: {exc}") from None


def make_env(env_id: str, seed: int, **kwargs) -> gym.Env:
    """A gymnasium env whose first reset and action space are seeded."""
    env = gym_make(env_id, **kwargs)
    env.reset(seed=seed)
    env.action_space.seed(seed)
    return env


def check_env_matches(env_id: str, obs_dim: int, act_dim: int, what: str = "dataset") -> tuple[int, int, float]:
    """Raises when the env's spaces differ from the data's; returns (obs_dim, act_dim, max_action)."""
    env = gym_make(env_id)
    try:
        env_obs, env_act = env.observation_space.shape[0], env.action_space.shape[0]
        max_action = float(env.action_space.high[0])
    finally:
        env.close()
    if (env_obs, env_act) != (obs_dim, act_dim):
        raise EnvMismatchError(
            f"{what} has obs_dim={obs_dim}, act_dim={act_dim} but env {env_id} has obs_dim={env_obs}, "
            f"act_dim={env_act}; set the config key env to the environment the data came from")
    return env_obs, env_act, max_action


def ref_returns(env_id: str) -> tuple[float, float]:
    family = env_family(env_id)
    if family not in REF_RETURNS:
        raise EnvMismatchError(f"no D4RL reference returns for env {env_id!r}")
    return REF_RETURNS[family]
