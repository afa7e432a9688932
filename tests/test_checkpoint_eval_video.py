"""Checkpoint files, evaluation determinism, seeding, and rendered video."""
from __future__ import annotations


import numpy as np
import pytest
import torch

from common.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from common.evaluation import evaluate
from common.utils import seed_everything
from conftest import REPO


def test_checkpoint_round_trip(tmp_path):
    net = torch.nn.Linear(3, 2)
    payload = {"algo": "toy", "kind": "agent", "step": 7, "net": net.state_dict(), "alpha": 0.25,
               "rng": torch.get_rng_state(), "nested": {"a": [1, 2.5, "x"], "b": None}}
    path = save_checkpoint(tmp_path / "ck" / "x.pt", payload)
    assert sorted(p.name for p in path.parent.iterdir()) == ["x.pt"]  # no temporary file left
    loaded = load_checkpoint(path, algo="toy", kind="agent")
    assert loaded["step"] == 7 and loaded["alpha"] == 0.25 and loaded["nested"] == payload["nested"]
    for key, value in net.state_dict().items():
        assert torch.equal(loaded["net"][key], value)
    with pytest.raises(CheckpointError, match="is a 'toy' checkpoint, expected 'spot'"):
        load_checkpoint(path, algo="spot")
    with pytest.raises(CheckpointError, match="expected 'vae'"):
        load_checkpoint(path, kind="vae")


def test_truncated_foreign_and_unsafe_checkpoints(tmp_path):
    path = save_checkpoint(tmp_path / "x.pt", {"algo": "toy", "w": torch.randn(1000)})
    data = path.read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or not a checkpoint"):
        load_checkpoint(tmp_path / "cut.pt")
    torch.save({"w": torch.zeros(2)}, tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError, match="not a checkpoint of this repository"):
        load_checkpoint(tmp_path / "foreign.pt")
    (tmp_path / "text.pt").write_text("hello")
    with pytest.raises(CheckpointError):
        load_checkpoint(tmp_path / "text.pt")
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "missing.pt")


class _Boom:
    def __reduce__(self):
        return (print, ("code ran while loading",))


def test_checkpoint_that_would_run_code_is_refused(tmp_path, capsys):
    path = tmp_path / "evil.pt"
    torch.save({"format": "offline-to-online-checkpoint/1", "x": _Boom()}, path)
    with pytest.raises(CheckpointError, match="refusing to load"):
        load_checkpoint(path)
    assert "code ran" not in capsys.readouterr().out
    torch.load(path, weights_only=False)  # the payload is a real exploit: an unsafe load runs it
    assert "code ran while loading" in capsys.readouterr().out


def test_evaluation_is_deterministic_and_batched():
    calls = []

    def policy(obs):
        calls.append(obs.shape)
        return np.tanh(obs[:, :3] * 0.5)

    a = evaluate(policy, "Hopper-v4", episodes=4, seed=11)
    n_calls = len(calls)
    b = evaluate(policy, "Hopper-v4", episodes=4, seed=11)
    c = evaluate(policy, "Hopper-v4", episodes=4, seed=12)
    np.testing.assert_array_equal(a.returns, b.returns)
    assert not np.array_equal(a.returns, c.returns)
    assert calls[0] == (4, 11) and n_calls == a.lengths.max()  # one batched call per step
    assert a.return_mean == pytest.approx(a.returns.mean()) and a.return_std == pytest.approx(a.returns.std())
    expected = 100 * (a.returns + 20.272305) / (3234.3 + 20.272305)
    np.testing.assert_allclose(a.normalized_scores, expected)
    m = a.metrics()
    assert set(m) == {"eval/return_mean", "eval/return_std", "eval/normalized_score", "eval/normalized_score_std"}
    assert m["eval/normalized_score"] == pytest.approx(expected.mean())


def test_seed_everything_repeats_torch_and_numpy():
    seed_everything(5)
    a = (torch.rand(3), np.random.rand(3))
    seed_everything(5)
    b = (torch.rand(3), np.random.rand(3))
    assert torch.equal(a[0], b[0]) and np.array_equal(a[1], b[1])


