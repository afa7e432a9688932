"""tools.collect_results: finished runs go into the repository without checkpoints, and the reports made from the
committed copy (which a git clone gives fresh mtimes) are the reports of the original runs."""
from __future__ import annotations

import json
import os
import shutil

import pytest

from adaptive_bc import train_offline, train_online
from benchmarks import quality
from common import layout
from common.checkpoint import load_checkpoint, save_checkpoint
from tools import collect_results
from tools.collect_results import CollectError
from tools.plots import load_trials

SMALL = ["--hidden_dim", "16", "--num_critics", "4", "--utd", "1", "--prefill_min", "64", "--batch_size", "16",
         "--eval_episodes", "1", "--wandb_mode", "disabled"]


@pytest.fixture
def sweep_root(tmp_path, tiny_hopper_file):
    """<root>/adaptive_bc/tiny/seed0/{offline,online} (finished, as a sweep lays them out, with <phase>.log), a
    naive twin's online run from the same offline checkpoint, and an unfinished offline run."""
    root = tmp_path / "root"
    trial = root / "adaptive_bc" / "tiny" / "seed0"
    checkpoint = train_offline.main(["--dataset", str(tiny_hopper_file), "--offline_steps", "20", "--eval_every", "10",
                                     "--run_dir", str(trial / "offline"), *SMALL])
    train_online.main(["--checkpoint", str(checkpoint), "--online_steps", "100", "--eval_every", "50",
                       "--run_dir", str(trial / "online"), *SMALL])
    train_online.main(["--checkpoint", str(checkpoint), "--online_steps", "100", "--eval_every", "50", "--alpha_max",
                       "0", "--run_dir", str(root / "adaptive_bc_naive" / "tiny" / "seed0" / "online"), *SMALL])
    (trial / "offline.log").write_text("=== 2026-11-30 10:00:00 on vm: ...\n=== 2026-11-30 11:00:00 on vm: ...\n")
    (trial / "online.log").write_text("=== 2026-11-30 12:00:00 on vm: ...\n=== 2026-11-30 13:00:00 on vm: ...\n")
    # the offline checkpoint as written before wall_s was recorded (its wall time then comes from the mtimes); the
    # online one records wall_s = 240 s (all its segments)
    for phase, wall_s in (("offline", None), ("online", 240.0)):
        final = layout.checkpoint_path(trial / phase, phase)
        payload = load_checkpoint(final)
        payload.pop("wall_s")
        save_checkpoint(final, payload if wall_s is None else {**payload, "wall_s": wall_s})
    for phase in ("offline", "online"):  # a known wall time: config.yaml 90 s before the final checkpoint
        final = layout.checkpoint_path(trial / phase, phase).stat().st_mtime
        os.utime(trial / phase / "config.yaml", (final - 90, final - 90))
    unfinished = root / "adaptive_bc" / "tiny" / "seed1" / "offline"
    shutil.copytree(trial / "offline", unfinished)
    shutil.rmtree(unfinished / "checkpoints")
    (root / "sweep.yaml").write_text("seeds: 1\n")
    (root / "sweep-utd10.yaml").write_text("seeds: [0]\n")  # a second sweep file run into the same root
    return root


