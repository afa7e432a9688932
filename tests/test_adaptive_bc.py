"""adaptive_bc (REDQ+BC): losses and targets against hand computation, the alpha controller, the
training scripts (records, checkpoints, resume after a kill) and a short learning run."""
from __future__ import annotations

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

from adaptive_bc import train_offline, train_online
from adaptive_bc.agent import ALGO, Config, RedqBcAgent
from adaptive_bc.controller import AlphaController, next_alpha
from adaptive_bc.networks import EnsembleCritic, ensemble_init_
from common.buffer import Batch, ReplayBuffer
from common.checkpoint import load_checkpoint, save_checkpoint
from common.config import ConfigError, parse_config
from common.datasets import load_dataset
from common.layout import read_metrics
from common.normalizer import ObsNormalizer
from conftest import REPO, shared_dataset, write_d4rl_file

KP, KD, R_TARGET, ALPHA_MAX = 3e-5, 1e-4, 1.05, 0.4


# --- helpers -------------------------------------------------------------------------------------
def t(rows) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float32)


def hand_agent(**overrides) -> RedqBcAgent:
    """obs_dim = act_dim = 1, two critics with hidden size 1: Q_i(s, a) = k_i relu(s + a) + c_i with
    k = (1, 2), c = (0, -5); the actor outputs tanh(atanh(0.5)) = 0.5 for every state."""
    cfg = Config(num_critics=2, num_target_critics=2, hidden_dim=1, wandb_mode="disabled", **overrides)
    agent = RedqBcAgent(1, 1, 1.0, cfg)
    with torch.no_grad():
        for critic in (agent.critic, agent.critic_target):
            (w1, w2, w3), (b1, b2, b3) = critic.net.weights, critic.net.biases
            w1.fill_(1.0), b1.zero_(), w2.fill_(1.0), b2.zero_()
            w3.copy_(t([1.0, 2.0]).view(2, 1, 1)), b3.copy_(t([0.0, -5.0]).view(2, 1, 1))
        for actor in (agent.actor, agent.actor_target):
            for p in actor.parameters():
                p.zero_()
            actor.l3.bias.fill_(math.atanh(0.5))
    return agent


def numpy_params(critic: EnsembleCritic) -> list[np.ndarray]:
    return [p.detach().double().numpy().copy() for p in (*critic.net.weights, *critic.net.biases)]


def manual_q(params, obs, act, member: int) -> np.ndarray:
    """One member's Q-values in float64 with plain matmuls (no batching tricks)."""
    w1, w2, w3, b1, b2, b3 = params
    x = np.concatenate([obs, act], axis=1).astype(np.float64)
    h = np.maximum(x @ w1[member] + b1[member, 0], 0.0)
    h = np.maximum(h @ w2[member] + b2[member, 0], 0.0)
    return h @ w3[member, :, 0] + b3[member, 0, 0]


def manual_actor(actor, obs) -> np.ndarray:
    p = {k: v.detach().double().numpy() for k, v in actor.state_dict().items()}
    h = np.maximum(obs @ p["l1.weight"].T + p["l1.bias"], 0.0)
    h = np.maximum(h @ p["l2.weight"].T + p["l2.bias"], 0.0)
    return actor.max_action * np.tanh(h @ p["l3.weight"].T + p["l3.bias"])


def random_batch(n: int, obs_dim: int, act_dim: int, seed: int = 0) -> Batch:
    g = torch.Generator().manual_seed(seed)
    return Batch(torch.randn(n, obs_dim, generator=g), torch.rand(n, act_dim, generator=g) * 2 - 1,
                 torch.randn(n, generator=g), torch.randn(n, obs_dim, generator=g),
                 (torch.rand(n, generator=g) < 0.3).float())


class TargetSpy:
    """Records every call of the target critic: which members ran and the output's shape."""

    def __init__(self, agent: RedqBcAgent):
        self.calls: list[tuple[torch.Tensor | None, tuple]] = []
        forward = agent.critic_target.forward

        def spy(obs, action, members=None, detach_params=False):
            out = forward(obs, action, members, detach_params)
            self.calls.append((None if members is None else members.clone(), tuple(out.shape)))
            return out

        agent.critic_target.forward = spy


