"""Throughput at paper settings, against this machine's measured matmul ceiling.

    python -m benchmarks.throughput                 # markdown table, 1 thread
    python -m benchmarks.throughput --threads 2 --json
    python -m benchmarks.throughput --compile       # the networks compiled, as training's --compile true
    python -m benchmarks.throughput --threads 2 --profile spot_update   # where one kind of update's time goes
    python -m benchmarks.throughput --versus-compiled --json   # eager and --compile true in alternating blocks

Each measurement: warm-up, then `--repeats` timed repeats; we report the median rate and the
min–max spread. The ceiling is fp32 1024x1024 matmul GFLOP/s at the same thread count, measured in
the same run before each workload and once after the last; the highest of these readings is the ceiling (on a
shared VM one reading can come out a third low, which would flatter every fraction). Each update's FLOPs are the minimum the math needs (benchmarks/flops.py), so
achieved GFLOP/s / ceiling shows how much of the machine an update really uses. Run it on an idle
machine: another busy process easily halves the numbers.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from benchmarks import flops  # noqa: E402
from common.buffer import ReplayBuffer  # noqa: E402
from common.envs import make_env  # noqa: E402
from common.evaluation import Evaluator  # noqa: E402
from common.utils import set_threads  # noqa: E402

OBS, ACT, BATCH = 17, 6, 256
ENV_ID = "HalfCheetah-v4"  # obs 17, act 6; episodes always last 1000 steps


def measure(fn, n: int, warmup: int, repeats: int) -> dict:
    """Calls fn() n times per repeat; returns rates (calls/s): median, min, max."""
    for _ in range(warmup):
        fn()
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(n):
            fn()
        rates.append(n / (time.perf_counter() - start))
    return {"per_s": statistics.median(rates), "per_s_min": min(rates), "per_s_max": max(rates)}


def matmul_ceiling(repeats: int) -> float:
    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
    rate = measure(lambda: torch.mm(a, b), n=20, warmup=5, repeats=repeats)["per_s"]
    return rate * 2 * 1024**3 / 1e9


def random_buffer(device, size: int = 100_000) -> ReplayBuffer:
    buf = ReplayBuffer(size, OBS, ACT, device, seed=0)
    g = torch.Generator().manual_seed(0)
    rows = torch.randn(size, buf.width, generator=g)
    rows[:, OBS:OBS + ACT] = rows[:, OBS:OBS + ACT].clamp(-1, 1)
    rows[:, -1] = (torch.rand(size, generator=g) < 0.01).float()
    buf._write_rows(rows.to(device))
    return buf


def make_agents(device, compile_: bool):
    """The agents at paper sizes; compile_: as the training scripts' `--compile true` (common.utils.compile_in_place)."""
    from adaptive_bc.agent import Config as BcConfig, RedqBcAgent
    from spot.agent import Config as SpotConfig, SpotAgent, VaeTrainer

    bc = RedqBcAgent(OBS, ACT, 1.0, BcConfig(dataset="d4rl:halfcheetah-medium-v2", compile=compile_), device)
    spot_cfg = SpotConfig(dataset="d4rl:halfcheetah-medium-v2", compile=compile_)
    spot = SpotAgent(OBS, ACT, 1.0, spot_cfg, device)
    vae = VaeTrainer(spot.vae, spot.normalizer, lr=spot_cfg.vae_lr, beta=spot_cfg.beta)  # the compiled VAE
    return bc, spot, vae


def online_step_fn(agent, buf, env, utd: int, rng):
    """One environment step with exploration noise, the transition stored, then `utd` updates."""
    state = {"obs": env.reset(seed=0)[0]}

    def step():
        action = np.clip(agent.act(state["obs"][None].astype(np.float32))[0] + rng.normal(0, 0.1, ACT), -1, 1)
        next_obs, reward, terminated, truncated, _ = env.step(action.astype(np.float32))
        buf.add(state["obs"], action, reward, next_obs, terminated)
        state["obs"] = env.reset()[0] if terminated or truncated else next_obs
        for _ in range(utd):
            agent.update(buf.sample(BATCH))
    return step


