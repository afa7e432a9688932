"""tools.reference_eval: the offline policy of a committed run, re-evaluated with more episodes from its checkpoint
or its shipped model, written beside the run and reported by benchmarks.quality."""
from __future__ import annotations

import json
import shutil

from adaptive_bc import train_offline, train_online
from benchmarks import quality
from tools import collect_results, export_model, reference_eval

SMALL = ["--hidden_dim", "16", "--num_critics", "4", "--utd", "1", "--prefill_min", "64", "--batch_size", "16",
         "--wandb_mode", "disabled"]


def test_reference_from_the_checkpoint_or_the_shipped_model(tmp_path, tiny_hopper_file):
    live = tmp_path / "live"
    runs = {}
    for seed in (0, 1):
        trial = live / "adaptive_bc" / "tiny-hopper" / f"seed{seed}"
        runs[seed] = train_offline.main(["--dataset", str(tiny_hopper_file), "--offline_steps", "20", "--eval_every",
                                         "10", "--eval_episodes", "10", "--seed", str(seed), "--run_dir",
                                         str(trial / "offline"), *SMALL])
        train_online.main(["--checkpoint", str(runs[seed]), "--online_steps", "30", "--eval_every", "5",
                           "--run_dir", str(trial / "online"), *SMALL])
    results = tmp_path / "results"
    collect_results.main([str(live), str(results)])
    models = tmp_path / "models"
    export_model.main([str(runs[0]), str(models / "tiny-hopper_adaptive_bc_offline.pt"), "--budget", "20 updates"])

    # seed 0 from its checkpoint (still on disk), 12 episodes; the first 10 have the seeds of the run's last evaluation
    done = reference_eval.main([str(results), "--checkpoints", str(live), "--models", str(models), "--episodes", "12"])
    assert done["written"] == ["adaptive_bc/tiny-hopper/seed0/offline", "adaptive_bc/tiny-hopper/seed1/offline"]
    offline0 = results / "adaptive_bc" / "tiny-hopper" / "seed0" / "offline"
    ref = json.loads((offline0 / "reference.json").read_text())
    assert ref["episodes"] == 12 and len(ref["normalized_scores"]) == 12 and ref["source"].endswith("offline.pt")
    assert abs(ref["first_10"] - sum(ref["normalized_scores"][:10]) / 10) < 1e-3  # the stored scores are rounded

    # without the checkpoints: seed 0 from its shipped model (same seed, same score), seed 1 cannot be redone
    for path in results.rglob("reference.json"):
        path.unlink()
    shutil.rmtree(live)
    done = reference_eval.main([str(results), "--models", str(models), "--episodes", "12"])
    assert done["written"] == ["adaptive_bc/tiny-hopper/seed0/offline"]
    assert done["not redone"] == ["adaptive_bc/tiny-hopper/seed1/offline"]
    again = json.loads((offline0 / "reference.json").read_text())
    assert again["source"].endswith("tiny-hopper_adaptive_bc_offline.pt")
    assert again["normalized_scores"] == ref["normalized_scores"]  # the same policy, the same machine
    assert reference_eval.main([str(results), "--models", str(models), "--episodes", "12"])["kept"] == [
        "adaptive_bc/tiny-hopper/seed0/offline"]

    # the report measures the dip from it too
    runs_q = {r.seed: r for r in quality.main([str(results)])}
    assert runs_q[0].offline_ref == again["normalized_score"] and runs_q[1].offline_ref is None
    assert runs_q[0].dip_drop_ref == runs_q[0].dip_eval - again["normalized_score"]
    assert "## Against a steadier reference" in quality.markdown(list(runs_q.values()))
