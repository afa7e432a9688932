"""A run folder belongs to one run; bad input is one clear line (the findings of the hostile-user probe, one test
each: finished results never overwritten, one process per folder, shared key checks, no stale temporary files,
a changed dataset refused, clear messages, disk errors found at the start, the smaller items)."""
from __future__ import annotations

import hashlib
import os
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from adaptive_bc import train_offline, train_online
from adaptive_bc.agent import RedqBcAgent
from common.checkpoint import CheckpointError, load_checkpoint
from common.config import ConfigError
from common.datasets import DatasetError, load_dataset
from common.inference import load_agent
from common.run_folder import RunExistsError
from conftest import REPO

SMALL = ["--hidden_dim", "16", "--num_critics", "4", "--batch_size", "16", "--eval_episodes", "1",
         "--wandb_mode", "disabled", "--utd", "1", "--prefill_min", "64"]


def offline_args(data, run_dir, steps=20, *extra):
    return ["--dataset", str(data), "--offline_steps", str(steps), "--eval_every", "10", "--checkpoint_every", "10",
            "--run_dir", str(run_dir), *SMALL, *extra]


def digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def interrupt_after(monkeypatch, calls: int) -> None:
    update, count = RedqBcAgent.update, {"n": 0}

    def interrupted(self, batch):
        count["n"] += 1
        if count["n"] > calls:
            raise KeyboardInterrupt("simulated kill")
        return update(self, batch)

    monkeypatch.setattr(RedqBcAgent, "update", interrupted)


