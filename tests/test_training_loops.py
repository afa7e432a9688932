"""The shared run helpers (common/run.py) as an algorithm's own loops use them, through the minimal extra
algorithm package tests/plainbc/: determinism, resume == uninterrupted, finished-run guard,
changed-config guard, NaN guard, video."""
from __future__ import annotations

import importlib

import numpy as np
import pytest
import yaml

from common.layout import read_metrics
from common.run_folder import RunExistsError


@pytest.fixture
def bc():
    agent = importlib.import_module("plainbc.agent")
    return agent, importlib.import_module("plainbc.train_offline"), importlib.import_module("plainbc.train_online")


def args(path, run_dir, **kw):
    base = dict(dataset=str(path), offline_steps=60, online_steps=150, eval_every=20, eval_episodes=2,
                checkpoint_every=25, run_dir=str(run_dir), wandb_mode="disabled", batch_size=16)
    base.update(kw)
    return [token for key, value in base.items() for token in (f"--{key}", str(value))]


def interrupt_at(monkeypatch, agent_module, updates: int, value=None):
    """Makes the agent's update raise KeyboardInterrupt (a kill) at its `updates`-th call, or return `value`."""
    update = agent_module.BcAgent.update

    def patched(self, batch):
        if self.updates == updates:
            if value is None:
                raise KeyboardInterrupt("simulated kill")
            self.updates += 1
            return {"loss": value}
        return update(self, batch)

    monkeypatch.setattr(agent_module.BcAgent, "update", patched)


def test_same_seed_same_metrics_and_records(tmp_path, tiny_hopper_file, bc):
    _, offline, _ = bc
    offline.main(args(tiny_hopper_file, tmp_path / "a"))
    offline.main(args(tiny_hopper_file, tmp_path / "b"))
    a, b = (tmp_path / "a" / "metrics.jsonl").read_text(), (tmp_path / "b" / "metrics.jsonl").read_text()
    assert a == b
    records = read_metrics(tmp_path / "a" / "metrics.jsonl")
    assert [r["step"] for r in records] == [20, 40, 60]
    assert all("eval/normalized_score" in r and "train/loss" in r for r in records)
    assert all(r["phase"] == "offline" for r in records)
    assert sorted(p.name for p in (tmp_path / "a" / "checkpoints").iterdir()) == ["offline.pt"]
    assert yaml.safe_load((tmp_path / "a" / "config.yaml").read_text())["env"] == "Hopper-v4"


def test_offline_resume_equals_uninterrupted(tmp_path, tiny_hopper_file, bc, monkeypatch):
    agent, offline, _ = bc
    offline.main(args(tiny_hopper_file, tmp_path / "full"))
    with monkeypatch.context() as patch:
        interrupt_at(patch, agent, 57)  # after the checkpoint at step 50
        with pytest.raises(KeyboardInterrupt):
            offline.main(args(tiny_hopper_file, tmp_path / "killed"))
    assert (tmp_path / "killed" / "checkpoints" / "last.pt").exists()
    offline.main(args(tiny_hopper_file, tmp_path / "killed"))
    assert (tmp_path / "killed" / "metrics.jsonl").read_text() == (tmp_path / "full" / "metrics.jsonl").read_text()
    assert not (tmp_path / "killed" / "checkpoints" / "last.pt").exists()


def test_wall_time_of_a_resumed_run_sums_its_segments(tmp_path, tiny_hopper_file, bc, monkeypatch):
    """The final checkpoint's wall_s counts every segment up to its last checkpoint: with a clock that ticks one
    second per update, a run killed at update 57 (last checkpoint at 50) and resumed records 60 s, as an
    uninterrupted run does (not the last segment's 10 s, nor 67 s with the 7 lost updates)."""
    import common.run
    from common.checkpoint import load_checkpoint

    agent, offline, _ = bc
    clock = [0.0]
    monkeypatch.setattr(common.run, "_now", lambda: clock[0])
    update = agent.BcAgent.update
    monkeypatch.setattr(agent.BcAgent, "update", lambda self, batch: clock.__setitem__(0, clock[0] + 1.0) or
                        update(self, batch))
    full = offline.main(args(tiny_hopper_file, tmp_path / "full"))
    assert load_checkpoint(full)["wall_s"] == 60.0
    with monkeypatch.context() as patch:
        interrupt_at(patch, agent, 57)
        with pytest.raises(KeyboardInterrupt):
            offline.main(args(tiny_hopper_file, tmp_path / "killed"))
    assert load_checkpoint(tmp_path / "killed" / "checkpoints" / "last.pt")["wall_s"] == 50.0
    resumed = offline.main(args(tiny_hopper_file, tmp_path / "killed"))
    assert load_checkpoint(resumed)["wall_s"] == 60.0


