"""SPOT: VAE density numbers, actor loss, λ schedule, divergence guard, checkpoints, resume, learning."""
from __future__ import annotations

import dataclasses

import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from conftest import REPO, shared_dataset, write_d4rl_file

from common.buffer import Batch
from common.checkpoint import load_checkpoint, save_checkpoint
from common.config import parse_config, ConfigError, load_yaml
from common.datasets import read_d4rl_hdf5
from common.evaluation import evaluate
from common.inference import load_agent
from common.layout import read_metrics
from common.normalizer import ObsNormalizer
from spot import train_offline, train_online
from spot.agent import (Config, QDivergenceError, SpotAgent, VaeMismatchError, VaeTrainer, lambda_schedule,
                        resolve_lambda)
from spot.networks import VAE

# Hand-computed constants for the tiny VAE below (mean (0.5, −0.5), std (0.5, 1), β = 0.5):
KL_PER_DIM = (0.4431471805599453, 0.125)  # −½(1 + log σ² − μ² − σ²)
KL_MEAN, KL_SUM = 0.28407359027997264, 0.5681471805599453
BETA = 0.5


def tiny_vae(z_dependent: bool) -> VAE:
    """obs 1, action 1, latent 2, hidden 2, weights set by hand.

    Encoder: constant mean (0.5, −0.5) and std (0.5, 1). Decoder: tanh(0.1 · z1) if z_dependent
    (hidden unit relu(z1 + 5), output 0.1 · h − 0.5), else the constant 0.
    """
    vae = VAE(obs_dim=1, act_dim=1, max_action=1.0, hidden_dim=2, latent_dim=2)
    with torch.no_grad():
        for p in vae.parameters():
            p.zero_()
        vae.encoder[4].bias.copy_(torch.tensor([0.5, -0.5, math.log(0.5), 0.0]))
        if z_dependent:
            vae.decoder[0].weight[0, 1] = 1.0  # decoder input is (obs, z1, z2)
            vae.decoder[0].bias[0] = 5.0
            vae.decoder[2].weight[0, 0] = 1.0
            vae.decoder[4].weight[0, 0] = 0.1
            vae.decoder[4].bias[0] = -0.5
    return vae.requires_grad_(False)


def random_batch(n=64, obs_dim=11, act_dim=3, seed=0) -> Batch:
    g = torch.Generator().manual_seed(seed)
    return Batch(torch.randn(n, obs_dim, generator=g), torch.rand(n, act_dim, generator=g) * 2 - 1,
                 torch.randn(n, generator=g), torch.randn(n, obs_dim, generator=g),
                 (torch.rand(n, generator=g) < 0.1).float())


def small_config(**overrides) -> Config:
    values = dict(dataset="tiny-hopper.hdf5", lambd=0.1, hidden_dim=32, vae_hidden=32, wandb_mode="disabled")
    values.update(overrides)
    return Config(**values)


# --- VAE numbers -----------------------------------------------------------------------------------
def test_vae_loss_tiny_fixed_case():
    obs = torch.tensor([[0.0], [1.0], [-2.0]])
    actions = torch.tensor([[0.3], [-0.2], [0.9]])
    # z-independent decoder (output 0): loss = a² + β · mean KL = 0.09 + 0.5 · 0.2840736 for a = 0.3
    loss = tiny_vae(z_dependent=False).loss(obs, actions, BETA)
    np.testing.assert_allclose(loss.numpy(), [0.09 + 0.5 * KL_MEAN, 0.04 + 0.5 * KL_MEAN, 0.81 + 0.5 * KL_MEAN],
                               rtol=1e-6)
    assert loss[0].item() == pytest.approx(0.2320367951, rel=1e-6)
    # z-dependent decoder: reconstruction tanh(0.1 · z1) with z1 = 0.5 + 0.5 · ε1 from the seeded draw
    vae = tiny_vae(z_dependent=True)
    torch.manual_seed(7)
    eps = torch.randn(3, 4, 2)  # the (B, L, latent) draw the VAE makes
    torch.manual_seed(7)
    loss = vae.loss(obs, actions, BETA, num_samples=4)
    recon = np.tanh(0.1 * (0.5 + 0.5 * eps[..., 0].numpy()))  # (3, 4)
    expected = ((recon - actions.numpy()) ** 2).mean(1) + BETA * KL_MEAN
    np.testing.assert_allclose(loss.numpy(), expected, rtol=1e-6)


