"""The dataset generator (tools/generate_dataset.py) and its SAC (tools/sac.py)."""
from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from common.checkpoint import CheckpointError, load_checkpoint
from common.datasets import REF_RETURNS, load_dataset
from tools import generate_dataset as gen
from tools.sac import SAC, SACConfig, TanhGaussianActor, TwinCritic, soft_td_target

REPO = Path(__file__).resolve().parent.parent
# Stops at the first evaluation (step 500): 200 random steps, 300 SAC updates, then 2000 medium rows.
TINY = ["--env", "hopper", "--target", "-1000", "--random-steps", "200", "--eval-every", "500",
        "--eval-episodes", "2", "--medium-size", "2000", "--checkpoint-every", "300", "--seed", "3"]
REPLAY, MEDIUM = "hopper-medium-replay-gen.hdf5", "hopper-medium-gen.hdf5"
ARRAY_KEYS = ("observations", "actions", "rewards", "next_observations", "terminals", "timeouts",
              "infos/action_log_probs", "infos/qpos", "infos/qvel")


def read_all(path: Path) -> dict[str, np.ndarray]:
    """Every dataset in the file except the JSON (whose train_log holds wall-clock seconds)."""
    out = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda k, v: out.__setitem__(k, np.asarray(v[()])) if isinstance(v, h5py.Dataset) else None)
    out.pop("metadata/generation")
    return out


def generation(path: Path) -> dict:
    with h5py.File(path, "r") as f:
        return json.loads(f["metadata/generation"][()])


def assert_same_files(dir_a: Path, dir_b: Path, names=(REPLAY, MEDIUM)) -> None:
    for name in names:
        a, b = read_all(dir_a / name), read_all(dir_b / name)
        assert a.keys() == b.keys()
        for key in a:
            assert a[key].dtype == b[key].dtype and np.array_equal(a[key], b[key]), f"{name}:{key} differs"


def episodes(terminals: np.ndarray, timeouts: np.ndarray) -> list[tuple[int, int, bool]]:
    """(start, stop, ended) row ranges; the last one may be unfinished."""
    ends = np.flatnonzero(terminals | timeouts)
    starts = np.concatenate([[0], ends + 1])
    out = [(int(s), int(e) + 1, True) for s, e in zip(starts[:-1], ends)]
    if starts[-1] < len(terminals):
        out.append((int(starts[-1]), len(terminals), False))
    return out


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tiny")
    gen.main(TINY + ["--out", str(out)])
    return out


# ---------------------------------------------------------------- SAC pieces

def test_actor_log_prob_matches_torch_distributions():
    torch.manual_seed(0)
    low, high = np.array([-1.0, -2.0]), np.array([1.0, 2.0])
    actor = TanhGaussianActor(4, 2, 16, low, high)
    obs = torch.randn(64, 4)
    action, log_prob = actor(obs, torch.Generator().manual_seed(1))
    mean, log_std = actor.net(obs).chunk(2, -1)
    dist = torch.distributions.TransformedDistribution(
        torch.distributions.Normal(mean, log_std.clamp(-20, 2).exp()),
        [torch.distributions.TanhTransform(), torch.distributions.AffineTransform(0.0, torch.tensor([1.0, 2.0]))])
    expected = dist.log_prob(action).sum(-1)
    ok = action[:, 1].abs() < 1.98  # atanh of a float32 action near the bound loses precision
    torch.testing.assert_close(log_prob[ok], expected[ok], rtol=1e-4, atol=1e-3)
    assert (action.abs() <= torch.tensor([1.0, 2.0])).all()
    det_action, _ = actor(obs, None, deterministic=True)
    torch.testing.assert_close(det_action, torch.tanh(mean) * torch.tensor([1.0, 2.0]))


