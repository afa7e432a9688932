"""The FLOP model on hand-computed cases, and the throughput script's JSON report."""
from __future__ import annotations

import json
import re
from collections import Counter

import pytest
import torch

from benchmarks import flops


def test_dense_layer_flops_by_hand():
    layers = flops.mlp_layers(3, [4], 2)  # 3->4, 4->2
    assert layers == [(3, 4), (4, 2)]
    assert flops.forward(10, layers) == 2 * 10 * (12 + 8)
    # weight grads (= forward) + input grad of layer 2 only (layer 1's input is data)
    assert flops.backward(10, layers, weights=True) == 2 * 10 * (12 + 8) + 2 * 10 * 8
    # input grads only, plus 1 column of layer 1's input (an action fed into a critic)
    assert flops.backward(10, layers, weights=False, first_input_cols=1) == 2 * 10 * 8 + 2 * 10 * 1 * 4


def test_adaptive_bc_update_flops_by_hand():
    b, o, a, h, n, m = 2, 1, 1, 1, 3, 2
    fwd_q = 2 * b * ((o + a) * h + h * h + h * 1)  # critic forward = 16
    fwd_pi = 2 * b * (o * h + h * h + h * a)  # actor forward = 12
    critic_step = fwd_pi + m * fwd_q + n * (fwd_q + fwd_q + (fwd_q - 2 * b * (o + a) * h))
    actor_step = fwd_pi + n * (fwd_q + (fwd_q - 2 * b * (o + a) * h) + 2 * b * a * h) + (fwd_pi + fwd_pi - 2 * b * o * h)
    expected = critic_step + actor_step / 2
    assert flops.adaptive_bc_update(o, a, batch=b, hidden=h, num_critics=n, num_target=m) == expected
    # at paper settings: ~1.59 GFLOP per update
    assert flops.adaptive_bc_update(17, 6) == pytest.approx(1.59e9, rel=0.01)


def test_throughput_json_report(capsys, monkeypatch):
    """The report's arithmetic on rates we set: every workload 'runs' 50 calls/s (the calls still run once each)
    and the matmul ceiling reads 150, 200, then 120 GFLOP/s: the highest, 200, is the ceiling, so the adaptive_bc update
    (1.59 GFLOP, hand-checked above) is at 50 · 1.59 / 200 = 39.7 % of it."""
    from benchmarks import throughput

    def fake_measure(fn, n, warmup, repeats):
        fn()
        return {"per_s": 50.0, "per_s_min": 40.0, "per_s_max": 60.0}

    monkeypatch.setattr(throughput, "measure", fake_measure)
    readings = iter([150.0, 200.0] + [120.0] * 10)
    monkeypatch.setattr(throughput, "matmul_ceiling", lambda repeats: next(readings))
    throughput.main(["--json", "--scale", "0.02", "--repeats", "1"])
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["threads"] == 1 and report["ceiling_gflops"] == 200.0
    assert report["ceiling_readings"] == [150.0, 200.0, 120.0, 120.0, 120.0, 120.0]  # before each workload, and after
    names = {"adaptive_bc_update", "adaptive_bc_online_env_step", "spot_vae_update", "spot_update",
             "spot_online_env_step"}
    assert set(report["updates"]) == names
    bc = report["updates"]["adaptive_bc_update"]
    assert bc["per_s"] == 50.0 and bc["gflop_per_update"] == pytest.approx(1.59, rel=0.01)
    assert bc["gflops"] == pytest.approx(79.5, rel=0.01)
    assert bc["fraction_of_ceiling"] == pytest.approx(0.397, rel=0.01)
    step = report["updates"]["adaptive_bc_online_env_step"]  # utd 10 updates + one actor forward per env step
    assert step["gflop_per_update"] == pytest.approx(10 * 1.59, rel=0.01)
    assert report["evaluation"]["episodes"] == 10 and report["evaluation"]["episodes_per_s"] > 0