def test_rendered_video_decodes_to_frames_of_expected_size(tmp_path):
    imageio = pytest.importorskip("imageio.v3")
    from common.video import render_episode

    out = tmp_path / "video" / "ep.mp4"
    info = render_episode(lambda obs: np.zeros((1, 6), np.float32), "HalfCheetah-v4", out, seed=0,
                          max_steps=30, width=160, height=128)
    assert info["length"] == 30 and info["frames"] == 31
    frames = imageio.imread(out, plugin="pyav") if _has_pyav() else imageio.imread(out)
    assert frames.shape == (31, 128, 160, 3)
    assert frames.std() > 5  # an actual picture, not a blank frame
    assert [p.name for p in out.parent.iterdir()] == ["ep.mp4"]
    labelled = tmp_path / "video" / "labelled.mp4"
    render_episode(lambda obs: np.zeros((1, 6), np.float32), "HalfCheetah-v4", labelled, seed=0, max_steps=3,
                   width=160, height=128, label="halfcheetah\nscore 1.0")
    plain, marked = imageio.imread(out)[0], imageio.imread(labelled)[0]
    corner = np.abs(plain[:20, :60].astype(int) - marked[:20, :60].astype(int)).mean()
    assert corner > 20 and np.abs(plain[80:].astype(int) - marked[80:].astype(int)).mean() < 3


def test_the_drawn_floor_follows_a_fast_robot_and_leaves_the_physics_alone(tmp_path):
    """HalfCheetah's floor is drawn 40 m each way; the shipped runner passes that at ~150 frames. The video keeps a
    checkerboard under it to the end, and its return equals a plain rollout's (the floor moves only in the drawing)."""
    imageio = pytest.importorskip("imageio.v3")
    from common.envs import gym_make
    from common.inference import load_agent
    from common.video import render_episode

    agent, info = load_agent(REPO / "models" / "halfcheetah-medium-gen_adaptive_bc_online.pt")
    out = tmp_path / "run.mp4"
    steps = 400  # ~90 m on this CPU; the distance moves with the floats, the test needs only > 45
    rendered = render_episode(agent.act, info["env_id"], out, seed=0, max_steps=steps, width=96, height=96)
    env = gym_make(info["env_id"])
    obs, _ = env.reset(seed=0)
    total = 0.0
    for _ in range(steps):
        obs, reward, *_ = env.step(agent.act(obs[None].astype(np.float32))[0])
        total += float(reward)
    assert env.unwrapped.data.qpos[0] > 45  # it did run past the 40 m the floor is drawn
    env.close()
    assert rendered["return"] == total
    frames = imageio.imread(out)
    ground = frames[:, 70:].astype(float)  # the lower part of each frame: floor, not robot
    assert ground.std(axis=(1, 2, 3)).min() > 40  # black and grey squares in every frame, never a plain void


def test_the_floor_is_moved_by_whole_texture_periods():
    """_floor's period is the checkerboard's: the floor shifted by one period draws the same picture, by half a
    period a different one (so the moving floor never jumps)."""
    from common.envs import gym_make
    from common.video import _floor

    for env_id in ("HalfCheetah-v5", "Hopper-v5"):
        env = gym_make(env_id, render_mode="rgb_array", width=64, height=64)
        env.reset(seed=0)
        geom, period = _floor(env.unwrapped.model)
        data = env.unwrapped.data

        def picture(shift):
            data.geom_xpos[geom][0] = shift
            return env.render().astype(int)

        base = picture(0.0)
        assert np.abs(picture(period) - base).mean() < 0.5, env_id
        assert np.abs(picture(3 * period) - base).mean() < 0.5, env_id
        assert np.abs(picture(period / 2) - base).mean() > 10, env_id
        env.close()


