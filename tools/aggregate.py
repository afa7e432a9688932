"""Aggregate normalized scores across runs with rliable: IQM, mean, median and optimality gap.

  python -m tools.aggregate runs/sweeps/paper --out-dir results/paper
  python -m tools.aggregate runs/*/*/seed*/offline runs/*/*/seed*/online
  python -m tools.aggregate spot-lr1e-4=runs/sweeps/lr/spot spot=runs/sweeps/paper/spot   # LABEL=PATH

Arguments are run folders, or folders searched for run folders (a sweep's root). `LABEL=PATH` names
the algorithm of every run under PATH (e.g. two variants of one algorithm); in a sweep's root the
algorithm folders name them. Runs are read and joined with `tools.plots.load_trials`.

Following Agarwal et al. (2021, "Deep RL at the edge of the statistical precipice"), each algorithm's
scores form a (runs x tasks) matrix, tasks being datasets, at two points: the *final* evaluation of
the offline phase and the final evaluation of the online phase (not the best evaluation). Scores are
D4RL normalized scores / 100 (0 = random, 1 = expert reference); the optimality gap is the mean
shortfall below 1. Confidence intervals are percentile intervals of a stratified bootstrap: seeds are
resampled within each dataset.

Only finished phases count (checkpoints/offline.pt or online.pt present), so a run still training
does not pass its latest evaluation off as final; `--include-unfinished` uses it anyway. Tasks are
those every algorithm has; an algorithm with fewer seeds on some task uses as many seeds on each
task (the lowest seeds). What was left out is listed under the tables.

Writes <out-dir>/aggregate.md (also printed), aggregate.json and aggregate_{offline,online}.png.
"""
from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import numpy as np

from tools.plots import Trial, results_table, trials_for_cli

PHASES = ("offline", "online")
METRICS = ("IQM", "Mean", "Median", "Optimality Gap")
PHASE_TITLES = {"offline": "Offline-final: last evaluation of the offline phase",
                "online": "Online-final: last evaluation of the online phase"}


# ---------------------------------------------------------------------------------------------------------------
# Score matrices and rliable estimates


def score_matrices(trials: list[Trial], phase: str) -> tuple[dict[str, np.ndarray], list[str], list[str]]:
    """algo -> (runs x tasks) final scores / 100, the tasks (datasets every algorithm has), notes."""
    finals: dict[str, dict[str, list[tuple[int, float]]]] = defaultdict(lambda: defaultdict(list))
    for trial in trials:
        score = trial.final(phase)
        if score is not None:
            finals[trial.algo][trial.dataset].append((trial.seed, score / 100.0))
    if not finals:
        return {}, [], []
    notes = []
    tasks = sorted(set.intersection(*(set(per_task) for per_task in finals.values())))
    for algo, per_task in sorted(finals.items()):
        for task in sorted(set(per_task) - set(tasks)):
            notes.append(f"{phase}: {algo} on {task} left out (not every algorithm has this dataset)")
    matrices = {}
    for algo, per_task in sorted(finals.items()):
        if not tasks:
            continue
        runs = min(len(per_task[task]) for task in tasks)
        columns = []
        for task in tasks:
            ordered = sorted(per_task[task])  # by seed
            if len(ordered) > runs:
                dropped = ", ".join(str(seed) for seed, _ in ordered[runs:])
                notes.append(f"{phase}: {algo} on {task}: seeds {dropped} left out ({runs} seeds on every task)")
            columns.append([score for _, score in ordered[:runs]])
        matrices[algo] = np.asarray(columns, dtype=np.float64).T
    return matrices, tasks, notes


def aggregate_metrics(scores: np.ndarray) -> np.ndarray:
    """[IQM, mean, median, optimality gap] of a (runs x tasks) matrix, with rliable's definitions."""
    from rliable import metrics

    return np.array([metrics.aggregate_iqm(scores), metrics.aggregate_mean(scores),
                     metrics.aggregate_median(scores), metrics.aggregate_optimality_gap(scores, 1.0)])


def interval_estimates(matrices: dict[str, np.ndarray], reps: int = 5000, confidence: float = 0.95,
                       seed: int = 0) -> dict[str, dict[str, tuple[float, float, float]]]:
    """algo -> metric -> (point estimate, CI low, CI high), stratified bootstrap over runs per task."""
    from rliable import library as rly

    # rliable's StratifiedBootstrap draws its indices from numpy's global RNG: seed it for repeatable
    # intervals, and give the caller's global state back afterwards.
    saved = np.random.get_state()
    np.random.seed(seed)
    try:
        points, intervals = rly.get_interval_estimates(matrices, aggregate_metrics, reps=reps,
                                                       confidence_interval_size=confidence)
    finally:
        np.random.set_state(saved)
    return {algo: {name: (float(points[algo][i]), float(intervals[algo][0, i]), float(intervals[algo][1, i]))
                   for i, name in enumerate(METRICS)} for algo in matrices}