def test_soft_td_target_hand_computed():
    # min over critics = [3, 1]; soft values [3 - 0.2*0.5, 1 + 0.2*1] = [2.9, 1.2]; the 2nd row is terminal.
    target = soft_td_target(rewards=torch.tensor([1.0, 2.0]), terminals=torch.tensor([0.0, 1.0]),
                            next_q=torch.tensor([[3.0, 5.0], [4.0, 1.0]]), next_log_prob=torch.tensor([0.5, -1.0]),
                            alpha=0.2, gamma=0.9)
    torch.testing.assert_close(target, torch.tensor([1.0 + 0.9 * 2.9, 2.0]))


def test_twin_critic_members_are_independent_mlps():
    torch.manual_seed(0)
    critic = TwinCritic(3, 2, 8)
    obs, act = torch.randn(5, 3), torch.randn(5, 2)
    q = critic(obs, act)
    assert q.shape == (2, 5)
    layers = list(zip(critic.net.weights, critic.net.biases))
    for i in range(2):
        h = torch.cat([obs, act], -1)
        for j, (weight, bias) in enumerate(layers):
            h = h @ weight[i] + bias[i, 0]
            h = torch.relu(h) if j < 2 else h
        torch.testing.assert_close(q[i], h[:, 0])
    assert not torch.equal(q[0], q[1])


def test_sac_state_dict_restores_training_exactly(tmp_path):
    def batch(i):
        g = torch.Generator().manual_seed(i)
        return (torch.randn(32, 5, generator=g), torch.rand(32, 2, generator=g) * 2 - 1,
                torch.randn(32, generator=g), torch.randn(32, 5, generator=g), (torch.rand(32, generator=g) < 0.1).float())

    torch.manual_seed(0)
    a = SAC(5, 2, -np.ones(2), np.ones(2), SACConfig(hidden=16), seed=1)
    for i in range(3):
        metrics = a.update(*batch(i))
    assert set(metrics) == {"critic_loss", "actor_loss", "alpha", "q_mean", "entropy"}
    assert a.alpha != 1.0  # auto-entropy moved alpha
    from common.checkpoint import save_checkpoint
    save_checkpoint(tmp_path / "sac.pt", {"sac": a.state_dict()})
    torch.manual_seed(99)
    b = SAC(5, 2, -np.ones(2), np.ones(2), SACConfig(hidden=16), seed=7)
    b.load_state_dict(load_checkpoint(tmp_path / "sac.pt")["sac"])  # weights_only=True load
    for i in range(3, 6):
        assert a.update(*batch(i)) == b.update(*batch(i))
    for pa, pb in zip(a.state_dict()["critic_target"].values(), b.state_dict()["critic_target"].values()):
        assert torch.equal(pa, pb)
    obs = np.ones((4, 5), np.float32)
    for x, y in zip(a.act(obs), b.act(obs)):  # same weights and same generator state -> same sampled actions
        np.testing.assert_array_equal(x, y)


def test_defaults_are_the_d4rl_recipe():
    args = gen.parse_args(["--env", "walker2d", "--out", "x"])
    assert (args.target, args.random_steps, args.eval_every, args.eval_episodes, args.batch_size, args.lr,
            args.hidden, args.medium_size, args.threads) == (62.0, 10_000, 5_000, 5, 256, 3e-4, 256, 1_000_000, 1)
    assert gen.parse_args(["--env", "hopper", "--out", "x"]).target == 44.0
    assert gen.parse_args(["--env", "halfcheetah", "--out", "x", "--target", "7"]).target == 7.0
    assert gen.ENV_IDS == {"hopper": "Hopper-v5", "walker2d": "Walker2d-v5", "halfcheetah": "HalfCheetah-v5"}