def test_resume_takes_other_wandb_settings_and_variant_but_not_other_math(tmp_path, tiny_hopper_file, bc, monkeypatch):
    """A killed run resumes under other wandb settings or another variant label (they change neither the data nor
    the arithmetic) and ends with the uninterrupted run's metrics; another learning rate is still refused."""
    agent, offline, _ = bc
    offline.main(args(tiny_hopper_file, tmp_path / "full"))
    with monkeypatch.context() as patch:
        interrupt_at(patch, agent, 57)
        with pytest.raises(KeyboardInterrupt):
            offline.main(args(tiny_hopper_file, tmp_path / "killed", wandb_mode="offline"))
    with pytest.raises(RunExistsError, match="lr"):
        offline.main(args(tiny_hopper_file, tmp_path / "killed", lr=0.5))
    offline.main(args(tiny_hopper_file, tmp_path / "killed", wandb_project="other", variant="bc_relabelled"))
    assert (tmp_path / "killed" / "metrics.jsonl").read_text() == (tmp_path / "full" / "metrics.jsonl").read_text()
    assert yaml.safe_load((tmp_path / "killed" / "config.yaml").read_text())["variant"] == "bc_relabelled"


def test_variants_of_one_algorithm_are_kept_apart(tmp_path, tiny_hopper_file, bc):
    """Two online runs of one algorithm from one offline run, recorded as different variants, are two groups in the
    plots and reports even when their folders are given without a sweep root to name them."""
    from tools.plots import load_trials

    _, offline, online = bc
    ckpt = offline.main(args(tiny_hopper_file, tmp_path / "off", variant="plainbc"))
    for variant in ("plainbc", "plainbc_other"):
        online.main(["--checkpoint", str(ckpt), "--online_steps", "20", "--eval_every", "10", "--variant", variant,
                     "--run_dir", str(tmp_path / variant)])
    trials = load_trials([tmp_path / "off", tmp_path / "plainbc", tmp_path / "plainbc_other"])
    assert sorted(t.algo for t in trials) == ["plainbc", "plainbc_other"]
    assert all(t.offline_dir == (tmp_path / "off").resolve() for t in trials)


@pytest.mark.parametrize("cut", [25, "all"])
def test_metrics_shorter_than_the_checkpoint_says_are_refused_not_padded(tmp_path, tiny_hopper_file, bc, monkeypatch,
                                                                          cut):
    """After a power cut metrics.jsonl can end before the offset last.pt recorded. Resuming then refuses with one
    clear error and leaves the file as it is (it used to pad it with NUL bytes)."""
    agent, offline, _ = bc
    with monkeypatch.context() as patch:
        interrupt_at(patch, agent, 57)
        with pytest.raises(KeyboardInterrupt):
            offline.main(args(tiny_hopper_file, tmp_path / "killed"))
    metrics = tmp_path / "killed" / "metrics.jsonl"
    data = metrics.read_bytes()
    metrics.write_bytes(b"" if cut == "all" else data[:-cut])
    before = metrics.read_bytes()
    with pytest.raises(RunExistsError, match="records the run had written are gone"):
        offline.main(args(tiny_hopper_file, tmp_path / "killed"))
    assert metrics.read_bytes() == before and b"\0" not in before


def test_online_resume_equals_uninterrupted(tmp_path, tiny_hopper_file, bc, monkeypatch):
    agent, offline, online = bc
    ckpt = offline.main(args(tiny_hopper_file, tmp_path / "off"))
    online_args = ["--checkpoint", str(ckpt), "--online_steps", "150", "--eval_every", "20", "--checkpoint_every", "25"]
    online.main([*online_args, "--run_dir", str(tmp_path / "full")])
    full = read_metrics(tmp_path / "full" / "metrics.jsonl")
    assert full[0]["step"] == 0 and "eval/normalized_score" in full[0] and "train/exploration" in full[0]
    episode_records = [r for r in full if "online/episode_return" in r]
    assert len(episode_records) >= 2
    # 2 updates per env step; the kill lands after the first episode-end checkpoint past step 25.
    with monkeypatch.context() as patch:
        interrupt_at(patch, agent, 60 + 2 * 140)
        with pytest.raises(KeyboardInterrupt):
            online.main([*online_args, "--run_dir", str(tmp_path / "killed")])
    assert (tmp_path / "killed" / "checkpoints" / "last.pt").exists()
    online.main([*online_args, "--run_dir", str(tmp_path / "killed")])
    assert (tmp_path / "killed" / "metrics.jsonl").read_text() == (tmp_path / "full" / "metrics.jsonl").read_text()
    saved = yaml.safe_load((tmp_path / "killed" / "config.yaml").read_text())
    assert saved["offline_checkpoint"] == str(ckpt)


