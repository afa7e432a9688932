"""Sweeps: the sweep file -> trials and commands, one trial's phases (skip, resume, failure), and on a
local Ray instance: failures isolated, a killed sweep resumed, the real training scripts end to end."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from common import layout
from conftest import REPO, write_d4rl_file
from tools import sweep

# A stand-in for <algo>.train_offline / train_online: the same CLI and run-folder contract (config.yaml,
# metrics.jsonl, checkpoints/last.pt then <phase>.pt, refuses a finished run, unknown key -> error),
# with a known score (score + seed + step, +100 online), a per-step sleep, and a log of its invocations.
FAKE_CORE = '''
import json, os, sys, time
from pathlib import Path
import yaml

TYPES = {"dataset": str, "seed": int, "run_dir": str, "threads": int, "device": str, "offline_steps": int,
         "online_steps": int, "eval_every": int, "wandb_mode": str, "step_seconds": float, "score": float,
         "variant": str}  # every algorithm takes common.config.BaseConfig's keys; the sweep sets variant

def main(phase):
    values = {"offline_steps": 4, "online_steps": 4, "eval_every": 2, "step_seconds": 0.0, "score": 10.0}
    argv, checkpoint = sys.argv[1:], None
    for key, value in zip(argv[::2], argv[1::2]):
        key = key[2:]
        if key == "config":
            values.update(yaml.safe_load(open(value)))
        elif key == "checkpoint" and phase == "online":
            checkpoint = value
        elif key in TYPES:
            values[key] = TYPES[key](value)
        else:
            sys.exit(f"ConfigError: unknown config key {key!r}")
    run_dir = Path(values["run_dir"])
    ckpt = run_dir / "checkpoints"
    if (ckpt / f"{phase}.pt").exists():
        sys.exit("RunExistsError: finished run")
    if phase == "online" and not Path(checkpoint).is_file():
        sys.exit(f"no offline checkpoint {checkpoint}")
    ckpt.mkdir(parents=True, exist_ok=True)
    start = json.loads((ckpt / "last.pt").read_text())["step"] if (ckpt / "last.pt").exists() else 0
    with open(run_dir / "invocations.jsonl", "a") as f:
        f.write(json.dumps({"resumed_from": start, "threads": values["threads"], "device": values["device"],
                            "omp": os.environ.get("OMP_NUM_THREADS"), "pid": os.getpid()}) + "\\n")
    config = {**values, "algo": "fakealgo", "phase": phase}
    if phase == "online":
        config["offline_checkpoint"] = checkpoint
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config))
    total = values[phase + "_steps"]
    records = [r for r in map(json.loads, open(run_dir / "metrics.jsonl")) if r["step"] <= start] if start else []
    for step in range(start + 1, total + 1):
        time.sleep(values["step_seconds"])
        if step % values["eval_every"] == 0 or step == total:
            records.append({"phase": phase, "step": step, "eval/normalized_score":
                            values["score"] + values["seed"] + step + (100.0 if phase == "online" else 0.0)})
        (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\\n" for r in records))
        (ckpt / "last.pt").write_text(json.dumps({"step": step}))
    (ckpt / (phase + ".pt")).write_text("final")
    (ckpt / "last.pt").unlink()
    print(phase, "finished")
'''


@pytest.fixture
def fake_pkg(tmp_path) -> Path:
    """A package `fakealgo` with train_offline / train_online; returns the folder to put on PYTHONPATH."""
    pkg = tmp_path / "pkgs" / "fakealgo"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "core.py").write_text(FAKE_CORE)
    for phase in sweep.PHASES:
        (pkg / f"train_{phase}.py").write_text(
            f"from fakealgo.core import main\nif __name__ == '__main__':\n    main({phase!r})\n")
    return pkg.parent


def write_sweep(path: Path, spec: dict) -> Path:
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def fake_spec(root: Path, pkgs: Path, **extra) -> dict:
    spec = {"root": str(root), "seeds": 2, "datasets": ["shared:hopper-medium-gen.hdf5"],
            "algorithms": {"fake_a": {"module": "fakealgo"},
                           "fake_b": {"module": "fakealgo", "overrides": {"score": 50}}},
            "env": {"PYTHONPATH": str(pkgs)}}
    spec.update(extra)
    return spec


def invocations(run_dir: Path) -> list[dict]:
    path = run_dir / "invocations.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def flag(argv: list[str], key: str) -> str:
    return argv[argv.index(key) + 1]


# ---------------------------------------------------------------------------------------------------------------
# The sweep file


def test_sweep_file_expands_to_trials_with_layered_overrides(tmp_path):
    configs = tmp_path / "configs"
    for package in ("a", "pkg_b"):
        (configs / package).mkdir(parents=True)
        (configs / package / "hopper-medium.yaml").write_text("seed: 0\n")
    data = tmp_path / "data" / "tiny-walker.hdf5"
    path = write_sweep(tmp_path / "s.yaml", {
        "root": "out", "seeds": [3, 7],
        "datasets": ["configs/{algo}/hopper-medium.yaml", "data/tiny-walker.hdf5",
                     {"name": "hc", "config": "configs/{algo}/hopper-medium.yaml",
                      "dataset": "d4rl:halfcheetah-medium-v2", "overrides": {"batch_size": 64},
                      "algorithm_overrides": {"b": {"batch_size": 32, "vae_steps": 9}}}],
        "algorithms": {"a": {"overrides": {"lr": 0.1, "eval_every": 7}, "online_overrides": {"lr": 0.2},
                             "resources": {"cpus": 2}},
                       "b": {"module": "pkg_b", "resources": {"gpus": 0.25}, "env": {"X": 1}}},
        "overrides": {"eval_every": 5, "wandb_mode": "disabled", "flag": True, "none": None},
        "offline_overrides": {"eval_every": 6},
        "resources": {"cpus": 1}, "env": {"X": 0, "Y": "y"}})
    trials = sweep.load_sweep(path, cwd=tmp_path)
    assert len(trials) == 2 * 3 * 2
    # seed-major order: a partial sweep has every (algorithm, dataset) cell
    assert [(t.seed, t.dataset, t.algo) for t in trials[:3]] == [(3, "hopper-medium", "a"), (3, "hopper-medium", "b"),
                                                                 (3, "tiny-walker", "a")]
    a = trials[0]
    assert a.trial_dir == str(tmp_path / "out" / "a" / "hopper-medium" / "seed3") and a.cwd == str(tmp_path)
    off, on = a.commands["offline"], a.commands["online"]
    assert off[:3] == ["python", "-m", "a.train_offline"] and on[:3] == ["python", "-m", "a.train_online"]
    assert flag(on, "--checkpoint") == str(tmp_path / "out/a/hopper-medium/seed3/offline/checkpoints/offline.pt")
    assert flag(off, "--config") == str(configs / "a" / "hopper-medium.yaml")  # {algo} filled, made absolute
    assert flag(off, "--run_dir") == f"{a.trial_dir}/offline" and flag(on, "--run_dir") == f"{a.trial_dir}/online"
    assert flag(off, "--seed") == "3" and flag(off, "--threads") == "2" and (a.cpus, a.gpus) == (2.0, 0.0)
    assert flag(off, "--device") == "cpu" and flag(off, "--flag") == "true" and flag(off, "--none") == "null"
    # global < global phase < algorithm < algorithm phase: the last --key given wins in parse_config too
    assert flag(off, "--eval_every") == "7" and flag(on, "--eval_every") == "7"
    assert flag(off, "--lr") == "0.1" and flag(on, "--lr") == "0.2"
    assert off.count("--eval_every") == 1
    b = trials[1]
    assert b.commands["offline"][2] == "pkg_b.train_offline" and b.trial_dir.endswith("/b/hopper-medium/seed3")
    # a dataset entry's algorithm_overrides: for that algorithm on that dataset only, last
    hc = {t.algo: t for t in trials if t.dataset == "hc" and t.seed == 3}
    assert flag(hc["a"].commands["offline"], "--batch_size") == "64" and "--vae_steps" not in hc["a"].commands["offline"]
    assert flag(hc["b"].commands["online"], "--batch_size") == "32" and flag(hc["b"].commands["offline"], "--vae_steps") == "9"
    assert "--vae_steps" not in trials[1].commands["offline"]
    spec = yaml.safe_load(path.read_text())
    spec["datasets"][2]["algorithm_overrides"] = {"c": {"x": 1}}
    with pytest.raises(sweep.SweepError, match="algorithm_overrides names c, not an algorithm"):
        sweep.load_sweep(write_sweep(tmp_path / "bad.yaml", spec), cwd=tmp_path)
    # {algo} is the package: variants of one algorithm share its configs
    assert flag(b.commands["offline"], "--config") == str(configs / "pkg_b" / "hopper-medium.yaml")
    assert flag(b.commands["offline"], "--device") == "cuda" and flag(b.commands["offline"], "--threads") == "1"
    assert (b.cpus, b.gpus) == (1.0, 0.25) and b.env == {"X": "1", "Y": "y"}
    walker = trials[2]
    assert flag(walker.commands["offline"], "--dataset") == str(data) and "--config" not in walker.commands["offline"]
    hc = next(t for t in trials if t.dataset == "hc" and t.algo == "a")
    assert flag(hc.commands["online"], "--dataset") == "d4rl:halfcheetah-medium-v2"
    assert flag(hc.commands["online"], "--batch_size") == "64"  # the dataset entry's overrides come last
    # --root replaces the file's root
    assert sweep.load_sweep(path, root=str(tmp_path / "elsewhere"), cwd=tmp_path)[0].trial_dir.startswith(
        str(tmp_path / "elsewhere" / "a"))


@pytest.mark.parametrize("spec, message", [
    ({"seeds": 2, "datasets": ["d4rl:x"], "algorithms": {"a": {}}, "typo_key": 1}, "unknown key(s) typo_key"),
    ({"seeds": 2, "datasets": ["d4rl:x"], "algorithms": {"a": {"overides": {}}}}, "unknown key(s) overides"),
    ({"seeds": 2, "datasets": ["d4rl:x"], "algorithms": {"a": {}}, "overrides": {"seed": 3}}, "sets 'seed'"),
    ({"seeds": 2, "datasets": ["d4rl:x"], "algorithms": {"a": {"overrides": {"run-dir": "x"}}}}, "sets 'run_dir'"),
    ({"seeds": 0, "datasets": ["d4rl:x"], "algorithms": {"a": {}}}, "seeds must be"),
    ({"seeds": [1, 1], "datasets": ["d4rl:x"], "algorithms": {"a": {}}}, "seeds repeat"),
    ({"seeds": 1, "datasets": ["d4rl:x", "shared:x.hdf5"], "algorithms": {"a": {}}}, "share a folder name"),
    ({"seeds": 1, "datasets": ["missing/{algo}.yaml"], "algorithms": {"a": {}}}, "config file not found"),
    ({"seeds": 1, "datasets": ["d4rl:x"], "algorithms": {"a": {"resources": {"cpus": 0}}}}, "cpus must be > 0"),
    ({"seeds": 1, "datasets": ["d4rl:x"], "algorithms": {"a": {}}, "overrides": {"l": [1, 2]}}, "not a scalar"),
    ({"seeds": 1, "datasets": ["d4rl:x"]}, "needs `algorithms`"),
    ({"seeds": 1, "datasets": ["d4rl:x"], "algorithms": {"a_naive": {"module": "a", "offline_from": "a"}, "a": {}}},
     "'a' is not an algorithm listed before 'a_naive'"),
    ({"seeds": 1, "datasets": ["d4rl:x"], "algorithms": {"a": {}, "b": {"offline_from": "a"}}}, "'b' runs b but 'a' runs a"),
    ({"seeds": 1, "datasets": ["d4rl:x"], "algorithms": {"a": {}, "a2": {"module": "a", "offline_from": "a"},
                                                          "a3": {"module": "a", "offline_from": "a2"}}},
     "'a2' itself takes its offline run from another algorithm; name that one ('a')"),
    ({"seeds": 1, "datasets": ["d4rl:x"], "algorithms": {"a": {}, "a2": {"module": "a", "offline_from": "a",
                                                                          "offline_overrides": {"x": 1}}}},
     "no offline phase of its own, so offline_overrides would be ignored"),
])
def test_sweep_file_mistakes_are_errors(tmp_path, spec, message):
    with pytest.raises(sweep.SweepError, match=message.replace("(", r"\(").replace(")", r"\)")):
        sweep.load_sweep(write_sweep(tmp_path / "s.yaml", spec), cwd=tmp_path)


def test_dataset_labels():
    assert sweep.dataset_label("shared:hopper-medium-gen.hdf5") == "hopper-medium-gen"
    assert sweep.dataset_label("d4rl:hopper-medium-v2") == "hopper-medium-v2"
    assert sweep.dataset_label("minari:mujoco/hopper/medium-v0") == "mujoco_hopper_medium-v0"
    assert sweep.dataset_label("/data/walker.hdf5") == "walker"
    assert sweep.dataset_label("configs/spot/walker2d-medium.yaml") == "walker2d-medium"


def test_shipped_sweep_files_expand(tmp_path):
    paper = sweep.load_sweep(REPO / "configs" / "sweeps" / "paper.yaml", cwd=REPO)
    assert len(paper) == 2 * 6 * 5
    assert {t.algo for t in paper} == {"adaptive_bc", "spot"} and {t.seed for t in paper} == set(range(5))
    assert {t.dataset for t in paper} == {f"{env}-{level}" for env in ("hopper", "halfcheetah", "walker2d")
                                          for level in ("medium", "medium-replay")}
    assert all(Path(flag(t.commands["offline"], "--config")).is_file() for t in paper)
    tiny = sweep.load_sweep(REPO / "configs" / "sweeps" / "tiny.yaml", cwd=REPO)
    assert [(t.algo, t.seed) for t in tiny] == [("adaptive_bc", 0), ("spot", 0), ("adaptive_bc", 1), ("spot", 1)]
    assert all(flag(t.commands["online"], "--online_steps") == "50" for t in tiny)
    assert sweep.main([str(REPO / "configs" / "sweeps" / "tiny.yaml"), "--dry-run", "--root", str(tmp_path)]) == 0
    assert not any(tmp_path.iterdir())  # a dry run writes nothing


def test_offline_from_fine_tunes_the_source_trials_offline_run(tmp_path):
    path = write_sweep(tmp_path / "s.yaml", {
        "root": "out", "seeds": 2, "datasets": ["shared:hopper-medium-gen.hdf5"],
        "offline_overrides": {"eval_every": 5},
        "algorithms": {"a": {"overrides": {"utd": 2}},
                       "a_naive": {"module": "a", "overrides": {"utd": 2}, "online_overrides": {"alpha_max": 0}}}})
    spec = yaml.safe_load(path.read_text())
    spec["algorithms"]["a_naive"]["offline_from"] = "a"
    trials = {t.name: t for t in sweep.load_sweep(write_sweep(path, spec), cwd=tmp_path)}
    source, naive = trials["a/hopper-medium-gen/seed1"], trials["a_naive/hopper-medium-gen/seed1"]
    assert naive.phases == ("online",) and source.phases == ("offline", "online")
    assert naive.offline_source == "a/hopper-medium-gen/seed1" and source.offline_source is None
    assert flag(naive.commands["online"], "--checkpoint") == str(source.final_checkpoint("offline"))
    assert naive.final_checkpoint("offline") == source.final_checkpoint("offline")
    assert naive.run_dir("online") == tmp_path / "out" / "a_naive" / "hopper-medium-gen" / "seed1" / "online"
    assert flag(naive.commands["online"], "--alpha_max") == "0" and "--alpha_max" not in source.commands["online"]
    # the online commands differ only in the override, the run folder and the variant that labels the runs
    differ = [(x, y) for x, y in zip(source.commands["online"], naive.commands["online"]) if x != y]
    assert differ == [(str(source.run_dir("online")), str(naive.run_dir("online"))), ("a", "a_naive")]
    assert flag(source.commands["offline"], "--variant") == "a"
    assert "offline: the offline run of a/hopper-medium-gen/seed1" in sweep._plan_text(list(trials.values()))


def test_select_trials_filters_and_names_what_exists(tmp_path):
    path = write_sweep(tmp_path / "s.yaml", {"seeds": 3, "datasets": ["d4rl:x-v2", "d4rl:y-v2"],
                                             "algorithms": {"a": {}, "b": {}}})
    trials = sweep.load_sweep(path, cwd=tmp_path)
    chosen = sweep.select_trials(trials, algos="b", datasets="y-v2, x-v2", seeds="0,2")
    assert [t.name for t in chosen] == ["b/x-v2/seed0", "b/y-v2/seed0", "b/x-v2/seed2", "b/y-v2/seed2"]
    assert sweep.select_trials(trials) == trials
    with pytest.raises(sweep.SweepError, match="no dataset z-v2 in this sweep; it has: x-v2, y-v2"):
        sweep.select_trials(trials, datasets="x-v2,z-v2")
    with pytest.raises(sweep.SweepError, match="no seed 5 in this sweep; it has: 0, 1, 2"):
        sweep.select_trials(trials, seeds="5")


# ---------------------------------------------------------------------------------------------------------------
# One trial, without Ray


def one_trial(tmp_path, fake_pkg, **spec_extra) -> sweep.Trial:
    spec = fake_spec(tmp_path / "root", fake_pkg, seeds=[1], **spec_extra)
    spec["algorithms"] = {"fake_a": {"module": "fakealgo", "resources": {"cpus": 2}}}
    return sweep.load_sweep(write_sweep(tmp_path / "s.yaml", spec), cwd=tmp_path)[0]


@pytest.mark.slow  # starts subprocesses / a kernel / the profiler
def test_run_trial_runs_both_phases_then_skips_them(tmp_path, fake_pkg):
    trial = one_trial(tmp_path, fake_pkg)
    result = sweep.run_trial(trial, "sweep-1")
    assert result["status"] == "done" and result["ran"] == ["offline", "online"]
    assert (result["offline_final"], result["online_final"]) == (10 + 1 + 4, 10 + 1 + 4 + 100)
    calls = invocations(trial.run_dir("offline"))
    assert len(calls) == 1 and calls[0]["threads"] == 2 and calls[0]["omp"] == "2" and calls[0]["device"] == "cpu"
    online_config = yaml.safe_load((trial.run_dir("online") / "config.yaml").read_text())
    assert online_config["offline_checkpoint"] == str(trial.final_checkpoint("offline"))
    assert "offline finished" in trial.log_path("offline").read_text()
    assert json.loads((Path(trial.trial_dir) / "status.json").read_text())["state"] == "done"
    # rerun: nothing left to do, nothing started
    again = sweep.run_trial(trial, "sweep-2")
    assert again["status"] == "done" and again["ran"] == []
    assert len(invocations(trial.run_dir("offline"))) == 1 and len(invocations(trial.run_dir("online"))) == 1


@pytest.mark.slow  # starts subprocesses / a kernel / the profiler
def test_run_trial_with_offline_from_needs_and_uses_the_source_checkpoint(tmp_path, fake_pkg):
    spec = fake_spec(tmp_path / "root", fake_pkg, seeds=[1])
    spec["algorithms"] = {"fake_a": {"module": "fakealgo"},
                          "fake_a_naive": {"module": "fakealgo", "offline_from": "fake_a",
                                           "online_overrides": {"score": 0}}}
    source, naive = sweep.load_sweep(write_sweep(tmp_path / "s.yaml", spec), cwd=tmp_path)
    missing = sweep.run_trial(naive, "sweep-1")
    assert missing["status"] == "failed" and missing["ran"] == []
    assert f"the offline run this trial fine-tunes is missing: {source.final_checkpoint('offline')}" in missing["error"]
    assert "trial fake_a/hopper-medium-gen/seed1 failed or has not run" in missing["error"]
    assert sweep.run_trial(source, "sweep-1")["status"] == "done"
    result = sweep.run_trial(naive, "sweep-1")
    assert result["status"] == "done" and result["ran"] == ["online"]
    assert (result["offline_final"], result["online_final"]) == (10 + 1 + 4, 0 + 1 + 4 + 100)
    assert not (Path(naive.trial_dir) / "offline").exists() and len(invocations(source.run_dir("offline"))) == 1
    config = yaml.safe_load((naive.run_dir("online") / "config.yaml").read_text())
    assert config["offline_checkpoint"] == str(source.final_checkpoint("offline"))


@pytest.mark.slow  # starts subprocesses / a kernel / the profiler
def test_run_trial_resumes_an_interrupted_phase_with_the_same_command(tmp_path, fake_pkg):
    trial = one_trial(tmp_path, fake_pkg)
    checkpoints = trial.run_dir("offline") / "checkpoints"
    checkpoints.mkdir(parents=True)
    (checkpoints / "last.pt").write_text(json.dumps({"step": 3}))  # as a run killed after step 3 leaves it
    (trial.run_dir("offline") / "metrics.jsonl").write_text(json.dumps({"phase": "offline", "step": 2}) + "\n")
    result = sweep.run_trial(trial)
    assert result["status"] == "done"
    assert [c["resumed_from"] for c in invocations(trial.run_dir("offline"))] == [3]


@pytest.mark.slow  # starts subprocesses / a kernel / the profiler
def test_run_trial_reports_a_failure_with_its_log(tmp_path, fake_pkg):
    trial = one_trial(tmp_path, fake_pkg, online_overrides={"no_such_key": 1})
    result = sweep.run_trial(trial)
    assert result["status"] == "failed" and result["phase"] == "online" and result["returncode"] == 1
    assert result["log"] == str(trial.log_path("online"))
    assert "unknown config key 'no_such_key'" in result["error"]  # the log's last line, in the report
    assert "unknown config key 'no_such_key'" in Path(result["log"]).read_text()
    assert trial.final_checkpoint("offline").exists()  # the offline phase stays done
    status = json.loads((Path(trial.trial_dir) / "status.json").read_text())
    assert status["state"] == "failed" and status["phase"] == "online"


@pytest.mark.slow  # starts subprocesses / a kernel / the profiler
def test_run_trial_waits_for_another_process_holding_the_trial(tmp_path, fake_pkg):
    import fcntl

    trial = one_trial(tmp_path, fake_pkg)
    Path(trial.trial_dir).mkdir(parents=True)
    with open(Path(trial.trial_dir) / ".lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        result = sweep.run_trial(trial, lock_wait_s=0.2)
    assert result["status"] == "failed" and "running elsewhere" in result["error"]
    assert not trial.run_dir("offline").exists()
    assert sweep.run_trial(trial, lock_wait_s=0.2)["status"] == "done"  # released: runs


def test_progress_summary_reads_status_and_last_score(tmp_path, fake_pkg):
    spec = fake_spec(tmp_path / "root", fake_pkg)
    trials = sweep.load_sweep(write_sweep(tmp_path / "s.yaml", spec), cwd=tmp_path)
    running, stale = trials[0], trials[1]
    for trial, sweep_id in ((running, "now"), (stale, "an earlier sweep")):
        trial.run_dir("offline").mkdir(parents=True)
        (trial.run_dir("offline") / "metrics.jsonl").write_text(
            json.dumps({"phase": "offline", "step": 10, "eval/normalized_score": 12.5}) + "\n"
            + json.dumps({"phase": "offline", "step": 11, "train/loss": 1.0}) + "\n")
        sweep._write_status(trial, state="running", phase="offline", sweep_id=sweep_id)
    results = {trials[2].name: {"name": trials[2].name, "status": "failed", "error": "offline exited with code 1",
                                "log": "/x/offline.log"}}
    text = sweep.summary(trials, results, "now", 90.0)
    assert "0/4 done, 1 running, 2 pending, 1 failed" in text
    assert f"running  {running.name}" in text and "offline step 10: score 12.5" in text
    assert stale.name not in text  # its status is from another sweep: pending, not running
    assert "FAILED" in text and "/x/offline.log" in text


def test_infeasible_resources_are_found_before_submitting():
    trial = sweep.Trial("a", "d", 0, "/x", {}, cpus=4, gpus=0.5, env={}, cwd="/")
    two_small = [{"CPU": 2.0}, {"CPU": 4.0, "GPU": 0.0}]
    assert sweep.infeasible(trial, two_small) == ("needs 4 CPUs and 0.5 GPUs per trial; no node of the Ray cluster "
                                                  "has them (largest: 4 CPUs and 0 GPUs)")
    assert sweep.infeasible(trial, two_small + [{"CPU": 3.0, "GPU": 1.0}]) is not None  # per node, not in total
    assert sweep.infeasible(trial, two_small + [{"CPU": 8.0, "GPU": 1.0}]) is None


def test_a_naive_twin_starts_once_its_sources_offline_checkpoint_exists(tmp_path):
    """The source trial goes on to its online phase; its twin needs only the final offline checkpoint, so it takes a
    free slot beside the source's online run instead of waiting for it (the campaign's idle second core)."""
    source = tmp_path / "spot" / "d" / "seed0"
    twin = sweep.Trial("spot_naive", "d", 0, str(tmp_path / "spot_naive" / "d" / "seed0"), {"online": ["x"]}, cpus=1,
                       gpus=0, env={}, cwd="/", offline_source="spot/d/seed0", offline_source_dir=str(source))
    running = {"spot/d/seed0", twin.name}
    assert sweep.next_to_submit([twin], running, (1, 0)) == []  # offline phase still running
    checkpoint = twin.final_checkpoint("offline")
    assert checkpoint == layout.checkpoint_path(source / "offline", "offline")
    checkpoint.parent.mkdir(parents=True)
    checkpoint.write_bytes(b"x")
    assert sweep.next_to_submit([twin], running, (1, 0)) == [twin]
    assert sweep.next_to_submit([twin], running, (0, 0)) == []  # still only when a slot is free


def test_trials_go_to_ray_in_order_and_a_naive_twin_right_after_its_source():
    """The campaign's case: 2 CPUs, spot/seed0 and abc/seed1 running. When spot/seed0 ends, its naive twin takes
    the free CPU, not the next seed's trial (Ray, given all trials at once, handed it to seed 1)."""
    def trial(algo, seed, source=None, cpus=1, gpus=0):
        return sweep.Trial(algo, "d", seed, f"/x/{algo}{seed}", {}, cpus=cpus, gpus=gpus, env={}, cwd="/",
                           offline_source=f"{source}/d/seed{seed}" if source else None)
    naive0, spot1, naive1 = trial("spot_naive", 0, "spot"), trial("spot", 1), trial("spot_naive", 1, "spot")
    pending = [naive0, spot1, naive1]
    names = lambda ts: [t.name for t in ts]  # noqa: E731
    # spot/seed0 still running: its twin waits, the next seed may use a free CPU
    assert names(sweep.next_to_submit(pending, {"spot/d/seed0", "abc/d/seed1"} | set(names(pending)), (1, 0))) == [
        "spot/d/seed1"]
    # spot/seed0 done, one CPU free: the twin first
    assert names(sweep.next_to_submit(pending, {"abc/d/seed1"} | set(names(pending)), (1, 0))) == ["spot_naive/d/seed0"]
    assert names(sweep.next_to_submit(pending, set(names(pending)), (2, 0))) == ["spot_naive/d/seed0", "spot/d/seed1"]
    assert sweep.next_to_submit(pending, set(names(pending)), (0, 0)) == []  # no room: wait
    big = trial("big", 0, cpus=4, gpus=0.5)
    assert big.final_checkpoint("offline") == Path("/x/big0/offline/checkpoints/offline.pt")
    assert names(sweep.next_to_submit([big, spot1], set(), (2, 1))) == ["spot/d/seed1"]  # the one that fits
    assert names(sweep.next_to_submit([big, spot1], set(), (2, 1), allow_first=True)) == ["big/d/seed0"]