# --- config files ----------------------------------------------------------------------------------
@pytest.mark.parametrize("env", ["hopper", "walker2d", "halfcheetah"])
@pytest.mark.parametrize("level", ["medium", "medium-replay"])
def test_config_files_hold_only_the_dataset_and_give_paper_values(env, level):
    path = REPO / "configs" / "adaptive_bc" / f"{env}-{level}.yaml"
    import yaml

    written = yaml.safe_load(path.read_text())
    assert written == {"dataset": f"d4rl:{env}-{level}-v2"}  # every other key is the dataclass default
    cfg, _ = parse_config(Config, ["--config", str(path)])
    assert cfg.dataset == f"d4rl:{env}-{level}-v2"
    assert cfg.env is None and cfg.run_dir is None  # derived keys
    paper = Config(dataset=cfg.dataset)
    assert cfg == paper
    assert (cfg.num_critics, cfg.num_target_critics, cfg.hidden_dim, cfg.gamma, cfg.tau) == (10, 2, 256, 0.99, 0.005)
    assert (cfg.alpha_offline, cfg.alpha_max, cfg.kp, cfg.kd, cfg.r_target) == (0.4, 0.4, 3e-5, 1e-4, 1.05)
    assert (cfg.utd, cfg.policy_delay, cfg.target) == (10, 2, "redq")
    assert (cfg.offline_steps, cfg.online_steps, cfg.eval_every, cfg.eval_episodes) == (1_000_000, 250_000, 5000, 10)


def test_config_rejects_bad_values():
    with pytest.raises(ConfigError, match="target="):
        parse_config(Config, ["--target", "mean"])
    with pytest.raises(ConfigError, match="num_target_critics"):
        parse_config(Config, ["--num_critics", "3", "--num_target_critics", "4"])
    with pytest.raises(ConfigError, match="tau"):
        parse_config(Config, ["--tau", "0"])


# --- networks ----------------------------------------------------------------------------------------
def test_critic_init_is_trunc_normal_with_fan_in_std_and_zero_bias():
    torch.manual_seed(0)
    critic = EnsembleCritic(17, 6, num_critics=10, hidden_dim=256)
    for w, b, fan_in in zip(critic.net.weights, critic.net.biases, (23, 256, 256)):
        assert w.shape[1] == fan_in
        assert w.std().item() == pytest.approx(1 / (2 * math.sqrt(fan_in)), rel=0.05)
        assert w.mean().item() == pytest.approx(0.0, abs=0.01)
        assert torch.all(b == 0)
    # The bounds are torch's absolute +-2 (not +-2 std): with fan_in 1 the std is 0.5, so +-2 cuts at 4 std.
    w, b = torch.empty(100, 1, 1000), torch.ones(100, 1, 1000)
    torch.manual_seed(0)
    ensemble_init_(w, b)
    assert w.abs().max().item() <= 2.0 and w.abs().max().item() > 1.8
    assert w.std().item() == pytest.approx(0.5, rel=0.02) and torch.all(b == 0)


def test_ensemble_members_match_separate_networks_and_subsets():
    torch.manual_seed(1)
    critic = EnsembleCritic(3, 2, num_critics=5, hidden_dim=8)
    obs, act = torch.randn(7, 3), torch.rand(7, 2)
    params = numpy_params(critic)
    q = critic(obs, act).detach().double().numpy()
    assert q.shape == (5, 7)
    for i in range(5):
        np.testing.assert_allclose(q[i], manual_q(params, obs.numpy(), act.numpy(), i), rtol=1e-5, atol=1e-6)
    sub = critic(obs, act, members=torch.tensor([3, 1])).detach().double().numpy()
    np.testing.assert_allclose(sub, q[[3, 1]], rtol=1e-6, atol=1e-6)


# --- TD target, losses ----------------------------------------------------------------------------
def test_td_target_hand_computed():
    agent = hand_agent()
    next_obs, rewards, terminals = t([[1.0], [2.0]]), t([1.0, 0.0]), t([0.0, 1.0])
    # a' = 0.5 + noise = (0.6, 0.3); Q0 = relu(s'+a') = (1.6, 2.3); Q1 = 2 relu(s'+a') - 5 = (-1.8, -0.4)
    y = agent.td_target(next_obs, rewards, terminals, t([[0.1], [-0.2]]), torch.tensor([0, 1]))
    assert y.tolist() == pytest.approx([1 + 0.99 * -1.8, 0.0], abs=1e-6)  # terminal: no bootstrap
    y = agent.td_target(next_obs, rewards, terminals, t([[0.1], [-0.2]]), torch.tensor([0]))
    assert y.tolist() == pytest.approx([1 + 0.99 * 1.6, 0.0], abs=1e-6)
    # noisy actions are clipped to +-max_action: a' = clip(1.4, -1.5) = (1, -1) -> Q1 = (-1, -3)
    y = agent.td_target(next_obs, rewards, t([0.0, 0.0]), t([[0.9], [-2.0]]), None)
    assert y.tolist() == pytest.approx([1 + 0.99 * -1.0, 0.99 * -3.0], abs=1e-6)


