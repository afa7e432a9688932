"""The constants the results rest on, written out here once more, from the papers and the official code, so that a
changed default, a mistyped constant or a reference return that drifts fails a test:
- each algorithm's config defaults (Zhao et al. 2022 and its official code; Wu et al. 2022 and its official code);
- D4RL's reference returns (d4rl/infos.py, REF_MIN_SCORE / REF_MAX_SCORE, the same for every level of an env);
- the D4RL v2 env ids and the controller's and schedules' own constants."""
from __future__ import annotations

import dataclasses

import pytest

from adaptive_bc import controller
from adaptive_bc.agent import Config as BcConfig
from common import datasets
from common.evaluation import EVAL_SEED_OFFSET
from spot import agent as spot_agent
from spot.agent import Config as SpotConfig

# Keys every algorithm shares (common.config.BaseConfig): the papers' protocol.
PROTOCOL = {"batch_size": 256, "offline_steps": 1_000_000, "online_steps": 250_000, "eval_every": 5_000,
            "eval_episodes": 10, "seed": 0, "threads": 1, "device": "auto", "checkpoint_every": 50_000,
            "dataset": "d4rl:hopper-medium-v2", "env": None, "run_dir": None, "variant": None, "video": False,
            "compile": False, "wandb_mode": "offline", "wandb_project": "offline-to-online", "wandb_group": None}

ADAPTIVE_BC = {
    # REDQ ensemble: N = 10 critics, a TD target from the min of M = 2 random ones, 256-unit layers
    "num_critics": 10, "num_target_critics": 2, "hidden_dim": 256, "normalize_states": False,
    # TD3 update (Fujimoto et al. 2018 settings)
    "gamma": 0.99, "tau": 0.005, "actor_lr": 3e-4, "critic_lr": 3e-4, "policy_delay": 2, "target_noise": 0.2,
    "noise_clip": 0.5,
    # the BC weight: α = 0.4 offline, the online controller within [0, 0.4], Kp 3e-5, Kd 1e-4, target 1.05
    "alpha_offline": 0.4, "alpha_max": 0.4, "kp": 3e-5, "kd": 1e-4, "r_target": 1.05,
    # online: exploration std 0.1, UTD 10, REDQ target, 5 % of the data (at least 50k) prefilled
    "exploration_noise": 0.1, "utd": 10, "target": "redq", "prefill_fraction": 0.05, "prefill_min": 50_000,
    "buffer_capacity": None,
}

SPOT = {
    # the behaviour VAE: 750-unit layers, latent 2·act_dim, β = 0.5, lr 1e-3, 100k updates
    "vae_steps": 100_000, "vae_lr": 1e-3, "vae_hidden": 750, "vae_latent_dim": None, "beta": 0.5,
    "vae_checkpoint": None,
    # the penalty: λ from the env (below), the VAE loss with one latent sample, divergence stop at Q 1e4
    "lambd": None, "iwae": False, "num_samples": 1, "q_divergence_limit": 1e4,
    # TD3 with actor dropout 0.1 and normalised states
    "hidden_dim": 256, "actor_dropout": 0.1, "dropout_masks": "uniform", "gamma": 0.99, "tau": 0.005, "actor_lr": 3e-4,
    "critic_lr": 3e-4, "policy_delay": 2, "target_noise": 0.2, "noise_clip": 0.5, "normalize_states": True,
    # online: exploration std 0.1, λ decays linearly to 0.2 λ over the online steps, Adam states kept
    "exploration_noise": 0.1, "lambda_end": 0.2, "lambda_decay_steps": None, "reset_optimizers": False,
}
SPOT_LAMBDA = {"hopper": 0.1, "walker2d": 0.2, "halfcheetah": 0.05}

# d4rl/infos.py: REF_MIN_SCORE and REF_MAX_SCORE of <env>-{random,medium,medium-replay,...}-v2
D4RL_INFOS = {"hopper": (-20.272305, 3234.3), "walker2d": (1.629008, 4592.3),
              "halfcheetah": (-280.178953, 12135.0)}


@pytest.mark.parametrize("config, table", [(BcConfig, ADAPTIVE_BC), (SpotConfig, SPOT)], ids=["adaptive_bc", "spot"])
def test_config_defaults_are_the_papers(config, table):
    defaults = {f.name: f.default for f in dataclasses.fields(config)}
    assert set(defaults) == set(table) | set(PROTOCOL), "a key was added or removed: add it to the table here"
    for key, value in {**PROTOCOL, **table}.items():
        assert defaults[key] == value and type(defaults[key]) is type(value), f"{config.__module__}: {key}"


def test_spot_lambda_per_environment():
    assert spot_agent.DEFAULT_LAMBDA == SPOT_LAMBDA
    for env, value in SPOT_LAMBDA.items():
        assert spot_agent.resolve_lambda(None, f"d4rl:{env}-medium-replay-v2") == value


def test_d4rl_reference_returns_are_infos_py():
    assert datasets.REF_RETURNS == D4RL_INFOS
    assert datasets.D4RL_ENV_IDS == {"hopper": "Hopper-v4", "walker2d": "Walker2d-v4", "halfcheetah": "HalfCheetah-v4"}
    # a score by hand: hopper return 1000 → 100 · (1000 + 20.272305) / (3234.3 + 20.272305)
    assert datasets.normalized_score(1000.0, *datasets.REF_RETURNS["hopper"]) == pytest.approx(31.34889, abs=1e-5)


def test_controller_and_evaluation_constants():
    assert controller.R_AVG_DECAY == 0.95  # R_avg ← 0.05 · c + 0.95 · R_avg (official code)
    c = controller.AlphaController()
    assert (c.alpha_max, c.kp, c.kd, c.r_target) == (0.4, 3e-5, 1e-4, 1.05)
    assert EVAL_SEED_OFFSET == 1_000_000