def test_walker2d_episode_rows(tmp_path):
    g = gen.Generator(gen.parse_args(["--env", "walker2d", "--out", str(tmp_path)]))
    g.run_episode(g.replay, seed=0, choose_action=lambda obs: g.random_action(), after_step=lambda: False)
    d = g.replay.arrays()
    n = len(g.replay)
    assert d["observations"].shape == (n, 17) and d["infos/qpos"].shape == (n, 9) and d["infos/qvel"].shape == (n, 9)
    assert d["terminals"][-1] and d["terminals"].sum() == 1  # random Walker2d falls long before 1000 steps
    np.testing.assert_array_equal(d["observations"][:, :8], d["infos/qpos"][:, 1:])
    np.testing.assert_array_equal(d["observations"][:, 8:], np.clip(d["infos/qvel"], -10, 10))
    np.testing.assert_allclose(d["infos/action_log_probs"], -6 * math.log(2), rtol=1e-6)


# ---------------------------------------------------------------- the files of a tiny run

def test_tiny_run_loads_through_load_dataset(tiny_run):
    for name, n in ((REPLAY, 500), (MEDIUM, 2000)):
        ds = load_dataset(str(tiny_run / name))
        assert ds.env_id == "Hopper-v5" and len(ds) == n
        assert (ds.obs_dim, ds.act_dim) == (11, 3)
        for arr in (ds.observations, ds.actions, ds.rewards, ds.next_observations):
            assert arr.dtype == np.float32
        assert ds.terminals.dtype == bool and ds.timeouts.dtype == bool
        assert (ds.ref_min_return, ds.ref_max_return) == REF_RETURNS["hopper"]
    assert not (tiny_run / "hopper-gen.ckpt.pt").exists()  # removed once both files exist


def test_tiny_run_layout_and_metadata(tiny_run):
    for name, n, level in ((REPLAY, 500, "medium-replay"), (MEDIUM, 2000, "medium")):
        with h5py.File(tiny_run / name, "r") as f:
            shapes = {k: (f[k].shape, f[k].dtype) for k in ARRAY_KEYS}
            assert shapes == {
                "observations": ((n, 11), np.float32), "actions": ((n, 3), np.float32), "rewards": ((n,), np.float32),
                "next_observations": ((n, 11), np.float32), "terminals": ((n,), bool), "timeouts": ((n,), bool),
                "infos/action_log_probs": ((n,), np.float32), "infos/qpos": ((n, 6), np.float32),
                "infos/qvel": ((n, 6), np.float32)}
            assert f["metadata/algorithm"][()] == b"SAC"
            assert f["metadata/iteration"][()] == 500 and f["metadata/iteration"].dtype == np.int64
            assert ("metadata/policy" in f) == (level == "medium")
            meta = json.loads(f["metadata/generation"][()])
            rewards, terminals, timeouts = f["rewards"][()], f["terminals"][()], f["timeouts"][()]
        assert meta["env_id"] == "Hopper-v5" and meta["seed"] == 3 and meta["target_normalized_score"] == -1000
        assert meta["stop_step"] == 500 and meta["stop_reason"] == "target" and meta["target_reached"] is True
        assert meta["dataset"] == level and meta["transitions"] == n
        assert {"gymnasium", "mujoco", "torch"} <= meta.keys()
        assert [r["step"] for r in meta["train_log"]] == [500]
        # mean normalized score of the file's finished episodes, recomputed by hand
        returns = [rewards[s:e].sum(dtype=np.float64) for s, e, ended in episodes(terminals, timeouts) if ended]
        lo, hi = REF_RETURNS["hopper"]
        assert meta["episodes"] == len(returns)
        assert meta["mean_normalized_score"] == pytest.approx(np.mean([100 * (r - lo) / (hi - lo) for r in returns]))


