# Run with cwd = the pre-ensemble clone (5baebbe): writes a tiny legacy offline checkpoint per algorithm and
# the metrics of a short online run from it, with that code.
import importlib, shutil, sys, json
from pathlib import Path
import numpy as np
sys.path.insert(0, ".")
SMALL = {"adaptive_bc": ["--hidden_dim", "16", "--num_critics", "4", "--utd", "1", "--prefill_min", "64"],
         "spot": ["--hidden_dim", "16", "--vae_hidden", "16", "--vae_steps", "10", "--lambd", "0.1"]}
out = Path(sys.argv[1])
for algo in SMALL:
    work = Path("/tmp/legacy/work") / algo
    shutil.rmtree(work, ignore_errors=True)
    off = importlib.import_module(f"{algo}.train_offline").main
    on = importlib.import_module(f"{algo}.train_online").main
    common = ["--batch_size", "16", "--eval_episodes", "1", "--wandb_mode", "disabled", *SMALL[algo]]
    ckpt = off(["--dataset", "/tmp/legacy/tiny-hopper.hdf5", "--offline_steps", "20", "--eval_every", "10",
                "--checkpoint_every", "10", "--run_dir", str(work / "off"), *common])
    on(["--checkpoint", str(ckpt), "--online_steps", "150", "--eval_every", "75", "--checkpoint_every", "200",
        *SMALL[algo], "--run_dir", str(work / "on")])
    (out / algo).mkdir(parents=True, exist_ok=True)
    shutil.copyfile(ckpt, out / algo / "offline.pt")
    shutil.copyfile(work / "on" / "metrics.jsonl", out / algo / "online-metrics.jsonl")
    from common.inference import load_agent
    agent, _ = load_agent(ckpt)
    obs = np.random.default_rng(0).normal(size=(5, 11)).astype(np.float32)
    (out / algo / "actions.json").write_text(json.dumps(agent.act(obs).tolist()))
