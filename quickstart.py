"""The main job on a fresh machine, in one command: both algorithms pretrained offline, then fine-tuned online,
on the shipped regenerated dataset data/hopper-medium-mini.hdf5 with configs/<algo>/quickstart.yaml.

  python -m quickstart              # a few minutes on a 2-core CPU
  python -m quickstart --algos spot

Prints a table (offline-final → online-final normalized score, wall time per phase) and the paths of the
rollout videos. A rerun resumes an interrupted phase and reports a finished one as done (it is not rerun).
"""
from __future__ import annotations

import argparse
import importlib
import time
from pathlib import Path

from common import layout

ALGORITHMS = ("adaptive_bc", "spot")
DATASET = "data/hopper-medium-mini.hdf5"
SCORE = "eval/normalized_score"


def final_score(run_dir: Path) -> float | None:
    records = [r for r in layout.read_metrics(run_dir) if SCORE in r]
    return float(records[-1][SCORE]) if records else None


def run_phase(algo: str, phase: str, run_dir: Path, argv: list[str]) -> tuple[str, float | None]:
    """Runs (or resumes) one phase unless it is finished; returns ('ran' | 'done before', seconds or None)."""
    if layout.checkpoint_path(run_dir, phase).is_file():
        print(f"{algo} {phase}: already done ({run_dir})")
        return "done before", None
    print(f"{algo} {phase}: running → {run_dir}")
    start = time.perf_counter()
    importlib.import_module(f"{algo}.train_{phase}").main(argv)
    return "ran", time.perf_counter() - start


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--algos", default=",".join(ALGORITHMS), help="comma-separated, of: " + ", ".join(ALGORITHMS))
    parser.add_argument("--runs", default="runs", help="where the run folders go (default: runs/)")
    args = parser.parse_args(argv)
    algos = [a.strip() for a in args.algos.split(",") if a.strip()]
    unknown = [a for a in algos if a not in ALGORITHMS]
    if unknown or not algos:
        parser.error(f"unknown algorithm(s) {', '.join(unknown) or args.algos!r}; choose from {', '.join(ALGORITHMS)}")

    rows = []
    for algo in algos:
        offline_dir = layout.default_run_dir(algo, Path(DATASET).stem, 0, "offline", root=args.runs)
        online_dir = layout.online_run_dir_for(offline_dir)
        config = ["--config", f"configs/{algo}/quickstart.yaml"]
        offline_state, offline_s = run_phase(algo, "offline", offline_dir, [*config, "--run_dir", str(offline_dir)])
        online_state, online_s = run_phase(algo, "online", online_dir, [
            "--checkpoint", str(layout.checkpoint_path(offline_dir, "offline")), "--run_dir", str(online_dir)])
        rows.append({"algo": algo, "offline": final_score(offline_dir), "online": final_score(online_dir),
                     "offline_s": offline_s, "online_s": online_s, "states": (offline_state, online_state),
                     "videos": [str(d / "video.mp4") for d in (offline_dir, online_dir) if (d / "video.mp4").is_file()]})

    def seconds(value):
        return f"{value:.0f} s" if value is not None else "done before"

    print("\n| algorithm | offline final → online final (normalized score) | wall time offline | wall time online |")
    print("|---|---|---|---|")
    for row in rows:
        scores = " → ".join(f"{s:.1f}" if s is not None else "–" for s in (row["offline"], row["online"]))
        print(f"| {row['algo']} | {scores} | {seconds(row['offline_s'])} | {seconds(row['online_s'])} |")
    print("\nrollout videos:")
    for row in rows:
        for video in row["videos"]:
            print(f"  {video}")
    print("\nwatch them, or any checkpoint, in inference.ipynb; scores at this budget only show the pipeline works.")
    return rows


if __name__ == "__main__":
    main()
