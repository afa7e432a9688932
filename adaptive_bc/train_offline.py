"""Offline pretraining of REDQ+BC with a fixed BC weight alpha_offline.

  python -m adaptive_bc.train_offline --config configs/adaptive_bc/hopper-medium.yaml --seed 0
writes runs/adaptive_bc/<dataset>/seed<seed>/offline/{config.yaml, metrics.jsonl, checkpoints/offline.pt};
rerunning a killed command resumes from checkpoints/last.pt.
"""
from __future__ import annotations

from pathlib import Path

from adaptive_bc.agent import ALGO, Config, RedqBcAgent
from common.buffer import ObsNormalizer, ReplayBuffer
from common.config import parse_config
from common.training import start_run, train_offline


def main(argv: list[str] | None = None) -> Path:
    cfg, _ = parse_config(Config, argv, description=__doc__)
    run = start_run(cfg, ALGO, "offline")
    dataset = run.dataset
    normalizer = (ObsNormalizer.from_observations(dataset.observations, device=run.device) if cfg.normalize_states
                  else ObsNormalizer.identity(dataset.obs_dim, device=run.device))
    agent = RedqBcAgent(dataset.obs_dim, dataset.act_dim, run.max_action, cfg, run.device, normalizer)
    agent.alpha = cfg.alpha_offline
    buffer = ReplayBuffer.from_dataset(dataset, extra_capacity=0, device=run.device, seed=cfg.seed)
    path = train_offline(run, agent, buffer, stages=[("offline", cfg.offline_steps, agent, True)])
    print(f"offline checkpoint: {path}")
    return path


if __name__ == "__main__":
    main()
