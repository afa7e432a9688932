"""The quality protocol's report: finals, the early-online dip and wall time, per run and per cell.

  python -m benchmarks.quality runs/sweeps/quality runs/sweeps/quality-naive --out benchmarks/results/quality.md
  python -m benchmarks.quality runs/sweeps/quality/spot/halfcheetah-medium-gen/seed0/online      # run folders
  python -m benchmarks.quality adaptive_bc_naive=runs/naive-online/adaptive_bc ...                # LABEL=PATH

Arguments are read like tools.aggregate's (sweep roots label runs by their algorithm folders, so
`adaptive_bc_naive` is its own row; LABEL=PATH relabels; unfinished phases are left out unless
--include-unfinished). Metrics (normalized score ×100; see benchmarks/quality.md):

  offline final   the offline phase's last evaluation (final, not best)
  online final    the online phase's last evaluation
  dip (eval)      the lowest evaluation with 0 < step <= 0.2 · online_steps (step 0, the unchanged
                  pretrained policy, is left out: it measures the offline policy, not fine-tuning)
  dip (episode)   the lowest online/episode_normalized_score of a training episode ending at a step
                  <= 0.2 · online_steps (exploration noise included, so usually below the eval dip)
  lowest (eval)   the lowest evaluation of the whole online run (step > 0): a collapse after the dip
                  window shows here and not in the dip
  wall            per phase, the wall_s its final checkpoint records: the sum of every segment's time up to
                  its last checkpoint (checkpoints written since 2026-12-06); for older runs
                  mtime(checkpoints/<phase>.pt, else metrics.jsonl) − mtime(config.yaml): config.yaml is
                  written when the phase (re)starts, so a resumed phase counts its last segment only
                  (marked *, from the sweep's <phase>.log).
                  Runs collected by tools.collect_results carry both in result.json (a git clone keeps
                  no mtimes); copying live run folders without keeping mtimes spoils this column.

Cells are mean ± std over seeds (std with ddof=0, as tools.plots.results_table); `n` counts the seeds
that have the value. Where some seeds of a row have finished fine-tuning and others have not, the two
summary tables use the finished seeds only (every column then averages the same seeds); the per-run table
lists them all.
"""
from __future__ import annotations

import argparse
import dataclasses
import re
from collections import defaultdict
from pathlib import Path

import numpy as np
import yaml

from common.checkpoint import CheckpointError, load_checkpoint
from common.layout import read_result
from tools.collect_results import starts
from tools.reference_eval import read_reference
from tools.plots import trials_for_cli
from tools.plots import SCORE, Trial, bootstrap_ci, still_fine_tuning
from common.layout import dataset_label

DIP_FRACTION = 0.2
EPISODE_SCORE = "online/episode_normalized_score"
COLUMNS = ("offline_final", "online_final", "dip_eval", "dip_episode", "low_eval", "wall_offline_min",
           "wall_online_min")
HEADERS = ("offline final", "online final", "dip (eval)", "dip (episode)", "lowest (eval)", "wall offline [min]",
           "wall online [min]")
REFERENCE_COLUMNS = ("offline_final", "offline_ref", "dip_drop", "dip_drop_ref", "gain", "gain_ref")
REFERENCE_HEADERS = ("offline final (10 ep)", "offline (50 ep)", "dip − offline", "dip − offline (50 ep)",
                     "online − offline", "online − offline (50 ep)")


@dataclasses.dataclass
class RunQuality:
    algo: str
    dataset: str
    seed: int
    offline_final: float | None
    online_final: float | None
    dip_eval: float | None
    dip_episode: float | None
    low_eval: float | None
    wall_offline_min: float | None
    wall_online_min: float | None
    resumed: tuple[str, ...] = ()  # phases whose wall time covers the last segment only
    offline_ref: float | None = None  # the offline policy's 50-episode score (tools.reference_eval), if measured
    online_area: float | None = None  # mean of the online evaluations after step 0: normalized area under the curve

    @property
    def gain(self) -> float | None:
        """online final − offline final."""
        return None if None in (self.online_final, self.offline_final) else self.online_final - self.offline_final

    @property
    def dip_drop(self) -> float | None:
        """The dip relative to the pretrained policy: dip (eval) − offline final (negative = a drop)."""
        return None if None in (self.dip_eval, self.offline_final) else self.dip_eval - self.offline_final

    @property
    def dip_drop_ref(self) -> float | None:
        """The dip against the steadier 50-episode score of the offline policy."""
        return None if None in (self.dip_eval, self.offline_ref) else self.dip_eval - self.offline_ref

    @property
    def gain_ref(self) -> float | None:
        """online final − the offline policy's 50-episode score."""
        return None if None in (self.online_final, self.offline_ref) else self.online_final - self.offline_ref

    @property
    def low_drop(self) -> float | None:
        """The lowest evaluation of the whole online run − offline final: a later collapse counts too."""
        return None if None in (self.low_eval, self.offline_final) else self.low_eval - self.offline_final


