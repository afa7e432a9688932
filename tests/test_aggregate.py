"""rliable aggregates from synthetic run folders whose final scores are known: IQM, mean, median and
optimality gap computed by hand, stratified-bootstrap intervals, and which runs count."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from tools import aggregate, plots

SCORE = "eval/normalized_score"


def make_run(root: Path, algo: str, dataset: str, seed: int, offline_final: float, online_final: float | None,
             finished=(True, True), earlier_best: float = 50.0):
    """Offline (and online) run folders; each phase's last evaluation is `*_final`, an earlier one is
    `earlier_best` higher (the aggregates must use the final one)."""
    trial = root / algo / dataset / f"seed{seed}"
    off = trial / "offline"
    phases = [("offline", off, offline_final, finished[0])]
    if online_final is not None:
        phases.append(("online", trial / "online", online_final, finished[1]))
    for phase, run_dir, final, done in phases:
        (run_dir / "checkpoints").mkdir(parents=True)
        config = {"algo": algo, "phase": phase, "dataset": f"d4rl:{dataset}", "seed": seed, "offline_steps": 100}
        if phase == "online":
            config["offline_checkpoint"] = str(off / "checkpoints" / "offline.pt")
        (run_dir / "config.yaml").write_text(yaml.safe_dump(config))
        records = [{"phase": phase, "step": 50, SCORE: final + earlier_best, "train/loss": 1.0},
                   {"phase": phase, "step": 100, SCORE: final},
                   {"phase": phase, "step": 101, "online/episode_return": 3.0}]
        (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
        if done:
            (run_dir / "checkpoints" / f"{phase}.pt").write_bytes(b"x")
    return trial


# Offline-final scores (x100) of algorithm "x": 4 seeds x 3 datasets
X_SCORES = {"hopper": [0, 10, 20, 90], "walker": [40, 50, 60, 70], "cheetah": [100, 130, 150, 200]}
# Hand-computed on the /100 scale:
#   IQM: the 12 sorted values 0 10 20 | 40 50 60 70 90 100 | 130 150 200 -> mean of the middle 6 = 410/6
#   task means 30, 55, 145 -> mean 76.67, median 55
#   optimality gap: 1 - mean(min(x, 1)) = 1 - (0+.1+.2+.9 + .4+.5+.6+.7 + 4 x 1) / 12 = 1 - 7.4/12
X_EXPECTED = {"IQM": 410 / 600, "Mean": 230 / 300, "Median": 0.55, "Optimality Gap": 1 - 7.4 / 12}
# Algorithm "y": every seed scores the same on a dataset, so a bootstrap that resamples seeds within
# each dataset (stratified) always redraws the same matrix: zero-width intervals.
Y_SCORES = {"hopper": 20, "walker": 80, "cheetah": 50}


@pytest.fixture
def runs(tmp_path) -> Path:
    for dataset, scores in X_SCORES.items():
        for seed, score in enumerate(scores):
            make_run(tmp_path, "x", dataset, seed, score, 2 * score)
    for dataset, score in Y_SCORES.items():
        for seed in range(4):
            make_run(tmp_path, "y", dataset, seed, score, score + 10)
    return tmp_path


def test_score_matrices_use_final_evaluations_per_task(runs):
    trials, notes = plots.load_labeled_trials([str(runs)])
    matrices, tasks, matrix_notes = aggregate.score_matrices(trials, "offline")
    assert tasks == ["d4rl:cheetah", "d4rl:hopper", "d4rl:walker"] and not notes and not matrix_notes
    assert matrices["x"].shape == (4, 3)  # runs x tasks, seeds in order
    np.testing.assert_allclose(matrices["x"][:, 1], np.array(X_SCORES["hopper"]) / 100)
    np.testing.assert_allclose(matrices["x"][:, 0], np.array(X_SCORES["cheetah"]) / 100)
    online, _, _ = aggregate.score_matrices(trials, "online")
    np.testing.assert_allclose(online["x"], 2 * matrices["x"])


def test_point_estimates_match_hand_computation(runs):
    trials, _ = plots.load_labeled_trials([str(runs)])
    results, notes = aggregate.aggregate(trials, reps=500)
    assert not notes
    offline = results["offline"]["estimates"]["x"]
    for metric, expected in X_EXPECTED.items():
        point, lo, hi = offline[metric]
        assert point == pytest.approx(expected, abs=1e-12), metric
        assert lo <= point <= hi and lo < hi  # seeds differ: a real interval
    online = results["online"]["estimates"]["x"]  # scores doubled: IQM, mean, median double; the gap is clipped
    assert online["IQM"][0] == pytest.approx(2 * X_EXPECTED["IQM"])
    assert online["Median"][0] == pytest.approx(1.1)
    # /100: hopper 0 .2 .4 1.8, walker .8 1 1.2 1.4, cheetah 2 2.6 3 4 -> clipped at 1, they sum to 9.4
    assert online["Optimality Gap"][0] == pytest.approx(1 - 9.4 / 12)
    assert results["offline"]["shape"] == {"x": [4, 3], "y": [4, 3]}


def test_bootstrap_is_stratified_over_seeds_within_each_task(runs):
    trials, _ = plots.load_labeled_trials([str(runs)])
    matrices, _, _ = aggregate.score_matrices(trials, "offline")
    estimates = aggregate.interval_estimates({"y": matrices["y"]}, reps=300)["y"]
    # pooled: 4 x .2, 4 x .5, 4 x .8; each task keeps its 4 runs in every resample
    for metric in aggregate.METRICS:
        assert estimates[metric] == pytest.approx((0.5, 0.5, 0.5)), metric


def test_intervals_are_repeatable_and_leave_numpy_global_rng_alone(runs):
    trials, _ = plots.load_labeled_trials([str(runs)])
    matrices, _, _ = aggregate.score_matrices(trials, "offline")
    np.random.seed(123)
    expected_next = np.random.rand()
    np.random.seed(123)
    first = aggregate.interval_estimates(matrices, reps=200, seed=7)
    assert np.random.rand() == expected_next
    assert aggregate.interval_estimates(matrices, reps=200, seed=7) == first
    assert aggregate.interval_estimates(matrices, reps=200, seed=8)["x"] != first["x"]


def test_unfinished_unequal_and_unshared_runs(tmp_path):
    for seed in range(3):
        make_run(tmp_path, "a", "hopper", seed, 10 * seed, 20 * seed)
        make_run(tmp_path, "b", "hopper", seed, 30, 40)
        make_run(tmp_path, "a", "walker", seed, 50, 60)
    make_run(tmp_path, "b", "walker", 0, 70, 80)
    make_run(tmp_path, "b", "walker", 1, 70, 80)
    make_run(tmp_path, "a", "hopper", 3, 99, 99, finished=(True, False))  # its online run is still training
    make_run(tmp_path, "a", "cheetah", 0, 1, 2)  # b never ran cheetah
    trials, notes = plots.load_labeled_trials([str(tmp_path)])
    assert notes == [f"unfinished, left out: {tmp_path / 'a' / 'hopper' / 'seed3' / 'online'}"]
    offline, tasks, offline_notes = aggregate.score_matrices(trials, "offline")
    assert tasks == ["d4rl:hopper", "d4rl:walker"]
    # a has 4 finished offline hopper runs, 3 walker: 3 per task, the lowest seeds
    np.testing.assert_allclose(offline["a"], [[0.0, 0.5], [0.1, 0.5], [0.2, 0.5]])
    np.testing.assert_allclose(offline["b"], [[0.3, 0.7], [0.3, 0.7]])
    assert "offline: a on d4rl:cheetah left out (not every algorithm has this dataset)" in offline_notes
    assert "offline: a on d4rl:hopper: seeds 3 left out (3 seeds on every task)" in offline_notes
    assert "offline: b on d4rl:hopper: seeds 2 left out (2 seeds on every task)" in offline_notes
    online, _, _ = aggregate.score_matrices(trials, "online")
    np.testing.assert_allclose(online["a"][:, 0], [0.0, 0.2, 0.4])  # seed 3's unfinished online run: out

    included, notes = plots.load_labeled_trials([str(tmp_path)], include_unfinished=True)
    assert not notes
    online, _, online_notes = aggregate.score_matrices(included, "online")
    assert "online: a on d4rl:hopper: seeds 3 left out (3 seeds on every task)" in online_notes


def test_labels_from_arguments_and_sweep_roots(tmp_path):
    for seed in range(2):
        make_run(tmp_path / "v1", "spot", "hopper", seed, 10, 20)
        make_run(tmp_path / "v2", "spot", "hopper", seed, 30, 40)
    trials, _ = plots.load_labeled_trials([f"lr-high={tmp_path / 'v1'}", f"lr-low={tmp_path / 'v2' / 'spot'}"])
    assert sorted((t.algo, t.final("offline")) for t in trials) == [("lr-high", 10), ("lr-high", 10),
                                                                   ("lr-low", 30), ("lr-low", 30)]
    # a sweep root (marked by its sweep.yaml): the algorithm folders label their runs
    sweep_root = tmp_path / "sweep"
    make_run(sweep_root, "spot", "hopper", 0, 10, 20)
    make_run(sweep_root, "spot-variant", "hopper", 0, 30, 40)
    (sweep_root / "spot-variant" / "hopper" / "seed1").mkdir(parents=True)  # a trial that failed before running
    (sweep_root / "sweep.yaml").write_text("seeds: 2\n")
    for path in sweep_root.rglob("config.yaml"):  # both ran the spot package
        path.write_text(path.read_text().replace("algo: spot-variant", "algo: spot"))
    trials, _ = plots.load_labeled_trials([str(sweep_root)])
    assert sorted(t.algo for t in trials) == ["spot", "spot-variant"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no run folders"):
        plots.load_labeled_trials([str(tmp_path / "empty")])
    with pytest.raises(FileNotFoundError, match="neither a run folder"):
        plots.load_labeled_trials([str(tmp_path / "missing")])


def test_command_line_writes_table_json_and_plots(runs, tmp_path, capsys):
    out = tmp_path / "report"
    make_run(runs, "x", "hopper", 9, 5, 6, finished=(False, False))  # a run still training: left out
    results = aggregate.main([str(runs), "--out-dir", str(out), "--reps", "300"])
    text = (out / "aggregate.md").read_text()
    assert text in capsys.readouterr().out
    assert results["offline"]["estimates"]["x"]["Median"][0] == pytest.approx(0.55)
    row = next(line for line in text.splitlines() if line.startswith("| x | 4 × 3 |"))  # first: offline
    iqm, mean, median, gap = (cell.strip() for cell in row.split("|")[3:7])
    assert iqm.startswith(f"{X_EXPECTED['IQM']:.3f} [") and mean.startswith(f"{X_EXPECTED['Mean']:.3f} [")
    assert median.startswith("0.550 [") and gap.startswith(f"{X_EXPECTED['Optimality Gap']:.3f} [")
    assert "| y | 4 × 3 | 0.500 [0.500, 0.500] |" in text
    assert "Tasks: d4rl:cheetah, d4rl:hopper, d4rl:walker" in text
    assert "## Per dataset" in text and "| x | d4rl:hopper | 4 | 30.0 ± 35.4 |" in text  # tools.plots' table
    assert "unfinished, left out:" in text and "seed9" in text
    saved = json.loads((out / "aggregate.json").read_text())
    assert saved["results"]["online"]["estimates"]["y"]["Mean"] == [0.6, 0.6, 0.6]
    for phase in ("offline", "online"):
        assert (out / f"aggregate_{phase}.png").stat().st_size > 10_000
    with pytest.raises(SystemExit):
        aggregate.main([str(tmp_path / "nothing-here")])
