"""tools.datasets: the manifest, verify, and fetch from a local HTTP server (good, corrupted, cut mid-transfer and
resumed with a Range request) or a folder; and the committed manifest against the shared files."""
from __future__ import annotations

import http.server
import json
import shutil
import threading
from pathlib import Path

import pytest

from common.datasets import DatasetError, sha256_of, shared_dir
from conftest import REPO, missing_shared_data, write_d4rl_file
from tools import datasets


class Server:
    """A static file server on 127.0.0.1 that honours Range and can cut a file after `cut` bytes."""

    def __init__(self, root: Path):
        self.root, self.ranges, self.cut = root, [], None
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                path = outer.root / self.path.lstrip("/")
                if not path.is_file():
                    self.send_error(404)
                    return
                data = path.read_bytes()
                start = 0
                if self.headers.get("Range"):
                    outer.ranges.append(self.headers["Range"])
                    start = int(self.headers["Range"].removeprefix("bytes=").rstrip("-"))
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(data) - start))
                self.end_headers()
                body = data[start:] if outer.cut is None else data[start:outer.cut]
                self.wfile.write(body)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def published(tmp_path):
    """Two tiny D4RL-format files in a 'published' folder and the manifest made from them."""
    source = tmp_path / "published"
    source.mkdir()
    write_d4rl_file(source / "a-medium-gen.hdf5", episodes=[(30, "terminal"), (20, "timeout")], next_obs=True)
    write_d4rl_file(source / "b-medium-replay-gen.hdf5", episodes=[(50, "timeout")], next_obs=True, seed=1,
                    extra={"filler": __import__("numpy").zeros(300_000, dtype="float32")})  # > 1 MiB: several blocks
    manifest = tmp_path / "datasets.json"
    assert datasets.main(["--manifest", str(manifest), "manifest", str(source)]) == 0
    server = Server(source)
    yield source, manifest, server
    server.close()


def test_manifest_describes_each_file(published):
    source, manifest, _ = published
    entries = {e["name"]: e for e in json.loads(manifest.read_text())["datasets"]}
    a = entries["a-medium-gen.hdf5"]
    assert a["sha256"] == sha256_of(source / "a-medium-gen.hdf5") and a["bytes"] == (source / a["name"]).stat().st_size
    assert (a["transitions"], a["episodes"], a["env_id"]) == (50, 2, "Hopper-v4")


def test_fetch_verify_resume_and_refuse(published, tmp_path):
    source, manifest, server = published
    dest = tmp_path / "here"
    run = lambda *a: datasets.main(["--manifest", str(manifest), *a])  # noqa: E731
    with pytest.raises(DatasetError, match="2 of 2 files .* are missing"):
        run("verify", "--dir", str(dest))

    # a transfer cut after 400,000 bytes: an error saying to rerun, the partial file kept, nothing under the name
    server.cut = 400_000
    with pytest.raises(DatasetError, match="stopped at .* run the same command again"):
        run("fetch", "--from", server.url, "--dir", str(dest))
    assert (dest / "a-medium-gen.hdf5").is_file() and not (dest / "b-medium-replay-gen.hdf5").exists()
    part = dest / ".b-medium-replay-gen.hdf5.part"
    assert part.is_file() and 0 < part.stat().st_size < (source / "b-medium-replay-gen.hdf5").stat().st_size
    # the rerun continues it with a Range request, and both files then verify
    server.cut = None
    assert run("fetch", "--from", server.url, "--dir", str(dest)) == 0
    assert server.ranges == ["bytes=400000-"]
    assert run("verify", "--dir", str(dest)) == 0 and not part.exists()
    for name in ("a-medium-gen.hdf5", "b-medium-replay-gen.hdf5"):
        assert (dest / name).read_bytes() == (source / name).read_bytes()

    # a source whose file differs: refused, deleted, nothing left
    bad = tmp_path / "bad"
    shutil.copytree(source, bad)
    data = bytearray((bad / "a-medium-gen.hdf5").read_bytes())
    data[-1] ^= 0xFF
    (bad / "a-medium-gen.hdf5").write_bytes(bytes(data))
    other = tmp_path / "other"
    with pytest.raises(DatasetError, match="is not the manifest's file .* it was deleted"):
        run("fetch", "--from", str(bad), "--dir", str(other), "a-medium-gen.hdf5")
    assert list(other.iterdir()) == []
    # from a folder: fine; a damaged local copy is reported by verify and not overwritten by fetch
    assert run("fetch", "--from", str(source), "--dir", str(other)) == 0
    (other / "a-medium-gen.hdf5").write_bytes(bytes(data))
    with pytest.raises(DatasetError, match="1 of 2 files .* differ"):
        run("verify", "--dir", str(other))
    with pytest.raises(DatasetError, match="differs from the manifest's file; move it away"):
        run("fetch", "--from", str(source), "--dir", str(other))
    with pytest.raises(DatasetError, match="not in the manifest: c.hdf5"):
        run("fetch", "--from", str(source), "--dir", str(other), "c.hdf5")


