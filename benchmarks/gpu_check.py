"""The prepared device check (issue 29): update throughput and timed slices of paper-setting runs, on one device.

    python -m benchmarks.gpu_check --device cuda --out $OUT/gpu --modes eager          # throughput + eager slices
    python -m benchmarks.gpu_check --device cuda --out $OUT/gpu --modes compile --no-throughput  # then compiled

1. `benchmarks.throughput --device D --json` (eager; with `--compile` too when the modes include compile).
2. For each algorithm and mode, a slice of a paper-setting run as a user starts it (`<algo>.train_offline`, then
   `<algo>.train_online` from its checkpoint; the paper config `configs/<algo>/hopper-medium.yaml`, so paper network
   sizes, batch and utd: adaptive_bc utd 10, SPOT 1 update per env step; on `data/hopper-medium-mini.hdf5`, which
   ships with the repository: the update's cost does not depend on the data's size). Each slice runs twice, at the
   full slice length and at a fifth of it; the difference of the two runs' recorded wall times (`wall_s` in the final
   checkpoint, from the run's start: agent construction, compilation, buffer prefill and evaluations at the config's
   interval included) over the difference in steps is the steady rate, which the fixed costs do not flatter. SPOT's
   offline slice keeps the paper's ratio of VAE to policy updates (1 : 10).
3. The paper-scale time (each algorithm's Config defaults: 1M offline updates, 250k online steps, SPOT's 100k VAE
   updates) = the steady rates × the paper's steps + the slice's fixed cost. It is an extrapolation from short
   slices, and the report says so.

Everything goes to `--out`: gpu_check.json (written after each step, so a run cut short still leaves what it
measured), the throughput JSON files, a markdown table (gpu_check.md) and the slices' run folders (runs/).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from common import layout  # noqa: E402
from common.checkpoint import load_checkpoint  # noqa: E402
from common.errors import RunError, cli  # noqa: E402

ALGOS = ("adaptive_bc", "spot")
SMALL = 5  # the short slice is 1/SMALL of the long one


def paper_budget(algo: str) -> dict[str, int]:
    """The paper-scale steps: the algorithm's Config defaults."""
    import importlib

    cfg = importlib.import_module(f"{algo}.agent").Config()
    budget = {"offline_steps": cfg.offline_steps, "online_steps": cfg.online_steps}
    if hasattr(cfg, "vae_steps"):
        budget["vae_steps"] = cfg.vae_steps
    return budget


def _run(cmd: list[str], log: Path, timeout: float) -> float:
    # Each process compiles from scratch: with inductor's caches the second slice would reuse the first's kernels,
    # and the difference of the two slices would hide compilation time in the rate.
    env = {**os.environ, "TORCHINDUCTOR_FORCE_DISABLE_CACHES": "1"}
    start = time.perf_counter()
    with open(log, "a") as f:
        f.write("=== " + " ".join(cmd) + "\n")
        f.flush()
        done = subprocess.run(cmd, cwd=REPO, stdout=f, stderr=subprocess.STDOUT, timeout=timeout, env=env)
    if done.returncode != 0:
        raise RunError(f"{cmd[2]} exited with {done.returncode}; see {log}")
    return time.perf_counter() - start