def test_critic_and_actor_losses_hand_computed():
    agent = hand_agent(alpha_offline=0.4)
    obs, actions, y = t([[1.0], [2.0]]), t([[0.5], [-1.0]]), t([2.0, 1.0])
    loss, q = agent.critic_loss(obs, actions, y)
    # Q0 = (1.5, 1), Q1 = (-2, -3); errors vs y = (2, 1): 0.25, 0, 16, 16 -> mean 8.0625
    assert q.tolist() == [[1.5, 1.0], [-2.0, -3.0]]
    assert loss.item() == pytest.approx(8.0625)
    # pi = 0.5: Q0 = (1.5, 2.5), Q1 = (-2, 0); Qbar = (-0.25, 1.25): mean 0.5, mean|.| 0.75 -> q term -2/3
    # BC: ((0.5 - 0.5)^2 + (0.5 + 1)^2) / 2 = 1.125; loss = -2/3 + 0.4 * 1.125
    loss, q_term, bc = agent.actor_loss(obs, actions)
    assert q_term.item() == pytest.approx(-2 / 3)
    assert bc.item() == pytest.approx(1.125)
    assert loss.item() == pytest.approx(-2 / 3 + 0.45)
    # dL/dpi = (-0.5 * 1.5 / 0.75 + 0, -1.0 + 0.4 * 1.5) = (-1, -0.4); dpi/dz = 1 - 0.5^2
    loss.backward()
    assert agent.actor.l3.bias.grad.item() == pytest.approx(-1.4 * 0.75)
    assert all(p.grad is None for p in agent.critic.parameters())


def test_update_uses_exactly_two_random_target_critics_and_matches_manual_losses():
    torch.manual_seed(0)
    cfg = Config(num_critics=6, num_target_critics=2, hidden_dim=16, policy_delay=1, wandb_mode="disabled")
    agent = RedqBcAgent(3, 2, 1.0, cfg)
    spy = TargetSpy(agent)
    captured = {}
    td_target = agent.td_target

    def capture(next_obs, rewards, terminals, noise, members):
        captured.update(noise=noise.clone(), members=members)
        return td_target(next_obs, rewards, terminals, noise, members)

    agent.td_target = capture
    batch = random_batch(32, 3, 2)
    critic_before, target_before = numpy_params(agent.critic), numpy_params(agent.critic_target)
    metrics = agent.update(batch)

    assert len(spy.calls) == 1
    members, shape = spy.calls[0]
    assert shape == (2, 32) and len(set(members.tolist())) == 2 and all(0 <= m < 6 for m in members.tolist())
    assert captured["noise"].abs().max().item() <= 0.5
    # Manual TD target from the two chosen target critics, then the critic loss of all six members.
    o, a, r = batch.observations.numpy(), batch.actions.numpy(), batch.rewards.numpy().astype(np.float64)
    next_a = np.clip(manual_actor(agent.actor_target, batch.next_observations.numpy())
                     + captured["noise"].numpy(), -1.0, 1.0)
    next_q = np.min([manual_q(target_before, batch.next_observations.numpy(), next_a, m)
                     for m in members.tolist()], axis=0)
    y = r + 0.99 * (1 - batch.terminals.numpy()) * next_q
    q = np.stack([manual_q(critic_before, o, a, i) for i in range(6)])
    assert metrics["critic_loss"] == pytest.approx(np.mean((q - y) ** 2), rel=1e-5)
    assert metrics["q_mean"] == pytest.approx(q.mean(), rel=1e-5, abs=1e-6)

    # Over many updates every member gets picked, always two distinct ones.
    picks = [tuple(agent.target_members().tolist()) for _ in range(300)]
    assert all(len(set(p)) == 2 for p in picks)
    counts = np.bincount(np.array(picks).ravel(), minlength=6)
    assert counts.min() > 0.6 * 100 and counts.max() < 1.4 * 100  # expected 300 * 2 / 6 = 100 each


