"""A steadier reference for fine-tuning: each offline policy that an online run starts from, evaluated with 50 episodes.

  python -m tools.reference_eval benchmarks/results/truncated --checkpoints ~/campaign/runs/truncated

The study measures dips and gains against the offline run's last 10-episode evaluation, and one such evaluation of a
hopper policy swings by tens of points. For every committed offline run under the results folder this evaluates the
policy with `--episodes` deterministic episodes (the run's evaluation seeds, seed + EVAL_SEED_OFFSET + i, so the first
10 have the seeds of the run's own last evaluation; not its exact episodes, since the policy then acts on a batch of
50 observations, whose floats differ) and writes `reference.json` beside its metrics.jsonl. The policy comes from
`<checkpoints>/<same path>/checkpoints/offline.pt` where that is still on disk, else from the shipped model of that
(dataset, algorithm) in `models/` when it is this run's policy (same seed, same recorded score); a run with neither
is listed as not redone. A run that already has a reference.json of that many episodes is left alone.
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np

from common import layout
from common.errors import RunError, cli

SCORE = "eval/normalized_score"
REFERENCE = "reference.json"
REPO = Path(__file__).resolve().parents[1]


def policy_source(run_dir: Path, rel: Path, checkpoints: Path | None, models: Path) -> Path | None:
    """offline.pt of the same run if still on disk, else the shipped model that is this run's policy, else None."""
    if checkpoints is not None:
        checkpoint = layout.checkpoint_path(checkpoints / rel, "offline")
        if checkpoint.is_file():
            return checkpoint
    algo, dataset, seed_dir = rel.parts[-4], rel.parts[-3], rel.parts[-2]
    model = models / f"{dataset}_{algo}_offline.pt"
    if not model.is_file():
        return None
    from common.checkpoint import load_checkpoint

    payload = load_checkpoint(model, kind=("policy",))
    scores = [r[SCORE] for r in layout.read_metrics(run_dir) if SCORE in r]
    same_seed = f"seed{payload['config']['seed']}" == seed_dir
    return model if same_seed and scores and payload.get("score") == scores[-1] else None


def reference(policy: Path, episodes: int) -> dict:
    import torch

    from common.evaluation import evaluate
    from common.inference import load_agent
    from common.evaluation import EVAL_SEED_OFFSET
    from tools.score_bands import cpu_name

    agent, info = load_agent(policy)
    result = evaluate(agent.act, info["env_id"], episodes, int(info["config"]["seed"]) + EVAL_SEED_OFFSET)
    scores = result.normalized_scores
    return {"episodes": episodes, "normalized_score": float(scores.mean()), "normalized_score_std": float(scores.std()),
            "normalized_scores": [round(float(s), 4) for s in scores],
            "first_10": float(np.mean(scores[:10])), "source": str(policy), "machine": cpu_name(),
            "torch": torch.__version__}


def read_reference(run_dir: Path | None) -> dict | None:
    path = None if run_dir is None else Path(run_dir) / REFERENCE
    return json.loads(path.read_text()) if path is not None and path.is_file() else None


def main(argv=None) -> dict[str, list[str]]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", type=Path, help="committed runs (e.g. benchmarks/results/truncated)")
    parser.add_argument("--checkpoints", type=Path, help="the live sweep root whose runs still hold their offline.pt")
    parser.add_argument("--models", type=Path, default=REPO / "models", help="shipped models (default: models/)")
    parser.add_argument("--episodes", type=int, default=50)
    args = parser.parse_args(argv)
    if args.episodes < 10:
        parser.error("--episodes must be >= 10 (the first 10 are the run's own last evaluation)")
    if not args.results.is_dir():
        raise RunError(f"{args.results} is not a folder")
    done = {"written": [], "kept": [], "not redone": []}
    for run_dir in layout.find_run_dirs(args.results, required=False):
        if layout.phase_of(run_dir) != "offline":
            continue
        rel = run_dir.relative_to(args.results)
        old = read_reference(run_dir)
        if old is not None and old["episodes"] == args.episodes:
            done["kept"].append(str(rel))
            continue
        source = policy_source(run_dir, rel, args.checkpoints, args.models)
        if source is None:
            done["not redone"].append(str(rel))
            continue
        entry = reference(source, args.episodes)
        tmp = run_dir / f".{REFERENCE}.part"
        tmp.write_text(json.dumps(entry, indent=1) + "\n")
        os.replace(tmp, run_dir / REFERENCE)
        done["written"].append(str(rel))
        print(f"{rel}: {args.episodes} episodes {entry['normalized_score']:.1f} ± {entry['normalized_score_std']:.1f} "
              f"(first 10 here {entry['first_10']:.1f}) from {source}")
    for what, runs in done.items():
        print(f"{what}: {len(runs)}" + "".join(f"\n  {r}" for r in runs if what == "not redone"))
    return done


if __name__ == "__main__":
    cli(main)