def test_collect_then_report_from_the_copy(sweep_root, tmp_path):
    dest = tmp_path / "repo" / "results"
    written = collect_results.main([str(sweep_root), str(dest)])
    assert sorted(str(p.relative_to(dest)) for p in written) == [
        "adaptive_bc/tiny/seed0/offline", "adaptive_bc/tiny/seed0/online", "adaptive_bc_naive/tiny/seed0/online"]
    assert (dest / "sweep.yaml").read_text() == "seeds: 1\n"
    assert (dest / "sweep-utd10.yaml").read_text() == "seeds: [0]\n"
    offline = dest / "adaptive_bc" / "tiny" / "seed0" / "offline"
    assert sorted(p.name for p in offline.iterdir()) == ["config.yaml", "metrics.jsonl", "result.json"]
    result = json.loads((offline / "result.json").read_text())
    assert result["finished"] and result["wall_min"] == pytest.approx(1.5, abs=0.02) and result["starts"] == 2
    assert result["wall_source"] == "mtimes"
    online_result = json.loads((offline.parent / "online" / "result.json").read_text())
    assert (online_result["wall_min"], online_result["wall_source"], online_result["starts"]) == (4.0, "segments", 2)
    assert layout.is_finished(offline) and not (dest / "adaptive_bc" / "tiny" / "seed1").exists()

    # the committed online runs are joined to the committed offline run, not to the original still on disk
    trials = load_trials(layout.find_run_dirs(dest))
    assert {t.offline_dir for t in trials} == {offline.resolve()}

    # a clone: new mtimes everywhere, the original runs gone
    for path in dest.rglob("*"):
        os.utime(path, (1e9, 1e9))
    shutil.rmtree(sweep_root)
    runs = {(r.algo, r.seed): r for r in quality.main([str(dest)])}
    assert set(runs) == {("adaptive_bc", 0), ("adaptive_bc_naive", 0)}  # the folder names label a sweep's runs
    run = runs[("adaptive_bc", 0)]
    # resumed twice each: the offline wall time (from mtimes) is its last segment's, marked; the online one is summed
    assert run.wall_offline_min == pytest.approx(1.5, abs=0.02) and run.resumed == ("offline",)
    assert run.wall_online_min == 4.0
    records = [r for r in layout.read_metrics(offline) if quality.SCORE in r]
    assert run.offline_final == records[-1][quality.SCORE]  # joined to its committed offline run
    assert runs[("adaptive_bc_naive", 0)].offline_final == run.offline_final


def test_recollecting_changes_nothing_and_different_files_are_refused(sweep_root, tmp_path):
    dest = tmp_path / "results"
    collect_results.main([str(sweep_root), str(dest)])
    snapshot = {p: p.read_bytes() for p in dest.rglob("*") if p.is_file()}
    assert collect_results.main([str(sweep_root), str(dest)]) == []
    metrics = dest / "adaptive_bc" / "tiny" / "seed0" / "online" / "metrics.jsonl"
    metrics.write_text(metrics.read_text() + '{"step": 1}\n')
    snapshot[metrics] = metrics.read_bytes()
    shutil.rmtree(dest / "adaptive_bc_naive")  # would be collected again, but the error comes first
    del_naive = {p for p in snapshot if "adaptive_bc_naive" in str(p)}
    with pytest.raises(CollectError, match="already holds a different metrics.jsonl"):
        collect_results.main([str(sweep_root), str(dest)])
    assert {p: p.read_bytes() for p in dest.rglob("*") if p.is_file()} == {
        p: b for p, b in snapshot.items() if p not in del_naive}


def test_committed_sweep_records_match_the_committed_runs(tmp_path):
    """The study's sweep files copied beside its runs (sweep.yaml, sweep-*.yaml) are what ran: for every committed
    run, the command its record gives sets each key to the value in the run's config.yaml."""
    import yaml

    from conftest import REPO
    from tools.sweep import load_sweep

    study = REPO / "benchmarks" / "results" / "truncated"
    trials = {}
    for record in sorted(study.glob("sweep*.yaml")):
        for trial in load_sweep(record, root=str(tmp_path / "root"), cwd=REPO):
            trials.setdefault((trial.algo, trial.dataset, trial.seed), trial)
    runs = layout.find_run_dirs(study, required=False)
    assert len(runs) >= 50
    for run in runs:
        algo, dataset, seed = run.parts[-4], run.parts[-3], int(run.parts[-2].removeprefix("seed"))
        trial = trials.get((algo, dataset, seed))
        assert trial is not None, f"{run}: no sweep record names {algo} / {dataset} / seed {seed}"
        argv = trial.commands[run.name]
        config = yaml.safe_load((run / "config.yaml").read_text())
        pairs = dict(zip(argv[3::2], argv[4::2]))  # python -m <module> then --key value pairs
        for flag, value in pairs.items():
            key = flag.removeprefix("--")
            if key in ("config", "checkpoint", "run_dir", "threads", "device"):
                continue
            if key == "variant":  # recorded in config.yaml since 2026-12-06; the folder names label older runs
                assert config.get("variant") in (None, value) and run.parts[-4] == value
                continue
            assert config[key] == yaml.safe_load(value), f"{run}: {key} ran as {config[key]!r}, the record says {value}"