# ---------------------------------------------------------------------------------------------------------------
# Report


def markdown(results: dict, reps: int, confidence: float) -> str:
    lines = ["# Aggregate normalized scores", "",
             f"Normalized score / 100 (0 = random, 1 = expert reference). Point estimate [{confidence:.0%} CI], "
             f"stratified bootstrap over seeds within each dataset ({reps} resamples, rliable). "
             "Lower is better for the optimality gap.", ""]
    for phase in PHASES:
        entry = results.get(phase)
        lines += [f"## {PHASE_TITLES[phase]}", ""]
        if not entry or not entry["estimates"]:
            lines += ["No finished runs of this phase.", ""]
            continue
        lines += ["| algorithm | runs × tasks | " + " | ".join(METRICS) + " |", "|---" * (len(METRICS) + 2) + "|"]
        for algo, estimates in entry["estimates"].items():
            runs, tasks = entry["shape"][algo]
            cells = [f"{p:.3f} [{lo:.3f}, {hi:.3f}]" for p, lo, hi in (estimates[m] for m in METRICS)]
            lines.append(f"| {algo} | {runs} × {tasks} | " + " | ".join(cells) + " |")
        lines += ["", "Tasks: " + ", ".join(entry["tasks"]), ""]
    return "\n".join(lines)


def plot(estimates: dict, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from rliable import plot_utils

    algos = list(estimates)
    points = {a: np.array([estimates[a][m][0] for m in METRICS]) for a in algos}
    intervals = {a: np.array([[estimates[a][m][1] for m in METRICS], [estimates[a][m][2] for m in METRICS]])
                 for a in algos}
    height = max(1.4, 0.45 * len(algos))  # rliable sizes rows for many algorithms; keep 1-2 readable
    fig, _ = plot_utils.plot_interval_estimates(points, intervals, metric_names=list(METRICS), algorithms=algos,
                                                xlabel="Normalized score / 100 (CI bars, point estimate line)",
                                                row_height=height / len(algos), xlabel_y_coordinate=-0.45 / height)
    fig.suptitle(title, y=1 + 0.55 / height, fontsize="xx-large")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)


def aggregate(trials: list[Trial], reps: int = 5000, confidence: float = 0.95, seed: int = 0) -> tuple[dict, list]:
    """phase -> {"tasks", "shape": algo -> (runs, tasks), "estimates": algo -> metric -> (point, lo, hi)}."""
    results, notes = {}, []
    for phase in PHASES:
        matrices, tasks, phase_notes = score_matrices(trials, phase)
        notes += phase_notes
        estimates = interval_estimates(matrices, reps, confidence, seed) if matrices else {}
        results[phase] = {"tasks": tasks, "shape": {a: list(m.shape) for a, m in matrices.items()},
                          "estimates": estimates}
    return results, notes


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dirs", nargs="+", help="run folders, folders holding them, or LABEL=PATH")
    parser.add_argument("--out-dir", default="aggregate", help="where to write the table, JSON and plots")
    parser.add_argument("--reps", type=int, default=5000, help="bootstrap resamples")
    parser.add_argument("--confidence", type=float, default=0.95)
    parser.add_argument("--seed", type=int, default=0, help="seed of the bootstrap")
    parser.add_argument("--include-unfinished", action="store_true",
                        help="count a run still training with its latest evaluation as final")
    args = parser.parse_args(argv)
    trials, notes = trials_for_cli(parser, args.run_dirs, args.include_unfinished)
    results, matrix_notes = aggregate(trials, args.reps, args.confidence, args.seed)
    notes += matrix_notes
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    text = markdown(results, args.reps, args.confidence)
    text += "\n## Per dataset\n\n" + results_table(trials)
    if notes:
        text += "\n## Left out\n\n" + "\n".join(f"- {n}" for n in notes) + "\n"
    (out / "aggregate.md").write_text(text)
    (out / "aggregate.json").write_text(json.dumps({"results": results, "notes": notes, "reps": args.reps,
                                                    "confidence": args.confidence}, indent=2))
    for phase in PHASES:
        if results[phase]["estimates"]:
            plot(results[phase]["estimates"], out / f"aggregate_{phase}.png", PHASE_TITLES[phase])
    print(text)
    print(f"wrote {out}/aggregate.md, aggregate.json and the plots")
    return results


if __name__ == "__main__":
    main()