def test_target_min_uses_all_critics_online_only():
    torch.manual_seed(0)
    cfg = Config(num_critics=5, hidden_dim=8, target="min", wandb_mode="disabled")
    agent = RedqBcAgent(3, 2, 1.0, cfg)
    assert agent.use_min_target is False  # offline always uses redq; train_online switches it
    agent.use_min_target = True
    spy = TargetSpy(agent)
    agent.update(random_batch(16, 3, 2))
    assert [(m, s) for m, s in spy.calls] == [(None, (5, 16))]
    next_obs, rewards, terminals = torch.randn(4, 3), t([1.0, 2.0, 0.0, -1.0]), t([0.0, 0.0, 1.0, 0.0])
    noise = torch.zeros(4, 2)
    y = agent.td_target(next_obs, rewards, terminals, noise, None).numpy()
    params = numpy_params(agent.critic_target)
    next_a = manual_actor(agent.actor_target, next_obs.numpy())
    next_q = np.min([manual_q(params, next_obs.numpy(), next_a, i) for i in range(5)], axis=0)
    np.testing.assert_allclose(y, rewards.numpy() + 0.99 * (1 - terminals.numpy()) * next_q, rtol=1e-5, atol=1e-5)


def test_target_noise_is_scaled_and_clipped():
    torch.manual_seed(0)
    agent = RedqBcAgent(3, 2, 2.0, Config(num_critics=2, hidden_dim=8, wandb_mode="disabled"))
    captured = {}
    td_target = agent.td_target
    agent.td_target = lambda *args: (captured.update(noise=args[3]), td_target(*args))[1]
    agent.update(random_batch(4096, 3, 2))
    noise = captured["noise"]
    assert noise.abs().max().item() == pytest.approx(1.0)  # clip 0.5 x max_action 2
    assert 0.34 < noise.std().item() < 0.41  # std 0.2 x 2 = 0.4, a little less after clipping at 2.5 std


def test_actor_step_computes_no_critic_gradients():
    torch.manual_seed(0)
    agent = RedqBcAgent(3, 2, 1.0, Config(num_critics=4, hidden_dim=16, policy_delay=1, wandb_mode="disabled"))
    batch = random_batch(32, 3, 2)
    loss, _, _ = agent.actor_loss(batch.observations, batch.actions)
    grads = torch.autograd.grad(loss, [*agent.critic.parameters(), *agent.actor.parameters()], allow_unused=True)
    n_critic = len(list(agent.critic.parameters()))
    assert all(g is None for g in grads[:n_critic])  # no graph into the critic's weights
    assert all(g is not None and g.abs().sum() > 0 for g in grads[n_critic:])

    critic_after_critic_step = {}
    step = agent.critic_optimizer.step

    def remember():
        step()
        critic_after_critic_step.update({k: v.clone() for k, v in agent.critic.state_dict().items()})

    agent.critic_optimizer.step = remember
    actor_before = {k: v.clone() for k, v in agent.actor.state_dict().items()}
    agent.update(batch)  # policy_delay 1: critic step, then actor step
    assert all(p.grad is None for p in agent.critic.parameters())
    for k, v in agent.critic.state_dict().items():  # the actor step changed no critic weight
        assert torch.equal(v, critic_after_critic_step[k])
    assert any(not torch.equal(v, actor_before[k]) for k, v in agent.actor.state_dict().items())


def test_policy_delay_and_polyak_targets():
    torch.manual_seed(0)
    agent = RedqBcAgent(3, 2, 1.0, Config(num_critics=2, hidden_dim=8, policy_delay=2, tau=0.25,
                                          wandb_mode="disabled"))
    batch = random_batch(16, 3, 2)
    actor0 = {k: v.clone() for k, v in agent.actor.state_dict().items()}
    target0 = {k: v.clone() for k, v in agent.critic_target.state_dict().items()}
    agent.update(batch)  # update 1: critic only
    assert all(torch.equal(v, actor0[k]) for k, v in agent.actor.state_dict().items())
    assert all(torch.equal(v, target0[k]) for k, v in agent.critic_target.state_dict().items())
    agent.update(batch)  # update 2: actor step, then targets <- 0.75 target + 0.25 online
    for k, v in agent.critic_target.state_dict().items():
        torch.testing.assert_close(v, 0.75 * target0[k] + 0.25 * agent.critic.state_dict()[k])
    for k, v in agent.actor_target.state_dict().items():
        torch.testing.assert_close(v, 0.75 * actor0[k] + 0.25 * agent.actor.state_dict()[k])
    assert agent.num_updates == 2


