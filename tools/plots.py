"""Learning curves and results tables from run folders.

  python -m tools.plots runs/*/*/seed*/offline runs/*/*/seed*/online --out curves.png --table results.md

Each run folder holds config.yaml and metrics.jsonl. An online run is joined to the offline run it
started from (config key `offline_checkpoint`), and both phases are drawn on one step axis: offline
gradient steps, then online environment steps, with the switch marked. Curves are the mean over
seeds with a 95% bootstrap confidence band; under them the algorithm's regularisation weight: the metric its
run folder names in config.yaml (`regularization_metric`, e.g. adaptive_bc's train/alpha, spot's train/lambda).
The table reports the *final* (not best) evaluation of each phase, mean ± std over seeds.
"""
from __future__ import annotations

import argparse
import dataclasses
from collections import defaultdict
from pathlib import Path

import numpy as np

from common import layout

SCORE = "eval/normalized_score"
# Run folders written before config.yaml recorded `regularization_metric` (e.g. committed results): the metric
# names those runs logged for their weight.
LEGACY_WEIGHT_METRICS = ("train/alpha", "train/lambda")


@dataclasses.dataclass
class Trial:
    """One seed of one algorithm on one dataset: its offline run and (if present) its online run."""

    algo: str
    dataset: str
    seed: int
    offline_steps: int  # where the online phase starts on the shared axis: the last offline step logged
    offline: list[dict]
    online: list[dict]
    offline_dir: Path | None = None
    online_dir: Path | None = None
    weight_metric: str | None = None  # the regularisation weight's metric name (config.yaml record)

    def series(self, key: str) -> tuple[np.ndarray, np.ndarray]:
        """(x on the shared axis, values) of every record holding `key`, offline then online."""
        xs, ys = [], []
        for records, shift in ((self.offline, 0), (self.online, self.offline_steps)):
            for r in records:
                if key in r and isinstance(r[key], (int, float)):
                    xs.append(r["step"] + shift)
                    ys.append(r[key])
        return np.asarray(xs, dtype=np.float64), np.asarray(ys, dtype=np.float64)

    def final(self, phase: str) -> float | None:
        records = [r for r in (self.offline if phase == "offline" else self.online) if SCORE in r]
        return float(records[-1][SCORE]) if records else None


def _weight_metric(config: dict, records: list[dict]) -> str | None:
    if config.get("regularization_metric"):
        return config["regularization_metric"]
    return next((k for k in LEGACY_WEIGHT_METRICS if any(k in r for r in records)), None)


def load_trials(run_dirs: list[str | Path]) -> list[Trial]:
    """Joins the given offline and online run folders into trials (an online run finds its offline one)."""
    offline: dict[Path, tuple[dict, list]] = {}
    online: list[tuple[Path, dict, list]] = []
    for run_dir in map(Path, run_dirs):
        config, records = layout.read_run(run_dir)
        if config.get("phase") == "online":
            online.append((run_dir.resolve(), config, records))
        else:
            offline[run_dir.resolve()] = (config, records)
    trials = []
    joined = set()
    for run_dir, config, records in online:
        source = layout.offline_run_of(run_dir, config)
        if source not in offline and layout.is_run_dir(source):
            offline[source] = layout.read_run(source)
        _, off_records = offline.get(source, (config, []))
        joined.add(source)
        trials.append(Trial(config.get("algo", "?"), config["dataset"], int(config["seed"]), _last_step(off_records),
                            off_records, records, source if off_records else None, run_dir,
                            _weight_metric(config, records)))
    for path, (config, records) in offline.items():
        if path not in joined:
            trials.append(Trial(config.get("algo", "?"), config["dataset"], int(config["seed"]), _last_step(records),
                                records, [], path, None, _weight_metric(config, records)))
    return trials


def _last_step(records: list[dict]) -> int:
    """Offline steps span every stage (spot's VAE stage included), so the switch is the last one logged."""
    return max((int(r["step"]) for r in records), default=0)


def bootstrap_ci(values: np.ndarray, confidence: float = 0.95, resamples: int = 2000, seed: int = 0):
    """Percentile bootstrap interval of the mean over axis 0 (seeds)."""
    values = np.asarray(values, dtype=np.float64)
    if values.shape[0] < 2:
        return values[0], values[0]
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, values.shape[0], size=(resamples, values.shape[0]))
    means = values[idx].mean(axis=1)
    lo, hi = np.percentile(means, [50 * (1 - confidence), 100 - 50 * (1 - confidence)], axis=0)
    return lo, hi


