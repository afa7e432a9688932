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
    (trial / "online.log").write_text("=== 2026-11-30 12:00:00 on vm: ...\n")
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
    assert run.wall_offline_min == pytest.approx(1.5, abs=0.02) and run.resumed == ("offline",)
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
