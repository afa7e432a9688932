"""How close to the matmul ceiling can an update get at all?

    python -m benchmarks.matmul_bound --threads 1            # markdown, the three updates
    python -m benchmarks.matmul_bound --threads 1 --json     # one JSON object as the last line

`benchmarks.throughput` reports each update's achieved GFLOP/s (its minimum matmul FLOPs, `benchmarks/flops.py`, over
its measured time) as a fraction of the fp32 1024x1024 matmul ceiling. Part of the gap is overhead (element-wise ops,
Adam, random draws, Python); part is that an update's matmuls have small shapes (batch 256, fan-in 23, fan-out 1 or
6) that run below the ceiling even alone. This script separates the two: it records every matmul an update
dispatches (op, shapes, strides, dtype; forward and backward, through a TorchDispatchMode), replays each distinct one
alone on fresh tensors of the same layout, and adds up their isolated times. The **bound** is the fraction of the
ceiling the update would reach if everything but its matmuls took no time and each matmul ran as fast as it does
alone: min FLOPs / (isolated matmul time) / ceiling. No implementation of the same math with these kernels can pass
it. The update itself is timed in rounds alternating with the replay (a slow minute on a shared VM hits both), and
"matmul share" = matmul time alone / update time, the median over rounds: the rest is element-wise work, Adam,
random draws and Python. The matmul GFLOP the update actually ran is printed beside the minimum (a test keeps them
within 1%).
"""
from __future__ import annotations

import argparse
import functools
import json
import math
import statistics
import time
from collections import Counter

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from benchmarks import throughput

MATMULS = {"mm": (0, 1), "addmm": (1, 2), "bmm": (0, 1), "baddbmm": (1, 2)}  # op -> positions of its two factors
WORKLOADS = ("adaptive_bc_update", "spot_vae_update", "spot_update")


def matmul_flops(op: str, a_shape, b_shape) -> float:
    """2·m·k·n (times the batch for bmm / baddbmm) for factors a (…, m, k) and b (…, k, n)."""
    batch = a_shape[0] if len(a_shape) == 3 else 1
    m, k = a_shape[-2:]
    n = b_shape[-1]
    return 2.0 * batch * m * k * n


def _spec(value):
    if isinstance(value, torch.Tensor):
        return ("tensor", tuple(value.shape), tuple(value.stride()), str(value.dtype).removeprefix("torch."),
                value.device.type)
    return ("value", value)


class MatmulRecorder(TorchDispatchMode):
    """Counts every matmul dispatched while active, keyed by (op overload, argument layouts)."""

    def __init__(self):
        super().__init__()
        self.counts: Counter = Counter()
        self.ops: dict = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func.overloadpacket.__name__ in MATMULS:
            key = (str(func), tuple(_spec(a) for a in args), tuple(sorted((k, _spec(v)) for k, v in kwargs.items())))
            self.counts[key] += 1
            self.ops[key] = func
        return func(*args, **kwargs)


def _fresh(spec, generator: torch.Generator):
    """A tensor with the recorded shape, strides and dtype (expanded dims stay expanded), filled with N(0, 1)."""
    if spec[0] == "value":
        return spec[1]
    _, shape, stride, dtype, device = spec
    size = 1 + sum((n - 1) * s for n, s in zip(shape, stride)) if all(shape) else 0
    base = torch.randn(size, generator=generator).to(getattr(torch, dtype)).to(device)
    return base.as_strided(shape, stride)


def record(fn, calls: int) -> MatmulRecorder:
    """The matmuls of `calls` calls of fn (after 3 unrecorded warm-up calls)."""
    for _ in range(3):
        fn()
    recorder = MatmulRecorder()
    with recorder:
        for _ in range(calls):
            fn()
    return recorder


def _flop(key, ops) -> tuple[str, float]:
    """(op name, FLOPs) of one recorded matmul, from its recorded argument shapes."""
    op = ops[key].overloadpacket.__name__
    i, j = MATMULS[op]
    arg_specs = key[1]
    return op, matmul_flops(op, arg_specs[i][1], arg_specs[j][1])


def _factors(key, ops, generator: torch.Generator):
    """(op name, fresh args, fresh kwargs, FLOPs) of one recorded matmul."""
    _, arg_specs, kwarg_specs = key
    args = [_fresh(s, generator) for s in arg_specs]
    kwargs = {k: _fresh(s, generator) for k, s in kwarg_specs}
    op, flop = _flop(key, ops)
    return op, args, kwargs, flop


def executed_flops(recorder: MatmulRecorder, calls: int) -> float:
    """Matmul FLOPs per call that the recorded calls actually dispatched."""
    return sum(count * _flop(key, recorder.ops)[1] for key, count in recorder.counts.items()) / calls