def test_committed_manifest_matches_the_shared_files():
    """data/datasets.json describes every file the study uses, and the shared copies are those files."""
    entries = {e["name"]: e for e in datasets.read_manifest()}
    sweep = (REPO / "configs" / "sweeps" / "truncated.yaml").read_text()
    for name in entries:
        assert f"shared:{name}" in sweep
    folder = shared_dir() / "datasets"
    if not folder.is_dir():
        missing_shared_data(str(folder))
    for entry in entries.values():
        assert datasets.status(entry, folder) == "ok", entry["name"]


def test_export_to_minari_loads_the_same_arrays(tmp_path, monkeypatch):
    """A D4RL-format file from real Hopper-v5 rollouts (terminal and time-limit ends, and an episode cut by the
    file's end) written as a Minari dataset: minari:<id> gives the same transitions; data whose next_observations do
    not continue its observations is refused."""
    import gymnasium as gym
    import h5py
    import numpy as np

    from common.datasets import load_dataset

    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    env = gym.make("Hopper-v5", max_episode_steps=40)
    rows = {k: [] for k in ("observations", "actions", "rewards", "next_observations", "terminals", "timeouts")}
    obs, _ = env.reset(seed=0)
    env.action_space.seed(0)
    for _ in range(250):
        action = env.action_space.sample()
        nxt, reward, terminated, truncated, _ = env.step(action)
        for key, value in zip(rows, (obs, action, reward, nxt, terminated, truncated and not terminated)):
            rows[key].append(value)
        obs = env.reset()[0] if terminated or truncated else nxt
    env.close()
    path = tmp_path / "hopper-rollouts.hdf5"
    with h5py.File(path, "w") as f:
        for key, values in rows.items():
            f.create_dataset(key, data=np.asarray(values, dtype=bool if key in ("terminals", "timeouts") else np.float32))
        f.create_dataset("metadata/generation", data=json.dumps({"env_id": "Hopper-v5"}))
    original = load_dataset(str(path))
    assert original.terminals.any() and original.timeouts.any() and not (original.terminals[-1] or original.timeouts[-1])
    assert datasets.main(["to-minari", str(path), "test/hopper/rollouts-v0"]) == 0
    exported = load_dataset("minari:test/hopper/rollouts-v0")
    for key in ("observations", "actions", "rewards", "next_observations", "terminals", "timeouts"):
        np.testing.assert_array_equal(getattr(exported, key), getattr(original, key), err_msg=key)
    assert exported.env_id == "Hopper-v5"
    assert (exported.ref_min_return, exported.ref_max_return) == (original.ref_min_return, original.ref_max_return)

    inconsistent = tmp_path / "random.hdf5"
    write_d4rl_file(inconsistent, episodes=[(5, "terminal")], next_obs=True, env_id="Hopper-v5")
    with pytest.raises(DatasetError, match="do not continue observations"):
        datasets.main(["to-minari", str(inconsistent), "test/hopper/random-v0"])
