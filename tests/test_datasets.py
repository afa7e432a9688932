"""Datasets: D4RL download (local HTTP server), D4RL-format parsing, errors, Minari, normalized scores."""
from __future__ import annotations

import hashlib
import http.server
import json
import threading
import warnings
from pathlib import Path

import h5py
import numpy as np
import pytest

from common import datasets
from common.datasets import DatasetError, d4rl_filename, load_dataset, normalized_score, read_d4rl_hdf5
from common.envs import EnvMismatchError, check_env_matches
from conftest import missing_shared_data, shared_dir, write_d4rl_file


# --- download ------------------------------------------------------------------------------------
class _Server:
    """Serves `files` {url path: bytes}; `truncate` {path: n} sends only n bytes of a longer Content-Length."""

    def __init__(self, files: dict[str, bytes], truncate: dict[str, int] | None = None):
        truncate = truncate or {}

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                body = files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body[:truncate.get(self.path, len(body))])
                self.wfile.flush()
                self.close_connection = True

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def hopper_bytes(tmp_path) -> bytes:
    src = tmp_path / "src.hdf5"
    write_d4rl_file(src, episodes=[(20, "terminal"), (10, "timeout")], env_id=None)
    return src.read_bytes()


def test_d4rl_url_and_cache_layout(monkeypatch, tmp_path):
    assert d4rl_filename("hopper-medium-replay-v2") == "hopper_medium_replay-v2.hdf5"
    monkeypatch.delenv("D4RL_BASE_URL", raising=False)
    assert datasets.d4rl_url("halfcheetah-medium-expert-v2") == (
        "http://rail.eecs.berkeley.edu/datasets/offline_rl/gym_mujoco_v2/halfcheetah_medium_expert-v2.hdf5")
    monkeypatch.setenv("D4RL_BASE_URL", "http://mirror.example/d4rl/")
    assert datasets.d4rl_url("walker2d-random-v2") == "http://mirror.example/d4rl/gym_mujoco_v2/walker2d_random-v2.hdf5"
    monkeypatch.setenv("D4RL_DATASET_DIR", str(tmp_path))
    assert datasets.d4rl_dataset_dir() == tmp_path
    with pytest.raises(DatasetError, match="unknown D4RL dataset"):
        load_dataset("d4rl:hopper-superb-v2")


def test_download_good_file_is_verified_cached_and_loaded(monkeypatch, tmp_path, hopper_bytes):
    cache = tmp_path / "cache"
    monkeypatch.setenv("D4RL_DATASET_DIR", str(cache))
    monkeypatch.setitem(datasets.D4RL_SHA256, "hopper-medium-v2", hashlib.sha256(hopper_bytes).hexdigest())
    with _Server({"/gym_mujoco_v2/hopper_medium-v2.hdf5": hopper_bytes}) as server:
        monkeypatch.setenv("D4RL_BASE_URL", server.url)
        ds = load_dataset("d4rl:hopper-medium-v2")
    assert sorted(p.name for p in cache.iterdir()) == ["hopper_medium-v2.hdf5"]
    assert (cache / "hopper_medium-v2.hdf5").read_bytes() == hopper_bytes
    assert ds.name == "hopper-medium-v2" and ds.env_id == "Hopper-v4"
    assert (ds.ref_min_return, ds.ref_max_return) == (-20.272305, 3234.3)
    # Cached: a second load needs no server.
    monkeypatch.setenv("D4RL_BASE_URL", "http://127.0.0.1:9")
    assert len(load_dataset("d4rl:hopper-medium-v2")) == len(ds)


def test_download_wrong_checksum_leaves_nothing(monkeypatch, tmp_path, hopper_bytes):
    cache = tmp_path / "cache"
    monkeypatch.setenv("D4RL_DATASET_DIR", str(cache))
    with _Server({"/gym_mujoco_v2/hopper_medium-v2.hdf5": hopper_bytes}) as server:
        monkeypatch.setenv("D4RL_BASE_URL", server.url)
        with pytest.raises(DatasetError) as err:
            load_dataset("d4rl:hopper-medium-v2")
    message = str(err.value)
    assert "sha256" in message and "hopper_medium-v2.hdf5" in message
    assert datasets.D4RL_SHA256["hopper-medium-v2"] in message
    assert hashlib.sha256(hopper_bytes).hexdigest() in message
    assert list(cache.iterdir()) == []