def test_random_phase_and_policy_log_probs(tiny_run):
    with h5py.File(tiny_run / REPLAY, "r") as f:
        log_probs = f["infos/action_log_probs"][()]
    # uniform on [-1, 1]^3 has density 1/8 for the 200 random steps; the policy's is something else
    np.testing.assert_allclose(log_probs[:200], -3 * math.log(2), rtol=1e-6)
    assert np.all(log_probs[200:] != np.float32(-3 * math.log(2)))
    # The medium file's stored policy reproduces its action log-probabilities.
    with h5py.File(tiny_run / MEDIUM, "r") as f:
        obs, actions, log_probs = f["observations"][()], f["actions"][()], f["infos/action_log_probs"][()]
        weights = {k: torch.from_numpy(v[()]) for k, v in f["metadata/policy"].items()}
    actor = TanhGaussianActor(11, 3, 256, -np.ones(3), np.ones(3))
    actor.load_state_dict(weights)
    mean, log_std = actor.net(torch.from_numpy(obs)).detach().chunk(2, -1)
    act = torch.from_numpy(actions).double()
    ok = (act.abs() < 0.999).all(-1)
    normal = torch.distributions.Normal(mean.double(), log_std.clamp(-20, 2).exp().double())
    expected = (normal.log_prob(torch.atanh(act)) - torch.log1p(-act.pow(2))).sum(-1)
    assert ok.float().mean() > 0.5
    np.testing.assert_allclose(log_probs[ok.numpy()], expected[ok].numpy(), rtol=1e-3, atol=2e-3)


def hopper_healthy(next_obs: np.ndarray) -> np.ndarray:
    """gymnasium Hopper-v5's is_healthy from the observation (qpos[1:], clip(qvel, -10, 10))."""
    z, angle = next_obs[:, 0], next_obs[:, 1]
    return (z > 0.7) & (np.abs(angle) < 0.2) & np.all(np.abs(next_obs[:, 1:]) < 100.0, axis=1)


def check_hopper_episode_boundaries(path: Path) -> list[tuple[int, int, bool]]:
    with h5py.File(path, "r") as f:
        d = {k: f[k][()] for k in ARRAY_KEYS}
    obs, nxt, term, tout = d["observations"], d["next_observations"], d["terminals"], d["timeouts"]
    eps = episodes(term, tout)
    assert not np.any(term & tout)
    assert all(e - s <= 1000 for s, e, _ in eps)
    # timeouts exactly at the 1000-step limit, terminals exactly where Hopper falls
    assert all(tout[e - 1] == (e - s == 1000) for s, e, ended in eps if ended)
    np.testing.assert_array_equal(term, ~hopper_healthy(nxt))
    # within an episode the next observation is the following row's observation; episodes start fresh
    for s, e, _ in eps:
        np.testing.assert_array_equal(nxt[s:e - 1], obs[s + 1:e])
    for (_, e, _), (s2, _, _) in zip(eps[:-1], eps[1:]):
        assert not np.array_equal(nxt[e - 1], obs[s2])
        assert abs(obs[s2, 0] - 1.25) < 0.01  # reset height 1.25 + U(-0.005, 0.005)
    # the simulator state is the one the observation was taken in
    np.testing.assert_array_equal(obs[:, :5], d["infos/qpos"][:, 1:])
    np.testing.assert_array_equal(obs[:, 5:], np.clip(d["infos/qvel"], -10, 10))
    return eps


@pytest.mark.parametrize("name", [REPLAY, MEDIUM])
def test_episode_boundaries_hopper(tiny_run, name):
    eps = check_hopper_episode_boundaries(tiny_run / name)
    assert len(eps) > 5
    assert eps[-1][2] is False  # the last episode is cut by the stop / the size, not ended