# --- alpha controller ----------------------------------------------------------------------------------
def test_alpha_controller_scripted_episodes_hand_computed():
    c = AlphaController(alpha_max=ALPHA_MAX, kp=KP, kd=KD, r_target=R_TARGET)
    alpha = c.start(0.5)
    assert (alpha, c.r_avg) == (0.4, 0.5)
    # 1) score 0.3, 100 steps: 100 * (-3e-5 * 0.55 + 1e-4 * 0.2) = +3.5e-4 -> clipped at 0.4; r_avg 0.49
    alpha = c.episode_end(alpha, 0.3, 100)
    assert alpha == 0.4
    assert c.r_avg == pytest.approx(0.49, abs=1e-15)
    # 2) score 0.9, 1000 steps: 1000 * (-3e-5 * 0.56) = -0.0168 -> 0.3832; r_avg 0.045 + 0.4655 = 0.5105
    alpha = c.episode_end(alpha, 0.9, 1000)
    assert alpha == pytest.approx(0.3832, abs=1e-15)
    assert c.r_avg == pytest.approx(0.5105, abs=1e-15)
    # 3) score 0.2, 500 steps: 500 * (-3e-5 * 0.5395 + 1e-4 * 0.3105) = +0.0074325 -> 0.3906325; r_avg 0.494975
    alpha = c.episode_end(alpha, 0.2, 500)
    assert alpha == pytest.approx(0.3906325, abs=1e-15)
    assert c.r_avg == pytest.approx(0.494975, abs=1e-15)
    # 4) score 1.2, 1000 steps: 1000 * (-3e-5 * 0.555025) = -0.01665075 -> 0.37398175; r_avg 0.53022625
    alpha = c.episode_end(alpha, 1.2, 1000)
    assert alpha == pytest.approx(0.37398175, abs=1e-15)
    assert c.r_avg == pytest.approx(0.53022625, abs=1e-15)
    # clipped at 0: alpha 0.005, r_avg 0.5, score 0.9, 1000 steps: 0.005 - 0.0165 < 0
    assert next_alpha(0.005, 0.5, 0.9, 1000, kp=KP, kd=KD, r_target=R_TARGET, alpha_max=ALPHA_MAX) == \
        pytest.approx((0.0, 0.52), abs=1e-15)
    state = c.state_dict()
    assert state == {"r_avg": c.r_avg}  # α is the agent's, checkpointed once, with the agent
    other = AlphaController(alpha_max=ALPHA_MAX, kp=KP, kd=KD, r_target=R_TARGET)
    other.load_state_dict(state)
    assert other.episode_end(alpha, 0.7, 300) == c.episode_end(alpha, 0.7, 300) and other.r_avg == c.r_avg


@pytest.mark.parametrize("kd", [1e-4, 1e-2])
def test_alpha_stays_within_bounds(kd):
    rng = np.random.default_rng(0)
    c = AlphaController(alpha_max=ALPHA_MAX, kp=KP, kd=kd, r_target=R_TARGET)
    alpha = c.start(0.3)
    # steadily improving episodes (alpha falls to 0), a collapse (alpha back up to alpha_max), then anything
    scores = np.concatenate([np.linspace(0.3, 0.9, 100), np.full(30, -0.2), rng.uniform(-0.2, 1.5, 2000)])
    lengths = np.concatenate([np.full(130, 1000), rng.integers(1, 1001, 2000)])
    alphas = []
    for score, length in zip(scores, lengths):
        alpha = c.episode_end(alpha, score, int(length))
        alphas.append(alpha)
    assert min(alphas) >= 0.0 and max(alphas) <= ALPHA_MAX
    assert min(alphas[:100]) == 0.0 and max(alphas[100:130]) == ALPHA_MAX  # both bounds are reached


# --- checkpoints -----------------------------------------------------------------------------------------
def test_save_load_gives_identical_actions_and_updates(tmp_path):
    torch.manual_seed(0)
    cfg = Config(num_critics=3, hidden_dim=16, wandb_mode="disabled")
    normalizer = ObsNormalizer(np.array([1.0, -2.0, 0.5]), np.array([2.0, 0.5, 1.0]))
    agent = RedqBcAgent(3, 2, 1.0, cfg, normalizer=normalizer)
    for seed in range(5):
        agent.update(random_batch(16, 3, 2, seed))
    agent.alpha = 0.123
    path = save_checkpoint(tmp_path / "a.pt", {"algo": ALGO, "agent": agent.state_dict()})

    torch.manual_seed(99)
    other = RedqBcAgent(3, 2, 1.0, cfg)  # different init, identity normalizer
    other.load_state_dict(load_checkpoint(path, algo=ALGO)["agent"])
    assert other.normalizer.matches(normalizer) and other.alpha == 0.123 and other.num_updates == 5
    obs = np.random.default_rng(0).normal(size=(8, 3)).astype(np.float32)
    np.testing.assert_array_equal(other.act(obs), agent.act(obs))
    np.testing.assert_allclose(agent.act(obs), manual_actor(agent.actor, (obs - [1.0, -2.0, 0.5]) / [2.0, 0.5, 1.0]),
                               rtol=1e-5, atol=1e-6)
    # The next update (an actor step: update 6) is identical too: optimizers and counters were restored.
    batch = random_batch(16, 3, 2, 7)
    torch.manual_seed(5)
    m1 = agent.update(batch)
    torch.manual_seed(5)
    m2 = other.update(batch)
    assert m1 == m2
    for k, v in agent.state_dict()["critic_target"].items():
        assert torch.equal(v, other.state_dict()["critic_target"][k])


