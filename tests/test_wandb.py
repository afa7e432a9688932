"""wandb a person can browse: a live run's identity (name, group, tags, job_type, step metric, the online run's link
to its offline run, the exported policy at the end) and tools.wandb_import's replay of committed runs, both read back
from the offline run files with wandb's own record format; a wandb failure is one line."""
from __future__ import annotations

import subprocess
import sys

import pytest

from common import layout
from conftest import REPO
from tools.wandb_import import import_runs, read_offline_run, wait_for_offline_run

SMALL = ["--hidden_dim", "16", "--num_critics", "4", "--utd", "1", "--prefill_min", "64", "--batch_size", "16",
         "--eval_episodes", "1"]


def test_live_runs_are_named_grouped_stepped_and_linked(tmp_path, tiny_hopper_file):
    from adaptive_bc import train_offline, train_online
    from common.logging import wandb_run_id

    offline = train_offline.main(["--dataset", str(tiny_hopper_file), "--offline_steps", "20", "--eval_every", "10",
                                  "--run_dir", str(tmp_path / "off"), "--wandb_mode", "offline", "--wandb_group",
                                  "study", "--variant", "adaptive_bc", *SMALL])
    train_online.main(["--checkpoint", str(offline), "--online_steps", "30", "--eval_every", "15", "--run_dir",
                       str(tmp_path / "on"), "--wandb_mode", "offline", "--variant", "adaptive_bc_naive",
                       "--alpha_max", "0", *SMALL])
    off = read_offline_run(wait_for_offline_run(next((tmp_path / "off" / "wandb").glob("offline-run-*"))))
    on = read_offline_run(wait_for_offline_run(next((tmp_path / "on" / "wandb").glob("offline-run-*"))))
    assert off["run"]["name"] == "adaptive_bc/tiny-hopper/seed0/offline" and off["run"]["job_type"] == "offline"
    assert off["run"]["group"] == "study/adaptive_bc/tiny-hopper" and "tiny-hopper" in off["run"]["tags"]
    assert on["run"]["name"] == "adaptive_bc_naive/tiny-hopper/seed0/online"
    assert on["run"]["group"] == "study/adaptive_bc_naive/tiny-hopper"  # the online run keeps the offline run's study
    assert on["run"]["config"]["offline_wandb_run_id"] == off["run"]["id"] == wandb_run_id(tmp_path / "off")
    assert off["metrics"] == {"*": "offline_step"} and on["metrics"] == {"*": "online_step"}
    records = layout.read_metrics(tmp_path / "on")
    logged = [h for h in on["history"] if "online_step" in h]
    assert [h["online_step"] for h in logged[:len(records)]] == [r["step"] for r in records]
    assert (tmp_path / "on" / "policy.pt").is_file()  # exported and logged as an artifact at the end


def test_committed_runs_replay_into_offline_wandb_runs(tmp_path):
    root = REPO / "benchmarks" / "results" / "quickstart"
    written = import_runs(root, tmp_path / "import", study="quickstart")
    runs = {read_offline_run(path)["run"]["name"]: read_offline_run(path) for path in written}
    assert set(runs) == {f"{a}/hopper-medium-mini/seed0/{p}" for a in ("adaptive_bc", "spot") for p in ("offline", "online")}
    for name, run in runs.items():
        variant, _, _, phase = name.split("/")
        records = layout.read_metrics(root / variant / phase)
        assert run["run"]["group"] == f"quickstart/{variant}/hopper-medium-mini" and run["run"]["job_type"] == phase
        assert [h[f"{phase}_step"] for h in run["history"]] == [r["step"] for r in records]
        score = [r["eval/normalized_score"] for r in records if "eval/normalized_score" in r]
        assert [h["eval/normalized_score"] for h in run["history"] if "eval/normalized_score" in h] == score
    online = runs["spot/hopper-medium-mini/seed0/online"]["run"]
    assert online["config"]["offline_wandb_run_id"] == runs["spot/hopper-medium-mini/seed0/offline"]["run"]["id"]
    again = import_runs(root, tmp_path / "again", study="quickstart")  # the same ids: an import is repeatable
    assert sorted(read_offline_run(p)["run"]["id"] for p in again) == sorted(r["run"]["id"] for r in runs.values())
    assert all(read_offline_run(p)["complete"] for p in written + again)


def test_reading_waits_for_a_run_file_wandb_is_still_writing(tmp_path):
    """wandb's service can still be writing the .wandb file when `run.finish()` returns (a CI run read one without
    its run record): the import waits for the exit record, and says so when it never comes."""
    import shutil
    import threading

    from common.errors import RunError

    (done,) = import_runs(REPO / "benchmarks" / "results" / "quickstart" / "spot" / "offline", tmp_path / "import")
    (file,) = done.glob("run-*.wandb")
    whole = file.read_bytes()
    folder = tmp_path / "copy"
    shutil.copytree(done, folder)
    (copy,) = folder.glob("run-*.wandb")
    copy.write_bytes(whole[:len(whole) // 3])  # cut inside a record
    with pytest.raises(RunError, match="did not finish writing"):
        wait_for_offline_run(folder, timeout=0.5)
    copy.write_bytes(b"")
    timer = threading.Timer(0.6, copy.write_bytes, args=(whole,))
    timer.start()
    assert read_offline_run(wait_for_offline_run(folder, timeout=30))["run"]["name"] == "spot/hopper-medium-mini/seed0/offline"
    timer.join()


def test_a_wandb_failure_is_one_line_and_leaves_the_folder_as_it_was(tmp_path, tiny_hopper_file):
    code = ("import wandb, sys\n"
            "def fail(*a, **k): raise wandb.errors.UsageError('api_key not configured (no-tty)')\n"
            "wandb.init = fail\n"
            "from adaptive_bc import train_offline\n"
            "from common.errors import cli\n"
            f"cli(train_offline.main, {['--dataset', str(tiny_hopper_file), '--offline_steps', '10', '--eval_every', '10', '--run_dir', str(tmp_path / 'run'), '--wandb_mode', 'online', *SMALL]!r})\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr[-2000:]
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert lines[-1].startswith("error: wandb could not start (online mode): api_key not configured")
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


def test_debug_flag_reaches_the_run_so_wandb_banners_show(monkeypatch):
    """`--debug` is taken off the command line by the error handler and told to the rest of the run (the logger shows
    wandb's banners only then)."""
    from common.errors import cli

    monkeypatch.delenv("OFFLINE_TO_ONLINE_DEBUG", raising=False)
    seen = []
    cli(lambda argv: seen.append((argv, __import__("os").environ.get("OFFLINE_TO_ONLINE_DEBUG"))), ["--x", "--debug"])
    assert seen == [(["--x"], "1")]