@pytest.mark.slow  # starts subprocesses / a kernel / the profiler
def test_throughput_profile_names_the_ops_and_the_matmul_share(capsys):
    from benchmarks import throughput

    throughput.main(["--profile", "spot_update", "--calls", "4"])
    out = capsys.readouterr().out
    share = re.search(r"spot_update: 4 calls, 1 threads, [\d.]+ ms per call under the profiler; matmul ops "
                      r"\(self time\) (\d+)% of op time", out)
    assert share and 0 < int(share.group(1)) < 100
    # the twin critics' layers; the actor's dropout masks (one uniform draw per forward, no bernoulli_ any more)
    assert "aten::addmm" in out and "aten::uniform_" in out and "aten::bernoulli_" not in out
    with pytest.raises(SystemExit, match="unknown workload 'spot'; choose from adaptive_bc_update"):
        throughput.main(["--profile", "spot"])


def test_matmul_recorder_counts_forward_and_backward_by_hand():
    """A 3 → 4 → 2 MLP on 5 rows, forward and backward: 2 addmm forward, then layer 2's input and weight gradients
    and layer 1's weight gradient (its input is data): 3 mm. FLOPs 2·5·(3·4 + 4·2) + 2·5·2·4 + 2·5·(4·2 + 3·4)."""
    from benchmarks import matmul_bound

    assert matmul_bound.matmul_flops("mm", (3, 4), (4, 5)) == 120
    assert matmul_bound.matmul_flops("baddbmm", (2, 3, 4), (2, 4, 5)) == 240
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    x = torch.randn(5, 3)
    recorder = matmul_bound.record(lambda: net(x).sum().backward(), calls=2)
    ops = Counter()
    for key, count in recorder.counts.items():
        ops[recorder.ops[key].overloadpacket.__name__] += count
    assert ops == {"addmm": 4, "mm": 6}  # per call 2 and 3
    assert matmul_bound.executed_flops(recorder, calls=2) == 200 + 80 + 200
    rows, totals = matmul_bound.replay(recorder, calls=2, repeats=2, target_s=1e-4)
    transposed = {(r["op"], tuple(r["a"]), tuple(r["b"])): r["transposed"] for r in rows}
    assert transposed[("addmm", (5, 3), (3, 4))] == [False, True]  # x @ W1.T, the weight's layout replayed
    assert sum(r["per_update"] for r in rows) == 5 and all(r["seconds"] > 0 for r in rows) and len(totals) == 2


def test_updates_dispatch_only_the_matmuls_the_math_needs():
    """What the three updates actually dispatch (recorded) against benchmarks/flops.py's minimum: at most 1% more
    (the first layers' full input gradients where only the action columns are needed). A wasted matmul (e.g. critic
    weight gradients in SPOT's actor step, ~2%) fails this."""
    from benchmarks import matmul_bound, throughput

    throughput.set_threads(1)
    torch.manual_seed(0)
    specs, _, env = throughput.workloads(torch.device("cpu"), False, 1.0)
    env.close()
    for name in matmul_bound.WORKLOADS:
        fn, _, min_flop = specs[name]
        executed = matmul_bound.executed_flops(matmul_bound.record(fn, calls=4), calls=4)
        assert 1.0 <= executed / min_flop <= 1.01, (name, executed / min_flop)


