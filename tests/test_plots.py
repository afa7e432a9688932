"""Learning-curve plots and the results table, from synthetic run folders with known values."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from tools import plots


def make_trial(root: Path, algo: str, dataset: str, seed: int, offline_scores, online_scores, weight_key=None,
               weights=None, offline_steps=100, online_step=50):
    off, on = root / algo / dataset / f"seed{seed}" / "offline", root / algo / dataset / f"seed{seed}" / "online"
    for folder in (off, on):
        folder.mkdir(parents=True)
    (off / "config.yaml").write_text(yaml.safe_dump(
        {"algo": algo, "phase": "offline", "dataset": dataset, "seed": seed, "offline_steps": offline_steps}))
    (on / "config.yaml").write_text(yaml.safe_dump(
        {"algo": algo, "phase": "online", "dataset": dataset, "seed": seed, "offline_steps": offline_steps,
         "offline_checkpoint": str(off / "checkpoints" / "offline.pt")}))
    k = len(offline_scores)
    with open(off / "metrics.jsonl", "w") as f:
        for i, s in enumerate(offline_scores):
            f.write(json.dumps({"phase": "offline", "step": (i + 1) * offline_steps // k, "train/x": 1.0,
                                plots.SCORE: s}) + "\n")
    with open(on / "metrics.jsonl", "w") as f:
        for i, s in enumerate(online_scores):
            record = {"phase": "online", "step": i * online_step, plots.SCORE: s}
            if weight_key:
                record[weight_key] = weights[i]
            f.write(json.dumps(record) + "\n")
            f.write(json.dumps({"phase": "online", "step": i * online_step + 7, "online/episode_return": 1.0}) + "\n")
    return off, on


@pytest.fixture
def runs(tmp_path):
    dirs = []
    dirs += make_trial(tmp_path, "adaptive_bc", "hopper", 0, [10, 20], [20, 30, 40], "train/alpha", [0.4, 0.3, 0.2])
    dirs += make_trial(tmp_path, "adaptive_bc", "hopper", 1, [30, 40], [40, 50, 80], "train/alpha", [0.4, 0.1, 0.0])
    dirs += make_trial(tmp_path, "spot", "hopper", 0, [5, 15], [15, 25, 35], "train/lambda", [0.1, 0.06, 0.02])
    return dirs


def test_trials_join_phases_on_one_axis(runs):
    trials = plots.load_trials(runs)
    assert len(trials) == 3
    t = next(t for t in trials if t.algo == "adaptive_bc" and t.seed == 1)
    x, y = t.series(plots.SCORE)
    np.testing.assert_array_equal(x, [50, 100, 100, 150, 200])  # online steps shifted by offline_steps
    np.testing.assert_array_equal(y, [30, 40, 40, 50, 80])
    assert (t.final("offline"), t.final("online")) == (40.0, 80.0)


def test_copied_runs_find_their_offline_run_by_the_sweep_layout(tmp_path):
    # a naive trial fine-tuned another algorithm's offline run; the whole sweep was then copied elsewhere
    off, on = make_trial(tmp_path / "old", "spot", "hopper", 0, [5, 15], [15, 25])
    _, naive_on = make_trial(tmp_path / "old", "spot_naive", "hopper", 0, [99], [1, 2])
    config = yaml.safe_load((naive_on / "config.yaml").read_text())
    (naive_on / "config.yaml").write_text(yaml.safe_dump({**config, "offline_checkpoint": str(off / "checkpoints" / "offline.pt")}))
    (naive_on.parent / "offline" / "metrics.jsonl").unlink()  # no offline run of its own
    (tmp_path / "old").rename(tmp_path / "new")
    new = tmp_path / "new"
    naive = plots.load_trials([new / "spot_naive" / "hopper" / "seed0" / "online"])[0]
    assert naive.offline_dir == new / "spot" / "hopper" / "seed0" / "offline"
    assert (naive.final("offline"), naive.final("online")) == (15.0, 2.0)
    pair = plots.load_trials([new / "spot" / "hopper" / "seed0" / "online"])[0]  # the sibling rule still holds
    assert (pair.final("offline"), pair.final("online")) == (15.0, 25.0)


def test_aggregate_means_and_band(runs):
    curves = plots.aggregate(plots.load_trials(runs))
    c = curves[("adaptive_bc", "hopper")]
    np.testing.assert_array_equal(c["x"], [50, 100, 150, 200])
    np.testing.assert_allclose(c["mean"], [20, 30, 40, 60])  # step 100: offline final = online step 0
    assert np.all(c["lo"] <= c["mean"]) and np.all(c["mean"] <= c["hi"])
    np.testing.assert_allclose(c["lo"][-1], 40) and np.testing.assert_allclose(c["hi"][-1], 80)
    assert c["n"] == 2 and c["switch"] == 100
    alpha = plots.aggregate(plots.load_trials(runs), "train/alpha")[("adaptive_bc", "hopper")]
    np.testing.assert_allclose(alpha["mean"], [0.4, 0.2, 0.1])


def test_a_seed_still_fine_tuning_waits_out_of_the_curve(runs, tmp_path):
    # seed 2 has finished its offline phase only; the shared steps of all three seeds would end at the switch
    off, on = make_trial(tmp_path / "more", "adaptive_bc", "hopper", 2, [0, 0], [])
    (on / "metrics.jsonl").unlink()
    (on / "config.yaml").unlink()
    trials = plots.load_trials(runs + [off])
    assert len(trials) == 4 and sum(not t.online for t in trials) == 1
    c = plots.aggregate(trials)[("adaptive_bc", "hopper")]
    assert c["n"] == 2 and c["switch"] == 100
    np.testing.assert_allclose(c["mean"], [20, 30, 40, 60])  # seeds 0 and 1 in both phases
    alone = plots.aggregate([t for t in trials if not t.online])[("adaptive_bc", "hopper")]
    np.testing.assert_allclose(alone["mean"], [0, 0])  # on its own (an offline-only study) it still counts


def test_plot_draws_the_aggregated_data(runs, tmp_path):
    out = tmp_path / "curves.png"
    fig = plots.plot(plots.load_trials(runs), out)
    assert out.stat().st_size > 10_000
    top, bottom = fig.axes[0], fig.axes[1]
    lines = {line.get_label(): line for line in top.lines}
    np.testing.assert_allclose(lines["adaptive_bc (n=2)"].get_ydata(), [20, 30, 40, 60])
    np.testing.assert_allclose(lines["spot (n=1)"].get_ydata(), [5, 15, 25, 35])
    switch = [line for line in top.lines if line.get_linestyle() == "--"]
    assert switch and switch[0].get_xdata()[0] == 0  # x counts from the switch to online
    weights = {line.get_label(): line for line in bottom.lines}
    np.testing.assert_allclose(weights["spot lambda"].get_ydata(), [0.1, 0.06, 0.02])
    np.testing.assert_allclose(weights["adaptive_bc alpha"].get_xdata(), [0, 50, 100])
    np.testing.assert_allclose(lines["spot (n=1)"].get_xdata(), [-50, 0, 50, 100])  # offline at 50, 100


def test_plot_aligns_switches_and_compresses_a_long_offline_phase(tmp_path):
    """A SPOT run whose offline phase (VAE stage included) is 4x adaptive_bc's switches at the same x; the offline
    phase, 10x longer than the online one, takes OFFLINE_SHARE of the axis."""
    dirs = [*make_trial(tmp_path, "adaptive_bc", "hopper", 0, [10, 20], [20, 30, 40], offline_steps=1000),
            *make_trial(tmp_path, "spot", "hopper", 0, [5, 15], [15, 25, 35], offline_steps=4000)]
    fig = plots.plot(plots.load_trials(dirs), tmp_path / "c.png")
    top = fig.axes[0]
    lines = {line.get_label(): line for line in top.lines}
    np.testing.assert_allclose(lines["adaptive_bc (n=1)"].get_xdata(), [-500, 0, 50, 100])
    np.testing.assert_allclose(lines["spot (n=1)"].get_xdata(), [-2000, 0, 50, 100])
    left, right = top.get_xlim()
    to_axis = top.transScale.transform
    (x_left, _), (x_zero, _), (x_right, _) = to_axis([[left, 1], [0, 1], [right, 1]])
    assert (x_zero - x_left) / (x_right - x_left) == pytest.approx(plots.OFFLINE_SHARE, abs=0.05)


def test_an_offline_only_trial_ends_at_the_switch(tmp_path):
    """SPOT on walker2d-medium-gen diverged offline and has no online run: its offline curve is drawn before the
    switch like every other offline phase (x ≤ 0), not at offline-step x after it, which stretched the axis."""
    dirs = [*make_trial(tmp_path, "adaptive_bc", "hopper", 0, [10, 20], [20, 30, 40], offline_steps=1000)]
    off, on = make_trial(tmp_path, "spot", "hopper", 0, [5, 15], [15], offline_steps=2000)
    for name in ("metrics.jsonl", "config.yaml"):
        (on / name).unlink()
    on.rmdir()
    fig = plots.plot(plots.load_trials([*dirs, off]), tmp_path / "c.png")
    lines = {line.get_label(): line for line in fig.axes[0].lines}
    np.testing.assert_allclose(lines["spot (n=1)"].get_xdata(), [-1000, 0])
    assert fig.axes[0].get_xlim()[1] < 200


def test_plots_label_a_sweep_roots_runs_by_folder(runs, tmp_path):
    naive = make_trial(tmp_path / "root", "adaptive_bc", "hopper", 0, [10, 20], [0, 5, 40])
    naive[0].parent.parent.parent.rename(tmp_path / "root" / "adaptive_bc_naive")  # package adaptive_bc, folder naive
    (tmp_path / "root" / "sweep.yaml").write_text("seeds: 1\n")
    trials, _ = plots.load_labeled_trials([str(tmp_path / "root")], include_unfinished=True)
    assert [(t.algo, t.final("online")) for t in trials] == [("adaptive_bc_naive", 40.0)]


def test_results_table_final_not_best(runs, tmp_path):
    table = plots.results_table(plots.load_trials(runs))
    assert "| adaptive_bc | hopper | 2 | 30.0 ± 10.0 | 60.0 ± 20.0 |" in table
    assert "| spot | hopper | 1 | 15.0 ± 0.0 | 35.0 ± 0.0 |" in table
    assert "not the best" in table
    plots.main([str(p) for p in runs] + ["--table", str(tmp_path / "t.md"), "--out", str(tmp_path / "c.png"),
                                         "--include-unfinished"])
    assert (tmp_path / "t.md").read_text() == table