INTERVAL_COLUMNS = ("offline_final", "online_final", "gain", "dip_drop", "low_drop")
INTERVAL_HEADERS = ("offline final", "online final", "online − offline", "dip − offline", "lowest − offline")


MIN_SEEDS_FOR_BOOTSTRAP = 5  # below it, a row's interval is [min, max] over its seeds, and says so


def interval(values: list[float | None]) -> tuple[float, float, float, int] | None:
    """(mean, low, high, n) over the seeds that have the value: with n ≥ 5 the 95% percentile-bootstrap interval;
    with fewer, [min, max] over the seeds (with 3 seeds a 95% percentile bootstrap is [min, max] anyway, and covers
    less than it claims, so it is not called a 95% interval)."""
    present = np.asarray([v for v in values if v is not None], dtype=np.float64)
    if not len(present):
        return None
    if len(present) < MIN_SEEDS_FOR_BOOTSTRAP:
        return float(present.mean()), float(present.min()), float(present.max()), len(present)
    lo, hi = bootstrap_ci(present)
    return float(present.mean()), float(lo), float(hi), len(present)


def online_budget(trial: Trial) -> int | None:
    """The online run's configured online_steps (the planned budget, not the last step logged)."""
    if trial.online_dir is None:
        return None
    config = yaml.safe_load((trial.online_dir / "config.yaml").read_text()) or {}
    return int(config["online_steps"]) if config.get("online_steps") is not None else None


def dips(trial: Trial, fraction: float = DIP_FRACTION) -> tuple[float | None, float | None]:
    """(lowest eval score with 0 < step <= fraction · online_steps, lowest training-episode score in that window)."""
    budget = online_budget(trial)
    if budget is None:
        return None, None
    limit = fraction * budget
    evals = [r[SCORE] for r in trial.online if SCORE in r and 0 < r["step"] <= limit]
    episodes = [r[EPISODE_SCORE] for r in trial.online if EPISODE_SCORE in r and r["step"] <= limit]
    return (float(min(evals)) if evals else None), (float(min(episodes)) if episodes else None)


def lowest_eval(trial: Trial) -> float | None:
    """The lowest evaluation of the online run after step 0 (step 0 is the unchanged offline policy)."""
    evals = [r[SCORE] for r in trial.online if SCORE in r and r["step"] > 0]
    return float(min(evals)) if evals else None


def recorded_wall_s(run_dir: Path, phase: str) -> float | None:
    """The wall_s a finished run's final checkpoint records (the sum of its segments), or None (an older or an
    unreadable checkpoint, or none yet)."""
    end = run_dir / "checkpoints" / f"{phase}.pt"
    if not end.is_file():
        return None
    try:
        recorded = load_checkpoint(end, kind=("agent",)).get("wall_s")
    except CheckpointError:
        return None
    return None if recorded is None else float(recorded)


def wall_minutes(run_dir: Path | None, phase: str) -> float | None:
    """A collected run's (tools.collect_results) from its result.json; a finished run's from the wall_s its final
    checkpoint records (all segments); else minutes from config.yaml's mtime to the final checkpoint's (or
    metrics.jsonl's, if unfinished)."""
    if run_dir is None or not (run_dir / "config.yaml").is_file():
        return None
    result = read_result(run_dir)
    if result is not None:
        return result.get("wall_min")
    recorded = recorded_wall_s(run_dir, phase)
    if recorded is not None:
        return recorded / 60.0
    end = run_dir / "checkpoints" / f"{phase}.pt"
    end = end if end.is_file() else run_dir / "metrics.jsonl"
    return (end.stat().st_mtime - (run_dir / "config.yaml").stat().st_mtime) / 60.0