def test_shipped_quickstart_dataset():
    """data/hopper-medium-mini.hdf5 is what data/README.md says it is."""
    path = REPO / "data" / "hopper-medium-mini.hdf5"
    ds = load_dataset("data/hopper-medium-mini.hdf5")
    assert ds.env_id == "Hopper-v5" and len(ds) == 50_000
    meta = generation(path)
    assert meta["config"] == {"env": "hopper", "seed": 0, "target": 44.0, "random_steps": 10_000, "eval_every": 5_000,
                              "eval_episodes": 5, "max_steps": 1_000_000, "medium_size": 50_000, "batch_size": 256,
                              "lr": 3e-4, "hidden": 256, "gamma": 0.99, "tau": 0.005, "threads": 1}
    assert meta["stop_step"] == 135_000 and meta["target_reached"] is True
    assert meta["episodes"] == 132 and round(meta["mean_normalized_score"], 1) == 39.0
    assert round(float(ds.normalized_score(ds.episode_returns()).mean()), 1) == 39.0
    eps = check_hopper_episode_boundaries(path)
    assert len(eps) == 133 and eps[-1][2] is False
    assert path.stat().st_size < 8 * 2**20


def test_halfcheetah_timeouts_at_the_1000_step_limit(tmp_path):
    gen.main(["--env", "halfcheetah", "--target", "-1000", "--random-steps", "200", "--eval-every", "300",
              "--eval-episodes", "1", "--medium-size", "2500", "--seed", "1", "--out", str(tmp_path)])
    replay = load_dataset(str(tmp_path / "halfcheetah-medium-replay-gen.hdf5"))
    assert replay.env_id == "HalfCheetah-v5" and len(replay) == 300
    assert not replay.terminals.any() and not replay.timeouts.any()
    medium = load_dataset(str(tmp_path / "halfcheetah-medium-gen.hdf5"))
    assert len(medium) == 2500 and not medium.terminals.any()  # HalfCheetah never terminates
    np.testing.assert_array_equal(np.flatnonzero(medium.timeouts), [999, 1999])
    meta = generation(tmp_path / "halfcheetah-medium-gen.hdf5")
    assert meta["episodes"] == 2
    lo, hi = REF_RETURNS["halfcheetah"]
    expected = np.mean([100 * (medium.rewards[a:b].sum(dtype=np.float64) - lo) / (hi - lo) for a, b in ((0, 1000), (1000, 2000))])
    assert meta["mean_normalized_score"] == pytest.approx(expected)


# ---------------------------------------------------------------- reproducibility, resuming, stopping

def test_same_seed_gives_the_same_arrays(tiny_run, tmp_path):
    gen.main(TINY + ["--out", str(tmp_path)])
    assert_same_files(tiny_run, tmp_path)
    a, b = generation(tiny_run / MEDIUM), generation(tmp_path / MEDIUM)
    assert a["mean_normalized_score"] == b["mean_normalized_score"]
    assert [r["stochastic"] for r in a["train_log"]] == [r["stochastic"] for r in b["train_log"]]


class Interrupted(BaseException):
    pass


def test_resume_after_interruptions_gives_the_same_arrays(tiny_run, tmp_path, monkeypatch):
    """Interrupted once while training and once while collecting the medium data, each some steps after a checkpoint."""
    saves = []
    original_save = gen.Generator.save
    monkeypatch.setattr(gen.Generator, "save", lambda self: (original_save(self), saves.append(self.progress.phase)))
    calls = {"n": 0}
    original_update = SAC.update

    def update_then_die(self, *batch):
        calls["n"] += 1 if saves else 0
        if calls["n"] > 30:  # 30 updates after the first checkpoint (step ~300)
            raise Interrupted
        return original_update(self, *batch)

    monkeypatch.setattr(SAC, "update", update_then_die)
    with pytest.raises(Interrupted):
        gen.main(TINY + ["--out", str(tmp_path)])
    monkeypatch.setattr(SAC, "update", original_update)
    ckpt = load_checkpoint(tmp_path / "hopper-gen.ckpt.pt", algo="sac", kind=gen.CHECKPOINT_KIND)
    assert ckpt["progress"]["phase"] == "train" and 300 <= ckpt["progress"]["step"] < 500
    assert len(ckpt["replay"]["rewards"]) == ckpt["progress"]["step"]

    medium_saves = {"n": 0}
    original_policy_action = gen.Generator.policy_action

    def act_then_die(self, obs):
        if self.progress.phase == "medium" and saves.count("medium") >= 2:
            medium_saves["n"] += 1
            if medium_saves["n"] > 50:
                raise Interrupted
        return original_policy_action(self, obs)

    monkeypatch.setattr(gen.Generator, "policy_action", act_then_die)
    with pytest.raises(Interrupted):
        gen.main(TINY + ["--out", str(tmp_path)])
    monkeypatch.undo()
    ckpt = load_checkpoint(tmp_path / "hopper-gen.ckpt.pt", algo="sac", kind=gen.CHECKPOINT_KIND)
    assert ckpt["progress"]["phase"] == "medium" and 300 <= len(ckpt["medium"]["rewards"]) < 2000
    assert (tmp_path / REPLAY).exists() and not (tmp_path / MEDIUM).exists()

    gen.main(TINY + ["--out", str(tmp_path)])
    assert_same_files(tiny_run, tmp_path)
    assert not (tmp_path / "hopper-gen.ckpt.pt").exists()