def workloads(dev, compile_: bool, scale: float) -> tuple[dict, object, object]:
    """name -> (fn, calls per repeat, minimum FLOPs per call), the evaluator's policy, and the env the
    online workloads step (the caller closes it)."""
    bc, spot, vae = make_agents(dev, compile_)
    buf = random_buffer(dev)
    rng = np.random.default_rng(0)
    env = make_env(ENV_ID, seed=0)
    n = lambda k: max(1, int(k * scale))  # noqa: E731
    bc_utd = bc.cfg.utd

    def spot_update():
        if spot.vae.encoder[0].weight.requires_grad:  # after the VAE workload: frozen, as in the policy stage
            spot.vae.requires_grad_(False)
        spot.update(buf.sample(BATCH))

    specs = {
        "adaptive_bc_update": (lambda: bc.update(buf.sample(BATCH)), n(60), flops.adaptive_bc_update(OBS, ACT)),
        "adaptive_bc_online_env_step": (online_step_fn(bc, buf, env, bc_utd, rng), n(6),
                                        bc_utd * flops.adaptive_bc_update(OBS, ACT) + flops.actor_forward(OBS, ACT)),
        "spot_vae_update": (lambda: vae.update(buf.sample(BATCH)), n(60), flops.spot_vae_update(OBS, ACT)),
        "spot_update": (spot_update, n(100), flops.spot_policy_update(OBS, ACT)),
        "spot_online_env_step": (online_step_fn(spot, buf, env, 1, rng), n(100),
                                 flops.spot_policy_update(OBS, ACT) + flops.actor_forward(OBS, ACT)),
    }
    return specs, bc.act, env