def was_resumed(run_dir: Path | None, phase: str) -> bool:
    """A sweep trial's <trial>/<phase>.log holds one `=== <time> on <host>: <command>` line per start."""
    if run_dir is None:
        return False
    result = read_result(run_dir)
    if result is not None:  # a wall time summed over the segments needs no mark
        return (result.get("starts") or 1) > 1 and result.get("wall_source") not in ("segments", "log")
    if recorded_wall_s(run_dir, phase) is not None:
        return False
    return (starts(run_dir, phase) or 1) > 1


def online_area(trial: Trial) -> float | None:
    """The mean of the online evaluations after step 0: the normalized area under the online curve, the locomotion
    analogue of the field's cumulative regret (higher: less lost while fine-tuning)."""
    evals = [r[SCORE] for r in trial.online if SCORE in r and r["step"] > 0]
    return float(np.mean(evals)) if evals else None


# --- the aggregate view: each method against its naive twin across datasets (rliable) --------------------------
TWINS = (("adaptive_bc", "adaptive_bc_naive"), ("spot", "spot_naive"))
AGGREGATE_REPS = 2000


def study_matrices(runs: list[RunQuality], attr: str, variants: tuple[str, ...]
                   ) -> tuple[dict[str, np.ndarray], list[str], int]:
    """variant -> (seeds × datasets) values of `attr`: on each dataset the first n seeds that every variant has, over
    the datasets that have n such seeds. n puts the most runs into the view (n × datasets, at least two datasets; a
    tie goes to more datasets): seeds 3–4 of two datasets do not shrink a 3-seed view of seven datasets to those two,
    and one-seed pilots do not pull a 3-seed view down to one seed."""
    values: dict[str, dict[str, dict[int, float]]] = defaultdict(lambda: defaultdict(dict))
    for r in runs:
        value = getattr(r, attr)
        if r.algo in variants and value is not None:
            values[r.algo][r.dataset][r.seed] = value
    datasets = sorted({d for v in variants for d in values[v]})
    common = {d: sorted(set.intersection(*(set(values[v][d]) for v in variants))) for d in datasets}
    reached = {n: sum(len(seeds) >= n for seeds in common.values()) for n in {len(s) for s in common.values()} if n}
    choices = [(n * k, k, n) for n, k in reached.items() if k >= 2]
    best = max(choices)[2] if choices else 0
    tasks = [d for d in datasets if best and len(common[d]) >= best]
    matrices = {v: np.array([[values[v][d][common[d][i]] for d in tasks] for i in range(best)])
                for v in variants} if tasks else {}
    return matrices, tasks, best


def aggregate_view(runs: list[RunQuality], reps: int = AGGREGATE_REPS, seed: int = 0) -> dict:
    """rliable's probability of improvement of each method over its naive twin (its dip − offline higher, i.e. a
    smaller fall; its online final higher) and the IQM of the normalized area under the online curve per variant,
    each with a 95% stratified-bootstrap interval (seeds resampled within each dataset). Each interval's bootstrap
    starts from np.random.seed(seed), so it depends on its own runs only: runs landing for one method move no
    interval of the other; numpy's global RNG is restored afterwards."""
    from rliable import library as rly
    from rliable import metrics

    def estimate(scores: dict, func) -> tuple[dict, dict]:
        np.random.seed(seed)  # rliable's bootstrap draws from numpy's global RNG
        return rly.get_interval_estimates(scores, func, reps=reps)

    saved = np.random.get_state()
    try:
        out: dict = {"probability_of_improvement": {}, "iqm_area": {}}
        for method, twin in TWINS:
            for attr, what in (("dip_drop", "dip"), ("online_final", "final")):
                matrices, tasks, n = study_matrices(runs, attr, (method, twin))
                if not tasks:
                    continue
                key = f"{method}>{twin}"
                point, ci = estimate({key: [matrices[method] / 100, matrices[twin] / 100]},
                                     lambda x, y: np.array([metrics.probability_of_improvement(x, y)]))
                out["probability_of_improvement"][f"{method} {what}"] = {
                    "p": float(point[key][0]), "ci": [float(ci[key][0, 0]), float(ci[key][1, 0])],
                    "tasks": tasks, "seeds": n}
            matrices, tasks, n = study_matrices(runs, "online_area", (method, twin))
            for variant, matrix in matrices.items():
                point, ci = estimate({variant: matrix / 100}, lambda x: np.array([metrics.aggregate_iqm(x)]))
                out["iqm_area"][variant] = {"iqm": float(point[variant][0]) * 100,
                                            "ci": [float(ci[variant][0, 0]) * 100, float(ci[variant][1, 0]) * 100],
                                            "tasks": tasks, "seeds": n}
    finally:
        np.random.set_state(saved)
    return out