def slice_runs(algo: str, mode: str, offline_steps: int, online_steps: int, args, folder: Path) -> dict:
    """One offline + online slice; the recorded wall seconds of each phase and the process wall times."""
    common = ["--device", args.device, "--compile", str(mode == "compile").lower(), "--wandb_mode", "disabled",
              "--eval_episodes", str(args.eval_episodes), "--seed", "0"]
    offline_dir, online_dir = folder / "offline", folder / "online"
    offline = [sys.executable, "-m", f"{algo}.train_offline", "--config", f"configs/{algo}/hopper-medium.yaml",
               "--dataset", args.dataset, "--offline_steps", str(offline_steps), "--checkpoint_every",
               str(offline_steps), "--run_dir", str(offline_dir), *common]
    if algo == "spot":
        offline += ["--vae_steps", str(max(1, offline_steps // 10))]
    log = folder.parent / f"{folder.name}.log"
    if folder.exists():  # this script's own scratch from an earlier call: measured again
        shutil.rmtree(folder)
        log.unlink(missing_ok=True)
    folder.mkdir(parents=True)
    process_offline = _run(offline, log, args.timeout)
    checkpoint = layout.checkpoint_path(offline_dir, "offline")
    online = [sys.executable, "-m", f"{algo}.train_online", "--checkpoint", str(checkpoint), "--online_steps",
              str(online_steps), "--checkpoint_every", str(online_steps), "--run_dir", str(online_dir), *common]
    process_online = _run(online, log, args.timeout)
    wall = {phase: float(load_checkpoint(layout.checkpoint_path(d, phase), kind=("agent",))["wall_s"])
            for phase, d in (("offline", offline_dir), ("online", online_dir))}
    return {"offline_steps": offline_steps, "online_steps": online_steps, "offline_wall_s": wall["offline"],
            "online_wall_s": wall["online"], "offline_process_s": process_offline, "online_process_s": process_online}


def extrapolate(long: dict, short: dict, budget: dict[str, int]) -> dict:
    """Steady rates from the difference of the two slices, and the paper-scale hours they give."""
    out = {}
    for phase in ("offline", "online"):
        steps = long[f"{phase}_steps"] - short[f"{phase}_steps"]
        seconds = long[f"{phase}_wall_s"] - short[f"{phase}_wall_s"]
        if seconds <= 0:  # the fixed costs (compilation) varied more than the extra steps cost: no rate to give
            out.update({f"{phase}_steps_per_s": None, f"{phase}_fixed_s": None, f"paper_{phase}_h": None})
            continue
        rate = steps / seconds
        out[f"{phase}_steps_per_s"] = rate
        out[f"{phase}_fixed_s"] = max(short[f"{phase}_wall_s"] - short[f"{phase}_steps"] / rate, 0.0)
        out[f"paper_{phase}_h"] = (budget[f"{phase}_steps"] / rate + out[f"{phase}_fixed_s"]) / 3600
    both = (out["paper_offline_h"], out["paper_online_h"])
    out["paper_total_h"] = None if None in both else sum(both)
    return out


def _fmt(value, spec: str) -> str:
    return "–" if value is None else format(value, spec)


def markdown(report: dict) -> str:
    lines = [f"Device: {report['device_name']} (torch {report['torch']}); slices of configs/<algo>/hopper-medium.yaml "
             f"on {report['dataset']}, {report['eval_episodes']} evaluation episodes at the config's interval.", "",
             "| algorithm | mode | offline updates/s | online env steps/s | fixed cost offline / online (s) | "
             "paper-scale run (extrapolated) |", "|---|---|---|---|---|---|"]
    for key, row in report["slices"].items():
        if "extrapolation" not in row:
            continue
        x = row["extrapolation"]
        lines.append(f"| {row['algo']} | {row['mode']} | {_fmt(x['offline_steps_per_s'], '.1f')} | "
                     f"{_fmt(x['online_steps_per_s'], '.1f')} | {_fmt(x['offline_fixed_s'], '.0f')} / "
                     f"{_fmt(x['online_fixed_s'], '.0f')} | {_fmt(x['paper_total_h'], '.1f')} h "
                     f"({_fmt(x['paper_offline_h'], '.1f')} offline + {_fmt(x['paper_online_h'], '.1f')} online) |")
    lines += ["", "Paper scale: each algorithm's Config defaults (" + "; ".join(
        f"{a}: " + ", ".join(f"{k} {v:,}" for k, v in b.items()) for a, b in report["paper_budget"].items()) +
        "). An extrapolation from slices of " + ", ".join(
        f"{r['long']['offline_steps']:,} offline updates and {r['long']['online_steps']:,} env steps"
        for r in list(report["slices"].values())[:1]) + ", not a measured run. SPOT's offline rate counts its policy "
        "updates; its VAE updates (one per ten, the paper's ratio) are inside the time. –: the long slice took no longer "
        "than the short one (fixed costs such as compilation varied more than the extra steps cost): give longer slices."]
    return "\n".join(lines)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--modes", default="eager,compile", help="eager and/or compile (comma-separated)")
    parser.add_argument("--algos", default=",".join(ALGOS))
    parser.add_argument("--offline_updates", type=int, default=10_000, help="the long offline slice")
    parser.add_argument("--online_steps", type=int, default=2_000, help="the long online slice (env steps)")
    parser.add_argument("--dataset", default="data/hopper-medium-mini.hdf5")
    parser.add_argument("--eval_episodes", type=int, default=10)
    parser.add_argument("--no-throughput", dest="throughput", action="store_false")
    parser.add_argument("--throughput_scale", type=float, default=1.0, help="benchmarks.throughput --scale")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per training process")
    args = parser.parse_args(argv)
    modes = [m for m in args.modes.split(",") if m]
    if set(modes) - {"eager", "compile"} or not modes:
        parser.error(f"--modes takes eager and/or compile, got {args.modes!r}")
    algos = [a for a in args.algos.split(",") if a]
    if set(algos) - set(ALGOS):
        parser.error(f"--algos takes {', '.join(ALGOS)}, got {args.algos!r}")
    if args.offline_updates < 2 * SMALL or args.online_steps < 2 * SMALL:
        parser.error(f"--offline_updates and --online_steps must be at least {2 * SMALL}")
    import torch

    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "gpu_check.json"
    report = json.loads(path.read_text()) if path.is_file() else {"slices": {}, "throughput": {}}
    report.update({"device": args.device, "torch": torch.__version__, "python": platform.python_version(),
                   "device_name": torch.cuda.get_device_name(0) if args.device.startswith("cuda") else platform.processor() or "cpu",
                   "dataset": args.dataset, "eval_episodes": args.eval_episodes})
    report.setdefault("paper_budget", {}).update({a: paper_budget(a) for a in algos})

    def save():
        path.write_text(json.dumps(report, indent=1))

    if args.throughput:
        for mode in modes:
            flag = ["--compile"] if mode == "compile" else []
            cmd = [sys.executable, "-m", "benchmarks.throughput", "--device", args.device, "--json", "--scale",
                   str(args.throughput_scale), *flag]
            print(f"[gpu_check] throughput, {mode}", flush=True)
            done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=args.timeout)
            (args.out / f"throughput-{mode}.txt").write_text(done.stdout + done.stderr)
            if done.returncode == 0:
                report["throughput"][mode] = json.loads(done.stdout.strip().splitlines()[-1])
            save()
    for mode in modes:
        for algo in algos:
            key = f"{algo}-{mode}"
            row = report["slices"].setdefault(key, {"algo": algo, "mode": mode})
            for size, divisor in (("short", SMALL), ("long", 1)):
                print(f"[gpu_check] {key}: {size} slice", flush=True)
                folder = args.out / "runs" / f"{key}-{size}"
                row[size] = slice_runs(algo, mode, args.offline_updates // divisor, args.online_steps // divisor,
                                       args, folder)
                save()
            row["extrapolation"] = extrapolate(row["long"], row["short"], report["paper_budget"][algo])
            save()
    text = markdown(report)
    (args.out / "gpu_check.md").write_text(text + "\n")
    print(text)
    return report


if __name__ == "__main__":
    cli(main)
