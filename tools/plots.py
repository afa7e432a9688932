"""Learning curves and results tables from run folders.

  python -m tools.plots runs/*/*/seed*/offline runs/*/*/seed*/online --out curves.png --table results.md
  python -m tools.plots benchmarks/results/truncated --out benchmarks/results/truncated/curves.png
  python -m tools.plots naive=runs/naive spot=runs/spot --out curves.png     # LABEL=PATH names the runs under PATH

Arguments are read as tools.aggregate's: run folders, folders searched for them, a sweep root (its algorithm
folders label the runs, so adaptive_bc_naive is its own curve) or LABEL=PATH; unfinished runs are left out unless
--include-unfinished.

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
from common.layout import dataset_label, find_run_dirs, is_finished

SWEEP_MARKER = "sweep.yaml"  # tools.sweep keeps a copy of the sweep file in its root
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


def run_label(config: dict) -> str:
    """What a run is called in plots, tables and reports: its variant (adaptive_bc_naive, ...) if its config records
    one, else its algorithm; so a method is never averaged with its naive twin or another variant."""
    return config.get("variant") or config.get("algo", "?")


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
        trials.append(Trial(run_label(config), config["dataset"], int(config["seed"]), _last_step(off_records),
                            off_records, records, source if off_records else None, run_dir,
                            _weight_metric(config, records)))
    for path, (config, records) in offline.items():
        if path not in joined:
            trials.append(Trial(run_label(config), config["dataset"], int(config["seed"]), _last_step(records),
                                records, [], path, None, _weight_metric(config, records)))
    return trials


def _split_label(arg: str) -> tuple[str | None, str]:
    label, sep, path = arg.partition("=")
    if sep and label and "/" not in label and not Path(arg).exists():
        return label, path
    return None, arg


def load_labeled_trials(args: list[str], include_unfinished: bool = False) -> tuple[list[Trial], list[str]]:
    """Trials from run folders (or folders holding them); LABEL=PATH relabels the trials under PATH.

    Returns the trials and notes on what was left out."""
    groups: dict[str | None, list[Path]] = defaultdict(list)
    seen: set[Path] = set()
    notes = []
    labeled: list[tuple[str | None, Path, bool]] = []
    for arg in args:
        label, path = _split_label(arg)
        if label is None and (Path(path) / SWEEP_MARKER).is_file():
            # A sweep's root: its algorithm entries are the folders <root>/<name>/, and a name may differ from
            # the package's (two variants of one algorithm), so the folder names label the runs.
            labeled += [(d.name, d, False) for d in sorted(Path(path).iterdir()) if d.is_dir()]
        else:
            labeled.append((label, Path(path), True))
    for label, path, required in labeled:
        for run_dir in find_run_dirs(path, required):
            if run_dir.resolve() in seen:
                continue
            seen.add(run_dir.resolve())
            if not include_unfinished and not is_finished(run_dir):
                notes.append(f"unfinished, left out: {run_dir}")
                continue
            groups[label].append(run_dir)
    trials = []
    for label, run_dirs in groups.items():
        for trial in load_trials(run_dirs):
            if label is not None:
                trial.algo = label
            trials.append(trial)
    return trials, notes


def trials_for_cli(parser: argparse.ArgumentParser, run_dirs, include_unfinished: bool):
    """load_labeled_trials for a command line: a bad folder or no finished run exits with a message."""
    try:
        trials, notes = load_labeled_trials(run_dirs, include_unfinished)
    except FileNotFoundError as exc:
        parser.exit(2, f"error: {exc}\n")
    if not trials:
        parser.exit(2, "error: no finished runs among the given folders (see --include-unfinished)\n")
    return trials, notes


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


def still_fine_tuning(items: list, has_online) -> list:
    """The items (trials, or anything with .algo and .dataset) that have no online phase yet in a group
    (algo, dataset) where another seed has one: averaging them in would mix seeds between the phases (and the
    curve's shared steps would end at the switch), so summaries wait for them."""
    with_online = {(i.algo, i.dataset) for i in items if has_online(i)}
    return [i for i in items if (i.algo, i.dataset) in with_online and not has_online(i)]


def aggregate(trials: list[Trial], key: str = SCORE) -> dict:
    """{(algo, dataset): {"x", "mean", "lo", "hi", "n", "switch"}} on the steps all seeds share; a seed still
    fine-tuning (`still_fine_tuning`) is left out of a group whose other seeds have finished."""
    waiting = {id(t) for t in still_fine_tuning(trials, lambda t: bool(t.online))}
    groups: dict[tuple[str, str], list[Trial]] = defaultdict(list)
    for trial in (t for t in trials if id(t) not in waiting):
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
                      # an offline-only group (its online runs failed or have not started) ends at the switch too
                      "n": len(series), "switch": members[0].offline_steps if members[0].offline else None}
    return out