def aggregate_markdown(view: dict) -> str:
    lines = ["| comparison | P(method > naive twin) [95% CI] | datasets × seeds |", "|---|---|---|"]
    for name, e in view["probability_of_improvement"].items():
        method, what = name.rsplit(" ", 1)
        label = {"dip": "smaller fall in the first 4k steps (dip − offline)", "final": "higher online final"}[what]
        lines.append(f"| {method} vs its naive twin: {label} | {e['p']:.2f} [{e['ci'][0]:.2f}, {e['ci'][1]:.2f}] | "
                     f"{', '.join(dataset_label(t) for t in e['tasks'])} × {e['seeds']} |")
    lines += ["", "| variant | IQM of the online area (mean online evaluation) [95% CI] | datasets × seeds |",
              "|---|---|---|"]
    for variant, e in view["iqm_area"].items():
        lines.append(f"| {method_label(variant)} | {e['iqm']:.1f} [{e['ci'][0]:.1f}, {e['ci'][1]:.1f}] | "
                     f"{', '.join(dataset_label(t) for t in e['tasks'])} × {e['seeds']} |")
    return "\n".join(lines) + "\n"


def run_quality(trial: Trial) -> RunQuality:
    dip_eval, dip_episode = dips(trial)
    resumed = tuple(p for p, d in (("offline", trial.offline_dir), ("online", trial.online_dir)) if was_resumed(d, p))
    return RunQuality(trial.algo, trial.dataset, trial.seed, trial.final("offline"),
                      trial.final("online") if trial.online else None, dip_eval, dip_episode, lowest_eval(trial),
                      wall_minutes(trial.offline_dir, "offline"), wall_minutes(trial.online_dir, "online"), resumed,
                      (read_reference(trial.offline_dir) or {}).get("normalized_score"), online_area(trial))


def mean_std(values: list[float | None]) -> tuple[float, float, int] | None:
    present = [v for v in values if v is not None]
    if not present:
        return None
    return float(np.mean(present)), float(np.std(present)), len(present)


def summarize(runs: list[RunQuality]) -> dict[tuple[str, str], dict[str, tuple[float, float, int] | None]]:
    """(algo, dataset) -> column -> (mean, std, n) over seeds, or None when no seed has the value."""
    groups: dict[tuple[str, str], list[RunQuality]] = defaultdict(list)
    for run in runs:
        groups[(run.algo, run.dataset)].append(run)
    return {key: {c: mean_std([getattr(r, c) for r in members]) for c in COLUMNS}
            for key, members in sorted(groups.items())}


def intervals(runs: list[RunQuality]) -> dict[tuple[str, str], dict[str, tuple[float, float, float, int] | None]]:
    groups: dict[tuple[str, str], list[RunQuality]] = defaultdict(list)
    for run in runs:
        groups[(run.algo, run.dataset)].append(run)
    return {key: {c: interval([getattr(r, c) for r in members]) for c in INTERVAL_COLUMNS}
            for key, members in sorted(groups.items())}


def summary_runs(runs: list[RunQuality]) -> tuple[list[RunQuality], list[str]]:
    """The runs the summary tables average, and a note per run left out of them: a seed still fine-tuning
    where another seed of its row has finished would make the offline columns average other seeds than the
    online ones, so it waits in the per-run table."""
    waiting = still_fine_tuning(sorted(runs, key=lambda r: (r.algo, r.dataset, r.seed)),
                                lambda r: r.online_final is not None)
    notes = [f"{r.algo} {dataset_label(r.dataset)} seed {r.seed}: online phase not finished; out of the summaries, "
             "in the per-run table" for r in waiting]
    return [r for r in runs if all(r is not w for w in waiting)], notes


