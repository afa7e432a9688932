"""Offline pretraining of REDQ+BC with a fixed BC weight alpha_offline.

  python -m adaptive_bc.train_offline --config configs/adaptive_bc/hopper-medium.yaml --seed 0
writes runs/adaptive_bc/<dataset>/seed<seed>/offline/{config.yaml, metrics.jsonl, checkpoints/offline.pt};
rerunning a killed command resumes from checkpoints/last.pt.

The loop: sample a batch from all of the data → update → record the update's metrics → every eval_every
updates evaluate and write a record → every checkpoint_every updates write last.pt.
"""
from __future__ import annotations

from pathlib import Path

from adaptive_bc.agent import ALGO, Config, RedqBcAgent
from common.buffer import ReplayBuffer
from common.config import parse_config
from common.errors import cli
from common.normalizer import ObsNormalizer
from common.recorder import Recorder
from common.run import start_run


def main(argv: list[str] | None = None) -> Path:
    cfg, _ = parse_config(Config, argv, description=__doc__)
    run = start_run(cfg, ALGO, "offline")
    dataset = run.dataset
    normalizer = ObsNormalizer.for_dataset(dataset, cfg.normalize_states, run.device)
    agent = RedqBcAgent(dataset.obs_dim, dataset.act_dim, run.max_action, cfg, run.device, normalizer)
    agent.alpha = cfg.alpha_offline
    buffer = ReplayBuffer.from_dataset(dataset, online_capacity=0, device=run.device, seed=cfg.seed)
    step = run.restore(agent=agent, buffer=buffer) if run.resume else 0

    recorder = Recorder(run, total=cfg.offline_steps, start_step=step)
    try:
        while step < cfg.offline_steps:
            recorder.add(agent.update(buffer.sample(cfg.batch_size)), step)
            step += 1
            recorder.advance()
            if step % cfg.eval_every == 0 or step == cfg.offline_steps:
                recorder.write(step, {**recorder.means(), **recorder.evaluate(agent.act)}, speed="time/updates_per_s")
            if step % cfg.checkpoint_every == 0 and step < cfg.offline_steps:
                run.save_last(step, recorder, agent=agent, buffer=buffer)
        path = run.finish(agent, step, recorder)
    finally:
        recorder.close()
    print(f"offline checkpoint: {path}")
    return path


if __name__ == "__main__":
    cli(main)