def aggregate(trials: list[Trial], key: str = SCORE) -> dict:
    """{(algo, dataset): {"x", "mean", "lo", "hi", "n", "switch"}} on the steps all seeds share."""
    groups: dict[tuple[str, str], list[Trial]] = defaultdict(list)
    for trial in trials:
        groups[(trial.algo, trial.dataset)].append(trial)
    out = {}
    for group, members in sorted(groups.items()):
        series = [t.series(key) for t in members]
        series = [(x, y) for x, y in series if len(x)]
        if not series:
            continue
        common_x = sorted(set.intersection(*(set(x.tolist()) for x, _ in series)))
        if not common_x:
            continue
        stacked = np.stack([y[np.searchsorted(x, common_x)] if _sorted(x) else _pick(x, y, common_x)
                            for x, y in series])
        lo, hi = bootstrap_ci(stacked)
        out[group] = {"x": np.asarray(common_x), "mean": stacked.mean(0), "lo": lo, "hi": hi,
                      "n": len(series), "switch": members[0].offline_steps if members[0].online else None}
    return out


def _sorted(x: np.ndarray) -> bool:
    return bool(np.all(np.diff(x) > 0))


def _pick(x, y, wanted):
    last = {xi: yi for xi, yi in zip(x.tolist(), y.tolist())}  # the last record at a step wins
    return np.asarray([last[w] for w in wanted])


def plot(trials: list[Trial], out: str | Path, title: str | None = None):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scores = aggregate(trials, SCORE)
    weight_keys = sorted({t.weight_metric for t in trials if t.weight_metric})
    weights = {k: aggregate([t for t in trials if t.weight_metric == k], k) for k in weight_keys}
    datasets = sorted({d for _, d in scores})
    algos = sorted({a for a, _ in scores})
    colors = {a: plt.get_cmap("tab10")(i) for i, a in enumerate(algos)}
    fig, axes = plt.subplots(2, max(len(datasets), 1), figsize=(5.5 * max(len(datasets), 1), 6.5), squeeze=False,
                             sharex="col", gridspec_kw={"height_ratios": [3, 1.3]})
    for col, dataset in enumerate(datasets):
        top, bottom = axes[0, col], axes[1, col]
        for algo in algos:
            curve = scores.get((algo, dataset))
            if curve is None:
                continue
            top.plot(curve["x"], curve["mean"], color=colors[algo], label=f"{algo} (n={curve['n']})")
            top.fill_between(curve["x"], curve["lo"], curve["hi"], color=colors[algo], alpha=0.2, linewidth=0)
            if curve["switch"] is not None:
                for ax in (top, bottom):
                    ax.axvline(curve["switch"], color="gray", linestyle="--", linewidth=1)
            for key in weight_keys:
                trace = weights[key].get((algo, dataset))
                if trace is not None:
                    bottom.plot(trace["x"], trace["mean"], color=colors[algo], label=f"{algo} {key.split('/')[-1]}")
                    bottom.fill_between(trace["x"], trace["lo"], trace["hi"], color=colors[algo], alpha=0.2,
                                        linewidth=0)
        top.set_title(dataset)
        top.set_ylabel("normalized score")
        top.grid(alpha=0.3)
        top.legend(loc="lower right", fontsize=8)
        bottom.set_ylabel("regularisation weight")
        bottom.set_xlabel("offline gradient steps, then online env steps (dashed: switch)")
        bottom.grid(alpha=0.3)
        if bottom.lines:
            bottom.legend(loc="upper right", fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    return fig


def results_table(trials: list[Trial]) -> str:
    """Markdown: offline-final and online-final normalized score per algorithm x dataset."""
    groups: dict[tuple[str, str], list[Trial]] = defaultdict(list)
    for trial in trials:
        groups[(trial.algo, trial.dataset)].append(trial)
    lines = ["| algorithm | dataset | seeds | offline final | online final |", "|---|---|---|---|---|"]
    for (algo, dataset), members in sorted(groups.items()):
        cells = []
        for phase in ("offline", "online"):
            values = [v for v in (t.final(phase) for t in members) if v is not None]
            cells.append(f"{np.mean(values):.1f} ± {np.std(values):.1f}" if values else "–")
        lines.append(f"| {algo} | {dataset} | {len(members)} | {cells[0]} | {cells[1]} |")
    lines.append("")
    lines.append("Normalized score ×100 at the final evaluation of each phase (not the best one), "
                 "mean ± std over seeds.")
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dirs", nargs="+", help="offline and/or online run folders")
    parser.add_argument("--out", help="PNG file for the learning curves")
    parser.add_argument("--table", help="markdown file for the results table ('-' prints it)")
    parser.add_argument("--title")
    args = parser.parse_args(argv)
    if not args.out and not args.table:
        parser.error("give --out FILE.png and/or --table FILE.md")
    trials = load_trials(args.run_dirs)
    if args.out:
        plot(trials, args.out, args.title)
        print(f"wrote {args.out}")
    if args.table:
        table = results_table(trials)
        if args.table == "-":
            print(table)
        else:
            Path(args.table).write_text(table)
            print(f"wrote {args.table}")


if __name__ == "__main__":
    main()