def _interval(stat) -> str:
    return "–" if stat is None else f"{stat[0]:.1f} [{stat[1]:.1f}, {stat[2]:.1f}]"


def _cell(value: float | None) -> str:
    return "–" if value is None else f"{value:.1f}"


def _stat(stat: tuple[float, float, int] | None) -> str:
    return "–" if stat is None else f"{stat[0]:.1f} ± {stat[1]:.1f}"


NAIVE_LABEL = {"adaptive_bc_naive": "adaptive_bc naive (α = 0)", "spot_naive": "spot naive (λ = 0)"}
UTD_VARIANT = re.compile(r"^(?P<base>.+)_utd(?P<utd>\d+)$")  # a sweep's variant at another UTD: adaptive_bc_utd10


def _variant(algo: str) -> tuple[str, str | None]:
    """(the method's own name, its UTD when the row is a UTD variant of it, else None)."""
    match = UTD_VARIANT.match(algo)
    return (match["base"], match["utd"]) if match else (algo, None)


def method_label(algo: str) -> str:
    """The README's name of a row: naive twins by what they zero, UTD variants by their UTD."""
    base, utd = _variant(algo)
    label = NAIVE_LABEL.get(base, base)
    return label if utd is None else f"{label}, utd {utd}"


def _row_order(key: tuple[str, str]) -> tuple:
    """README row order: by dataset; the study's methods and twins first, then their UTD variants."""
    algo, dataset = key
    base, utd = _variant(algo)
    return dataset, utd is not None, int(utd or 0), base


def _signed(value: float, sign: bool) -> str:
    value = round(value, 1) + 0.0  # no "−0.0"
    return (f"{value:+.1f}" if sign else f"{value:.1f}").replace("-", "−")


