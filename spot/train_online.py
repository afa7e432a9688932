"""SPOT online fine-tuning from an offline checkpoint.

  python -m spot.train_online --checkpoint runs/spot/<dataset>/seed0/offline/checkpoints/offline.pt [--key value ...]

The config starts from the offline run's saved config, then --config YAML, then --key overrides. All
offline transitions stay in the buffer and online ones are appended (uniform sampling); one update
per env step; λ decays as λ · max(lambda_end, 1 − t / lambda_decay_steps).
"""
from __future__ import annotations

import argparse
from pathlib import Path

from common.buffer import ObsNormalizer, ReplayBuffer
from common.checkpoint import load_checkpoint
from common.config import ConfigError, field_names, parse_config
from common.training import OnlineHooks, online_run_dir_for, start_run, train_online
from spot.agent import ALGO, Config, SpotAgent, lambda_schedule


# Fixed by the checkpoint's networks and normalizer.
ARCHITECTURE_KEYS = ("hidden_dim", "vae_hidden", "vae_latent_dim", "normalize_states")


def _checkpoint_arg(argv) -> str | None:
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--checkpoint")
    known, _ = parser.parse_known_args(argv)
    return known.checkpoint


def main(argv=None) -> Path:
    checkpoint = _checkpoint_arg(argv)
    offline = load_checkpoint(checkpoint, algo=ALGO, kind="agent") if checkpoint else None
    names = set(field_names(Config))
    base = {k: v for k, v in offline["config"].items() if k in names and k != "run_dir"} if offline else None
    cfg, args = parse_config(
        Config, argv, "SPOT online fine-tuning from an offline checkpoint",
        extra=[("--checkpoint", {"required": True, "help": "the offline run's checkpoints/offline.pt"})], base=base)
    changed = [k for k in ARCHITECTURE_KEYS if getattr(cfg, k) != offline["config"].get(k)]
    if changed:
        raise ConfigError(f"{', '.join(changed)} cannot change after pretraining (the checkpoint's networks fix them)")
    checkpoint = Path(args.checkpoint)
    # <run>/checkpoints/offline.pt -> <run>
    offline_run_dir = checkpoint.parent.parent if checkpoint.parent.name == "checkpoints" else checkpoint.parent
    run = start_run(cfg, ALGO, "online", run_dir=online_run_dir_for(offline_run_dir),
                    extra_config={"offline_checkpoint": str(checkpoint.resolve())})
    dataset = run.dataset
    normalizer = ObsNormalizer.from_state_dict(offline["agent"]["normalizer"], run.device)
    agent = SpotAgent(dataset.obs_dim, dataset.act_dim, run.max_action, cfg, run.device, normalizer)
    agent.load_state_dict(offline["agent"])  # a resumed run then loads last.pt over it
    if cfg.reset_optimizers:
        agent.reset_optimizers()
    lambd = agent.lambd = cfg.lambd if cfg.lambd is not None else agent.lambd
    decay_steps = cfg.lambda_decay_steps or max(cfg.online_steps, 1)
    print(f"SPOT online: from {args.checkpoint} (offline step {offline['step']}), {dataset.name}, "
          f"lambda {lambd} -> {lambd * cfg.lambda_end} over {decay_steps} steps, run dir {run.run_dir}")

    def lambda_at(step: int) -> float:
        return lambda_schedule(lambd, step, cfg.lambda_end, decay_steps)

    def set_lambda(step: int) -> None:
        agent.lambd = lambda_at(step)

    hooks = OnlineHooks(before_step=set_lambda, on_eval=lambda step: {"train/lambda": lambda_at(step)})
    buffer = ReplayBuffer.from_dataset(dataset, extra_capacity=cfg.online_steps, device=run.device, seed=cfg.seed + 1)
    path = train_online(run, agent, buffer, updates_per_step=1, exploration_std=cfg.exploration_noise, hooks=hooks)
    print(f"wrote {path}")
    return path


if __name__ == "__main__":
    main()
