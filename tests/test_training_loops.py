"""The shared offline/online loops: determinism, resume == uninterrupted, finished-run guard, NaN guard."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import yaml

from common.buffer import ObsNormalizer, ReplayBuffer
from common.config import BaseConfig
from common.logging import read_metrics
from common.training import OnlineHooks, RunExistsError, start_run, train_offline, train_online


class ToyAgent:
    """Behaviour cloning with a tiny MLP: enough to exercise every part of the loops."""

    def __init__(self, obs_dim, act_dim, normalizer, nan_at=None, crash_at=None):
        self.actor = torch.nn.Sequential(torch.nn.Linear(obs_dim, 16), torch.nn.ReLU(), torch.nn.Linear(16, act_dim),
                                         torch.nn.Tanh())
        self.opt = torch.optim.Adam(self.actor.parameters(), 1e-3)
        self.normalizer, self.updates, self.nan_at, self.crash_at = normalizer, 0, nan_at, crash_at

    def update(self, batch):
        if self.updates == self.crash_at:
            raise KeyboardInterrupt("simulated kill")
        noise = torch.randn(()) * 1e-3  # uses the global torch RNG, which resume must restore
        loss = ((self.actor(self.normalizer(batch.observations)) - batch.actions) ** 2).mean() + noise
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()
        self.updates += 1
        return {"loss": float("nan") if self.updates == self.nan_at else loss.item()}

    @torch.no_grad()
    def act(self, obs):
        return self.actor(self.normalizer(torch.as_tensor(obs))).numpy()

    def state_dict(self):
        return {"actor": self.actor.state_dict(), "opt": self.opt.state_dict(), "updates": self.updates}

    def load_state_dict(self, state):
        self.actor.load_state_dict(state["actor"])
        self.opt.load_state_dict(state["opt"])
        self.updates = state["updates"]


def _cfg(path, run_dir, **kw):
    base = dict(dataset=str(path), offline_steps=60, online_steps=150, eval_every=20, eval_episodes=2,
                checkpoint_every=25, run_dir=str(run_dir), wandb_mode="disabled", batch_size=16)
    base.update(kw)
    return BaseConfig(**base)


def run_offline(path, run_dir, **agent_kw):
    run = start_run(_cfg(path, run_dir), "toy", "offline")
    agent = ToyAgent(run.dataset.obs_dim, run.dataset.act_dim,
                     ObsNormalizer.from_observations(run.dataset.observations), **agent_kw)
    buffer = ReplayBuffer.from_dataset(run.dataset, 0, seed=run.cfg.seed)
    return train_offline(run, agent, buffer, [("a", 30, agent, False), ("b", 30, agent, True)])


def run_online(path, run_dir, offline_ckpt, **agent_kw):
    from common.checkpoint import load_checkpoint

    run = start_run(_cfg(path, run_dir), "toy", "online", extra_config={"offline_checkpoint": str(offline_ckpt)})
    agent = ToyAgent(run.dataset.obs_dim, run.dataset.act_dim,
                     ObsNormalizer.from_observations(run.dataset.observations), **agent_kw)
    if not run.resume:
        agent.load_state_dict(load_checkpoint(offline_ckpt, algo="toy")["agent"])
    buffer = ReplayBuffer.prefilled(run.dataset, 50, run.cfg.online_steps, seed=run.cfg.seed)
    ends = []
    hooks = OnlineHooks(on_start=lambda result: {"train/first": float(result.normalized_scores[0])},
                        on_episode_end=lambda ret, length: ends.append(ret) or {"train/episodes": float(len(ends))},
                        state=lambda: {"ends": list(ends)}, load_state=lambda s: ends.extend(s["ends"]))
    return train_online(run, agent, buffer, updates_per_step=2, exploration_std=0.1, hooks=hooks)


@pytest.fixture
def data_file(tiny_hopper_file):
    return tiny_hopper_file


def test_same_seed_same_metrics_and_records(tmp_path, data_file):
    run_offline(data_file, tmp_path / "a")
    run_offline(data_file, tmp_path / "b")
    a, b = (tmp_path / "a" / "metrics.jsonl").read_text(), (tmp_path / "b" / "metrics.jsonl").read_text()
    assert a == b
    records = read_metrics(tmp_path / "a" / "metrics.jsonl")
    assert [r["step"] for r in records] == [20, 30, 40, 60]  # stage ends log too
    assert "eval/normalized_score" not in records[0] and "eval/normalized_score" in records[2]
    assert all(r["phase"] == "offline" for r in records)
    assert sorted(p.name for p in (tmp_path / "a" / "checkpoints").iterdir()) == ["offline.pt"]
    assert yaml.safe_load((tmp_path / "a" / "config.yaml").read_text())["env"] == "Hopper-v4"


def test_offline_resume_equals_uninterrupted(tmp_path, data_file):
    run_offline(data_file, tmp_path / "full")
    with pytest.raises(KeyboardInterrupt):
        run_offline(data_file, tmp_path / "killed", crash_at=57)  # after the checkpoint at step 50
    assert (tmp_path / "killed" / "checkpoints" / "last.pt").exists()
    run_offline(data_file, tmp_path / "killed")
    assert (tmp_path / "killed" / "metrics.jsonl").read_text() == (tmp_path / "full" / "metrics.jsonl").read_text()
    assert not (tmp_path / "killed" / "checkpoints" / "last.pt").exists()


def test_online_resume_equals_uninterrupted(tmp_path, data_file):
    offline = run_offline(data_file, tmp_path / "off")
    run_online(data_file, tmp_path / "full", offline)
    full = read_metrics(tmp_path / "full" / "metrics.jsonl")
    assert full[0]["step"] == 0 and "train/first" in full[0] and "eval/normalized_score" in full[0]
    episode_records = [r for r in full if "online/episode_return" in r]
    assert len(episode_records) >= 2 and all("train/episodes" in r for r in episode_records)
    # 2 updates per env step; the kill lands after the first episode-end checkpoint past step 25.
    with pytest.raises(KeyboardInterrupt):
        run_online(data_file, tmp_path / "killed", offline, crash_at=60 + 2 * 140)
    assert (tmp_path / "killed" / "checkpoints" / "last.pt").exists()
    run_online(data_file, tmp_path / "killed", offline)
    assert (tmp_path / "killed" / "metrics.jsonl").read_text() == (tmp_path / "full" / "metrics.jsonl").read_text()
    saved = yaml.safe_load((tmp_path / "killed" / "config.yaml").read_text())
    assert saved["offline_checkpoint"] == str(offline)


def test_finished_run_is_not_overwritten_and_changed_config_refused(tmp_path, data_file):
    run_offline(data_file, tmp_path / "r")
    before = (tmp_path / "r" / "metrics.jsonl").read_text()
    with pytest.raises(RunExistsError, match="finished offline run"):
        run_offline(data_file, tmp_path / "r")
    assert (tmp_path / "r" / "metrics.jsonl").read_text() == before
    with pytest.raises(KeyboardInterrupt):
        run_offline(data_file, tmp_path / "k", crash_at=30)
    with pytest.raises(RunExistsError, match="seed differ"):
        start_run(dataclasses.replace(_cfg(data_file, tmp_path / "k"), seed=9), "toy", "offline")


def test_nan_loss_stops_with_clear_error_and_keeps_checkpoint(tmp_path, data_file):
    with pytest.raises(FloatingPointError, match="loss became nan at b step 52"):
        run_offline(data_file, tmp_path / "n", nan_at=53)
    assert (tmp_path / "n" / "checkpoints" / "last.pt").exists()
    records = read_metrics(tmp_path / "n" / "metrics.jsonl")
    assert [r["step"] for r in records] == [20, 30, 40]
    assert all(np.isfinite(r["train/loss"]) for r in records)


def test_video_at_the_end_when_asked(tmp_path, data_file):
    import imageio.v3 as iio

    run = start_run(_cfg(data_file, tmp_path / "v", offline_steps=20, eval_every=20, video=True), "toy", "offline")
    agent = ToyAgent(run.dataset.obs_dim, run.dataset.act_dim, ObsNormalizer.identity(run.dataset.obs_dim))
    train_offline(run, agent, ReplayBuffer.from_dataset(run.dataset, 0), [("bc", 20, agent, True)])
    frames = iio.imread(tmp_path / "v" / "video.mp4")
    assert frames.ndim == 4 and frames.shape[1:] == (480, 480, 3) and frames.shape[0] >= 2