def test_download_truncated_transfer_leaves_nothing(monkeypatch, tmp_path, hopper_bytes):
    cache = tmp_path / "cache"
    monkeypatch.setenv("D4RL_DATASET_DIR", str(cache))
    path = "/gym_mujoco_v2/hopper_medium_replay-v2.hdf5"
    with _Server({path: hopper_bytes}, truncate={path: len(hopper_bytes) // 2}) as server:
        monkeypatch.setenv("D4RL_BASE_URL", server.url)
        with pytest.raises(DatasetError) as err:
            load_dataset("d4rl:hopper-medium-replay-v2")
    message = str(err.value)
    assert "truncated" in message and "sha256" in message and "hopper_medium_replay-v2.hdf5" in message
    assert datasets.D4RL_SHA256["hopper-medium-replay-v2"] in message
    assert hashlib.sha256(hopper_bytes[: len(hopper_bytes) // 2]).hexdigest() in message
    assert list(cache.iterdir()) == []


def test_download_unknown_checksum_accepted_after_format_check(monkeypatch, tmp_path, hopper_bytes, capsys):
    cache = tmp_path / "cache"
    monkeypatch.setenv("D4RL_DATASET_DIR", str(cache))
    files = {"/gym_mujoco_v2/hopper_expert-v2.hdf5": hopper_bytes,
             "/gym_mujoco_v2/walker2d_expert-v2.hdf5": b"this is not hdf5" * 100}
    with _Server(files) as server:
        monkeypatch.setenv("D4RL_BASE_URL", server.url)
        ds = load_dataset("d4rl:hopper-expert-v2")
        assert hashlib.sha256(hopper_bytes).hexdigest() in capsys.readouterr().out
        with pytest.raises(DatasetError, match="not a readable HDF5"):
            load_dataset("d4rl:walker2d-expert-v2")
        with pytest.raises(DatasetError, match="404|cannot download"):
            load_dataset("d4rl:halfcheetah-expert-v2")
    assert len(ds) == 29  # 20 + 10 rows, the timeout row dropped (no next_observations in the file)
    assert sorted(p.name for p in cache.iterdir()) == ["hopper_expert-v2.hdf5"]


# --- D4RL-format files ---------------------------------------------------------------------------
def test_next_observations_derived_like_qlearning_dataset(tmp_path):
    path = tmp_path / "hopper-x.hdf5"
    raw = write_d4rl_file(path, episodes=[(5, "terminal"), (4, "timeout"), (3, "open")])
    ds = read_d4rl_hdf5(path)
    # Kept rows: episode 1 all 5 (terminal kept), episode 2 its first 3 (timeout row dropped),
    # episode 3 its first 2 (unfinished final row dropped).
    keep = [0, 1, 2, 3, 4, 5, 6, 7, 9, 10]
    np.testing.assert_array_equal(ds.observations, raw["observations"][keep])
    np.testing.assert_array_equal(ds.actions, raw["actions"][keep])
    np.testing.assert_array_equal(ds.rewards, raw["rewards"][keep])
    for i, row in enumerate(keep):
        if row != 4:  # the terminal row's next observation is never used
            np.testing.assert_array_equal(ds.next_observations[i], raw["observations"][row + 1])
    assert ds.terminals.tolist() == [False] * 4 + [True] + [False] * 5
    assert not ds.timeouts.any()
    assert ds.observations.dtype == np.float32 and ds.terminals.dtype == bool
    assert (ds.obs_dim, ds.act_dim, ds.env_id) == (11, 3, "Hopper-v4")


def test_next_observations_used_when_present(tmp_path):
    path = tmp_path / "halfcheetah-x.hdf5"
    raw = write_d4rl_file(path, episodes=[(5, "terminal"), (4, "timeout"), (3, "open")], obs_dim=17, act_dim=6,
                          next_obs=True, env_id=None)
    ds = read_d4rl_hdf5(path)
    assert len(ds) == 12
    np.testing.assert_array_equal(ds.next_observations, raw["next_observations"])
    assert ds.timeouts.tolist() == raw["timeouts"].tolist()
    assert ds.env_id == "HalfCheetah-v4"  # from the name, D4RL map
    assert ds.episode_returns() == pytest.approx([raw["rewards"][:5].sum(), raw["rewards"][5:9].sum()], rel=1e-6)


@pytest.mark.parametrize("problem, match", [
    ("missing", "missing required key"),
    ("lengths", "inconsistent lengths"),
    ("dims", "must be 2-D"),
    ("nan", "NaN"),
    ("inf", "NaN/inf"),
    ("next_shape", "next_observations has shape"),
    ("garbage", "not a readable HDF5"),
    ("absent", "not found"),
])
def test_malformed_files_name_file_and_problem(tmp_path, problem, match):
    path = tmp_path / "hopper-bad.hdf5"
    if problem == "garbage":
        path.write_bytes(b"\x00garbage" * 50)
    elif problem != "absent":
        raw = write_d4rl_file(tmp_path / "src.hdf5")
        n = len(raw["rewards"])
        if problem == "missing":
            del raw["timeouts"]
        elif problem == "lengths":
            raw["actions"] = raw["actions"][:-2]
        elif problem == "dims":
            raw["observations"] = raw["observations"][:, 0]
        elif problem == "nan":
            raw["rewards"][3] = np.nan
        elif problem == "inf":
            raw["observations"][2, 1] = np.inf
        elif problem == "next_shape":
            raw["next_observations"] = np.zeros((n, 5), np.float32)
        with h5py.File(path, "w") as f:
            for k, v in raw.items():
                f.create_dataset(k, data=v)
    with pytest.raises(DatasetError, match=match) as err:
        load_dataset(str(path))
    assert str(path) in str(err.value)


def test_unknown_spec_and_env_from_metadata(tmp_path):
    with pytest.raises(DatasetError, match="unknown dataset spec"):
        load_dataset("hopper-medium-v2")
    path = tmp_path / "mystery.hdf5"
    write_d4rl_file(path, env_id="Walker2d-v5", obs_dim=17, act_dim=6)
    ds = load_dataset(str(path))
    assert ds.env_id == "Walker2d-v5" and ds.ref_max_return == 4592.3
    unnamed = tmp_path / "mystery2.hdf5"
    write_d4rl_file(unnamed, env_id=None)
    with pytest.raises(DatasetError, match="set the config key env"):
        load_dataset(str(unnamed))


def test_dataset_env_dimension_mismatch_is_an_error():
    check_env_matches("Hopper-v4", 11, 3)
    with pytest.raises(EnvMismatchError, match="obs_dim=11.*HalfCheetah-v4 has obs_dim=17"):
        check_env_matches("HalfCheetah-v4", 11, 3)


def test_normalized_score_reference_values():
    assert normalized_score(3234.3, *datasets.REF_RETURNS["hopper"]) == pytest.approx(100.0)
    assert normalized_score(-20.272305, *datasets.REF_RETURNS["hopper"]) == pytest.approx(0.0)
    # walker2d: 100 * (2000 - 1.629008) / (4592.3 - 1.629008)
    assert normalized_score(2000.0, *datasets.REF_RETURNS["walker2d"]) == pytest.approx(43.53112, abs=1e-4)
    assert normalized_score([12135.0, -280.178953], *datasets.REF_RETURNS["halfcheetah"]) == pytest.approx([100, 0])


def test_real_minari_dataset_round_trip(tmp_path, monkeypatch):
    """A real Minari dataset, written offline by minari's own writer (create_dataset_from_buffers; its
    DataCollector needs jax, which minari[create] adds), loads through minari:<id> with the same transitions
    (terminal and time-limit ends kept apart); an unknown id gets a clear message."""
    minari = pytest.importorskip("minari")
    import gymnasium as gym
    from minari.data_collector.episode_buffer import EpisodeBuffer

    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    env = gym.make("Hopper-v5", max_episode_steps=60)
    episodes, complete = [], []  # minari's episode buffers; our record of every transition of a finished episode
    obs, _ = env.reset(seed=0)
    env.action_space.seed(0)
    episode, transitions = {"observations": [obs], "actions": [], "rewards": [], "terminations": [],
                            "truncations": []}, []
    for _ in range(300):
        action = env.action_space.sample()
        next_obs, reward, terminated, truncated, _ = env.step(action)
        for key, value in zip(("observations", "actions", "rewards", "terminations", "truncations"),
                              (next_obs, action, reward, terminated, truncated)):
            episode[key].append(value)
        transitions.append((obs, action, reward, next_obs, terminated, truncated))
        obs = next_obs
        if terminated or truncated:
            episodes.append(EpisodeBuffer(id=len(episodes), **episode))
            complete += transitions
            obs, _ = env.reset()
            episode, transitions = {"observations": [obs], "actions": [], "rewards": [], "terminations": [],
                                    "truncations": []}, []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # minari asks for an author, a description, ...
        minari.create_dataset_from_buffers("test/hopper/random-v0", buffer=episodes, env=env,
                                           algorithm_name="random policy")
    env.close()

    ds = load_dataset("minari:test/hopper/random-v0")
    assert ds.env_id == "Hopper-v5" and len(ds) == len(complete) and 0 < len(ds) <= 300
    np.testing.assert_allclose(ds.observations, np.array([r[0] for r in complete]), rtol=1e-6)
    np.testing.assert_allclose(ds.actions, np.array([r[1] for r in complete]), rtol=1e-6)
    np.testing.assert_allclose(ds.rewards, np.array([r[2] for r in complete]), rtol=1e-6)
    np.testing.assert_allclose(ds.next_observations, np.array([r[3] for r in complete]), rtol=1e-6)
    assert ds.terminals.tolist() == [bool(r[4]) for r in complete]
    assert ds.timeouts.tolist() == [bool(r[5] and not r[4]) for r in complete]
    assert ds.terminals.any() and ds.timeouts.any()
    assert (ds.ref_min_return, ds.ref_max_return) == datasets.REF_RETURNS["hopper"]

    with pytest.raises(DatasetError) as info:
        load_dataset("minari:nope/x-v0")
    message = str(info.value)
    assert "not among the local ones" in message and "test/hopper/random-v0" in message
    assert "huggingface" not in message.lower()


def test_minari_not_installed(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name == "minari":
            raise ImportError("no minari")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    with pytest.raises(DatasetError, match="pip install minari"):
        load_dataset("minari:mujoco/hopper/medium-v0")


# --- the regenerated datasets --------------------------------------------------------------------
def _shared_files():
    folder = shared_dir() / "datasets"
    return sorted(folder.glob("*.hdf5")) if folder.is_dir() else []


@pytest.mark.parametrize("path", _shared_files() or [None], ids=lambda p: p.name if p else "absent")
def test_every_shared_dataset_loads(path):
    if path is None:
        missing_shared_data(f"{shared_dir() / 'datasets'} (*.hdf5)")
    ds = load_dataset(f"shared:{path.name}")
    with h5py.File(path) as f:
        generation = json.loads(f["metadata/generation"][()])
        n_file = f["observations"].shape[0]
    assert ds.env_id == generation["env_id"]
    assert len(ds) == n_file  # next_observations present: every row kept
    assert ds.observations.dtype == np.float32 and ds.observations.shape == ds.next_observations.shape
    check_env_matches(ds.env_id, ds.obs_dim, ds.act_dim)
    returns = ds.episode_returns()
    assert len(returns) > 0
    scores = ds.normalized_score(returns)
    assert -20 < scores.mean() < 120
