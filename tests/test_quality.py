"""The quality protocol: the report's numbers on hand-made runs, the two sweep files, and the naive
baseline's overrides reaching the agents (tiny in-process runs)."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import yaml

from benchmarks import quality
from common.checkpoint import load_checkpoint
from common.layout import read_metrics
from conftest import REPO, write_d4rl_file
from tools import sweep

SCORE = "eval/normalized_score"


# ---------------------------------------------------------------------------------------------------------------
# The report on synthetic runs


def write_run(run_dir: Path, config: dict, records: list[dict], finished: bool, start: float, end: float) -> None:
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config))
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    os.utime(run_dir / "config.yaml", (start, start))
    os.utime(run_dir / "metrics.jsonl", (end - 1, end - 1))
    if finished:
        final = run_dir / "checkpoints" / f"{config['phase']}.pt"
        final.write_text("final")
        os.utime(final, (end, end))


def write_trial(root: Path, algo: str, seed: int, offline_scores: list[float], online: list[dict],
                offline_minutes: float, online_minutes: float, online_finished: bool = True) -> Path:
    """<root>/<algo>/ds/seed<k>/{offline,online}; offline evals every 10 steps; online_steps 100."""
    trial = root / algo / "ds" / f"seed{seed}"
    offline = [{"phase": "offline", "step": 10 * (i + 1), SCORE: s} for i, s in enumerate(offline_scores)]
    base = {"algo": "pkg", "dataset": "shared:ds.hdf5", "seed": seed, "online_steps": 100}
    t0 = 1_000_000.0
    write_run(trial / "offline", {**base, "phase": "offline"}, offline, True, t0, t0 + 60 * offline_minutes)
    write_run(trial / "online", {**base, "phase": "online",
                                 "offline_checkpoint": str(trial / "offline" / "checkpoints" / "offline.pt")},
              [{"phase": "online", **r} for r in online], online_finished, t0 + 1000, t0 + 1000 + 60 * online_minutes)
    return trial


def ev(step: int, score: float) -> dict:
    return {"step": step, SCORE: score}


def episode(step: int, score: float) -> dict:
    return {"step": step, "online/episode_normalized_score": score, "online/episode_return": 1.0}


@pytest.fixture
def sweep_root(tmp_path) -> Path:
    root = tmp_path / "quality"
    root.mkdir()
    (root / "sweep.yaml").write_text("seeds: 2\n")  # a sweep root: the algorithm folders label the runs
    # seed 0: step 0 (5.0) is below everything but is not in the dip window (0, 20]; 25 is past it.
    write_trial(root, "alg", 0, [30.0, 40.0], [ev(0, 5.0), episode(8, 12.0), ev(10, 20.0), episode(20, 9.0),
                                               ev(20, 35.0), episode(21, 1.0), ev(25, 2.0), ev(100, 60.0)], 2.0, 3.0)
    # seed 1: final is the last evaluation (50), not the best (90); the dip is 10 at step 20
    write_trial(root, "alg", 1, [44.0], [ev(0, 50.0), ev(10, 30.0), episode(15, 7.0), ev(20, 10.0),
                                         ev(50, 90.0), ev(100, 50.0)], 4.0, 5.0)
    return root


def test_per_run_metrics_are_final_dips_and_wall_time(sweep_root):
    runs = {r.seed: r for r in quality.main([str(sweep_root)])}
    assert {r.algo for r in runs.values()} == {"alg"}  # labelled by the folder, not the config's "pkg"
    r0, r1 = runs[0], runs[1]
    assert (r0.offline_final, r0.online_final, r0.dip_eval, r0.dip_episode) == (40.0, 60.0, 20.0, 9.0)
    assert (r1.offline_final, r1.online_final, r1.dip_eval, r1.dip_episode) == (44.0, 50.0, 10.0, 7.0)
    assert r0.wall_offline_min == pytest.approx(2.0) and r0.wall_online_min == pytest.approx(3.0)
    # the fine-tuning study's numbers: online − offline and the dip relative to the pretrained policy
    assert (r0.gain, r0.dip_drop) == (20.0, -20.0) and (r1.gain, r1.dip_drop) == (6.0, -34.0)
    # the lowest evaluation of the whole run: seed 0's 2.0 at step 25 lies past the dip window (step 0's 5.0 is
    # the offline policy and does not count); seed 1's is its dip
    assert (r0.low_eval, r0.low_drop) == (2.0, -38.0) and (r1.low_eval, r1.low_drop) == (10.0, -34.0)
    assert r1.wall_offline_min == pytest.approx(4.0) and r1.wall_online_min == pytest.approx(5.0)


def test_interval_table_is_the_mean_with_a_bootstrap_interval_over_seeds(sweep_root):
    runs = quality.main([str(sweep_root)])
    stats = quality.intervals(runs)[("alg", "shared:ds.hdf5")]
    # two seeds: the resampled means are the mean of (a, a), (a, b), (b, b) -> the interval spans the two values
    mean, lo, hi, n = stats["dip_drop"]
    assert (mean, n) == (-27.0, 2) and lo == pytest.approx(-34.0) and hi == pytest.approx(-20.0)
    assert stats["gain"][:1] == (13.0,) and stats["offline_final"][0] == 42.0
    text = quality.markdown(runs)
    assert ("| alg | ds | 2 | 42.0 [40.0, 44.0] | 55.0 [50.0, 60.0] | 13.0 [6.0, 20.0] | -27.0 [-34.0, -20.0] | "
            "-36.0 [-38.0, -34.0] |") in text
    # the README's form: dataset first, differences signed, one seed shown as its value
    readme = quality.readme_table(runs)
    assert ("| ds | alg | 2 | 42.0 [40.0, 44.0] | 55.0 [50.0, 60.0] | +13.0 [6.0, 20.0] | −27.0 [−34.0, −20.0] | "
            "−36.0 [−38.0, −34.0] |") in readme
    assert readme.splitlines()[1] == "|---|---|---|---|---|---|---|---|"
    assert "| ds | alg | 1 | 40.0 | 60.0 | +20.0 | −20.0 | −38.0 |" in quality.readme_table([r for r in runs if r.seed == 0])


def test_interval_is_min_max_below_five_seeds_and_a_bootstrap_from_five():
    """With 2–4 seeds a row's interval is [min, max] over its seeds; from 5 seeds on the 95% percentile bootstrap of
    the mean, which lies strictly inside [min, max] for spread-out values."""
    assert quality.interval([0.0, 10.0, None, 30.0, 20.0]) == (15.0, 0.0, 30.0, 4)
    assert quality.interval([7.0]) == (7.0, 7.0, 7.0, 1) and quality.interval([None]) is None
    mean, lo, hi, n = quality.interval([0.0, 10.0, 20.0, 30.0, 40.0])
    assert (mean, n) == (20.0, 5) and 0.0 < lo < 12.0 and 28.0 < hi < 40.0


def test_table_means_and_stds_over_seeds(sweep_root, tmp_path):
    out = tmp_path / "report" / "quality.md"
    quality.main([str(sweep_root), "--out", str(out)])
    text = out.read_text()
    # offline 40, 44 -> 42 ± 2; online 60, 50 -> 55 ± 5; dip 20, 10 -> 15 ± 5; episode dip 9, 7 -> 8 ± 1;
    # lowest 2, 10 -> 6 ± 4; wall offline 2, 4 min -> 3 ± 1; online 3, 5 -> 4 ± 1 (std with ddof=0)
    assert "| alg | ds | 2 | 42.0 ± 2.0 | 55.0 ± 5.0 | 15.0 ± 5.0 | 8.0 ± 1.0 | 6.0 ± 4.0 | 3.0 ± 1.0 | 4.0 ± 1.0 |" in text
    assert "| alg | ds | 0 | 40.0 | 60.0 | 20.0 | 9.0 | 2.0 | 2.0 | 3.0 |" in text
    assert "| alg | ds | 1 | 44.0 | 50.0 | 10.0 | 7.0 | 10.0 | 4.0 | 5.0 |" in text


def test_unfinished_online_runs_are_left_out_unless_asked_and_resumes_are_marked(sweep_root):
    write_trial(sweep_root, "alg", 2, [10.0], [ev(0, 1.0), ev(10, 3.0)], 1.0, 1.0, online_finished=False)
    (sweep_root / "alg" / "ds" / "seed2" / "online.log").write_text("=== t1 on h: cmd\nx\n=== t2 on h: cmd\n")
    runs = {r.seed: r for r in quality.main([str(sweep_root)])}
    assert runs[2].online_final is None and runs[2].dip_eval is None and runs[2].offline_final == 10.0
    # seed 2 still fine-tuning: the summaries average seeds 0 and 1 in every column (its offline 10 would pull
    # the offline mean to 31.3 against an online mean over the other two); the per-run table lists it
    text = quality.markdown(list(runs.values()))
    assert "| alg | ds | 2 | 42.0 [40.0, 44.0] | 55.0 [50.0, 60.0] | 13.0 [6.0, 20.0] | -27.0 [-34.0, -20.0] |" in text
    assert "| alg | ds | 2 | 42.0 ± 2.0 | 55.0 ± 5.0 |" in text
    assert "| alg | ds | 2 | 10.0 | – | – | – | – |" in text
    assert "- alg ds seed 2: online phase not finished" in text
    runs = {r.seed: r for r in quality.main([str(sweep_root), "--include-unfinished"])}
    assert runs[2].online_final == 3.0 and runs[2].dip_eval == 3.0 and runs[2].resumed == ("online",)
    # the unfinished run's wall time ends at metrics.jsonl's mtime (1 min - 1 s)
    assert runs[2].wall_online_min == pytest.approx(1.0 - 1 / 60)
    # lowest (eval) 3.0, not step 0's 1.0 (the offline policy before any fine-tuning)
    assert "| alg | ds | 2 | 10.0 | 3.0 | 3.0 | – | 3.0 | 1.0 | 1.0* |" in quality.markdown(list(runs.values()))


def test_readme_table_names_utd_variants_after_the_study_rows_and_shows_missing_columns_as_dashes(sweep_root):
    # a UTD variant fine-tuned from seed 0's offline run (its own offline column is that run's 40.0)
    write_trial(sweep_root, "alg_naive_utd10", 0, [40.0], [ev(0, 40.0), ev(10, 1.0), ev(100, 45.0)], 1.0, 1.0)
    write_trial(sweep_root, "alg_utd10", 0, [40.0], [ev(0, 40.0), ev(10, 35.0), ev(100, 50.0)], 1.0, 1.0)
    # one still at step 0 (no evaluation in the dip window yet): shown with --include-unfinished, dashes where empty
    write_trial(sweep_root, "alg_naive", 0, [40.0], [ev(0, 40.0)], 1.0, 0.1, online_finished=False)
    runs = quality.main([str(sweep_root), "--include-unfinished"])
    rows = [line.split(" | ")[1] for line in quality.readme_table(runs).splitlines()[2:]]
    assert rows == ["alg", "alg_naive", "alg, utd 10", "alg_naive, utd 10"]
    table = quality.readme_table(runs)
    assert "| ds | alg, utd 10 | 1 | 40.0 | 50.0 | +10.0 | −5.0 | −5.0 |" in table
    assert "| ds | alg_naive | 1 | 40.0 | 40.0 | +0.0 | – | – |" in table
    assert quality.method_label("adaptive_bc_naive_utd10") == "adaptive_bc naive (α = 0), utd 10"
    assert quality.method_label("spot_naive") == "spot naive (λ = 0)" and quality.method_label("x_utd") == "x_utd"


# ---------------------------------------------------------------------------------------------------------------
# The sweep files


def test_quality_sweep_expands_to_methods_and_naive_twins_differing_only_by_the_naive_override(tmp_path):
    trials = sweep.load_sweep(REPO / "configs/sweeps/quality.yaml", root=str(tmp_path / "q"), cwd=REPO)
    datasets = ["halfcheetah-medium-gen", "halfcheetah-medium-replay-gen", "hopper-medium-gen",
                "hopper-medium-replay-gen"]
    assert len(trials) == 3 * 4 * 4
    assert [t.dataset for t in trials[:16:4]] == datasets and {t.seed for t in trials} == {0, 1, 2}
    by_name = {t.name: t for t in trials}
    main = [t for t in trials if not t.algo.endswith("_naive")]
    switch_off = {"adaptive_bc": ["--alpha_max", "0.0"], "spot": ["--lambd", "0.0"]}
    for method in main:
        module = method.algo
        twin = by_name[f"{module}_naive/{method.dataset}/seed{method.seed}"]
        # the naive twin fine-tunes the method's own offline run: no offline phase, the same checkpoint
        assert twin.phases == ("online",) and twin.offline_source == method.name and twin.cpus == 1
        assert twin.final_checkpoint("offline") == method.final_checkpoint("offline")
        assert twin.commands["online"][2] == f"{module}.train_online"
        # the same online command apart from its run folder, its variant name, and the naive key
        expected = [twin.algo if a == method.algo else a.replace(str(method.run_dir("online")), str(twin.run_dir("online")))
                    for a in method.commands["online"]] + switch_off[module]
        assert twin.commands["online"] == expected
        off = dict(zip(method.commands["offline"][3::2], method.commands["offline"][4::2]))
        on = dict(zip(method.commands["online"][3::2], method.commands["online"][4::2]))
        assert off["--dataset"] == f"shared:{method.dataset}.hdf5"
        assert (off["--offline_steps"], on["--online_steps"], on["--eval_episodes"]) == ("10000", "10000", "5")
        assert (off["--eval_every"], on["--eval_every"]) == ("2500", "500")
        if module == "adaptive_bc":
            assert (on["--utd"], on["--prefill_fraction"], on["--prefill_min"]) == ("2", "0.0", "2000")
        else:
            assert off["--vae_steps"] == on["--vae_steps"] == "5000"


# ---------------------------------------------------------------------------------------------------------------
# The naive overrides reach the agents


@pytest.fixture
def tiny_data(tmp_path) -> Path:
    path = tmp_path / "tiny-hopper.hdf5"
    write_d4rl_file(path, episodes=[(40, "terminal"), (60, "timeout"), (30, "terminal")], next_obs=True)
    return path


COMMON = ["--batch_size", "16", "--eval_episodes", "1", "--wandb_mode", "disabled", "--threads", "1"]


def test_adaptive_bc_alpha_max_0_gives_alpha_0_online(tmp_path, tiny_data):
    from adaptive_bc import train_offline, train_online

    offline = train_offline.main(["--dataset", str(tiny_data), "--run_dir", str(tmp_path / "off"), "--offline_steps",
                                  "20", "--eval_every", "10", "--num_critics", "2", "--hidden_dim", "32", *COMMON])
    assert load_checkpoint(offline)["agent"]["alpha"] == 0.4  # pretrained with the BC term
    online = train_online.main(["--checkpoint", str(offline), "--run_dir", str(tmp_path / "on"), "--alpha_max", "0",
                                "--online_steps", "30", "--eval_every", "10", "--utd", "1", "--prefill_min", "64",
                                *COMMON])
    alphas = [(r["step"], r["train/alpha"]) for r in read_metrics(tmp_path / "on" / "metrics.jsonl")
              if "train/alpha" in r]
    assert alphas[0] == (0, 0.0) and {a for _, a in alphas} == {0.0} and len(alphas) >= 4
    assert load_checkpoint(online)["agent"]["alpha"] == 0.0


def test_spot_lambd_0_gives_lambda_0_online(tmp_path, tiny_data):
    from spot import train_offline, train_online

    offline = train_offline.main(["--dataset", str(tiny_data), "--run_dir", str(tmp_path / "off"), "--offline_steps",
                                  "20", "--eval_every", "10", "--vae_steps", "20", "--vae_hidden", "32",
                                  "--hidden_dim", "32", *COMMON])
    assert load_checkpoint(offline)["agent"]["lambd"] > 0  # the checkpoint's λ is not the one used online
    online = train_online.main(["--checkpoint", str(offline), "--run_dir", str(tmp_path / "on"), "--lambd", "0",
                                "--online_steps", "30", "--eval_every", "10", *COMMON])
    evals = [r for r in read_metrics(tmp_path / "on" / "metrics.jsonl") if SCORE in r]
    assert [r["step"] for r in evals] == [0, 10, 20, 30]
    np.testing.assert_array_equal([r["train/lambda"] for r in evals], 0.0)
    assert load_checkpoint(online)["agent"]["lambd"] == 0.0


def _run(algo, dataset, seed, dip=None, final=None, area=None):
    return quality.RunQuality(algo, dataset, seed, 50.0, final, None if dip is None else 50.0 + dip, None, None,
                              None, None, online_area=area)


def test_aggregate_view_by_hand():
    """Two datasets with 3 seeds of each variant (a third with one seed is left out). adaptive_bc falls less than its
    twin on every seed of A (P = 1) and on B its dips (−1, −2, −3) meet the twin's (−2, −2, −2): P = (0·3 + ½·3 +
    1·3) / 9 = ½, so the probability of improvement averaged over the datasets is ¾. The IQM of 6 areas (10, 20,
    30, 40, 50, 1000) trims one from each end: (20 + 30 + 40 + 50) / 4 = 35."""
    runs = []
    for seed, (dip_a, dip_b, area) in enumerate([(-1, -1, 10), (-2, -2, 20), (-3, -3, 30)]):
        runs += [_run("adaptive_bc", "A", seed, dip_a, 60, area), _run("adaptive_bc_naive", "A", seed, -40, 60, 5),
                 _run("adaptive_bc", "B", seed, dip_b, 60, [40, 50, 1000][seed]),
                 _run("adaptive_bc_naive", "B", seed, -2, 60, 5)]
    runs += [_run("adaptive_bc", "C", 0, -50, 60, 1), _run("adaptive_bc_naive", "C", 0, 0, 60, 1)]
    matrices, tasks, n = quality.study_matrices(runs, "dip_drop", ("adaptive_bc", "adaptive_bc_naive"))
    assert tasks == ["A", "B"] and n == 3 and matrices["adaptive_bc"].shape == (3, 2)
    view = quality.aggregate_view(runs, reps=200)
    dip = view["probability_of_improvement"]["adaptive_bc dip"]
    assert dip["p"] == pytest.approx(0.75) and dip["ci"][0] <= 0.75 <= dip["ci"][1]
    assert view["probability_of_improvement"]["adaptive_bc final"]["p"] == pytest.approx(0.5)  # ties everywhere
    assert view["iqm_area"]["adaptive_bc"]["iqm"] == pytest.approx(35.0)
    assert "spot dip" not in view["probability_of_improvement"]  # no SPOT runs: no row
    text = quality.aggregate_markdown(view)
    assert "| adaptive_bc vs its naive twin: smaller fall in the first 4k steps (dip − offline) | 0.75 [" in text


def test_aggregate_keeps_every_dataset_when_two_get_more_seeds():
    """Seeds 3–4 landing on two of five 3-seed datasets leave the view at 3 seeds × 5 datasets (15 runs each), not
    5 seeds × those two (10); a seed the twin lacks (F: seeds 0, 1 and 3 against 0–2) counts only where both have it,
    so F joins with too few common seeds for n = 3 and is left out. A dataset's first common seeds are used, so the
    matrix holds seeds 0–2 of D and E, not 2–4."""
    runs = []
    for dataset, seeds in (("A", 3), ("B", 3), ("C", 3), ("D", 5), ("E", 5)):
        for s in range(seeds):
            runs += [_run("adaptive_bc", dataset, s, -s, 60, 10 * s + ord(dataset)),
                     _run("adaptive_bc_naive", dataset, s, -30, 60, 1)]
    runs += [_run("adaptive_bc", "F", s, 0, 60, 1) for s in (0, 1, 3)]
    runs += [_run("adaptive_bc_naive", "F", s, 0, 60, 1) for s in (0, 1, 2)]
    matrices, tasks, n = quality.study_matrices(runs, "online_area", ("adaptive_bc", "adaptive_bc_naive"))
    assert (tasks, n) == (["A", "B", "C", "D", "E"], 3)
    np.testing.assert_array_equal(matrices["adaptive_bc"][:, 3], [ord("D"), 10 + ord("D"), 20 + ord("D")])
    assert matrices["adaptive_bc_naive"].shape == (3, 5)
    only_two = [r for r in runs if r.dataset in "DE"] + [r for r in runs if r.dataset == "A" and r.seed == 0]
    assert quality.study_matrices(only_two, "online_area", ("adaptive_bc", "adaptive_bc_naive"))[1:] == (["D", "E"], 5)


def test_aggregate_intervals_depend_on_their_own_runs_only():
    """Each interval of the aggregate view draws its own bootstrap: when adaptive_bc's runs on a new dataset land,
    SPOT's numbers stay as they were to the last digit, and numpy's global RNG is left untouched."""
    spot = []
    for seed in range(3):
        for dataset in ("A", "B"):
            spot += [_run("spot", dataset, seed, -seed - 1, 60 + seed, 40 + 7 * seed),
                     _run("spot_naive", dataset, seed, -30 + seed, 55 + 3 * seed, 20 + 11 * seed)]
    adaptive = [_run(a, d, s, -s - 2, 50 + s, 30 + 5 * s) for a in ("adaptive_bc", "adaptive_bc_naive")
                for d in ("A", "B") for s in range(3)]
    more = [_run(a, "C", s, -4 * s, 70 - s, 60 - 9 * s) for a in ("adaptive_bc", "adaptive_bc_naive") for s in range(3)]
    np.random.seed(123)
    expected_draw = np.random.random_sample()
    np.random.seed(123)
    before = quality.aggregate_view(spot + adaptive, reps=200)
    assert np.random.random_sample() == expected_draw  # the global RNG did not move
    after = quality.aggregate_view(spot + adaptive + more, reps=200)
    assert after["probability_of_improvement"]["adaptive_bc dip"]["tasks"] == ["A", "B", "C"]
    for key in ("spot dip", "spot final"):
        assert after["probability_of_improvement"][key] == before["probability_of_improvement"][key]
    for variant in ("spot", "spot_naive"):
        assert after["iqm_area"][variant] == before["iqm_area"][variant]
    assert after["iqm_area"]["adaptive_bc"] != before["iqm_area"]["adaptive_bc"]