def test_gif_preview_keeps_every_nth_frame_at_the_same_speed(tmp_path):
    import imageio.v2 as imageio
    from PIL import Image

    from common.video import main as video_main

    mp4 = tmp_path / "ep.mp4"
    with imageio.get_writer(mp4, fps=50, macro_block_size=1) as writer:
        for i in range(20):  # a bright bar moving down: frames tell apart
            frame = np.zeros((64, 80, 3), np.uint8)
            frame[3 * i:3 * i + 3] = 255
            writer.append_data(frame)
    video_main([str(mp4), str(tmp_path / "ep.gif"), "--width", "40", "--every", "4"])
    gif = Image.open(tmp_path / "ep.gif")
    assert gif.n_frames == 5 and gif.size == (40, 32)
    assert gif.info["duration"] == 80  # 4 frames of 20 ms each
    gif.seek(2)
    rows = np.asarray(gif.convert("L")).mean(axis=1)
    assert abs(int(rows.argmax()) - (3 * 8 + 1) // 2) <= 2  # frame 8's bar, at half size
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ep.gif", "ep.mp4"]


def _has_pyav() -> bool:
    try:
        import av  # noqa: F401
        return True
    except ImportError:
        return False


class _System:
    def __reduce__(self):
        import os
        return (os.system, ("echo code ran while loading",))


def test_a_blocked_module_is_refused_as_code_not_called_corrupted(tmp_path):
    """torch 2.13 words a blocked callable 'unsupported GLOBAL posix.system whose module posix is blocked': still a
    refusal because loading could run code, not 'corrupted'."""
    path = tmp_path / "evil.pt"
    torch.save({"format": "offline-to-online-checkpoint/1", "x": _System()}, path)
    with pytest.raises(CheckpointError, match=r"refusing to load .*it references (posix|nt)\.system.*could run code"):
        load_checkpoint(path)


def test_a_full_disk_during_a_checkpoint_write_is_one_line_and_leaves_nothing(tmp_path, monkeypatch, capsys):
    """torch's zip writer reports a full disk as RuntimeError('[enforce fail at inline_container.cc…] unexpected
    pos …'); save_checkpoint turns it into the one-line 'No space left' OSError of the other write points (exit 2
    through the scripts' error handler), and neither the temporary file nor a partial checkpoint stays."""
    import shutil
    from collections import namedtuple

    import common.checkpoint as checkpoint
    from common.checkpoint import save_checkpoint
    from common.errors import cli

    def full(payload, f):
        f.write(b"PK\x03\x04" + b"\0" * 60)
        raise RuntimeError("[enforce fail at inline_container.cc:664] . unexpected pos 576 vs 512")

    monkeypatch.setattr(checkpoint.torch, "save", full)
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**9, 10**9 - 300_000, 300_000))
    target = tmp_path / "checkpoints" / "last.pt"
    with pytest.raises(OSError, match="No space left on device while writing last.pt") as info:
        save_checkpoint(target, {"step": 1})
    assert info.value.errno == 28
    assert list((tmp_path / "checkpoints").iterdir()) == []
    with pytest.raises(SystemExit) as code:
        cli(lambda argv: save_checkpoint(target, {"step": 1}), [])
    assert code.value.code == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("error: [Errno 28] No space left on device while writing last.pt")


def test_making_an_env_prints_no_known_mujoco_warning_but_passes_others_on(tmp_path, monkeypatch, capfd):
    """half_cheetah.xml's deprecated 'settotalmass' made MuJoCo print a WARNING line (and write MUJOCO_LOG.TXT) for
    every env a run made; it is dropped, any other MuJoCo warning becomes a Python warning."""
    import warnings

    import mujoco

    from common import envs

    monkeypatch.chdir(tmp_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        envs.gym_make("HalfCheetah-v5").close()
    captured = capfd.readouterr()
    assert "settotalmass" not in captured.out + captured.err + " ".join(str(w.message) for w in caught)
    assert not (tmp_path / "MUJOCO_LOG.TXT").exists()
    assert mujoco.get_mju_user_warning() is None  # the handler is MuJoCo's own again outside gym_make
    with envs._known_mujoco_warnings_dropped(), pytest.warns(RuntimeWarning, match="MuJoCo: something else"):
        mujoco.get_mju_user_warning()("something else")