# ---------------------------------------------------------------------------------------------------------------
# On a local Ray instance (2 CPUs), shared by the tests below


@pytest.fixture(scope="module")
def ray_address():
    import ray

    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING", log_to_driver=False,
             object_store_memory=128 * 2**20, runtime_env={"env_vars": {"PYTHONPATH": str(REPO)}})
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


@pytest.mark.slow
def test_ray_sweep_isolates_a_failing_trial(tmp_path, fake_pkg, ray_address, capsys):
    spec = fake_spec(tmp_path / "root", fake_pkg)
    spec["algorithms"]["fake_bad"] = {"module": "fakealgo", "overrides": {"no_such_key": 1}}
    spec["algorithms"]["fake_gpu"] = {"module": "fakealgo", "resources": {"gpus": 0.5}}  # none on this machine
    path = write_sweep(tmp_path / "s.yaml", spec)
    assert sweep.main([str(path), "--interval", "1"]) == 1
    out = capsys.readouterr().out
    root = tmp_path / "root"
    for algo, score in (("fake_a", 10), ("fake_b", 50)):
        for seed in (0, 1):
            trial_dir = root / algo / "hopper-medium-gen" / f"seed{seed}"
            assert (trial_dir / "online" / "checkpoints" / "online.pt").exists()
            assert f"{algo}/hopper-medium-gen/seed{seed}" in out
            records = [json.loads(line) for line in (trial_dir / "online" / "metrics.jsonl").read_text().splitlines()]
            assert records[-1]["eval/normalized_score"] == score + seed + 4 + 100
    for seed in (0, 1):
        log = root / "fake_bad" / "hopper-medium-gen" / f"seed{seed}" / "offline.log"
        assert f"FAILED fake_bad/hopper-medium-gen/seed{seed}: offline exited with code 1" in out
        assert f"log: {log}" in out and "unknown config key 'no_such_key'" in log.read_text()
        assert f"FAILED fake_gpu/hopper-medium-gen/seed{seed}: needs 1 CPUs and 0.5 GPUs per trial" in out
    assert "4/8 done, 4 failed" in out
    assert (root / "sweep.yaml").read_text() == path.read_text()