def readme_table(runs: list[RunQuality]) -> str:
    """The README's form of the interval table: by dataset, naive twins named by what they zero, one seed shown as
    its value, 2–4 seeds as mean [min, max] and 5 or more as mean [95% bootstrap interval], differences signed.
    The seeds still fine-tuning wait, as in the report."""
    runs, _ = summary_runs(runs)
    lines = ["| dataset | method | seeds | " + " | ".join(INTERVAL_HEADERS) + " |",
             "|---" * (len(INTERVAL_HEADERS) + 3) + "|"]
    for (algo, dataset), stats in sorted(intervals(runs).items(), key=lambda item: _row_order(item[0])):
        cells = []
        for column in INTERVAL_COLUMNS:
            if stats[column] is None:  # no seed of the row has it (an online run with no evaluation yet)
                cells.append("–")
                continue
            mean, lo, hi, n = stats[column]
            sign = column in ("gain", "dip_drop", "low_drop")
            cells.append(_signed(mean, sign) if n == 1 else f"{_signed(mean, sign)} [{_signed(lo, False)}, {_signed(hi, False)}]")
        seeds = len({r.seed for r in runs if (r.algo, r.dataset) == (algo, dataset)})
        lines.append(f"| {dataset_label(dataset)} | {method_label(algo)} | {seeds} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def markdown(runs: list[RunQuality], notes: list[str] = (), title: str = "Quality protocol results",
             budget: str | None = None) -> str:
    everything = runs
    runs, waiting = summary_runs(runs)
    notes = [*waiting, *notes]
    lines = [f"# {title}", "", *([f"Budget: {budget}", ""] if budget else []),
             "Normalized score ×100 (regenerated datasets). Final = last evaluation of the phase, not the best. "
             f"Dip = lowest score with 0 < step ≤ {DIP_FRACTION:g} · online_steps: evaluations (dip (eval)) and "
             "training episodes with exploration noise (dip (episode)). Lowest (eval) = the lowest evaluation of the "
             "whole online run (step > 0). Wall = config.yaml → final checkpoint "
             "mtime per phase, or the sum of a resumed run's segments where its checkpoint or its sweep log's progress bars "
             "record them (* resumed, neither recorded: last segment only).", "",
             "## Mean and interval over seeds", "",
             f"Interval: [min, max] over the seeds for 2–{MIN_SEEDS_FOR_BOOTSTRAP - 1} seeds, the 95% percentile-"
             f"bootstrap interval for {MIN_SEEDS_FOR_BOOTSTRAP} or more.", "",
             "Dip − offline: the lowest evaluation in the first "
             f"{DIP_FRACTION:.0%} of online steps minus the offline-final score (negative: the policy fell); "
             "lowest − offline: the same over the whole online run.", "",
             "| algorithm | dataset | seeds | " + " | ".join(INTERVAL_HEADERS) + " |",
             "|---" * (len(INTERVAL_HEADERS) + 3) + "|"]
    for (algo, dataset), stats in intervals(runs).items():
        seeds = len({r.seed for r in runs if (r.algo, r.dataset) == (algo, dataset)})
        lines.append(f"| {algo} | {dataset_label(dataset)} | {seeds} | " + " | ".join(_interval(stats[c]) for c in INTERVAL_COLUMNS)
                     + " |")
    lines += ["", "## Mean ± std over seeds", "",
             "| algorithm | dataset | seeds | " + " | ".join(HEADERS) + " |", "|---" * (len(HEADERS) + 3) + "|"]
    for (algo, dataset), stats in summarize(runs).items():
        seeds = len({r.seed for r in runs if (r.algo, r.dataset) == (algo, dataset)})
        lines.append(f"| {algo} | {dataset_label(dataset)} | {seeds} | " + " | ".join(_stat(stats[c]) for c in COLUMNS) + " |")
    lines += ["", "## Per run", "", "| algorithm | dataset | seed | " + " | ".join(HEADERS) + " |",
              "|---" * (len(HEADERS) + 3) + "|"]
    for r in sorted(everything, key=lambda r: (r.algo, r.dataset, r.seed)):
        cells = [_cell(getattr(r, c)) for c in COLUMNS]
        for i, phase in ((COLUMNS.index("wall_offline_min"), "offline"), (COLUMNS.index("wall_online_min"), "online")):
            if phase in r.resumed and cells[i] != "–":
                cells[i] += "*"
        lines.append(f"| {r.algo} | {dataset_label(r.dataset)} | {r.seed} | " + " | ".join(cells) + " |")
    referenced = [r for r in sorted(everything, key=lambda r: (r.dataset, r.algo, r.seed)) if r.offline_ref is not None]
    if referenced:
        lines += ["", "## Against a steadier reference: the offline policy over 50 episodes", "",
                  "`python -m tools.reference_eval` evaluated the offline policy each run fine-tunes with 50 episodes "
                  "(the first 10 with the seeds of its last 10-episode evaluation; `reference.json` beside the offline run). Runs "
                  "whose offline policy is no longer on disk and does not ship are not here.", "",
                  "| algorithm | dataset | seed | " + " | ".join(REFERENCE_HEADERS) + " |",
                  "|---" * (len(REFERENCE_HEADERS) + 3) + "|"]
        for r in referenced:
            lines.append(f"| {r.algo} | {dataset_label(r.dataset)} | {r.seed} | "
                         + " | ".join(_cell(getattr(r, c)) for c in REFERENCE_COLUMNS) + " |")
    if notes:
        lines += ["", "## Left out", ""] + [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n"


def main(argv=None) -> list[RunQuality]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dirs", nargs="+", help="sweep roots, run folders, folders holding them, or LABEL=PATH")
    parser.add_argument("--out", help="write the markdown here too (it is always printed)")
    parser.add_argument("--title", default="Quality protocol results", help="the report's heading")
    parser.add_argument("--budget", help="the training budget, in words, printed under the heading")
    parser.add_argument("--include-unfinished", action="store_true",
                        help="report phases still training (their latest evaluation counts as final)")
    parser.add_argument("--readme", action="store_true",
                        help="print (and --out) the interval table in the README's form instead of the report")
    parser.add_argument("--aggregate", action="store_true",
                        help="print (and --out) the aggregate view (rliable: each method vs its naive twin)")
    args = parser.parse_args(argv)
    trials, notes = trials_for_cli(parser, args.run_dirs, args.include_unfinished)
    runs = [run_quality(t) for t in trials]
    if args.aggregate:
        text = aggregate_markdown(aggregate_view(summary_runs(runs)[0]))
    elif args.readme:
        text = readme_table(runs)
    else:
        text = markdown(runs, notes, args.title, args.budget)
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text)
        print(f"wrote {args.out}")
    return runs


if __name__ == "__main__":
    main()