def _sorted(x: np.ndarray) -> bool:
    return bool(np.all(np.diff(x) > 0))


def _pick(x, y, wanted):
    last = {xi: yi for xi, yi in zip(x.tolist(), y.tolist())}  # the last record at a step wins
    return np.asarray([last[w] for w in wanted])


OFFLINE_SHARE = 0.4  # of the x axis, when the offline phase is longer than the online one


def plot(trials: list[Trial], out: str | Path, title: str | None = None):
    """One column per dataset: the score curves (mean, 95% bootstrap band over seeds) on top, the regularisation
    weight under them. x = steps since the switch to online (offline gradient steps negative), so methods whose
    offline phases differ in length (SPOT's VAE stage) switch at the same place; a longer offline phase is drawn
    compressed (its own linear scale, OFFLINE_SHARE of the axis) so that the online phase stays readable."""
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
        curves = [c for c in (scores.get((a, dataset)) for a in algos) if c is not None]
        offline_len = max((max((c["switch"] or 0) - c["x"][0], 0) for c in curves), default=0)
        online_len = max((max(c["x"][-1] - (c["switch"] or 0), 0) for c in curves), default=0)
        shift = lambda curve: curve["switch"] or 0  # noqa: E731 (x relative to the switch)
        for algo in algos:
            curve = scores.get((algo, dataset))
            if curve is None:
                continue
            x = curve["x"] - shift(curve)
            top.plot(x, curve["mean"], color=colors[algo], label=f"{algo} (n={curve['n']})")
            top.fill_between(x, curve["lo"], curve["hi"], color=colors[algo], alpha=0.2, linewidth=0)
            for key in weight_keys:
                trace = weights[key].get((algo, dataset))
                if trace is not None:
                    tx = trace["x"] - shift(trace)
                    bottom.plot(tx, trace["mean"], color=colors[algo], label=f"{algo} {key.split('/')[-1]}")
                    bottom.fill_between(tx, trace["lo"], trace["hi"], color=colors[algo], alpha=0.2, linewidth=0)
        if any(c["switch"] is not None for c in curves):
            for ax in (top, bottom):
                ax.axvline(0, color="gray", linestyle="--", linewidth=1)
        if online_len > 0 and offline_len > online_len:
            magnitude = 10 ** np.floor(np.log10(offline_len))
            offline_len = float(np.ceil(offline_len / magnitude) * magnitude)  # 95k -> 100k: round ticks
            squeeze = OFFLINE_SHARE / (1 - OFFLINE_SHARE) * online_len / offline_len
            top.set_xscale("function", functions=(lambda x, k=squeeze: np.where(x < 0, x * k, x),
                                                  lambda x, k=squeeze: np.where(x < 0, x / k, x)))
            ticks = sorted({*np.linspace(-offline_len, 0, 3)[:-1].round(-3), *np.linspace(0, online_len, 5).round()})
            top.set_xticks(ticks)
            top.set_xlim(-offline_len, online_len)
            bottom.set_xticklabels([f"{t / 1000:g}k" for t in ticks], fontsize=8)
        top.set_title(dataset_label(dataset))
        top.set_ylabel("normalized score ×100" + ("" if dataset.startswith(("d4rl:", "minari:")) else
                                                   " (regenerated data)"))
        top.grid(alpha=0.3)
        top.legend(loc="lower right", fontsize=8)
        bottom.set_ylabel("regularisation weight")
        bottom.set_xlabel("steps since the switch: offline updates (< 0), online env steps (> 0)")
        bottom.grid(alpha=0.3)
        if any(not line.get_label().startswith("_") for line in bottom.lines):
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
    parser.add_argument("run_dirs", nargs="+", help="run folders, folders holding them (a sweep root), or LABEL=PATH")
    parser.add_argument("--out", help="PNG file for the learning curves")
    parser.add_argument("--table", help="markdown file for the results table ('-' prints it)")
    parser.add_argument("--title")
    parser.add_argument("--include-unfinished", action="store_true",
                        help="draw runs still training too (their last evaluation is not final)")
    args = parser.parse_args(argv)
    if not args.out and not args.table:
        parser.error("give --out FILE.png and/or --table FILE.md")
    trials, notes = trials_for_cli(parser, args.run_dirs, args.include_unfinished)
    for note in notes:
        print(note)
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
