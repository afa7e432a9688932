"""Online fine-tuning of a pretrained REDQ+BC agent with the adaptive BC weight.

  python -m adaptive_bc.train_online --checkpoint runs/adaptive_bc/<dataset>/seed0/offline/checkpoints/offline.pt
The config starts from the one saved in the checkpoint, then --config YAML, then --key value overrides.
Default run dir: the offline run's sibling `online` folder. Rerunning a killed command resumes it.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from adaptive_bc.agent import ALGO, Config, RedqBcAgent
from adaptive_bc.controller import AlphaController
from common.buffer import ObsNormalizer, ReplayBuffer
from common.checkpoint import load_checkpoint
from common.config import ConfigError, field_names, parse_config
from common.evaluation import EvalResult
from common.training import OnlineHooks, online_run_dir_for, start_run, train_online

ARCHITECTURE_KEYS = ("num_critics", "hidden_dim", "normalize_states")  # fixed by the checkpoint's networks


def _offline_run_dir(checkpoint: Path) -> Path:
    """<run>/checkpoints/offline.pt -> <run>."""
    return checkpoint.parent.parent if checkpoint.parent.name == "checkpoints" else checkpoint.parent


def main(argv: list[str] | None = None) -> Path:
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--checkpoint")
    known, _ = pre.parse_known_args(argv)
    base, offline = {}, None
    if known.checkpoint:  # without it parse_config below prints the usage error
        offline = load_checkpoint(known.checkpoint, algo=ALGO, kind="agent")
        names = set(field_names(Config))
        base = {k: v for k, v in offline["config"].items() if k in names and k != "run_dir"}
    cfg, args = parse_config(Config, argv, description=__doc__, base=base, extra=[
        ("--checkpoint", {"required": True, "help": "an adaptive_bc agent checkpoint (offline.pt)"})])
    changed = [k for k in ARCHITECTURE_KEYS if getattr(cfg, k) != offline["config"].get(k)]
    if changed:
        raise ConfigError(f"{', '.join(changed)} cannot change after pretraining (the checkpoint's networks fix them)")

    checkpoint = Path(args.checkpoint)
    run = start_run(cfg, ALGO, "online", run_dir=online_run_dir_for(_offline_run_dir(checkpoint)),
                    extra_config={"offline_checkpoint": str(checkpoint.resolve())})
    dataset = run.dataset
    # The normalizer is the pretraining one, saved with the agent.
    normalizer = ObsNormalizer.from_state_dict(offline["agent"]["normalizer"], device=run.device)
    agent = RedqBcAgent(dataset.obs_dim, dataset.act_dim, run.max_action, cfg, run.device, normalizer)
    agent.load_state_dict(offline["agent"])
    agent.use_min_target = cfg.target == "min"

    num_prefill = max(int(cfg.prefill_fraction * len(dataset)), cfg.prefill_min)
    capacity = cfg.buffer_capacity if cfg.buffer_capacity is not None else cfg.online_steps
    buffer = ReplayBuffer.prefilled(dataset, num_prefill, capacity=capacity, device=run.device, seed=cfg.seed)

    controller = AlphaController(alpha_max=cfg.alpha_max, kp=cfg.kp, kd=cfg.kd, r_target=cfg.r_target)

    def controller_metrics() -> dict[str, float]:
        return {"train/alpha": controller.alpha, "train/r_avg": controller.r_avg}

    def on_start(result: EvalResult) -> dict[str, float]:
        controller.start(float(result.normalized_scores[0]) / 100.0)  # one evaluation episode, as a fraction
        agent.alpha = controller.alpha
        return controller_metrics()

    def on_episode_end(episode_return: float, episode_length: int) -> dict[str, float]:
        score = float(dataset.normalized_score(episode_return)) / 100.0
        agent.alpha = controller.episode_end(score, episode_length)
        return controller_metrics()

    hooks = OnlineHooks(on_start=on_start, on_episode_end=on_episode_end, on_eval=lambda step: controller_metrics(),
                        state=controller.state_dict, load_state=controller.load_state_dict)
    path = train_online(run, agent, buffer, updates_per_step=cfg.utd, exploration_std=cfg.exploration_noise,
                        hooks=hooks)
    print(f"online checkpoint: {path}")
    return path


if __name__ == "__main__":
    main()
