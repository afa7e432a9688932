"""Online fine-tuning of a pretrained REDQ+BC agent with the adaptive BC weight.

  python -m adaptive_bc.train_online --checkpoint runs/adaptive_bc/<dataset>/seed0/offline/checkpoints/offline.pt
The config starts from the one saved in the checkpoint, then --config YAML, then --key value overrides.
Default run dir: the offline run's sibling `online` folder. Rerunning a killed command resumes it.

The loop: evaluate the pretrained policy (α starts at alpha_max, the running score at that evaluation's first
episode) → then per env step: act with Gaussian exploration noise → step the env → store the transition → `utd`
updates → every eval_every steps evaluate and write a record → at an episode end, the α controller's step
(adaptive_bc/controller.py) → every checkpoint_every steps, last.pt (mid-episode too: the env's state is in it).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from adaptive_bc.agent import ALGO, Config, RedqBcAgent
from adaptive_bc.controller import AlphaController
from common.buffer import ReplayBuffer
from common.config import parse_online_config
from common.errors import cli
from common.normalizer import ObsNormalizer
from common.online import start_online_run
from common.recorder import Recorder

ARCHITECTURE_KEYS = ("num_critics", "hidden_dim", "normalize_states")  # fixed by the checkpoint's networks


def main(argv: list[str] | None = None) -> Path:
    cfg, checkpoint, offline = parse_online_config(Config, argv, ALGO, __doc__, ARCHITECTURE_KEYS)
    run = start_online_run(cfg, ALGO, checkpoint)  # run.env: the env, its noise, episode counter, episode in progress
    dataset, env = run.dataset, run.env
    # The normalizer is the pretraining one, saved with the agent.
    normalizer = ObsNormalizer.from_state_dict(offline["agent"]["normalizer"], device=run.device)
    agent = RedqBcAgent(dataset.obs_dim, dataset.act_dim, run.max_action, cfg, run.device, normalizer)
    agent.load_state_dict(offline["agent"])
    agent.use_min_target = cfg.target == "min"
    num_prefill = max(int(cfg.prefill_fraction * len(dataset)), cfg.prefill_min)
    capacity = cfg.buffer_capacity if cfg.buffer_capacity is not None else cfg.online_steps
    buffer = ReplayBuffer.prefilled(dataset, num_prefill, capacity=capacity, device=run.device, seed=cfg.seed)
    controller = AlphaController(alpha_max=cfg.alpha_max, kp=cfg.kp, kd=cfg.kd, r_target=cfg.r_target)
    step = run.restore(agent=agent, buffer=buffer, controller=controller) if run.resume else 0

    def alpha_metrics() -> dict[str, float]:
        return {"train/alpha": agent.alpha, "train/r_avg": controller.r_avg}

    recorder = Recorder(run, total=cfg.online_steps, start_step=step)
    try:
        if not run.resume:
            result = recorder.evaluate_result(agent.act)
            agent.alpha = controller.start(float(result.normalized_scores[0]) / 100.0)  # one episode, as a fraction
            recorder.write(0, {**result.metrics(), **alpha_metrics()})
        obs = env.start()  # a new episode, or the one a killed run was in the middle of
        while step < cfg.online_steps:
            action = env.explore(agent.act(obs[None].astype(np.float32))[0], cfg.exploration_noise)
            next_obs, reward, terminated, truncated = env.step(action)
            buffer.add(obs, action, reward, next_obs, terminated)  # truncation is not terminal
            for _ in range(cfg.utd):
                recorder.add(agent.update(buffer.sample(cfg.batch_size)), step)
            step += 1
            recorder.advance()
            if step % cfg.eval_every == 0 or step == cfg.online_steps:
                recorder.write(step, {**recorder.means(), **recorder.evaluate(agent.act), **alpha_metrics()},
                               speed="time/env_steps_per_s")
            if terminated or truncated:
                record = env.end_episode()
                score = record["online/episode_normalized_score"] / 100.0
                agent.alpha = controller.episode_end(agent.alpha, score, env.episode_length)
                recorder.write(step, {**record, **alpha_metrics()})
                obs = env.reset()
            else:
                obs = next_obs
            if env.checkpoint_due(step):  # may fall mid-episode: run.env keeps the episode in progress
                run.save_last(step, recorder, agent=agent, buffer=buffer, controller=controller)
        path = run.finish(agent, step, recorder)
    finally:
        recorder.close()
        env.close()
    print(f"online checkpoint: {path}")
    return path


if __name__ == "__main__":
    cli(main)