@pytest.mark.slow
def test_ray_sweep_starts_offline_from_trials_after_their_source(tmp_path, fake_pkg, ray_address, capsys):
    spec = fake_spec(tmp_path / "root", fake_pkg, seeds=[0])
    spec["algorithms"] = {"fake_a": {"module": "fakealgo", "overrides": {"step_seconds": 0.3},
                                     "online_overrides": {"step_seconds": 2.0}},
                          "fake_bad": {"module": "fakealgo", "offline_overrides": {"no_such_key": 1}},
                          "fake_a_naive": {"module": "fakealgo", "offline_from": "fake_a"},
                          "fake_bad_naive": {"module": "fakealgo", "offline_from": "fake_bad"}}
    assert sweep.main([str(write_sweep(tmp_path / "s.yaml", spec)), "--interval", "1"]) == 1
    out = capsys.readouterr().out
    trial = tmp_path / "root" / "{}" / "hopper-medium-gen" / "seed0"
    source = Path(str(trial).format("fake_a"))
    source_end = json.loads((source / "status.json").read_text())["time"]
    source_offline = (source / "offline" / "checkpoints" / "offline.pt").stat().st_mtime
    naive_online = Path(str(trial).format("fake_a_naive")) / "online"
    # 2 CPUs: the naive trial waited for its source's offline checkpoint (4 steps of 0.3 s) instead of failing at
    # once, and then ran beside the source's online phase (4 steps of 2 s) instead of waiting for it
    assert (naive_online / "checkpoints" / "online.pt").exists()
    naive_start = (naive_online / "config.yaml").stat().st_mtime
    assert source_offline - 0.5 <= naive_start < source_end
    assert "done     fake_a_naive/hopper-medium-gen/seed0  offline final 14.0  online final 114.0" in out
    assert "FAILED fake_bad_naive/hopper-medium-gen/seed0: the offline run this trial fine-tunes is missing" in out
    assert "2/4 done, 2 failed" in out