def test_matmul_bound_report_arithmetic(capsys, monkeypatch):
    """Every matmul alone and every update 'run' 1000 calls/s; the ceiling reads 100, 200, 150 (before each of two
    workloads, after the last): the bound is
    min FLOPs / (matmuls per update / 1000 s) / 200, the measured fraction min FLOPs · 1000 / 200."""
    from benchmarks import matmul_bound, throughput

    monkeypatch.setattr(throughput, "measure", lambda fn, n, warmup, repeats: (fn(), {"per_s": 1000.0})[1])
    readings = iter([100.0, 200.0, 150.0])
    monkeypatch.setattr(throughput, "matmul_ceiling", lambda repeats: next(readings))
    matmul_bound.main(["--workloads", "spot_update,adaptive_bc_update", "--calls", "2", "--repeats", "1", "--json"])
    out = capsys.readouterr().out.strip().splitlines()
    report = json.loads(out[-1])
    assert report["ceiling_gflops"] == 200.0 and report["ceiling_readings"] == [100.0, 200.0, 150.0]
    spot = report["workloads"][0]
    assert spot["name"] == "spot_update" and spot["min_gflop"] == pytest.approx(flops.spot_policy_update(17, 6) / 1e9)
    matmuls = sum(s["per_update"] for s in spot["shapes"])
    assert spot["matmul_ms_alone"] == pytest.approx(matmuls)  # 1 ms each
    assert spot["bound_fraction"] == pytest.approx(spot["min_gflop"] / (matmuls / 1000) / 200)
    assert spot["measured_ms"] == pytest.approx(1.0) and spot["matmul_share"] == pytest.approx(matmuls)
    assert spot["measured_fraction"] == pytest.approx(spot["min_gflop"] * 1000 / 200)
    assert "| spot_update | 1.014 |" in "\n".join(out)
    with pytest.raises(SystemExit, match="unknown 'spot'; choose from adaptive_bc_update"):
        matmul_bound.main(["--workloads", "spot"])


def test_versus_compiled_alternates_the_variants_and_reports_their_ratio(capsys, monkeypatch):
    """--versus-compiled on workloads we make: each 'update' takes a set time (eager 20 ms, compiled 16 ms, except one
    slow compiled round of 40 ms), the ceiling reads 100 then 160 GFLOP/s. Medians over 3 rounds: eager 20, compiled 16
    ms, speed-up 1.25; the order flips every round; fractions use the highest reading (160)."""
    from benchmarks import throughput

    calls = []
    slow = {"round": 0}  # the ceiling is read before each round

    def fake_workloads(dev, compile_, scale):
        name = "compiled" if compile_ else "eager"
        specs = {update: ((lambda name=name, update=update: calls.append((name, update))), 2, 1.6e9)
                 for update in throughput.UPDATES}
        return specs, None, type("Env", (), {"close": lambda self: None})()

    def fake_measure(fn, n, warmup, repeats):
        fn()
        name, update = calls[-1]
        ms = 20.0 if name == "eager" else 16.0
        if name == "compiled" and update == "spot_update" and slow["round"] == 2:
            ms = 40.0
        return {"per_s": 1e3 / ms, "per_s_min": 0.0, "per_s_max": 0.0}

    readings = iter([100.0, 160.0, 120.0, 110.0])

    def fake_ceiling(repeats):
        slow["round"] += 1
        return next(readings)

    monkeypatch.setattr(throughput, "workloads", fake_workloads)
    monkeypatch.setattr(throughput, "measure", fake_measure)
    monkeypatch.setattr(throughput, "matmul_ceiling", fake_ceiling)
    throughput.main(["--versus-compiled", "--rounds", "3", "--json"])
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["ceiling_gflops"] == 160.0 and report["ceiling_readings"] == [100.0, 160.0, 120.0, 110.0]
    timed = calls[2 * len(throughput.UPDATES):]  # after one warm-up call per variant and update
    per_round = 2 * len(throughput.UPDATES)
    assert [name for name, _ in timed[:2]] == ["eager", "compiled"]
    assert [name for name, _ in timed[per_round:per_round + 2]] == ["compiled", "eager"]  # flipped in round 2
    spot = report["updates"]["spot_update"]
    assert spot["rounds_ms"]["compiled"] == [16.0, 40.0, 16.0]
    assert spot["eager_ms"] == 20.0 and spot["compiled_ms"] == 16.0 and spot["compiled_speedup"] == 1.25
    assert spot["eager_fraction_of_ceiling"] == pytest.approx(1.6 / 0.020 / 160)  # 0.5
    assert spot["compiled_fraction_of_ceiling"] == pytest.approx(1.6 / 0.016 / 160)  # 0.625
    assert "| spot_update | 20.00 | 50% | 16.00 | 62% | 1.25x |" in throughput.versus_markdown(report)