def run(threads: int, device: str, compile_: bool, repeats: int, scale: float) -> dict:
    set_threads(threads)  # also keeps freed memory in-process (see common.utils.reuse_freed_memory)
    torch.manual_seed(0)
    dev = torch.device(device)
    specs, policy, env = workloads(dev, compile_, scale)
    updates, readings = {}, []
    for name, (fn, count, flop) in specs.items():
        readings.append(matmul_ceiling(repeats))
        result = measure(fn, count, warmup=max(3, count // 10) + (20 if compile_ else 0), repeats=repeats)
        updates[name] = {**result, "gflop_per_update": flop / 1e9, "gflops": result["per_s"] * flop / 1e9}
    readings.append(matmul_ceiling(repeats))
    ceiling = max(readings)
    for update in updates.values():
        update["fraction_of_ceiling"] = update["gflops"] / ceiling
    env.close()
    evaluator = Evaluator(ENV_ID, 10)
    start = time.perf_counter()
    result = evaluator.run(policy, seed=0)
    elapsed = time.perf_counter() - start
    evaluator.close()
    evaluation = {"episodes": 10, "episodes_per_s": 10 / elapsed, "env_steps_per_s": float(result.lengths.sum()) / elapsed}
    return {"ceiling_gflops": ceiling, "ceiling_readings": readings, "threads": threads, "device": device, "compile": compile_,
            "torch": torch.__version__, "updates": updates, "evaluation": evaluation}


def profile(name: str, threads: int, device: str, compile_: bool, calls: int, rows: int = 25) -> str:
    """torch.profiler over `calls` calls of one workload: the ops that take the time, and the share of
    matmul kernels (the part the FLOP count covers) in the total."""
    from torch.profiler import ProfilerActivity, profile as torch_profile

    set_threads(threads)
    torch.manual_seed(0)
    specs, _, env = workloads(torch.device(device), compile_, 1.0)
    if name not in specs:
        env.close()
        raise SystemExit(f"--profile: unknown workload {name!r}; choose from {', '.join(specs)}")
    fn = specs[name][0]
    for _ in range(10 + (20 if compile_ else 0)):
        fn()
    start = time.perf_counter()
    with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(calls):
            fn()
    wall = time.perf_counter() - start
    env.close()
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    matmul = sum(e.self_cpu_time_total for e in events if e.key in MATMUL_OPS)
    table = events.table(sort_by="self_cpu_time_total", row_limit=rows)
    return (f"{name}: {calls} calls, {threads} threads, {wall / calls * 1e3:.2f} ms per call under the profiler; "
            f"matmul ops (self time) {100 * matmul / total:.0f}% of op time\n{table}")


UPDATES = ("adaptive_bc_update", "spot_vae_update", "spot_update")


def versus_compiled(threads: int, device: str, rounds: int, scale: float) -> dict:
    """Each update eager and compiled (training's --compile true) in alternating blocks, the order flipped every
    round, the matmul ceiling read before each round and after the last: on a shared VM a slow minute hits both
    variants, where two separate runs can differ by 1.5x. Per update: median ms per call of each variant over the
    rounds, their ratio, and each variant's fraction of the highest ceiling reading."""
    set_threads(threads)
    torch.manual_seed(0)
    dev = torch.device(device)
    variants = {}
    for name, compile_ in (("eager", False), ("compiled", True)):
        specs, _, env = workloads(dev, compile_, scale)
        env.close()
        variants[name] = specs
        for update in UPDATES:  # warm-up; compiles the compiled variant's graphs
            fn, count, _ = specs[update]
            measure(fn, 1, warmup=max(3, count // 10) + (20 if compile_ else 0), repeats=1)
    ms = {update: {name: [] for name in variants} for update in UPDATES}
    readings = []
    for round_ in range(rounds):
        readings.append(matmul_ceiling(3))
        order = list(variants) if round_ % 2 == 0 else list(variants)[::-1]
        for update in UPDATES:
            for name in order:
                fn, count, _ = variants[name][update]
                ms[update][name].append(1e3 / measure(fn, count, warmup=0, repeats=1)["per_s"])
    readings.append(matmul_ceiling(3))
    ceiling = max(readings)
    updates = {}
    for update in UPDATES:
        flop = variants["eager"][update][2]
        med = {name: statistics.median(values) for name, values in ms[update].items()}
        updates[update] = {"gflop_per_update": flop / 1e9, "rounds_ms": ms[update],
                           **{f"{name}_ms": value for name, value in med.items()},
                           **{f"{name}_fraction_of_ceiling": flop / 1e9 / (value / 1e3) / ceiling
                              for name, value in med.items()},
                           "compiled_speedup": med["eager"] / med["compiled"]}
    return {"mode": "versus_compiled", "threads": threads, "device": device, "rounds": rounds, "torch": torch.__version__,
            "ceiling_gflops": ceiling, "ceiling_readings": readings, "updates": updates}


def _ceiling(report: dict) -> str:
    return (f"matmul ceiling {report['ceiling_gflops']:.1f} GFLOP/s (fp32 1024x1024; the highest of "
            f"{len(report['ceiling_readings'])} readings, lowest {min(report['ceiling_readings']):.1f})")


def versus_markdown(report: dict) -> str:
    lines = [f"threads {report['threads']}, device {report['device']}, {report['rounds']} alternating rounds, "
             f"{_ceiling(report)}", "",
             "| update | eager ms | of ceiling | compiled ms | of ceiling | compiled speed-up |", "|---|---|---|---|---|---|"]
    for name, u in report["updates"].items():
        lines.append(f"| {name} | {u['eager_ms']:.2f} | {100 * u['eager_fraction_of_ceiling']:.0f}% | "
                     f"{u['compiled_ms']:.2f} | {100 * u['compiled_fraction_of_ceiling']:.0f}% | "
                     f"{u['compiled_speedup']:.2f}x |")
    return "\n".join(lines)


MATMUL_OPS = {"aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm"}


def markdown(report: dict) -> str:
    lines = [f"threads {report['threads']}, device {report['device']}, compile {report['compile']}, {_ceiling(report)}",
             "",
             "| what | per s (median) | min–max | GFLOP per call | GFLOP/s | of ceiling |", "|---|---|---|---|---|---|"]
    for name, u in report["updates"].items():
        lines.append(f"| {name} | {u['per_s']:.2f} | {u['per_s_min']:.2f}–{u['per_s_max']:.2f} | "
                     f"{u['gflop_per_update']:.3f} | {u['gflops']:.1f} | {100 * u['fraction_of_ceiling']:.0f}% |")
    e = report["evaluation"]
    lines += ["", f"evaluation: {e['episodes_per_s']:.2f} episodes/s ({e['env_steps_per_s']:.0f} env steps/s, "
                  f"{e['episodes']} episodes stepped together)"]
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--compile", action="store_true", help="torch.compile the networks (training's --compile true)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--scale", type=float, default=1.0, help="multiply the calls per repeat (quick runs: 0.1)")
    parser.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    parser.add_argument("--profile", metavar="NAME", help="profile one workload (e.g. spot_update) instead")
    parser.add_argument("--calls", type=int, default=50, help="calls profiled with --profile")
    parser.add_argument("--versus-compiled", action="store_true",
                        help="the updates eager and compiled in alternating blocks (--rounds of them) instead")
    parser.add_argument("--rounds", type=int, default=10, help="alternating rounds with --versus-compiled")
    args = parser.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    if args.versus_compiled:
        report = versus_compiled(args.threads, args.device, args.rounds, args.scale)
        print(json.dumps(report) if args.json else versus_markdown(report))
        return report
    if args.profile:
        print(profile(args.profile, args.threads, args.device, args.compile, args.calls))
        return None
    report = run(args.threads, args.device, args.compile, args.repeats, args.scale)
    print(json.dumps(report) if args.json else markdown(report))
    return report


if __name__ == "__main__":
    main()