def test_a_collection_killed_midway_completes_on_rerun_and_leaves_only_whole_files(sweep_root, tmp_path):
    """Killed between a run's config.yaml and its metrics.jsonl, or inside a file write: the rerun completes the run
    (it used to refuse forever) and no hidden temporary file stays in the destination."""
    dest = tmp_path / "results"
    collect_results.main([str(sweep_root), str(dest)])
    offline = dest / "adaptive_bc" / "tiny" / "seed0" / "offline"
    (offline / "metrics.jsonl").unlink()  # killed after config.yaml ...
    (offline / "result.json").unlink()
    (offline / ".metrics.jsonl.k2j3.tmp").write_bytes(b"half a fi")  # ... inside the metrics.jsonl write
    (dest / ".sweep.yaml.x1.tmp").write_text("see")
    written = collect_results.main([str(sweep_root), str(dest)])
    assert written == [offline]
    assert sorted(p.name for p in offline.iterdir()) == ["config.yaml", "metrics.jsonl", "result.json"]
    assert not list(dest.rglob(".*.tmp"))
    assert collect_results.main([str(sweep_root), str(dest)]) == []  # and now it is whole: nothing to do


def test_wall_time_from_the_progress_bars_of_a_trials_log(tmp_path):
    """Checkpoints written before wall_s was recorded (the campaign's pinned clone): the trial's log shows each
    segment's progress bar. Hand-computed: a run killed at 1:57:18 and resumed for 16:42 worked 8,040 s; a hand-run
    twin whose log got a refused start's lines in the middle worked 7:42 (462 s), not 2:00 + 7:42; a VAE bar of 10 s
    then a policy bar of 5 s, 15 s (and 10 + 20 s where only the total tells the bars apart); no bar, None."""
    def bar(step, steps, elapsed):
        return f"spot offline:  {100 * step // steps:3d}%|#  | {step}/{steps} [{elapsed}<00:10, 70.1step/s, score=12.0]\r"

    resumed = tmp_path / "offline.log"
    resumed.write_text("=== 2026-12-06 09:44:32 on vm: python -m spot.train_offline ...\nSPOT offline: ...\n"
                       + bar(0, 200000, "00:00") + bar(2000, 200000, "00:30") + bar(160000, 200000, "1:57:18")
                       + "\n=== 2026-12-06 11:53:11 on vm: python -m spot.train_offline ...\nresuming ...\n"
                       + bar(160000, 200000, "00:00") + bar(200000, 200000, "16:42") + "\nwrote ...\n")
    assert collect_results.progress_wall_s(resumed) == 7038 + 1002
    interleaved = tmp_path / "online.log"
    interleaved.write_text("=== 12:14:28 (started by hand beside the sweep)\n" + bar(5884, 20000, "02:00")
                           + "\n=== 12:16:15 the sweep's start\nerror: the folder is in use\n"
                           + bar(5950, 20000, "02:01") + bar(20000, 20000, "07:42") + "\n")
    assert collect_results.progress_wall_s(interleaved) == 462
    two_bars = tmp_path / "two.log"
    two_bars.write_text(bar(0, 100, "00:00") + bar(100, 100, "00:10") + bar(0, 50, "00:00") + bar(50, 50, "00:05"))
    assert collect_results.progress_wall_s(two_bars) == 15
    two_bars.write_text(bar(50, 50, "00:10") + bar(60, 100, "00:12") + bar(100, 100, "00:20"))  # only the total changes
    assert collect_results.progress_wall_s(two_bars) == 30
    (tmp_path / "none.log").write_text("=== start\nerror: bad config\n")
    assert collect_results.progress_wall_s(tmp_path / "none.log") is None
    assert collect_results.progress_wall_s(tmp_path / "missing.log") is None


def test_a_run_without_recorded_wall_time_takes_its_logs_segments(sweep_root, tmp_path):
    trial = sweep_root / "adaptive_bc" / "tiny" / "seed0"
    (trial / "offline.log").write_text("=== first start\n| 10/20 [02:00<01:00, x]\r\n=== resumed\n| 10/20 [00:00<?, x]\r"
                                       "| 20/20 [00:30<00:00, x]\n")  # 150 s; the mtimes say 90
    dest = tmp_path / "results"
    collect_results.main([str(sweep_root), str(dest)])
    result = json.loads((dest / "adaptive_bc" / "tiny" / "seed0" / "offline" / "result.json").read_text())
    assert (result["wall_min"], result["wall_source"], result["starts"]) == (2.5, "log", 2)
    assert not quality.was_resumed(dest / "adaptive_bc" / "tiny" / "seed0" / "offline", "offline")  # no * mark