def session_processes(sid: int) -> list[int]:
    """Processes of session `sid` (the killed sweep's: Ray's and the trials' processes stay in it)."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[3]) == sid and fields[0] != "Z":
            pids.append(int(stat.parent.name))
    return pids


def kill_when(process, condition, timeout=120):
    """SIGKILL to the process group of `process` (as when its terminal dies) once condition() holds."""
    deadline = time.time() + timeout
    while not condition():
        assert process.poll() is None, "the sweep ended before it could be killed"
        assert time.time() < deadline, "timed out waiting to kill the sweep"
        time.sleep(0.2)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()


@pytest.mark.slow
def test_killed_sweep_resumes_without_redoing_finished_trials(tmp_path, fake_pkg, ray_address):
    root = tmp_path / "root"
    # 4 trials (offline 10 steps, online 4) of 0.4 s each on 2 CPUs: two waves of ~6 s
    path = write_sweep(tmp_path / "s.yaml", fake_spec(root, fake_pkg, overrides={"step_seconds": 0.4},
                                                     offline_overrides={"offline_steps": 10}))
    trials = sweep.load_sweep(path, cwd=tmp_path)
    # the killed sweep runs on its own local Ray instance, as from a terminal
    driver = subprocess.Popen([sys.executable, "-m", "tools.sweep", str(path), "--num-cpus", "2", "--interval", "1"],
                              cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    finished = lambda: [t for t in trials if t.final_checkpoint("online").exists()]  # noqa: E731
    def started_offline():  # trials early in their offline phase: killing now interrupts it
        early = []
        for t in trials:
            try:
                if json.loads((t.run_dir("offline") / "checkpoints" / "last.pt").read_text())["step"] <= 4:
                    early.append(t)
            except (OSError, ValueError):  # not there, or being written
                pass
        return early

    kill_when(driver, lambda: finished() and started_offline())
    interrupted = started_offline()

    # the dead driver's Ray instance and tasks stop, and the training processes die with them
    deadline = time.time() + 30
    while session_processes(driver.pid) and time.time() < deadline:
        time.sleep(0.2)
    left = session_processes(driver.pid)
    for pid in left:  # (Ray's agents ignore SIGTERM: don't leave them behind if the assertion fails)
        os.kill(pid, signal.SIGKILL)
    assert not left, f"processes of the killed sweep still running: {left}"
    # what was finished when the last process died (on a busy machine a trial can finish between the kill and then)
    done_before = finished()
    interrupted = [t for t in interrupted if t not in done_before]
    assert done_before and interrupted and len(done_before) < len(trials)
    stamps = {t.name: t.final_checkpoint("online").stat().st_mtime_ns for t in done_before}

    # the rerun joins the running Ray instance by its address, as on a cluster
    rerun = subprocess.run([sys.executable, "-m", "tools.sweep", str(path), "--address", ray_address],
                           cwd=REPO, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert f"4 trials: {len(done_before)} already finished, {4 - len(done_before)} to run" in rerun.stdout
    for t in trials:
        assert t.final_checkpoint("online").exists()
    for t in done_before:  # not run again
        assert t.final_checkpoint("online").stat().st_mtime_ns == stamps[t.name]
        assert [len(invocations(t.run_dir(p))) for p in sweep.PHASES] == [1, 1]
    for t in interrupted:  # resumed from its last.pt by rerunning the same command
        calls = invocations(t.run_dir("offline"))
        assert len(calls) == 2 and calls[1]["resumed_from"] > 0
        records = [json.loads(line) for line in (t.run_dir("offline") / "metrics.jsonl").read_text().splitlines()]
        assert [r["step"] for r in records] == [2, 4, 6, 8, 10]


@pytest.mark.slow
def test_sigterm_stops_the_sweep_and_its_processes(tmp_path, fake_pkg):
    path = write_sweep(tmp_path / "s.yaml", fake_spec(tmp_path / "root", fake_pkg, seeds=1,
                                                     overrides={"step_seconds": 5, "offline_steps": 100}))
    trial = sweep.load_sweep(path, cwd=tmp_path)[0]
    driver = subprocess.Popen([sys.executable, "-m", "tools.sweep", str(path), "--num-cpus", "2"], cwd=REPO,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.time() + 120
    while not invocations(trial.run_dir("offline")):  # its training process has started
        assert driver.poll() is None and time.time() < deadline
        time.sleep(0.2)
    driver.send_signal(signal.SIGTERM)
    _, err = driver.communicate(timeout=60)
    assert driver.returncode == 130 and "interrupted: rerun the same command to resume" in err
    deadline = time.time() + 30
    while session_processes(driver.pid) and time.time() < deadline:
        time.sleep(0.2)
    left = session_processes(driver.pid)
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    assert not left, f"processes of the stopped sweep still running: {left}"


@pytest.mark.slow
def test_real_training_scripts_sweep_then_aggregate(tmp_path, ray_address, capsys):
    """adaptive_bc and spot x 2 seeds on a tiny dataset and budget; a bad override fails alone."""
    from tools import aggregate

    data = tmp_path / "tiny-hopper.hdf5"
    write_d4rl_file(data, episodes=[(120, "timeout"), (80, "terminal"), (100, "timeout")], next_obs=True)
    tiny = {"offline_steps": 20, "online_steps": 20, "eval_every": 10, "eval_episodes": 1, "checkpoint_every": 10,
            "batch_size": 16, "wandb_mode": "disabled"}
    spec = {"root": str(tmp_path / "root"), "seeds": 2,
            "datasets": [{"name": "tiny", "config": str(REPO / "configs" / "{algo}" / "hopper-medium.yaml"),
                          "dataset": str(data)}],
            "algorithms": {"adaptive_bc": {"overrides": {"num_critics": 2, "hidden_dim": 32, "utd": 1,
                                                         "prefill_min": 100}},
                           "spot": {"overrides": {"vae_steps": 10, "vae_hidden": 32, "hidden_dim": 32}},
                           "spot_typo": {"module": "spot", "overrides": {"vae_step": 10}}},
            "overrides": tiny}
    path = write_sweep(tmp_path / "s.yaml", spec)
    assert sweep.main([str(path), "--interval", "5"]) == 1
    out = capsys.readouterr().out
    root = tmp_path / "root"
    for algo in ("adaptive_bc", "spot"):
        for seed in (0, 1):
            trial_dir = root / algo / "tiny" / f"seed{seed}"
            online = yaml.safe_load((trial_dir / "online" / "config.yaml").read_text())
            assert online["algo"] == algo and online["seed"] == seed and online["threads"] == 1
            assert online["dataset"] == str(data) and online["device"] == "cpu"
            assert online["offline_checkpoint"] == str(trial_dir / "offline" / "checkpoints" / "offline.pt")
            assert (trial_dir / "online" / "checkpoints" / "online.pt").exists()
            lines = (trial_dir / "online" / "metrics.jsonl").read_text().splitlines()
            steps = [json.loads(line)["step"] for line in lines if "eval/normalized_score" in line]
            assert steps == [0, 10, 20]
    for seed in (0, 1):
        log = root / "spot_typo" / "tiny" / f"seed{seed}" / "offline.log"
        assert "unknown config key 'vae_step'" in log.read_text()
        assert f"FAILED spot_typo/tiny/seed{seed}: offline exited with code" in out and str(log) in out
    assert "4/6 done, 2 failed" in out

    # a rerun skips every finished trial without starting anything
    stamps = {p: p.stat().st_mtime_ns for p in root.rglob("online.pt")}
    assert sweep.main([str(path), "--interval", "5"]) == 1
    assert "6 trials: 4 already finished, 2 to run" in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in root.rglob("online.pt")} == stamps

    results = aggregate.main([str(root), "--out-dir", str(tmp_path / "agg"), "--reps", "200"])
    for phase in sweep.PHASES:
        assert set(results[phase]["estimates"]) == {"adaptive_bc", "spot"}
        assert results[phase]["shape"] == {"adaptive_bc": [2, 1], "spot": [2, 1]}
    assert (tmp_path / "agg" / "aggregate_online.png").stat().st_size > 10_000


def test_each_sweep_file_run_into_a_root_keeps_its_own_record(tmp_path):
    root = tmp_path / "root"
    main_file = tmp_path / "truncated.yaml"
    main_file.write_text("seeds: 3\n")
    variant = tmp_path / "truncated-utd10.yaml"
    variant.write_text("seeds: [0]\n")
    assert sweep.record_sweep_file(root, main_file) == root / "sweep.yaml"
    # a second sweep file into the same root is kept beside the first, which stays as it was
    assert sweep.record_sweep_file(root, variant) == root / "sweep-truncated-utd10.yaml"
    assert sweep.record_sweep_file(root, main_file) == root / "sweep.yaml"  # rerunning the first: unchanged
    assert (root / "sweep.yaml").read_text() == "seeds: 3\n"
    assert (root / "sweep-truncated-utd10.yaml").read_text() == "seeds: [0]\n"
    variant.write_text("seeds: [0, 1]\n")  # the variant edited and run again: its record follows it
    sweep.record_sweep_file(root, variant)
    assert (root / "sweep-truncated-utd10.yaml").read_text() == "seeds: [0, 1]\n"
    assert sorted(p.name for p in root.iterdir()) == ["sweep-truncated-utd10.yaml", "sweep.yaml"]  # no .tmp left


def test_a_dataset_entry_can_have_its_own_seeds(tmp_path):
    """`seeds` on a dataset entry replaces the sweep's for that dataset (issue 27: five seeds on two datasets, three
    elsewhere); trials still go seed by seed, and `--seeds 3` selects only the datasets that have seed 3."""
    path = write_sweep(tmp_path / "s.yaml", {"seeds": 2, "algorithms": {"a": {}},
                                             "datasets": [{"dataset": "d4rl:x-v2", "seeds": 4}, "d4rl:y-v2",
                                                          {"dataset": "d4rl:z-v2", "seeds": [5, 0]}]})
    trials = sweep.load_sweep(path, cwd=tmp_path)
    assert [t.name for t in trials] == ["a/x-v2/seed0", "a/y-v2/seed0", "a/z-v2/seed0", "a/x-v2/seed1",
                                        "a/y-v2/seed1", "a/x-v2/seed2", "a/x-v2/seed3", "a/z-v2/seed5"]
    assert all(t.commands["offline"][t.commands["offline"].index("--seed") + 1] == str(t.seed) for t in trials)
    assert [t.name for t in sweep.select_trials(trials, seeds="3,5")] == ["a/x-v2/seed3", "a/z-v2/seed5"]
    with pytest.raises(sweep.SweepError, match=r"datasets\[1\].seeds must be a count"):
        sweep.load_sweep(write_sweep(tmp_path / "t.yaml", {"seeds": 2, "algorithms": {"a": {}},
                                                           "datasets": ["d4rl:x-v2", {"dataset": "d4rl:y-v2",
                                                                                      "seeds": 0}]}), cwd=tmp_path)