def test_vae_trainer_reports_the_same_loss_and_freezes_at_the_end():
    vae = tiny_vae(z_dependent=False)
    trainer = VaeTrainer(vae, ObsNormalizer.identity(1), lr=1e-3, beta=BETA, total_steps=2)
    batch = Batch(torch.zeros(2, 1), torch.tensor([[0.3], [0.3]]), torch.zeros(2), torch.zeros(2, 1), torch.zeros(2))
    metrics = trainer.update(batch)  # metrics are those of the batch before the step
    assert metrics["vae_loss"] == pytest.approx(0.09 + BETA * KL_MEAN, rel=1e-6)
    assert metrics["vae_recon_loss"] == pytest.approx(0.09, rel=1e-6)
    assert metrics["vae_kl_loss"] == pytest.approx(KL_MEAN, rel=1e-6)
    assert vae.encoder[4].bias.requires_grad and not trainer.finished
    trainer.update(batch)
    assert trainer.finished and trainer.steps == 2
    assert not any(p.requires_grad for p in vae.parameters())


def test_neg_elbo_matches_manual_computation():
    obs, actions = torch.zeros(1, 1), torch.tensor([[0.3]])
    # −ELBO = ½(a − 0)²/σ_d² + log σ_d + ½ log 2π + Σ KL, σ_d² = β/4 = 0.125
    manual = 0.5 * 0.09 / 0.125 + 0.5 * math.log(0.125) + 0.5 * math.log(2 * math.pi) + KL_SUM
    assert manual == pytest.approx(0.8073649429, rel=1e-9)
    assert tiny_vae(z_dependent=False).neg_elbo(obs, actions, BETA).item() == pytest.approx(manual, rel=1e-6)
    # Latent = 2·act_dim, same z: −ELBO = (2·act_dim/β) · VAE loss + act_dim · (log σ_d + ½ log 2π).
    torch.manual_seed(0)
    vae = VAE(obs_dim=11, act_dim=3, max_action=1.0, hidden_dim=64)
    batch = random_batch()
    torch.manual_seed(1)
    loss = vae.loss(batch.observations, batch.actions, BETA, num_samples=3)
    torch.manual_seed(1)
    neg_elbo = vae.neg_elbo(batch.observations, batch.actions, BETA, num_samples=3)
    const = 3 * (math.log(math.sqrt(BETA / 4)) + 0.5 * math.log(2 * math.pi))
    torch.testing.assert_close(neg_elbo, (2 * 3 / BETA) * loss + const, rtol=1e-5, atol=1e-5)