def cli(module: str, *args: str, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1", **(env or {})})


# 1. finished results are never overwritten, whichever phase or script points at them
def test_other_phase_and_committed_results_are_refused_unchanged(tmp_path, tiny_hopper_file):
    offline_dir = tmp_path / "off"
    ckpt = train_offline.main(offline_args(tiny_hopper_file, offline_dir))
    online_dir = tmp_path / "on"
    train_online.main(["--checkpoint", str(ckpt), "--online_steps", "20", "--eval_every", "10", "--run_dir",
                       str(online_dir), *SMALL])
    before_off, before_on = digest(offline_dir), digest(online_dir)
    with pytest.raises(RunExistsError, match="finished offline run"):
        train_online.main(["--checkpoint", str(ckpt), "--online_steps", "20", "--run_dir", str(offline_dir), *SMALL])
    with pytest.raises(RunExistsError, match="finished online run"):
        train_offline.main(offline_args(tiny_hopper_file, online_dir))
    assert digest(offline_dir) == before_off and digest(online_dir) == before_on

    committed = REPO / "benchmarks" / "results" / "quickstart" / "adaptive_bc" / "offline"
    copy = tmp_path / "committed"
    copy.mkdir()
    for name in ("config.yaml", "metrics.jsonl"):
        (copy / name).write_bytes((committed / name).read_bytes())
    before = digest(copy)
    with pytest.raises(RunExistsError, match="without a checkpoint to resume from"):
        train_offline.main(["--config", "configs/adaptive_bc/quickstart.yaml", "--run_dir", str(copy),
                            "--wandb_mode", "disabled", "--video", "false"])
    assert digest(copy) == before  # not even a lock file was added


def test_a_copied_folder_stopped_before_its_first_checkpoint_is_refused_not_retrained(tmp_path, tiny_hopper_file,
                                                                                      monkeypatch):
    """A run killed before its first checkpoint restarts in its own folder; the same folder copied elsewhere (.lock,
    config.yaml, metrics.jsonl, no checkpoint) holds results and is refused like committed results."""
    import shutil

    args = ["--dataset", str(tiny_hopper_file), "--offline_steps", "40", "--eval_every", "5", "--checkpoint_every",
            "30", *SMALL]
    with monkeypatch.context() as patch:
        interrupt_after(patch, 12)  # two records (steps 5, 10), no checkpoint yet
        with pytest.raises(KeyboardInterrupt):
            train_offline.main([*args, "--run_dir", str(tmp_path / "run")])
    assert (tmp_path / "run" / "metrics.jsonl").read_text().count("\n") == 2
    shutil.copytree(tmp_path / "run", tmp_path / "copy")
    before = digest(tmp_path / "copy")
    with pytest.raises(RunExistsError, match=r"without a checkpoint to resume from \(copied from .*run\)"):
        train_offline.main([*args, "--run_dir", str(tmp_path / "copy")])
    assert digest(tmp_path / "copy") == before
    train_offline.main([*args, "--run_dir", str(tmp_path / "run")])  # the original restarts in place
    assert (tmp_path / "run" / "checkpoints" / "offline.pt").is_file()


# 2. two processes on one run folder: exactly one runs
@pytest.mark.slow  # two training subprocesses
def test_two_processes_started_together_one_runs_the_other_exits_2(tmp_path, tiny_hopper_file):
    run_dir = tmp_path / "run"
    args = ["-m", "adaptive_bc.train_offline", *offline_args(tiny_hopper_file, run_dir, 300)]
    env = {**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, *args], cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [(p.wait(timeout=600), p.stderr.read()) for p in procs]
    codes = sorted(code for code, _ in results)
    assert codes == [0, 2], results
    loser = next(err for code, err in results if code == 2)
    assert "is in use by process" in loser and "Traceback" not in loser and len(loser.strip().splitlines()) == 1
    steps = [line.split('"step": ')[1].split(",")[0] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert steps == [str(s) for s in range(10, 301, 10)]  # every record once


def test_a_held_folder_is_refused_naming_the_holder(tmp_path, tiny_hopper_file, monkeypatch):
    """The lock in-process: a run folder in use refuses a second start, naming the first (pid, start time)."""
    from common.run_folder import lock as _lock

    held = _lock(tmp_path / "busy")
    try:
        with pytest.raises(RunExistsError, match=rf"in use by process {os.getpid()} \(started "):
            train_offline.main(offline_args(tiny_hopper_file, tmp_path / "busy"))
    finally:
        held.close()
    train_offline.main(offline_args(tiny_hopper_file, tmp_path / "busy"))  # free again: it runs


def test_the_refusal_names_a_holder_that_has_not_written_its_line_yet(tmp_path):
    """Two processes started together: the second can find the lock taken before the first has written who it is
    (CI saw 'in use by another process'); it waits for the line and names the holder."""
    import fcntl
    import threading

    from common.run_folder import LOCK_FILE
    from common.run_folder import lock as _lock

    (tmp_path / "busy").mkdir()
    holder = open(tmp_path / "busy" / LOCK_FILE, "a+")
    fcntl.flock(holder.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)  # taken, nothing written yet

    def write_line():
        holder.write("process 4242 (started 2026-12-01 10:00:00)\n")
        holder.flush()

    late = threading.Timer(0.3, write_line)
    late.start()
    try:
        with pytest.raises(RunExistsError, match=r"in use by process 4242 \(started 2026-12-01 10:00:00\)"):
            _lock(tmp_path / "busy")
    finally:
        late.join()
        holder.close()


# 3. the keys both algorithms share are checked alike, before the run folder is created
@pytest.mark.parametrize("module", ["adaptive_bc", "spot"])
@pytest.mark.parametrize("key,value,message", [("gamma", "5", "gamma must be in"), ("gamma", "nan", "gamma must be a finite"),
                                               ("actor_lr", "-1", "actor_lr must be > 0"), ("tau", "0", "tau must be in"),
                                               ("critic_lr", "inf", "critic_lr must be a finite")])
def test_shared_keys_checked_before_the_folder_exists(tmp_path, tiny_hopper_file, module, key, value, message):
    import importlib

    main = importlib.import_module(f"{module}.train_offline").main
    with pytest.raises(ConfigError, match=message):
        main(["--dataset", str(tiny_hopper_file), "--run_dir", str(tmp_path / "r"), "--offline_steps", "2",
              "--eval_episodes", "1", *(["--vae_steps", "2"] if module == "spot" else []), f"--{key}", value])
    assert not (tmp_path / "r").exists()


# 4. no temporary checkpoint files left behind by a kill during a checkpoint write
@pytest.mark.slow  # a training subprocess killed with SIGKILL
def test_kill_during_a_checkpoint_write_leaves_no_tmp_after_the_resumed_run(tmp_path, tiny_hopper_file):
    run_dir = tmp_path / "run"
    killer = (
        "import os, signal, sys\n"
        "import common.checkpoint as c\n"
        "real = c.os.replace\n"
        "def replace(src, dst):\n"
        "    if str(dst).endswith('last.pt'):\n"
        "        os.kill(os.getpid(), signal.SIGKILL)  # dies with the temporary file written, not yet renamed\n"
        "    return real(src, dst)\n"
        "c.os.replace = replace\n"
        "from adaptive_bc.train_offline import main\n"
        "main(sys.argv[1:])\n")
    args = offline_args(tiny_hopper_file, run_dir, 40)
    first = subprocess.run([sys.executable, "-c", killer, *args], cwd=REPO, capture_output=True, text=True,
                           env={**os.environ, "WANDB_MODE": "disabled"})
    assert first.returncode == -9
    left = list((run_dir / "checkpoints").glob(".*.tmp"))
    assert left, "the kill left no temporary file: the test did not hit a checkpoint write"
    train_offline.main(args)
    assert not list((run_dir / "checkpoints").glob(".*.tmp"))
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["offline.pt"]


def test_stale_temporaries_removed_when_a_run_starts(tmp_path, tiny_hopper_file):
    stale = tmp_path / "run" / "checkpoints" / ".last.pt.x1y2.tmp"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"half a checkpoint")
    train_offline.main(offline_args(tiny_hopper_file, tmp_path / "run"))
    assert not stale.exists()


# 5. resume on different data is refused, naming both fingerprints
def test_resume_on_changed_data_is_refused(tmp_path, tiny_hopper_file, monkeypatch):
    data = tmp_path / "data.hdf5"
    data.write_bytes(tiny_hopper_file.read_bytes())
    with monkeypatch.context() as patch:
        interrupt_after(patch, 15)
        with pytest.raises(KeyboardInterrupt):
            train_offline.main(offline_args(data, tmp_path / "run"))
    saved = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")["dataset_fingerprint"]
    with h5py.File(data, "r+") as f:
        f["rewards"][...] = f["rewards"][()] * 1000
    with pytest.raises(RunExistsError, match="trained on different data") as info:
        train_offline.main(offline_args(data, tmp_path / "run"))
    assert saved in str(info.value) and "file-sha256:" in str(info.value).replace(saved, "")


# 6. messages say what is wrong, in this repository's words
def test_messages_for_random_bytes_and_a_broken_user_file(tmp_path):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(os.urandom(4096))
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(junk)
    assert "not a checkpoint" in str(info.value)
    assert "weights_only" not in str(info.value) and "could run code" not in str(info.value)
    broken = tmp_path / "mine.hdf5"
    broken.write_bytes(b"not hdf5 at all")
    with pytest.raises(DatasetError) as info:
        load_dataset(str(broken))
    assert "not a readable HDF5 file" in str(info.value) and "download" not in str(info.value)


# 7. disk errors: one line, found at the start
def test_unwritable_checkpoints_folder_found_before_training(tmp_path, tiny_hopper_file, monkeypatch):
    real = tempfile.mkstemp

    def read_only_checkpoints(*args, **kwargs):
        if Path(kwargs.get("dir", "")).name == "checkpoints":
            raise PermissionError(13, "Permission denied")
        return real(*args, **kwargs)

    monkeypatch.setattr(tempfile, "mkstemp", read_only_checkpoints)
    monkeypatch.setattr(RedqBcAgent, "update", lambda *a: pytest.fail("training started"))
    with pytest.raises(RunExistsError, match=r"cannot write in .*checkpoints \(Permission denied\)"):
        train_offline.main(offline_args(tiny_hopper_file, tmp_path / "run"))


@pytest.mark.slow  # subprocesses
def test_known_errors_are_one_line_and_exit_2_with_traceback_on_debug(tmp_path, tiny_hopper_file):
    a_file = tmp_path / "file"
    a_file.write_text("x")
    out = cli("adaptive_bc.train_offline", *offline_args(tiny_hopper_file, a_file))
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr.strip().splitlines() == [f"error: run_dir {a_file} is a file, not a folder; choose another "
                                               "--run_dir (--debug shows the traceback)"]
    out = cli("spot.train_offline", "--dataset", str(tiny_hopper_file), "--gamma", "nan")
    assert out.returncode == 2 and out.stderr.startswith("error: gamma must be a finite number")
    out = cli("adaptive_bc.train_offline", *offline_args(tiny_hopper_file, a_file), "--debug")
    assert out.returncode == 1 and "Traceback" in out.stderr and "is a file, not a folder" in out.stderr


# 8. the smaller items
def test_threads_may_change_on_resume_last_pt_loads_and_files_are_0644(tmp_path, tiny_hopper_file, monkeypatch,
                                                                        capsys):
    with monkeypatch.context() as patch:
        interrupt_after(patch, 15)
        with pytest.raises(KeyboardInterrupt):
            train_offline.main(offline_args(tiny_hopper_file, tmp_path / "run"))
    last = tmp_path / "run" / "checkpoints" / "last.pt"
    agent, info = load_agent(last)  # last.pt holds an agent too
    assert info["step"] == 10 and agent.act(np.zeros((2, 11), np.float32)).shape == (2, 3)
    try:
        final = train_offline.main([*offline_args(tiny_hopper_file, tmp_path / "run"), "--threads", "2"])
    finally:
        torch.set_num_threads(1)
    assert "resuming with threads=2 (the run used 1)" in capsys.readouterr().out
    umask = os.umask(0)
    os.umask(umask)
    for path in (final, tmp_path / "run" / "metrics.jsonl"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask


@pytest.mark.parametrize("what", ["config", "sweep"])
def test_malformed_yaml_is_one_line_naming_the_file_and_line(tmp_path, what):
    """A config file or a sweep file with a YAML syntax error: one line on stderr naming the file, line and column,
    exit 2, no traceback."""
    bad = tmp_path / "bad.yaml"
    bad.write_text("dataset: shared:x.hdf5\nseeds: [0, 1\nalgorithms: {}\n")
    module, args = (("adaptive_bc.train_offline", ["--config", str(bad)]) if what == "config"
                    else ("tools.sweep", [str(bad), "--dry-run"]))
    done = subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, capture_output=True, text=True,
                          timeout=120, env={**os.environ, "WANDB_MODE": "disabled"})
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-1500:]
    (line,) = [line for line in done.stderr.splitlines() if line.strip()]
    assert f"{bad}, line 3, column" in line and "not valid YAML" in line
