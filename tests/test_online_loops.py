"""What the online loops of both algorithms do outside `update()`, through the real loops and real MuJoCo envs:
what they store (a time-limit truncation bootstraps, a termination does not), where adaptive α starts, which λ each
SPOT update uses, the prefill size rule, and exploration / target noise scaled by max_action. Also `act()` of both
agents against a plain forward pass. Each expectation is written out here, not taken from the product's code."""
from __future__ import annotations

import importlib

import numpy as np
import pytest
import torch

import common.online
import common.run
from adaptive_bc.agent import Config as BcConfig
from adaptive_bc.agent import RedqBcAgent
from common.buffer import ReplayBuffer
from common.envs import gym_make
from common.layout import read_metrics
from common.normalizer import ObsNormalizer
from common.online import OnlineEnv
from common.recorder import Recorder
from conftest import write_d4rl_file
from spot.agent import Config as SpotConfig
from spot.agent import SpotAgent

TINY = {"adaptive_bc": ["--hidden_dim", "16", "--num_critics", "4", "--utd", "1", "--prefill_min", "64",
                        "--batch_size", "16"],
        "spot": ["--hidden_dim", "16", "--vae_hidden", "16", "--vae_steps", "10", "--lambd", "0.1",
                 "--batch_size", "16"]}


@pytest.fixture(scope="module")
def offline_checkpoints(tmp_path_factory):
    """A tiny offline checkpoint of each algorithm on a tiny hopper file (made once for this module)."""
    root = tmp_path_factory.mktemp("loops")
    data = root / "tiny-hopper.hdf5"
    write_d4rl_file(data, episodes=[(40, "terminal"), (60, "timeout"), (30, "terminal")], next_obs=True)
    return data, {algo: offline_checkpoint(algo, data, root / algo / "offline") for algo in TINY}


def offline_checkpoint(algo: str, data, run_dir):
    return importlib.import_module(f"{algo}.train_offline").main(
        ["--dataset", str(data), "--run_dir", str(run_dir), "--offline_steps", "20", "--eval_every", "20",
         "--checkpoint_every", "20", "--eval_episodes", "1", "--wandb_mode", "disabled", *TINY[algo]])


def online(algo: str, checkpoint, run_dir, *extra: str):
    return importlib.import_module(f"{algo}.train_online").main(
        ["--checkpoint", str(checkpoint), "--run_dir", str(run_dir), "--eval_episodes", "1", "--checkpoint_every",
         "1000", *TINY[algo], *extra])


# --- what the loops store ----------------------------------------------------------------------------------
LIMIT = {"adaptive_bc": 17, "spot": 23}


@pytest.mark.parametrize("algo", ["adaptive_bc", "spot"])
def test_truncation_bootstraps_and_termination_does_not(algo, offline_checkpoints, tmp_path, monkeypatch):
    """Hopper with a time limit short enough that these tiny policies' episodes (13–59 steps) end both ways. Every
    stored transition's terminal flag must be the env's `terminated` (never `truncated`), and its next observation
    the env's, not the next episode's reset."""
    _, checkpoints = offline_checkpoints
    make_env = common.online.make_env
    monkeypatch.setattr(common.online, "make_env",
                        lambda env_id, seed: make_env(env_id, seed, max_episode_steps=LIMIT[algo]))
    steps, stored = [], []
    env_step, add = OnlineEnv.step, ReplayBuffer.add

    def spy_step(self, action):
        out = env_step(self, action)
        steps.append((out[0].copy(), out[2], out[3]))
        return out

    def spy_add(self, obs, action, reward, next_obs, terminal):
        stored.append((np.array(next_obs, copy=True), terminal))
        return add(self, obs, action, reward, next_obs, terminal)

    monkeypatch.setattr(OnlineEnv, "step", spy_step)
    monkeypatch.setattr(ReplayBuffer, "add", spy_add)
    online(algo, checkpoints[algo], tmp_path / "on", "--online_steps", "300", "--eval_every", "300")
    assert len(steps) == len(stored) == 300
    terminated = [t for _, t, _ in steps]
    truncated_only = [tr and not t for _, t, tr in steps]
    assert any(terminated) and any(truncated_only), "the run must see both kinds of episode end"
    for (next_obs, term, trunc), (stored_next, stored_terminal) in zip(steps, stored):
        assert bool(stored_terminal) == term  # a truncation is stored as non-terminal: the target bootstraps
        np.testing.assert_array_equal(stored_next, next_obs)
    episodes = [r for r in read_metrics(tmp_path / "on" / "metrics.jsonl") if "online/episode_length" in r]
    assert max(r["online/episode_length"] for r in episodes) == LIMIT[algo]
    assert len(episodes) == sum(t or tr for _, t, tr in steps)