def test_vae_loss_and_neg_elbo_with_several_samples_match_a_per_sample_loop():
    """With num_samples L > 1 both estimates average L decodings of z_l = μ + σ ε_l (ε drawn (B, L, latent), as the
    product draws them); written here sample by sample with one row's obs per decoding, in float64."""
    torch.manual_seed(0)
    vae = VAE(obs_dim=11, act_dim=3, max_action=1.0, hidden_dim=64).double()
    batch = random_batch(n=16)
    obs, actions = batch.observations.double(), batch.actions.double()
    num_samples, sigma = 5, math.sqrt(BETA / 4)
    with torch.no_grad():
        mean, std = vae.encode(obs, actions)
        torch.manual_seed(7)
        eps = torch.randn(16, num_samples, vae.latent_dim).double()
        recon_error, nll = torch.zeros(16, dtype=torch.float64), torch.zeros(16, dtype=torch.float64)
        for sample in range(num_samples):
            recon = vae.decode(obs, mean + std * eps[:, sample])
            recon_error += (recon - actions).pow(2).mean(-1) / num_samples
            nll += (0.5 * ((recon - actions) / sigma).pow(2) + math.log(sigma) + 0.5 * math.log(2 * math.pi)
                    ).sum(-1) / num_samples
        kl = -0.5 * (1 + 2 * torch.log(std) - mean.pow(2) - std.pow(2))
        expected_loss = recon_error + BETA * kl.mean(-1)
        expected_neg_elbo = nll + kl.sum(-1)
        torch.manual_seed(7)
        loss = vae.loss(obs, actions, BETA, num_samples=num_samples)
        torch.manual_seed(7)
        neg_elbo = vae.neg_elbo(obs, actions, BETA, num_samples=num_samples)
    torch.testing.assert_close(loss, expected_loss, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(neg_elbo, expected_neg_elbo, rtol=1e-10, atol=1e-12)
    torch.manual_seed(8)  # other draws give another value: the samples really enter
    assert not torch.allclose(vae.loss(obs, actions, BETA, num_samples=num_samples), loss)


def test_iwae_with_100_samples_is_tighter_than_one_sample_in_expectation():
    # Tiny VAE with a z-independent decoder: the exact −log p(a|s) is the decoder's NLL 0.2392178,
    # and −ELBO = 0.8073649 (= NLL + Σ KL). IWAE(L=1) is unbiased for −ELBO; IWAE(L=100) lies between.
    vae = tiny_vae(z_dependent=False)
    obs, actions = torch.zeros(4000, 1), torch.full((4000, 1), 0.3)
    torch.manual_seed(0)
    one = vae.iwae_neg_log_prob(obs, actions, BETA, num_samples=1).mean().item()
    hundred = vae.iwae_neg_log_prob(obs, actions, BETA, num_samples=100).mean().item()
    assert one == pytest.approx(0.8073649, abs=0.03)
    assert 0.2392178 - 1e-4 <= hundred < one - 0.3
    # A random VAE on hopper-sized data: same ordering, averaged over many states and draws.
    torch.manual_seed(0)
    vae = VAE(obs_dim=11, act_dim=3, max_action=1.0, hidden_dim=64)
    batch = random_batch(n=256)
    ones, hundreds, elbos = [], [], []
    for _ in range(20):
        ones.append(vae.iwae_neg_log_prob(batch.observations, batch.actions, BETA, 1).mean().item())
        hundreds.append(vae.iwae_neg_log_prob(batch.observations, batch.actions, BETA, 100).mean().item())
        elbos.append(vae.neg_elbo(batch.observations, batch.actions, BETA).mean().item())
    assert np.mean(hundreds) < np.mean(ones)
    assert np.mean(ones) == pytest.approx(np.mean(elbos), rel=0.02)  # two estimators of −ELBO agree


# --- λ, actor loss, divergence, dropout --------------------------------------------------------------
def test_lambda_schedule_and_defaults():
    values = [lambda_schedule(0.1, t, 0.2, 100) for t in (0, 25, 50, 80, 90, 100, 1000)]
    np.testing.assert_allclose(values, [0.1, 0.075, 0.05, 0.02, 0.02, 0.02, 0.02])
    assert lambda_schedule(0.2, 10, 0.0, 40) == pytest.approx(0.15)
    assert resolve_lambda(None, None, "d4rl:hopper-medium-v2") == 0.1
    assert resolve_lambda(None, "Walker2d-v4") == 0.2
    assert resolve_lambda(None, "HalfCheetah-v5") == 0.05
    assert resolve_lambda(0.7, "Hopper-v5") == 0.7
    with pytest.raises(ConfigError, match="set --lambd"):
        resolve_lambda(None, "mystery.hdf5")


def hand_agent(lambd=0.5, q_value=2.0, pi_bias=0.25, **overrides) -> SpotAgent:
    """obs 1, action 1: π(s) = tanh(pi_bias), Q1 = q_value everywhere, the tiny z-independent VAE."""
    cfg = small_config(lambd=lambd, hidden_dim=2, vae_hidden=2, vae_latent_dim=2, actor_dropout=0.0, **overrides)
    agent = SpotAgent(1, 1, 1.0, cfg)
    agent.vae.load_state_dict(tiny_vae(z_dependent=False).state_dict())
    with torch.no_grad():
        for p in [*agent.actor.parameters(), *agent.critic.parameters()]:
            p.zero_()
        agent.actor.l3.bias.fill_(pi_bias)
        agent.critic.net.biases[2][0].fill_(q_value)
    return agent


def test_actor_loss_matches_manual_computation():
    agent = hand_agent()
    loss, q, density = agent.actor_loss(torch.randn(5, 1))
    pi = math.tanh(0.25)
    # −Q.mean()/|Q|.mean() = −1 for a constant positive Q; D = (0 − π)² + β · mean KL
    manual = -1.0 + 0.5 * (pi ** 2 + BETA * KL_MEAN)
    assert manual == pytest.approx(-0.8989890268, rel=1e-9)
    assert loss.item() == pytest.approx(manual, rel=1e-6)
    np.testing.assert_allclose(q.detach().numpy(), 2.0)
    np.testing.assert_allclose(density.detach().numpy(), pi ** 2 + BETA * KL_MEAN, rtol=1e-6)
    # General networks: the same formula from the parts (dropout off to compare two passes).
    torch.manual_seed(0)
    agent = SpotAgent(11, 3, 1.0, small_config(lambd=0.3, actor_dropout=0.0))
    obs = random_batch().observations
    torch.manual_seed(5)
    loss, _, _ = agent.actor_loss(obs)
    with torch.no_grad():
        pi = agent.actor(obs)
        q1 = agent.critic(obs, pi)[0]
        torch.manual_seed(5)
        density = agent.vae.loss(obs, pi, BETA)
    assert loss.item() == pytest.approx((-q1.mean() / q1.abs().mean() + 0.3 * density.mean()).item(), rel=1e-5)
    agent = SpotAgent(11, 3, 1.0, small_config(lambd=0.3, actor_dropout=0.0, iwae=True, num_samples=7))
    torch.manual_seed(5)
    _, _, density = agent.actor_loss(obs)
    torch.manual_seed(5)
    expected = agent.vae.iwae_neg_log_prob(obs, agent.actor(obs), BETA, 7)
    torch.testing.assert_close(density, expected)


def _critic_q_equals_10_plus_action(agent: SpotAgent) -> None:
    with torch.no_grad():
        for p in agent.critic.parameters():
            p.zero_()
        agent.critic.net.weights[0][0, 1, 0] = 1.0  # input (obs, action): hidden unit 0 = action + 10
        agent.critic.net.biases[0][0, 0, 0] = 10.0
        agent.critic.net.weights[1][0, 0, 0] = 1.0
        agent.critic.net.weights[2][0, 0, 0] = 1.0


def test_actor_step_directions_and_frozen_vae():
    batch = Batch(torch.randn(32, 1), torch.zeros(32, 1), torch.zeros(32), torch.randn(32, 1), torch.zeros(32))
    # Q1 = 10 + a and λ = 0: the actor step must raise the action (a sign error would lower it).
    agent = hand_agent(lambd=0.0, pi_bias=0.0, policy_delay=1, critic_lr=1e-12, actor_lr=1e-2)
    _critic_q_equals_10_plus_action(agent)
    before = agent.act(batch.observations.numpy()).mean()
    agent.update(batch)
    assert agent.act(batch.observations.numpy()).mean() > before + 5e-3
    # Constant Q and λ > 0: D = π² + const, so the step must move π(s) = tanh(0.25) towards 0.
    agent = hand_agent(lambd=1.0, pi_bias=0.25, policy_delay=1, critic_lr=1e-12, actor_lr=1e-2)
    vae_before = {k: v.clone() for k, v in agent.vae.state_dict().items()}
    before = agent.act(batch.observations.numpy()).mean()
    metrics = agent.update(batch)
    assert agent.act(batch.observations.numpy()).mean() < before - 5e-3
    assert metrics["density_loss"] == pytest.approx(math.tanh(0.25) ** 2 + BETA * KL_MEAN, rel=1e-5)
    for k, v in agent.vae.state_dict().items():
        assert torch.equal(v, vae_before[k])
    assert all(p.grad is None and not p.requires_grad for p in agent.vae.parameters())


def test_critic_loss_matches_manual_td_target():
    # Critics output the constants 0.5 and 1.0, target critics 3 and 4 (the min, 3, is used).
    agent = hand_agent(policy_delay=10, target_noise=0.0)
    with torch.no_grad():
        agent.critic.net.biases[2].copy_(torch.tensor([0.5, 1.0]).view(2, 1, 1))
        for p in agent.critic_target.parameters():
            p.zero_()
        agent.critic_target.net.biases[2].copy_(torch.tensor([3.0, 4.0]).view(2, 1, 1))
    batch = Batch(torch.zeros(2, 1), torch.zeros(2, 1), torch.tensor([1.0, 2.0]), torch.zeros(2, 1),
                  torch.tensor([0.0, 1.0]))
    # y = r + 0.99 · (1 − terminal) · 3 = (3.97, 2); loss = Σ_critics mean (Q − y)²
    manual = ((0.5 - 3.97) ** 2 + (0.5 - 2) ** 2) / 2 + ((1 - 3.97) ** 2 + (1 - 2) ** 2) / 2
    assert manual == pytest.approx(12.0559, rel=1e-9)
    assert agent.update(batch)["critic_loss"] == pytest.approx(manual, rel=1e-6)


def test_divergence_guard_raises_a_clear_error():
    """The update notes the divergence on the device (no sync); check_divergence, which the recorder runs before
    every record and checkpoint, raises naming the first update past the limit."""
    agent = hand_agent(q_value=2e4, policy_delay=1)
    agent.update(random_batch(obs_dim=1, act_dim=1))
    agent.update(random_batch(obs_dim=1, act_dim=1))
    with pytest.raises(QDivergenceError, match=r"at update 1: the mean Q1\(s, π\(s\)\) is 20000.*q_divergence_limit=10000"):
        agent.check_divergence()
    agent = hand_agent(q_value=2e4, policy_delay=1, q_divergence_limit=1e5)
    agent.update(random_batch(obs_dim=1, act_dim=1))  # under a raised limit it goes on
    agent.check_divergence()


def test_a_diverging_run_stops_before_its_next_record_and_checkpoint(tmp_path, tiny_data):
    """With a limit every Q passes, the run stops at its first policy-stage record with the divergence error; nothing
    of the policy stage is recorded or checkpointed."""
    from common.checkpoint import load_checkpoint

    with pytest.raises(QDivergenceError, match="at update 2: the mean Q1"):  # the first actor step (policy_delay 2)
        train_offline.main(offline_args(tiny_data, tmp_path / "d", q_divergence_limit=1e-12))
    records = read_metrics(tmp_path / "d" / "metrics.jsonl")
    assert [r["step"] for r in records] == [20, 40]  # the VAE stage's records only
    assert load_checkpoint(tmp_path / "d" / "checkpoints" / "last.pt")["step"] == 40  # the last good one


def test_dropout_off_when_acting_on_in_updates():
    torch.manual_seed(0)
    agent = SpotAgent(11, 3, 1.0, small_config(actor_dropout=0.5))
    obs = random_batch().observations
    rng = torch.get_rng_state()
    first, second = agent.act(obs.numpy()), agent.act(obs.numpy())
    assert torch.equal(torch.get_rng_state(), rng)  # acting draws no dropout masks
    np.testing.assert_array_equal(first, second)
    agent.actor.eval()
    with torch.no_grad():
        np.testing.assert_allclose(first, agent.actor(obs).numpy(), rtol=0, atol=0)
    agent.actor.train()
    assert agent.actor.training and agent.actor_target.training
    with torch.no_grad():
        assert not torch.equal(agent.actor(obs), agent.actor(obs))
        assert not torch.equal(agent.actor_target(obs), agent.actor_target(obs))
    assert agent.actor_loss(obs)[0].item() != agent.actor_loss(obs)[0].item()


def test_save_load_gives_identical_actions_and_updates(tmp_path):
    torch.manual_seed(0)
    normalizer = ObsNormalizer(torch.randn(11), torch.rand(11) + 0.5)
    agent = SpotAgent(11, 3, 1.0, small_config(), "cpu", normalizer)
    for i in range(5):
        agent.update(random_batch(seed=i))
    path = save_checkpoint(tmp_path / "agent.pt", {"algo": "spot", "kind": "agent", "phase": "offline",
                                                   "config": small_config().to_dict(), "agent": agent.state_dict()})
    payload = load_checkpoint(path, algo="spot", kind="agent")
    other = SpotAgent(11, 3, 1.0, small_config())
    other.load_state_dict(payload["agent"])
    obs = random_batch(seed=9).observations.numpy() * 3
    np.testing.assert_array_equal(agent.act(obs), other.act(obs))
    rebuilt, _ = load_agent(path)
    np.testing.assert_array_equal(agent.act(obs), rebuilt.act(obs))
    results = []
    for a in (agent, other):  # exact resume: the next updates match too
        torch.manual_seed(3)
        results.append([a.update(random_batch(seed=10 + i)) for i in range(3)])
    assert results[0] == results[1]
    np.testing.assert_array_equal(agent.act(obs), other.act(obs))


def test_configs_hold_only_what_differs_from_the_defaults_with_the_issue_lambdas():
    lambdas = {"hopper": 0.1, "walker2d": 0.2, "halfcheetah": 0.05}
    defaults = dataclasses.asdict(Config())
    for env, lambd in lambdas.items():
        for level in ("medium", "medium-replay"):
            path = REPO / "configs" / "spot" / f"{env}-{level}.yaml"
            values = load_yaml(path)
            assert all(k == "dataset" or defaults[k] != v for k, v in values.items())  # only the differences
            assert set(values) == {"dataset", "lambd", "wandb_group"}
            cfg, _ = parse_config(Config, ["--config", str(path)])
            assert cfg.dataset == f"d4rl:{env}-{level}-v2" and cfg.lambd == lambd
            assert cfg.vae_latent_dim is None and cfg.lambda_decay_steps is None
            assert cfg.run_dir is None and cfg.env is None
            assert (cfg.vae_steps, cfg.offline_steps, cfg.online_steps, cfg.beta) == (100_000, 1_000_000, 250_000, 0.5)


def test_config_validation():
    with pytest.raises(ConfigError, match="vae_steps"):
        Config(vae_steps=0).validate()
    Config(vae_steps=0, vae_checkpoint="vae.pt").validate()
    with pytest.raises(ConfigError, match="actor_dropout"):
        Config(actor_dropout=1.0).validate()
    with pytest.raises(ConfigError, match="lambd"):
        Config(lambd=-1.0).validate()


# --- scripts: tiny data ------------------------------------------------------------------------------
@pytest.fixture
def tiny_data(tmp_path) -> Path:
    path = tmp_path / "tiny-hopper.hdf5"
    write_d4rl_file(path, episodes=[(40, "terminal"), (60, "timeout"), (30, "terminal")], next_obs=True)
    return path


def offline_args(data, run_dir, **overrides) -> list[str]:
    values = dict(dataset=data, run_dir=run_dir, wandb_mode="disabled", device="cpu", threads=1, batch_size=32,
                  vae_hidden=32, hidden_dim=32, vae_steps=40, offline_steps=60, eval_every=20, checkpoint_every=20,
                  eval_episodes=2, lambd=0.1)
    values.update(overrides)
    return [f"--{k}={v}" for k, v in values.items()]


def test_vae_checkpoint_written_and_reused(tmp_path, tiny_data):
    first = train_offline.main(offline_args(tiny_data, tmp_path / "a"))
    vae_path = tmp_path / "a" / "checkpoints" / "vae.pt"
    vae_payload = load_checkpoint(vae_path, algo="spot", kind="vae")
    dataset = read_d4rl_hdf5(tiny_data)
    assert ObsNormalizer.from_state_dict(vae_payload["normalizer"]).matches(
        ObsNormalizer.from_observations(dataset.observations))
    offline = load_checkpoint(first, algo="spot", kind="agent")
    assert "vae_trainer" not in offline["agent"]
    for k, v in vae_payload["vae"].items():  # the policy stage used exactly this (frozen) VAE
        assert torch.equal(v, offline["agent"]["vae"][k])
    assert [r["step"] for r in read_metrics(tmp_path / "a" / "metrics.jsonl")] == [20, 40, 60, 80, 100]

    second = train_offline.main(offline_args(tiny_data, tmp_path / "b", vae_checkpoint=vae_path, vae_steps=0))
    records = read_metrics(tmp_path / "b" / "metrics.jsonl")
    assert [r["step"] for r in records] == [20, 40, 60]  # no VAE stage
    assert all("eval/normalized_score" in r and not any(k.startswith("train/vae") for k in r) for r in records)
    assert not (tmp_path / "b" / "checkpoints" / "vae.pt").exists()
    reused = load_checkpoint(second, algo="spot", kind="agent")
    for k, v in vae_payload["vae"].items():
        assert torch.equal(v, reused["agent"]["vae"][k])

    other_data = tmp_path / "other-hopper.hdf5"
    write_d4rl_file(other_data, episodes=[(50, "terminal"), (50, "terminal")], next_obs=True, seed=3)
    with pytest.raises(VaeMismatchError, match="normalized differently"):
        train_offline.main(offline_args(other_data, tmp_path / "c", vae_checkpoint=vae_path))
    with pytest.raises(VaeMismatchError, match="normalize_states=False"):
        train_offline.main(offline_args(tiny_data, tmp_path / "d", vae_checkpoint=vae_path, normalize_states="false"))
    with pytest.raises(VaeMismatchError, match="shapes"):
        train_offline.main(offline_args(tiny_data, tmp_path / "e", vae_checkpoint=vae_path, vae_hidden=16))


class Interrupted(Exception):
    pass


def interrupt_after(monkeypatch, cls, calls: int) -> None:
    """Makes `cls.update` raise after `calls` calls, like a kill in the middle of a run."""
    original, count = cls.update, [0]

    def update(self, batch):
        count[0] += 1
        if count[0] > calls:
            raise Interrupted
        return original(self, batch)

    monkeypatch.setattr(cls, "update", update)


def assert_same_agents(path_a, path_b):
    a, b = load_checkpoint(path_a)["agent"], load_checkpoint(path_b)["agent"]
    for name in ("actor", "critic", "actor_target", "critic_target", "vae"):
        for k, v in a[name].items():
            assert torch.equal(v, b[name][k]), f"{name}.{k} differs"


def test_offline_and_online_resume_after_interruption_give_identical_metrics(tmp_path, tiny_data, monkeypatch):
    args = dict(vae_steps=60, offline_steps=60)
    reference = train_offline.main(offline_args(tiny_data, tmp_path / "ref" / "offline", **args))
    run = tmp_path / "run" / "offline"
    with monkeypatch.context() as patch:  # stop inside the VAE stage (last.pt at step 40)
        interrupt_after(patch, VaeTrainer, 50)
        with pytest.raises(Interrupted):
            train_offline.main(offline_args(tiny_data, run, **args))
    assert load_checkpoint(run / "checkpoints" / "last.pt")["step"] == 40
    with monkeypatch.context() as patch:  # resume, then stop inside the policy stage (last.pt at step 80)
        interrupt_after(patch, SpotAgent, 30)
        with pytest.raises(Interrupted):
            train_offline.main(offline_args(tiny_data, run, **args))
    assert load_checkpoint(run / "checkpoints" / "last.pt")["step"] == 80
    resumed = train_offline.main(offline_args(tiny_data, run, **args))
    assert (run / "metrics.jsonl").read_text() == (tmp_path / "ref" / "offline" / "metrics.jsonl").read_text()
    assert_same_agents(reference, resumed)
    assert not (run / "checkpoints" / "last.pt").exists()

    online = ["--online_steps=100", "--eval_every=25", "--checkpoint_every=20", "--eval_episodes=2"]
    ref_online = train_online.main(["--checkpoint", str(reference), *online])
    assert ref_online == tmp_path / "ref" / "online" / "checkpoints" / "online.pt"  # default: the sibling dir
    with monkeypatch.context() as patch:
        interrupt_after(patch, SpotAgent, 55)
        with pytest.raises(Interrupted):
            train_online.main(["--checkpoint", str(resumed), *online])
    assert (tmp_path / "run" / "online" / "checkpoints" / "last.pt").exists()
    final = train_online.main(["--checkpoint", str(resumed), *online])
    ref_text = (tmp_path / "ref" / "online" / "metrics.jsonl").read_text()
    assert (tmp_path / "run" / "online" / "metrics.jsonl").read_text() == ref_text
    assert_same_agents(ref_online, final)

    records = read_metrics(tmp_path / "ref" / "online" / "metrics.jsonl")
    evals = [r for r in records if "eval/normalized_score" in r]
    assert [r["step"] for r in evals] == [0, 25, 50, 75, 100]
    # λ_t = 0.1 · max(0.2, 1 − t/100), logged at every evaluation
    np.testing.assert_allclose([r["train/lambda"] for r in evals], [0.1, 0.075, 0.05, 0.025, 0.02])
    episodes = [r for r in records if "online/episode_return" in r]
    assert episodes and all({"online/episode_length", "online/episode_normalized_score"} <= set(r) for r in episodes)
    saved = yaml.safe_load((tmp_path / "ref" / "online" / "config.yaml").read_text())
    assert saved["offline_checkpoint"] == str(reference.resolve())
    assert saved["vae_steps"] == 60 and saved["lambd"] == 0.1  # the base config is the offline run's


def test_online_options_and_architecture_guard(tmp_path, tiny_data):
    offline = train_offline.main(offline_args(tiny_data, tmp_path / "x" / "offline"))
    base = ["--checkpoint", str(offline), "--online_steps=20", "--eval_every=10", "--eval_episodes=1"]
    path = train_online.main([*base, "--reset_optimizers=true", "--lambd=0.4", "--lambda_decay_steps=10",
                              "--run_dir", str(tmp_path / "reset")])
    # learning rates given online are the ones Adam uses (not the offline optimizer state's)
    lr_path = train_online.main([*base, "--actor_lr=1e-4", "--critic_lr=2e-4", "--run_dir", str(tmp_path / "lr")])
    lr_state = load_checkpoint(lr_path)["agent"]
    assert [g["lr"] for g in lr_state["actor_optimizer"]["param_groups"]] == [1e-4]
    assert [g["lr"] for g in lr_state["critic_optimizer"]["param_groups"]] == [2e-4]
    assert load_checkpoint(offline)["agent"]["actor_optimizer"]["param_groups"][0]["lr"] == 3e-4
    evals = [r for r in read_metrics(tmp_path / "reset" / "metrics.jsonl") if "train/lambda" in r]
    np.testing.assert_allclose([r["train/lambda"] for r in evals], [0.4, 0.08, 0.08])
    state = load_checkpoint(path)["agent"]
    steps = [s["step"].item() for s in state["critic_optimizer"]["state"].values()]
    assert steps and all(s == 20 for s in steps)  # fresh Adam: only the 20 online critic steps counted
    with pytest.raises(ConfigError, match="hidden_dim cannot change"):
        train_online.main([*base, "--hidden_dim=64", "--run_dir", str(tmp_path / "bad")])


# --- slow: real kills, learning --------------------------------------------------------------------
def _run(args: list[str], module: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}
    return subprocess.Popen([sys.executable, "-m", module, *args], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _kill_when(proc: subprocess.Popen, last: Path, min_step: int, timeout: float = 240) -> int:
    """SIGKILLs `proc` once last.pt holds a step >= min_step; returns that step."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert proc.poll() is None, f"run ended before it could be killed: {proc.stderr.read().decode()[-2000:]}"
        if last.exists():
            try:
                step = load_checkpoint(last)["step"]
            except Exception:  # replaced while reading
                step = -1
            if step >= min_step:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                return step
        time.sleep(0.02)
    proc.kill()
    raise AssertionError("no checkpoint appeared in time")


def _finish(args, module):
    proc = _run(args, module)
    assert proc.wait(timeout=300) == 0, proc.stderr.read().decode()[-3000:]


@pytest.mark.slow
def test_sigkill_resume_offline_and_online(tmp_path, tiny_data):
    sizes = dict(vae_hidden=128, hidden_dim=128, batch_size=128, vae_steps=300, offline_steps=400, eval_every=50,
                 checkpoint_every=50)
    ref, run = tmp_path / "ref" / "offline", tmp_path / "run" / "offline"
    _finish(offline_args(tiny_data, ref, **sizes), "spot.train_offline")
    last = run / "checkpoints" / "last.pt"
    kills = [_kill_when(_run(offline_args(tiny_data, run, **sizes), "spot.train_offline"), last, 1)]
    kills.append(_kill_when(_run(offline_args(tiny_data, run, **sizes), "spot.train_offline"), last, 350))
    assert kills[0] < 300 <= kills[1] < 700  # once in the VAE stage, once in the policy stage
    _finish(offline_args(tiny_data, run, **sizes), "spot.train_offline")
    assert (run / "metrics.jsonl").read_text() == (ref / "metrics.jsonl").read_text()
    assert_same_agents(ref / "checkpoints" / "offline.pt", run / "checkpoints" / "offline.pt")

    online = ["--online_steps=400", "--eval_every=100", "--checkpoint_every=50", "--eval_episodes=2"]
    _finish(["--checkpoint", str(ref / "checkpoints" / "offline.pt"), *online], "spot.train_online")
    args = ["--checkpoint", str(run / "checkpoints" / "offline.pt"), *online]
    _kill_when(_run(args, "spot.train_online"), tmp_path / "run" / "online" / "checkpoints" / "last.pt", 100)
    _finish(args, "spot.train_online")
    ref_text = (tmp_path / "ref" / "online" / "metrics.jsonl").read_text()
    assert (tmp_path / "run" / "online" / "metrics.jsonl").read_text() == ref_text
    assert_same_agents(tmp_path / "ref" / "online" / "checkpoints" / "online.pt",
                       tmp_path / "run" / "online" / "checkpoints" / "online.pt")


@pytest.mark.slow
def test_learns_on_regenerated_hopper(tmp_path):
    data = shared_dataset("hopper-medium-gen.hdf5")
    # Reduced VAE and budget; λ = 1 (the official default weight) so that 1,500 updates already move
    # the policy into the data's support. An untrained actor falls over at once (score ~2).
    path = train_offline.main(offline_args(data, tmp_path / "offline", vae_hidden=256, hidden_dim=256, batch_size=256,
                                           vae_steps=500, offline_steps=1500, eval_every=500, checkpoint_every=10_000,
                                           eval_episodes=5, lambd=1.0))
    records = read_metrics(tmp_path / "offline" / "metrics.jsonl")
    untrained = SpotAgent(11, 3, 1.0, small_config(hidden_dim=256))
    untrained_score = evaluate(untrained.act, "Hopper-v5", 5, seed=0).normalized_score
    scores = [r["eval/normalized_score"] for r in records if "eval/normalized_score" in r]
    # Seen: untrained 2-7; trained evals 17-57 (the policy is not stable yet at this budget). With the
    # density term's sign flipped every evaluation scores 0.6.
    assert len(scores) == 3
    assert np.mean(scores) > untrained_score + 15 and max(scores) > untrained_score + 25, (untrained_score, scores)
    density = [r["train/density_loss"] for r in records if "train/density_loss" in r]
    assert density[-1] < density[0]  # π(s) moves into the VAE's support
    vae_losses = [r["train/vae_loss"] for r in records if "train/vae_loss" in r]
    assert vae_losses[-1] < 0.15
    assert load_checkpoint(path, algo="spot", kind="agent")["step"] == 2000


def test_dropout_keep_masks_are_bernoulli_and_independent():
    """spot.networks.dropout_keep_masks: each element kept with probability 1 − p; the two layers of a draw and
    successive draws (updates) independent. 20 draws × 2 layers × 256 × 256 = 2.6M elements."""
    from spot.networks import dropout_keep_masks

    torch.manual_seed(0)
    p = 0.1
    masks = torch.stack([dropout_keep_masks(2, (256, 256), p, "cpu", torch.float32) for _ in range(20)]).double()
    assert set(masks.unique().tolist()) == {0.0, 1.0}
    n = masks.numel()
    assert abs(masks.mean().item() - (1 - p)) < 5 * math.sqrt(p * (1 - p) / n)  # 5 standard errors (1.8e-4 each)
    per_element = masks.flatten(0, 1).sum(0)  # how often each of the 65,536 positions was kept in 40 masks
    assert per_element.var().item() == pytest.approx(40 * p * (1 - p), rel=0.05)  # binomial: no repeated masks
    flat = masks.flatten(2)
    for a, b in ((flat[:, 0], flat[:, 1]), (flat[:-1].flatten(0, 1), flat[1:].flatten(0, 1))):
        corr = torch.corrcoef(torch.stack([a.flatten(), b.flatten()]))[0, 1].item()
        assert abs(corr) < 0.005  # layers of one draw, and consecutive draws