# --- training scripts ------------------------------------------------------------------------------------
TINY = ["--hidden_dim", "16", "--num_critics", "4", "--batch_size", "32", "--wandb_mode", "disabled"]


@pytest.fixture
def tiny_file(tmp_path) -> Path:
    path = tmp_path / "tiny-hopper.hdf5"
    write_d4rl_file(path, episodes=[(40, "terminal"), (60, "timeout"), (30, "terminal"), (50, "timeout")],
                    next_obs=True)
    return path


def offline_args(data: Path, run_dir: Path, steps: int = 40, every: int = 20, extra=()) -> list[str]:
    return ["--dataset", str(data), "--run_dir", str(run_dir), "--offline_steps", str(steps), "--eval_every",
            str(every), "--checkpoint_every", str(every), "--eval_episodes", "2", *TINY, *extra]


def official_alpha_step(alpha: float, r_avg: float, score: float, length: int) -> tuple[float, float]:
    """The official code's controller step, written out here independently of adaptive_bc.controller."""
    alpha = alpha + length * (-KP * (R_TARGET - r_avg) + KD * max(0.0, r_avg - score))
    return min(max(alpha, 0.0), ALPHA_MAX), 0.05 * score + 0.95 * r_avg


def test_offline_then_online_records_and_checkpoints(tmp_path, tiny_file, monkeypatch):
    offline_dir = tmp_path / "runs" / "tiny" / "offline"
    final = train_offline.main(offline_args(tiny_file, offline_dir, extra=["--normalize_states", "true"]))
    ckpt = load_checkpoint(final, algo=ALGO, kind="agent")
    assert ckpt["phase"] == "offline" and ckpt["step"] == 40 and ckpt["agent"]["num_updates"] == 40
    assert ckpt["agent"]["alpha"] == 0.4
    records = read_metrics(offline_dir / "metrics.jsonl")
    assert [r["step"] for r in records] == [20, 40]
    assert {"train/critic_loss", "train/actor_loss", "train/bc_mse", "eval/normalized_score"} <= set(records[0])
    dataset = load_dataset(str(tiny_file))
    assert ObsNormalizer.from_state_dict(ckpt["agent"]["normalizer"]).matches(
        ObsNormalizer.from_observations(dataset.observations))

    with pytest.raises(ConfigError, match="hidden_dim cannot change"):
        train_online.main(["--checkpoint", str(final), "--hidden_dim", "32"])
    # No --run_dir: the online run goes beside the offline one; config keys come from the checkpoint.
    online_final = train_online.main(["--checkpoint", str(final), "--online_steps", "120", "--eval_every", "60",
                                      "--eval_episodes", "1", "--utd", "2", "--prefill_min", "64"])
    online_dir = tmp_path / "runs" / "tiny" / "online"
    assert online_final == online_dir / "checkpoints" / "online.pt"
    import yaml

    saved = yaml.safe_load((online_dir / "config.yaml").read_text())
    assert saved["offline_checkpoint"] == str(final.resolve())
    assert saved["hidden_dim"] == 16 and saved["normalize_states"] is True and saved["utd"] == 2
    online = load_checkpoint(online_final, algo=ALGO, kind="agent")
    from common.inference import load_agent

    rebuilt, info = load_agent(online_final)  # through agent_from_checkpoint
    trained = RedqBcAgent(11, 3, 1.0, Config(hidden_dim=16, num_critics=4))
    trained.load_state_dict(online["agent"])
    obs = dataset.observations[:5]
    assert info["algo"] == ALGO and rebuilt.cfg.utd == 2
    np.testing.assert_array_equal(rebuilt.act(obs), trained.act(obs))
    assert ObsNormalizer.from_state_dict(online["agent"]["normalizer"]).matches(
        ObsNormalizer.from_state_dict(ckpt["agent"]["normalizer"]))
    assert online["agent"]["num_updates"] == 40 + 2 * 120

    records = read_metrics(online_dir / "metrics.jsonl")
    first = records[0]
    assert first["step"] == 0
    assert first["train/alpha"] == 0.4
    assert first["train/r_avg"] == pytest.approx(first["eval/normalized_score"] / 100, rel=1e-12)  # one episode
    episodes = [r for r in records if "online/episode_return" in r]
    assert episodes, "no training episode ended"
    alpha, r_avg = first["train/alpha"], first["train/r_avg"]
    for r in episodes:
        assert {"online/episode_return", "online/episode_length", "online/episode_normalized_score",
                "train/alpha", "train/r_avg"} <= set(r)
        score = dataset.normalized_score(r["online/episode_return"]) / 100
        assert r["online/episode_normalized_score"] == pytest.approx(100 * score, rel=1e-12)
        alpha, r_avg = official_alpha_step(alpha, r_avg, score, int(r["online/episode_length"]))
        assert (r["train/alpha"], r["train/r_avg"]) == pytest.approx((alpha, r_avg), rel=1e-12, abs=1e-15)  # after it
    assert online["agent"]["alpha"] == pytest.approx(alpha, rel=1e-12, abs=1e-15)
    assert [r["step"] for r in records if "eval/normalized_score" in r] == [0, 60, 120]

    # target: min switches the TD target to all N critics in the online phase (offline stays redq).
    members_used = []
    target_members = RedqBcAgent.target_members
    monkeypatch.setattr(RedqBcAgent, "target_members",
                        lambda self: members_used.append(target_members(self)) or members_used[-1])
    # buffer_capacity sets the online FIFO's size independently of online_steps (null: online_steps).
    capacities = []
    prefilled = ReplayBuffer.prefilled
    monkeypatch.setattr(ReplayBuffer, "prefilled", lambda *a, **k: capacities.append(k["capacity"]) or prefilled(*a, **k))
    train_online.main(["--checkpoint", str(final), "--run_dir", str(tmp_path / "min"), "--online_steps", "3",
                       "--eval_episodes", "1", "--utd", "2", "--prefill_min", "64", "--target", "min",
                       "--buffer_capacity", "500"])
    assert members_used == [None] * 6
    assert capacities == [500]

    # learning rates given online are the ones Adam uses (not the offline optimizer state's)
    lr_final = train_online.main(["--checkpoint", str(final), "--run_dir", str(tmp_path / "lr"), "--online_steps", "2",
                                  "--eval_episodes", "1", "--utd", "2", "--prefill_min", "64", "--actor_lr", "1e-4",
                                  "--critic_lr", "2e-4"])
    lr_state = load_checkpoint(lr_final)["agent"]
    assert [g["lr"] for g in lr_state["actor_optimizer"]["param_groups"]] == [1e-4]
    assert [g["lr"] for g in lr_state["critic_optimizer"]["param_groups"]] == [2e-4]
    assert ckpt["agent"]["actor_optimizer"]["param_groups"][0]["lr"] == 3e-4