# --- adaptive α's start, the prefill rule --------------------------------------------------------------------
def test_alpha_starts_at_alpha_max_and_the_running_score_at_the_first_evaluation_episode(
        offline_checkpoints, tmp_path, monkeypatch):
    """As the official code: R_avg starts at the pretrained policy's score on ONE episode (the first of the initial
    evaluation), α at alpha_max. Three evaluation episodes with different seeds, so the mean would differ."""
    _, checkpoints = offline_checkpoints
    results = []
    evaluate_result = Recorder.evaluate_result
    monkeypatch.setattr(Recorder, "evaluate_result", lambda self, policy: results.append(
        evaluate_result(self, policy)) or results[-1])
    online("adaptive_bc", checkpoints["adaptive_bc"], tmp_path / "on", "--online_steps", "5", "--eval_every", "5",
           "--eval_episodes", "3", "--alpha_max", "0.3")
    first = read_metrics(tmp_path / "on" / "metrics.jsonl")[0]
    scores = results[0].normalized_scores
    assert len(scores) == 3 and abs(scores[0] - scores.mean()) > 1e-3
    assert first["step"] == 0 and first["train/alpha"] == 0.3
    assert first["train/r_avg"] == pytest.approx(scores[0] / 100.0, rel=1e-12)


@pytest.mark.parametrize("fraction, prefill_min, expected", [(0.5, 64, 65), (0.05, 64, 64), (0.1, 10, 13)])
def test_prefill_size_is_the_larger_of_the_fraction_and_the_minimum(offline_checkpoints, tmp_path, monkeypatch,
                                                                   fraction, prefill_min, expected):
    """num_prefill = max(⌊prefill_fraction · |D|⌋, prefill_min) offline transitions (|D| = 130 here)."""
    _, checkpoints = offline_checkpoints
    sizes = []
    prefilled = ReplayBuffer.prefilled
    monkeypatch.setattr(ReplayBuffer, "prefilled",
                        classmethod(lambda cls, dataset, n, **kw: sizes.append((len(dataset), n))
                                    or prefilled.__func__(cls, dataset, n, **kw)))
    online("adaptive_bc", checkpoints["adaptive_bc"], tmp_path / "on", "--online_steps", "2", "--eval_every", "2",
           "--prefill_fraction", str(fraction), "--prefill_min", str(prefill_min))
    assert sizes == [(130, expected)]


# --- SPOT's λ per update ------------------------------------------------------------------------------------
def test_each_spot_update_uses_the_lambda_of_its_env_step(offline_checkpoints, tmp_path, monkeypatch):
    """λ_t = λ · max(lambda_end, 1 − t / lambda_decay_steps) for the update after env step t = 0, 1, ...; the
    records carry the λ of the next step. λ = 0.1, decay over 10 steps, floor 0.2: 0.1, 0.09, ..., 0.02, 0.02."""
    _, checkpoints = offline_checkpoints
    used = []
    update = SpotAgent.update
    monkeypatch.setattr(SpotAgent, "update", lambda self, batch: used.append(self.lambd) or update(self, batch))
    online("spot", checkpoints["spot"], tmp_path / "on", "--online_steps", "14", "--eval_every", "7",
           "--lambda_decay_steps", "10", "--lambda_end", "0.2")
    expected = [0.1, 0.09, 0.08, 0.07, 0.06, 0.05, 0.04, 0.03, 0.02, 0.02, 0.02, 0.02, 0.02, 0.02]
    np.testing.assert_allclose(used, expected, rtol=1e-12)
    evals = {r["step"]: r["train/lambda"] for r in read_metrics(tmp_path / "on" / "metrics.jsonl")
             if "eval/normalized_score" in r}
    assert evals == pytest.approx({0: 0.1, 7: 0.03, 14: 0.02}, rel=1e-12)


# --- max_action ≠ 1 ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("algo", ["adaptive_bc", "spot"])
def test_exploration_noise_scales_with_max_action(algo, offline_checkpoints, tmp_path, monkeypatch):
    """An env whose actions span ±2 (hopper's bounds reported as 2 to the run): the loop's exploration noise has
    std 0.1 · 2 and actions are clipped to ±2, and the agent is built with max_action 2."""
    data, _ = offline_checkpoints
    check = common.run.check_env_matches
    monkeypatch.setattr(common.run, "check_env_matches", lambda *a, **k: (*check(*a, **k)[:2], 2.0))
    checkpoint = offline_checkpoint(algo, data, tmp_path / "off")
    calls, agents = [], []
    explore = common.online.explore
    monkeypatch.setattr(common.online, "explore", lambda action, rng, std, max_action: calls.append(
        (action.copy(), explore(action, rng, std, max_action), std, max_action)) or calls[-1][1])
    agent_class = RedqBcAgent if algo == "adaptive_bc" else SpotAgent
    init = agent_class.__init__
    monkeypatch.setattr(agent_class, "__init__", lambda self, *a, **k: agents.append(self) or init(self, *a, **k))
    online(algo, checkpoint, tmp_path / "on", "--online_steps", "400", "--eval_every", "400",
           "--exploration_noise", "0.1")
    assert agents[-1].max_action == 2.0 and agents[-1].actor.max_action == 2.0
    assert {(std, max_action) for *_, std, max_action in calls} == {(0.1, 2.0)}
    before = np.stack([c[0] for c in calls])
    after = np.stack([c[1] for c in calls])
    assert np.abs(after).max() <= 2.0 and after.dtype == np.float32
    inside = np.abs(after) < 2.0  # unclipped entries show the noise itself
    noise = (after - before)[inside]
    assert noise.size > 600 and 0.18 < noise.std() < 0.22  # std 0.2 = 0.1 × max_action 2 (±10%: 1,200 draws)


