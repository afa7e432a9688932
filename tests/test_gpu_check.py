"""benchmarks/gpu_check.py, the prepared device check: its arithmetic by hand, and a whole (tiny) run on the CPU."""
from __future__ import annotations

import json

import pytest

from benchmarks import gpu_check
from common import layout


def test_steady_rate_and_paper_time_come_from_the_difference_of_two_slices():
    """Long slice 10,000 updates in 60 s, short 2,000 in 20 s: 8,000 updates in 40 s = 200/s, so the fixed cost is
    20 − 2,000/200 = 10 s and 1M updates take 1e6/200 + 10 = 5,010 s. Online: 2,000 steps in 130 s, 400 in 34 s:
    1,600 in 96 s = 16.67/s, fixed 34 − 24 = 10 s, 250k steps 15,010 s."""
    long = {"offline_steps": 10_000, "offline_wall_s": 60.0, "online_steps": 2_000, "online_wall_s": 130.0}
    short = {"offline_steps": 2_000, "offline_wall_s": 20.0, "online_steps": 400, "online_wall_s": 34.0}
    x = gpu_check.extrapolate(long, short, {"offline_steps": 1_000_000, "online_steps": 250_000})
    assert x["offline_steps_per_s"] == pytest.approx(200.0) and x["offline_fixed_s"] == pytest.approx(10.0)
    assert x["paper_offline_h"] == pytest.approx(5_010 / 3600)
    assert x["online_steps_per_s"] == pytest.approx(1_600 / 96) and x["online_fixed_s"] == pytest.approx(10.0)
    assert x["paper_online_h"] == pytest.approx(15_010 / 3600)
    assert x["paper_total_h"] == pytest.approx(20_020 / 3600)


def test_a_long_slice_no_slower_than_the_short_one_gives_no_rate():
    """Compilation time varies between processes; where it swamps the extra steps there is no rate, not a huge one."""
    long = {"offline_steps": 20, "offline_wall_s": 11.0, "online_steps": 10, "online_wall_s": 30.0}
    short = {"offline_steps": 4, "offline_wall_s": 12.0, "online_steps": 2, "online_wall_s": 20.0}
    x = gpu_check.extrapolate(long, short, {"offline_steps": 1_000_000, "online_steps": 250_000})
    assert x["offline_steps_per_s"] is None and x["paper_offline_h"] is None and x["paper_total_h"] is None
    assert x["online_steps_per_s"] == pytest.approx(0.8)
    row = {"algo": "spot", "mode": "compile", "long": long, "short": short, "extrapolation": x}
    text = gpu_check.markdown({"device_name": "cpu", "torch": "t", "dataset": "d", "eval_episodes": 1,
                               "paper_budget": {"spot": {"offline_steps": 1}}, "slices": {"spot-compile": row}})
    assert "| spot | compile | – | 0.8 | – / 18 | – h (– offline + 86.8 online) |" in text  # fixed: 20 − 2 / 0.8


def test_paper_budget_is_each_algorithms_defaults():
    assert gpu_check.paper_budget("adaptive_bc") == {"offline_steps": 1_000_000, "online_steps": 250_000}
    assert gpu_check.paper_budget("spot") == {"offline_steps": 1_000_000, "online_steps": 250_000,
                                              "vae_steps": 100_000}


def test_bad_modes_are_refused(tmp_path, capsys):
    with pytest.raises(SystemExit):
        gpu_check.main(["--device", "cpu", "--out", str(tmp_path), "--modes", "fast"])
    assert "--modes takes eager and/or compile" in capsys.readouterr().err


@pytest.mark.slow  # eight short training processes at paper network sizes
def test_a_tiny_check_runs_on_the_cpu_and_reports_every_slice(tmp_path):
    args = ["--device", "cpu", "--out", str(tmp_path), "--modes", "eager", "--no-throughput", "--offline_updates",
            "20", "--online_steps", "10", "--eval_episodes", "1"]
    report = gpu_check.main(args)
    saved = json.loads((tmp_path / "gpu_check.json").read_text())
    assert saved["slices"].keys() == {"adaptive_bc-eager", "spot-eager"} == report["slices"].keys()
    for key, row in saved["slices"].items():
        assert (row["long"]["offline_steps"], row["short"]["offline_steps"]) == (20, 4)
        assert (row["long"]["online_steps"], row["short"]["online_steps"]) == (10, 2)
        for size in ("long", "short"):
            assert 0 < row[size]["offline_wall_s"] <= row[size]["offline_process_s"]
            assert 0 < row[size]["online_wall_s"] <= row[size]["online_process_s"]
        x = row["extrapolation"]  # tiny slices: start-up can swamp the extra steps, and then there is no rate
        assert all(x[k] is None or x[k] > 0 for k in ("offline_steps_per_s", "online_steps_per_s", "paper_total_h"))
        assert (x["paper_total_h"] is None) == (None in (x["offline_steps_per_s"], x["online_steps_per_s"]))
    spot = layout.read_config(tmp_path / "runs" / "spot-eager-long" / "offline")
    assert (spot["vae_steps"], spot["offline_steps"], spot["hidden_dim"]) == (2, 20, 256)  # the paper's 1 : 10, sizes
    online = layout.read_config(tmp_path / "runs" / "adaptive_bc-eager-long" / "online")
    assert (online["utd"], online["num_critics"]) == (10, 10)  # the paper's settings
    text = (tmp_path / "gpu_check.md").read_text()
    assert "| adaptive_bc | eager |" in text and "| spot | eager |" in text and "not a measured run" in text
    again = gpu_check.main(args + ["--algos", "spot"])  # a second call measures again over its own scratch
    assert again["slices"].keys() == {"adaptive_bc-eager", "spot-eager"}  # and keeps what the first measured
    assert again["paper_budget"].keys() == {"adaptive_bc", "spot"}