def _command(module: str, args: list[str]) -> list[str]:
    return [sys.executable, "-m", module, *args]


def _kill_after_checkpoint(cmd: list[str], run_dir: Path, env: dict) -> None:
    """Starts `cmd`, SIGKILLs it shortly after checkpoints/last.pt appears; asserts it was cut mid-run."""
    last = run_dir / "checkpoints" / "last.pt"
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while not last.exists():
            assert proc.poll() is None, f"run ended before writing last.pt: {proc.stderr.read().decode()[-2000:]}"
            assert time.monotonic() < deadline, "no checkpoint within 120 s"
            time.sleep(0.01)
        time.sleep(0.2)  # let it write a few metrics past the checkpoint: they must be dropped on resume
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert last.exists() and not list((run_dir / "checkpoints").glob("o*line.pt")), "run finished before the kill"


def _env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled", "PYTHONPATH": str(REPO)}


@pytest.mark.slow
def test_offline_resume_after_kill_matches_uninterrupted_run(tmp_path, tiny_file):
    def args(run_dir: Path) -> list[str]:
        return offline_args(tiny_file, run_dir, steps=2500, every=500)

    train_offline.main(args(tmp_path / "straight"))
    killed = tmp_path / "killed"
    _kill_after_checkpoint(_command("adaptive_bc.train_offline", args(killed)), killed, _env())
    subprocess.run(_command("adaptive_bc.train_offline", args(killed)), cwd=REPO, env=_env(), check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    assert (killed / "metrics.jsonl").read_text() == (tmp_path / "straight" / "metrics.jsonl").read_text()
    a = load_checkpoint(killed / "checkpoints" / "offline.pt")["agent"]
    b = load_checkpoint(tmp_path / "straight" / "checkpoints" / "offline.pt")["agent"]
    assert all(torch.equal(v, b["actor"][k]) for k, v in a["actor"].items())
    assert not (killed / "checkpoints" / "last.pt").exists()


@pytest.mark.slow
def test_online_resume_after_kill_matches_uninterrupted_run(tmp_path, tiny_file):
    final = train_offline.main(offline_args(tiny_file, tmp_path / "offline"))

    def args(run_dir: Path) -> list[str]:
        return ["--checkpoint", str(final), "--run_dir", str(run_dir), "--online_steps", "1000", "--eval_every",
                "500", "--checkpoint_every", "200", "--eval_episodes", "2", "--utd", "2", "--prefill_min", "100"]

    train_online.main(args(tmp_path / "straight"))
    killed = tmp_path / "killed"
    _kill_after_checkpoint(_command("adaptive_bc.train_online", args(killed)), killed, _env())
    resumed_from = load_checkpoint(killed / "checkpoints" / "last.pt")
    assert 200 <= resumed_from["step"] < 1000 and "r_avg" in resumed_from["controller"]
    assert resumed_from["agent"]["alpha"] < 0.4  # α moved by the controller and resumed with the agent
    assert {"noise_rng", "episode", "episode_in_progress"} <= set(resumed_from)  # the online env's state
    subprocess.run(_command("adaptive_bc.train_online", args(killed)), cwd=REPO, env=_env(), check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    straight = (tmp_path / "straight" / "metrics.jsonl").read_text()
    assert (killed / "metrics.jsonl").read_text() == straight
    assert sum("online/episode_return" in line for line in straight.splitlines()) > 5


# --- learning -------------------------------------------------------------------------------------------
def test_update_learns_a_bandit_beyond_behaviour_cloning():
    """One-step episodes with uniformly random data actions and reward -||a - a*(s)||^2: cloning the data
    gives the mean action (error ~0.14), the critic-guided actor must find a*(s). A sign error in the Q
    term sends the actor to the worst actions (error ~2), one in the BC term to the action bounds."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    mixing = rng.normal(size=(3, 2))
    best = lambda s: 0.8 * np.tanh(s @ mixing)  # noqa: E731
    n = 5000
    obs = rng.uniform(-1, 1, size=(n, 3)).astype(np.float32)
    actions = rng.uniform(-1, 1, size=(n, 2)).astype(np.float32)
    rewards = -((actions - best(obs)) ** 2).sum(1)
    columns = [torch.tensor(obs), torch.tensor(actions), torch.tensor(rewards, dtype=torch.float32),
               torch.tensor(obs), torch.ones(n)]
    agent = RedqBcAgent(3, 2, 1.0, Config(hidden_dim=64, num_critics=4, wandb_mode="disabled"))
    test_obs = rng.uniform(-1, 1, size=(2000, 3)).astype(np.float32)

    def error() -> float:
        return float(((agent.act(test_obs) - best(test_obs)) ** 2).sum(1).mean())

    cloning_error = float((best(test_obs) ** 2).sum(1).mean())  # the data's mean action is 0
    assert error() > 0.5 * cloning_error
    g = torch.Generator().manual_seed(0)
    for _ in range(600):
        rows = torch.randint(0, n, (256,), generator=g)
        metrics = agent.update(Batch(*[c[rows] for c in columns]))
    assert error() < 0.1 * cloning_error, f"error {error():.4f} vs cloning {cloning_error:.4f}"
    assert metrics["critic_loss"] < 0.05 and metrics["q_mean"] < 0  # rewards are <= 0


@pytest.mark.slow
def test_offline_training_learns_hopper(tmp_path):
    """A sign or indexing error in the losses or the target keeps the score near the untrained policy's."""
    data = shared_dataset("hopper-medium-gen.hdf5")
    run_dir = tmp_path / "learn"
    train_offline.main(["--dataset", str(data), "--run_dir", str(run_dir), "--offline_steps", "10000",
                        "--eval_every", "5000", "--checkpoint_every", "100000", "--eval_episodes", "5",
                        "--hidden_dim", "64", "--wandb_mode", "disabled"])
    dataset = load_dataset(str(data))
    torch.manual_seed(0)
    untrained = RedqBcAgent(dataset.obs_dim, dataset.act_dim, 1.0, Config(hidden_dim=64))
    from common.evaluation import evaluate

    untrained_score = evaluate(untrained.act, dataset.env_id, 5, seed=1_000_000).normalized_score
    final_score = read_metrics(run_dir / "metrics.jsonl")[-1]["eval/normalized_score"]
    # here: untrained 0.9, after 10,000 updates 62; with the Q-term sign flipped 12, the BC sign flipped 0.6
    assert untrained_score < 5
    assert final_score > 25, f"untrained {untrained_score:.1f}, after 10,000 updates {final_score:.1f}"