def test_spot_target_noise_is_scaled_and_clipped_by_max_action():
    """TD3's target smoothing in SPOT's update: noise ~ N(0, (0.2·max_action)²) clipped to ±0.5·max_action. With the
    target actor at 0, the actions reaching the target critics are the noise itself."""
    torch.manual_seed(0)
    agent = SpotAgent(3, 2, 2.0, SpotConfig(lambd=0.1, hidden_dim=8, vae_hidden=8, wandb_mode="disabled"))
    with torch.no_grad():
        agent.actor_target.l3.weight.zero_(), agent.actor_target.l3.bias.zero_()
    seen = []
    forward = agent.critic_target.forward
    agent.critic_target.forward = lambda obs, action: seen.append(action.clone()) or forward(obs, action)
    g = torch.Generator().manual_seed(0)
    n = 4096
    from common.buffer import Batch
    agent.update(Batch(torch.randn(n, 3, generator=g), torch.rand(n, 2, generator=g) * 4 - 2,
                       torch.randn(n, generator=g), torch.randn(n, 3, generator=g), torch.zeros(n)))
    noise = seen[0]
    assert noise.abs().max().item() == pytest.approx(1.0)  # clip 0.5 × max_action 2
    assert 0.34 < noise.std().item() < 0.41  # std 0.2 × 2 = 0.4, a little less after clipping at 2.5 std


# --- act() against a plain forward pass ------------------------------------------------------------------------
def plain_actor(actor: torch.nn.Module, obs: np.ndarray, mean: np.ndarray, std: np.ndarray, max_action: float):
    """float64 numpy: normalise once, three layers, no dropout, max_action · tanh."""
    p = {k: v.detach().double().numpy() for k, v in actor.state_dict().items()}
    x = (obs.astype(np.float64) - mean) / std
    h = np.maximum(x @ p["l1.weight"].T + p["l1.bias"], 0.0)
    h = np.maximum(h @ p["l2.weight"].T + p["l2.bias"], 0.0)
    return max_action * np.tanh(h @ p["l3.weight"].T + p["l3.bias"])


@pytest.mark.parametrize("algo", ["adaptive_bc", "spot"])
def test_act_is_a_plain_deterministic_forward_pass_of_normalised_observations(algo):
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    mean, std = rng.normal(size=11) * 3, rng.uniform(0.2, 4.0, size=11)
    normalizer = ObsNormalizer(mean, std)
    if algo == "adaptive_bc":
        agent = RedqBcAgent(11, 3, 1.5, BcConfig(hidden_dim=32, num_critics=2, normalize_states=True,
                                                 wandb_mode="disabled"), "cpu", normalizer)
    else:
        agent = SpotAgent(11, 3, 1.5, SpotConfig(lambd=0.1, hidden_dim=32, vae_hidden=8, actor_dropout=0.5,
                                                 wandb_mode="disabled"), "cpu", normalizer)
    with torch.no_grad():  # larger weights, so that tanh is far from linear and every layer matters
        for p in agent.actor.parameters():
            p.mul_(3.0)
    obs = (mean + std * rng.normal(size=(64, 11))).astype(np.float32)
    actions = agent.act(obs)
    assert actions.dtype == np.float32 and actions.shape == (64, 3)
    expected = plain_actor(agent.actor, obs, normalizer.mean.double().numpy(), normalizer.std.double().numpy(), 1.5)
    np.testing.assert_allclose(actions, expected, rtol=0, atol=2e-5)
    assert np.abs(expected).max() > 1.0  # max_action 1.5 reached beyond 1: the scale is tested too
    np.testing.assert_array_equal(agent.act(obs), actions)  # deterministic


# --- exploration on its own --------------------------------------------------------------------------------------
def test_explore_noise_and_clipping_by_hand():
    """explore(a) = clip(a + N(0, (std · max_action)²), ±max_action) as float32, with the given generator."""
    from common.online import explore

    action = np.array([0.0, 1.9, -1.9], dtype=np.float32)
    draws = np.random.default_rng(5).normal(0.0, 0.3 * 2.0, 3)
    out = explore(action, np.random.default_rng(5), 0.3, 2.0)
    np.testing.assert_array_equal(out, np.clip(action + draws, -2.0, 2.0).astype(np.float32))
    np.testing.assert_array_equal(explore(action, np.random.default_rng(5), 0.0, 1.0), np.clip(action, -1, 1))


def test_hopper_is_the_env_these_tests_assume():
    env = gym_make("Hopper-v4")
    try:
        assert env.action_space.high.tolist() == [1.0, 1.0, 1.0] and env.spec.max_episode_steps == 1000
    finally:
        env.close()