def test_online_resume_in_the_middle_of_an_episode_equals_uninterrupted(tmp_path, bc, monkeypatch):
    """HalfCheetah never terminates: with an 80-step time limit and checkpoint_every 50, the last.pt of a run killed at
    step 70 holds episode 0 at its 50th step (physics, time-limit count, observation, return). The resumed run
    continues that episode (its record at step 80 included) and ends with the same metrics.jsonl."""
    import common.online
    from common.checkpoint import load_checkpoint
    from conftest import write_d4rl_file

    agent, offline, online = bc
    data = tmp_path / "tiny-halfcheetah.hdf5"
    write_d4rl_file(data, episodes=[(60, "timeout"), (40, "open")], obs_dim=17, act_dim=6, env_id="HalfCheetah-v4")
    make_env = common.online.make_env
    monkeypatch.setattr(common.online, "make_env", lambda env_id, seed: make_env(env_id, seed, max_episode_steps=80))
    ckpt = offline.main(args(data, tmp_path / "off", offline_steps=20))
    online_args = ["--checkpoint", str(ckpt), "--online_steps", "120", "--eval_every", "60", "--checkpoint_every", "50"]
    online.main([*online_args, "--run_dir", str(tmp_path / "full")])
    full = (tmp_path / "full" / "metrics.jsonl").read_text()
    assert [r["step"] for r in read_metrics(tmp_path / "full") if "online/episode_return" in r] == [80]
    with monkeypatch.context() as patch:
        interrupt_at(patch, agent, 20 + 2 * 70)  # 20 offline updates, then 2 per env step: killed at step 70
        with pytest.raises(KeyboardInterrupt):
            online.main([*online_args, "--run_dir", str(tmp_path / "killed")])
    last = load_checkpoint(tmp_path / "killed" / "checkpoints" / "last.pt")
    assert last["step"] == 50 and last["episode"] == 0
    assert last["episode_in_progress"]["length"] == 50 and last["episode_in_progress"]["elapsed_steps"] == 50
    online.main([*online_args, "--run_dir", str(tmp_path / "killed")])
    assert (tmp_path / "killed" / "metrics.jsonl").read_text() == full


def test_finished_run_is_not_overwritten_and_changed_config_refused(tmp_path, tiny_hopper_file, bc, monkeypatch):
    agent, offline, _ = bc
    offline.main(args(tiny_hopper_file, tmp_path / "r"))
    before = (tmp_path / "r" / "metrics.jsonl").read_text()
    with pytest.raises(RunExistsError, match="finished offline run"):
        offline.main(args(tiny_hopper_file, tmp_path / "r"))
    assert (tmp_path / "r" / "metrics.jsonl").read_text() == before
    with monkeypatch.context() as patch:
        interrupt_at(patch, agent, 30)
        with pytest.raises(KeyboardInterrupt):
            offline.main(args(tiny_hopper_file, tmp_path / "k"))
    with pytest.raises(RunExistsError, match="seed differ"):
        offline.main(args(tiny_hopper_file, tmp_path / "k", seed=9))


def test_nan_loss_stops_with_clear_error_and_keeps_checkpoint(tmp_path, tiny_hopper_file, bc, monkeypatch):
    agent, offline, _ = bc
    interrupt_at(monkeypatch, agent, 52, value=float("nan"))
    with pytest.raises(FloatingPointError, match="loss became nan at offline step 52"):
        offline.main(args(tiny_hopper_file, tmp_path / "n"))
    assert (tmp_path / "n" / "checkpoints" / "last.pt").exists()
    records = read_metrics(tmp_path / "n" / "metrics.jsonl")
    assert [r["step"] for r in records] == [20, 40]
    assert all(np.isfinite(r["train/loss"]) for r in records)


def test_video_at_the_end_when_asked(tmp_path, tiny_hopper_file, bc):
    import imageio.v3 as iio

    _, offline, _ = bc
    offline.main(args(tiny_hopper_file, tmp_path / "v", offline_steps=20, video="true"))
    frames = iio.imread(tmp_path / "v" / "video.mp4")
    assert frames.ndim == 4 and frames.shape[1:] == (480, 480, 3) and frames.shape[0] >= 2