def test_max_steps_without_reaching_the_target_still_writes_and_says_so(tiny_run, tmp_path, capsys):
    gen.main(["--env", "hopper", "--target", "1000", "--max-steps", "300", "--random-steps", "200",
              "--eval-every", "100", "--eval-episodes", "1", "--medium-size", "500", "--seed", "4",
              "--out", str(tmp_path)])
    assert "WARNING: --max-steps 300 reached before" in capsys.readouterr().err
    for name, n in ((REPLAY, 300), (MEDIUM, 500)):
        meta = generation(tmp_path / name)
        assert meta["target_reached"] is False and meta["stop_reason"] == "max_steps" and meta["stop_step"] == 300
        assert [r["step"] for r in meta["train_log"]] == [200, 300]
        assert len(load_dataset(str(tmp_path / name))) == n
    # another seed gives other data (already in the uniform random phase)
    with h5py.File(tmp_path / REPLAY) as a, h5py.File(tiny_run / REPLAY) as b:
        assert not np.array_equal(a["actions"][:200], b["actions"][:200])


def test_refuses_to_overwrite_or_to_resume_other_settings(tiny_run, tmp_path):
    with pytest.raises(SystemExit, match="already exist; pass --overwrite"):
        gen.main(TINY + ["--out", str(tiny_run)])
    gen.Generator(gen.parse_args(TINY + ["--out", str(tmp_path)])).save()  # a checkpoint at step 0
    other_seed = [a if a != "3" else "4" for a in TINY]
    with pytest.raises(SystemExit, match=r"other settings \(seed: now 4, checkpoint 3\)"):
        gen.main(other_seed + ["--out", str(tmp_path)])


@pytest.mark.slow
def test_resume_after_sigkill_gives_the_same_arrays(tiny_run, tmp_path):
    """The real thing: SIGKILL the process after its first checkpoint, and again in the medium phase."""
    args = [sys.executable, "-m", "tools.generate_dataset", *TINY, "--medium-size", "2000", "--out", str(tmp_path)]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    ckpt = tmp_path / "hopper-gen.ckpt.pt"

    def run_until(condition, timeout=120.0) -> None:
        proc = subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + timeout
        while not condition() and proc.poll() is None and time.time() < deadline:
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert proc.returncode == -signal.SIGKILL, "the generator finished before it could be killed"

    run_until(ckpt.exists)
    assert not (tmp_path / REPLAY).exists()  # killed while training
    def in_medium_phase() -> bool:
        try:
            return (tmp_path / REPLAY).exists() and load_checkpoint(ckpt)["progress"]["phase"] == "medium"
        except CheckpointError:
            return False

    run_until(in_medium_phase)
    assert not (tmp_path / MEDIUM).exists()  # killed while collecting the medium data
    done = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "resuming from" in done.stdout
    assert_same_files(tiny_run, tmp_path)
