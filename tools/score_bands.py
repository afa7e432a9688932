"""How far a model's 10-episode score moves with the CPU's floating point and with the evaluation seeds.

  python -m tools.score_bands models/*.pt --out benchmarks/results/score_bands.json

A MuJoCo rollout amplifies a 1e-8 difference in an action into a different episode, and torch/MKL round differently
per instruction set, so one model scores differently on another CPU. This evaluates each model (its run's
`eval_episodes`, deterministic) under three kernel paths of this machine — its own, AVX2 and the oldest (default /
SSE4.2), selected with ATEN_CPU_CAPABILITY and MKL_ENABLE_INSTRUCTIONS as `../shared/tools/other-cpu` does, which
change the floats as another CPU would — and, on each, with `--eval-seeds` seed sets: set 0 is the run's own
evaluation seeds (seed + EVAL_SEED_OFFSET), set k the same shifted by k · 1000. The band of a model is the min–max of
all these scores; the README gives it beside each score ("43.6; other CPUs and seeds 38.2–46.0").
Each kernel path runs in its own process (the variables are read when torch loads).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

from common.errors import cli

PATHS = {"native": {}, "avx2": {"ATEN_CPU_CAPABILITY": "avx2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"},
         "default": {"ATEN_CPU_CAPABILITY": "default", "MKL_ENABLE_INSTRUCTIONS": "SSE4_2"}}
SEED_STRIDE = 1000  # seed set k starts k · 1000 above the run's evaluation seeds (episodes use seed + i, i < 1000)


def eval_seed(config: dict, k: int) -> int:
    from common.evaluation import EVAL_SEED_OFFSET

    return int(config["seed"]) + EVAL_SEED_OFFSET + k * SEED_STRIDE


def score_models(models: list[str], eval_seeds: int, episodes: int | None) -> dict[str, list[float]]:
    """In this process (this kernel path): each model's normalized score for seed sets 0..eval_seeds-1."""
    import torch

    from common.evaluation import evaluate
    from common.inference import load_agent

    torch.set_num_threads(1)
    scores = {}
    for model in models:
        agent, info = load_agent(model)
        n = episodes or int(info["config"]["eval_episodes"])
        scores[model] = [evaluate(agent.act, info["env_id"], n, eval_seed(info["config"], k)).normalized_score
                         for k in range(eval_seeds)]
    return scores


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def measure(models: list[Path], paths: list[str], eval_seeds: int, episodes: int | None) -> dict:
    results: dict[str, dict] = {}
    for path_name in paths:
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "scores.json"
            # native: the environment as it is (on a plain shell, the CPU's own best kernels)
            env = {**os.environ, "OMP_NUM_THREADS": "1", **PATHS[path_name]}
            command = [sys.executable, "-m", "tools.score_bands", "--worker", str(out), "--eval-seeds",
                       str(eval_seeds), *(["--episodes", str(episodes)] if episodes else []), *map(str, models)]
            done = subprocess.run(command, env=env, cwd=Path(__file__).resolve().parents[1], capture_output=True,
                                  text=True)
            if done.returncode != 0:
                raise RuntimeError(f"kernel path {path_name}: {done.stderr.strip()[-2000:]}")
            results[path_name] = json.loads(out.read_text())
    report = {"machine": cpu_name(), "paths": {name: PATHS[name] for name in paths}, "eval_seeds": eval_seeds,
              "seed_stride": SEED_STRIDE, "models": {}}
    import torch

    from common.checkpoint import load_checkpoint

    report["torch"] = torch.__version__
    for model in models:
        recorded = load_checkpoint(model, kind=("policy", "agent", "resume")).get("score")
        scores = {name: results[name][str(model)] for name in paths}
        every = [s for values in scores.values() for s in values]
        report["models"][Path(model).name] = {"recorded": recorded, "scores": scores,
                                              "min": min(every), "max": max(every)}
    return report


def merge_reports(previous: dict, new: dict, where: Path) -> dict:
    """`previous` with `new`'s models added (or replaced); refused where a band would mean something else (another
    machine, kernel paths, seed sets or torch), so one report holds bands measured alike."""
    differ = [key for key in ("machine", "paths", "eval_seeds", "seed_stride", "torch") if previous.get(key) != new.get(key)]
    if differ:
        details = "; ".join(f"{key}: {previous.get(key)!r} there, {new.get(key)!r} now" for key in differ)
        raise SystemExit(f"--merge: {where} was measured differently ({details}); rerun every model into a new "
                         f"report instead (python -m tools.score_bands models/*.pt --out {where})")
    return {**new, "models": {**previous["models"], **new["models"]}}


def band_text(entry: dict) -> str:
    """The README's wording of a model's band: '38.2–46.0'."""
    return f"{entry['min']:.1f}–{entry['max']:.1f}"


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="+", type=Path, help="model files (models/*.pt) or checkpoints")
    parser.add_argument("--out", type=Path, help="JSON report to write (default: print only)")
    parser.add_argument("--eval-seeds", type=int, default=5, help="seed sets per kernel path (default 5)")
    parser.add_argument("--episodes", type=int, help="episodes per evaluation (default: the run's eval_episodes)")
    parser.add_argument("--paths", default=",".join(PATHS), help=f"kernel paths, comma-separated ({', '.join(PATHS)})")
    parser.add_argument("--merge", action="store_true",
                        help="keep the other models of an existing --out report (measured on the same machine, kernel "
                             "paths, seed sets and torch) and add or replace these")
    parser.add_argument("--worker", type=Path, help=argparse.SUPPRESS)  # internal: score in this process
    args = parser.parse_args(argv)
    if args.eval_seeds < 1:
        parser.error("--eval-seeds must be >= 1")
    missing = [str(m) for m in args.models if not m.is_file()]
    if missing:
        parser.error(f"no such model file: {', '.join(missing)}")
    if args.worker:
        args.worker.write_text(json.dumps(score_models([str(m) for m in args.models], args.eval_seeds, args.episodes)))
        return {}
    paths = [p.strip() for p in args.paths.split(",") if p.strip()]
    unknown = [p for p in paths if p not in PATHS]
    if unknown or not paths:
        parser.error(f"unknown kernel path(s) {', '.join(unknown) or repr(args.paths)}; choose from {', '.join(PATHS)}")
    previous = None
    if args.merge:
        if not args.out:
            parser.error("--merge needs --out (the report to add these models to)")
        if args.out.is_file():
            previous = json.loads(args.out.read_text())
    report = measure(args.models, paths, args.eval_seeds, args.episodes)
    if previous is not None:
        report = merge_reports(previous, report, args.out)
    for name, entry in report["models"].items():
        recorded = "–" if entry["recorded"] is None else f"{entry['recorded']:.1f}"
        print(f"{name}: recorded {recorded}; {len(paths)} kernel paths × {args.eval_seeds} seed sets: {band_text(entry)}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.out.with_suffix(args.out.suffix + ".part")
        tmp.write_text(json.dumps(report, indent=1) + "\n")
        os.replace(tmp, args.out)
        print(f"wrote {args.out}")
    return report


if __name__ == "__main__":
    cli(main)