def replay(recorder: MatmulRecorder, calls: int, repeats: int = 5, target_s: float = 0.02,
           between=None) -> tuple[list[dict], list[float]]:
    """Each recorded matmul timed alone on fresh tensors of its layout, per update call: count, time (median over
    `repeats` rounds) and FLOPs. `between()`, if given, runs after each round (the update's own timing, interleaved
    so that a slow minute on a shared machine hits both alike); returns the rows and each round's total."""
    generator = torch.Generator().manual_seed(0)
    rows = []
    for key, count in recorder.counts.items():
        op, args, kwargs, flop = _factors(key, recorder.ops, generator)
        call = functools.partial(recorder.ops[key], *args, **kwargs)
        start = time.perf_counter()
        for _ in range(3):
            call()
        n = max(1, int(target_s / max((time.perf_counter() - start) / 3, 1e-7)))
        i, j = MATMULS[op]
        rows.append({"op": op, "a": list(args[i].shape), "b": list(args[j].shape),
                     "transposed": [not args[i].is_contiguous(), not args[j].is_contiguous()],
                     "per_update": count / calls, "flop": flop, "call": call, "n": n, "seconds_each": []})
    totals = []
    for _ in range(repeats):
        for r in rows:
            r["seconds_each"].append(1.0 / throughput.measure(r["call"], n=r["n"], warmup=1, repeats=1)["per_s"])
        totals.append(sum(r["per_update"] * r["seconds_each"][-1] for r in rows))
        if between is not None:
            between()
    for r in rows:
        del r["call"], r["n"]
        r["seconds"] = statistics.median(r.pop("seconds_each"))
        r["gflops"] = r["flop"] / r["seconds"] / 1e9
    rows.sort(key=lambda r: -r["per_update"] * r["seconds"])
    return rows, totals


def bound(name: str, fn, min_flop: float, calls: int, count: int, repeats: int) -> dict:
    """One workload: its matmuls recorded over `calls` calls and replayed alone, in rounds alternating with timings of
    the update itself; medians over the rounds."""
    recorder = record(fn, calls)
    for _ in range(max(3, count // 10)):
        fn()
    update_s = []
    rows, totals = replay(recorder, calls, repeats,
                          between=lambda: update_s.append(1.0 / throughput.measure(fn, count, 0, 1)["per_s"]))
    matmul_s, measured_s = statistics.median(totals), statistics.median(update_s)
    executed = sum(r["per_update"] * r["flop"] for r in rows)
    return {"name": name, "min_gflop": min_flop / 1e9, "executed_matmul_gflop": executed / 1e9,
            "matmul_ms_alone": 1e3 * matmul_s, "measured_ms": 1e3 * measured_s,
            "matmul_share": statistics.median(t / u for t, u in zip(totals, update_s)),
            "bound_gflops": min_flop / matmul_s / 1e9, "measured_gflops": min_flop / measured_s / 1e9,
            "shapes": rows}


def run(threads: int, names, calls: int, repeats: int, scale: float) -> dict:
    throughput.set_threads(threads)
    torch.manual_seed(0)
    specs, _, env = throughput.workloads(torch.device("cpu"), False, scale)
    env.close()
    unknown = [n for n in names if n not in specs]
    if unknown:
        raise SystemExit(f"--workloads: unknown {', '.join(map(repr, unknown))}; choose from {', '.join(specs)}")
    results, readings = [], []
    for name in names:
        fn, count, min_flop = specs[name]
        readings.append(throughput.matmul_ceiling(repeats))
        results.append(bound(name, fn, min_flop, calls, count, repeats))
    readings.append(throughput.matmul_ceiling(repeats))
    ceiling = max(readings)
    for r in results:
        r["bound_fraction"] = r["bound_gflops"] / ceiling
        r["measured_fraction"] = r["measured_gflops"] / ceiling
    return {"threads": threads, "torch": torch.__version__, "ceiling_gflops": ceiling, "ceiling_readings": readings,
            "calls_recorded": calls, "workloads": results}


def markdown(report: dict, shapes: int = 8) -> str:
    lines = [f"threads {report['threads']}, matmul ceiling {report['ceiling_gflops']:.1f} GFLOP/s (the highest of "
             f"{len(report['ceiling_readings'])} readings, lowest {min(report['ceiling_readings']):.1f})", "",
             "| update | min GFLOP | matmul GFLOP run | matmuls alone, ms | measured, ms | matmul share | bound: of ceiling | "
             "measured: of ceiling |", "|---|---|---|---|---|---|---|---|"]
    for r in report["workloads"]:
        lines.append(f"| {r['name']} | {r['min_gflop']:.3f} | {r['executed_matmul_gflop']:.3f} | "
                     f"{r['matmul_ms_alone']:.2f} | {r['measured_ms']:.2f} | {100 * r['matmul_share']:.0f}% | "
                     f"{100 * r['bound_fraction']:.0f}% | "
                     f"{100 * r['measured_fraction']:.0f}% |")
    for r in report["workloads"]:
        lines += ["", f"{r['name']}: the {shapes} matmuls that take the most time alone (per update)", "",
                  "| op | a | b | transposed (a, b) | per update | GFLOP/s alone | ms per update |", "|---|---|---|---|---|---|---|"]
        for s in r["shapes"][:shapes]:
            lines.append(f"| {s['op']} | {'×'.join(map(str, s['a']))} | {'×'.join(map(str, s['b']))} | "
                         f"{', '.join('yes' if t else 'no' for t in s['transposed'])} | {s['per_update']:g} | "
                         f"{s['gflops']:.1f} | {1e3 * s['per_update'] * s['seconds']:.3f} |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--workloads", default=",".join(WORKLOADS), help="comma-separated, from benchmarks.throughput")
    parser.add_argument("--calls", type=int, default=4, help="update calls recorded (even: SPOT's actor steps every 2nd)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--scale", type=float, default=1.0, help="multiply the calls per measured repeat")
    parser.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    args = parser.parse_args(argv)
    if args.calls < 1 or args.repeats < 1 or not math.isfinite(args.scale) or args.scale <= 0:
        parser.error("--calls and --repeats must be at least 1 and --scale positive")
    names = [n for n in args.workloads.split(",") if n]
    report = run(args.threads, names, args.calls, args.repeats, args.scale)
    print(markdown(report))
    if args.json:
        print(json.dumps(report))


if __name__ == "__main__":
    main()
