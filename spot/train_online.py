"""SPOT online fine-tuning from an offline checkpoint.

  python -m spot.train_online --checkpoint runs/spot/<dataset>/seed0/offline/checkpoints/offline.pt [--key value ...]

The config starts from the offline run's saved config, then --config YAML, then --key overrides. All
offline transitions stay in the buffer and online ones are appended (uniform sampling).

The loop: evaluate the pretrained policy → then per env step: act with Gaussian exploration noise → step the
env → store the transition → one update → λ for the next step, λ_t = λ · max(lambda_end, 1 − t /
lambda_decay_steps) → every eval_every steps evaluate and write a record (with the λ the agent uses) → every
checkpoint_every steps, last.pt (mid-episode too: the env's state is in it).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from common.buffer import ReplayBuffer
from common.config import parse_online_config
from common.errors import cli
from common.normalizer import ObsNormalizer
from common.online import start_online_run
from common.recorder import Recorder
from spot.agent import ALGO, Config, SpotAgent, lambda_schedule

# Fixed by the checkpoint's networks and normalizer.
ARCHITECTURE_KEYS = ("hidden_dim", "vae_hidden", "vae_latent_dim", "normalize_states")


def main(argv=None) -> Path:
    cfg, checkpoint, offline = parse_online_config(Config, argv, ALGO, "SPOT online fine-tuning from an offline "
                                                   "checkpoint", ARCHITECTURE_KEYS)
    run = start_online_run(cfg, ALGO, checkpoint)  # run.env: the env, its noise, episode counter, episode in progress
    dataset, env = run.dataset, run.env
    normalizer = ObsNormalizer.from_state_dict(offline["agent"]["normalizer"], run.device)
    agent = SpotAgent(dataset.obs_dim, dataset.act_dim, run.max_action, cfg, run.device, normalizer)
    agent.load_state_dict(offline["agent"])  # a resumed run then loads last.pt over it
    if cfg.reset_optimizers:
        agent.reset_optimizers()
    lambd = cfg.lambd  # the offline run's λ (its saved config), or this run's --lambd
    decay_steps = cfg.lambda_decay_steps or max(cfg.online_steps, 1)
    print(f"SPOT online: from {checkpoint} (offline step {offline['step']}), {dataset.name}, "
          f"lambda {lambd} -> {lambd * cfg.lambda_end} over {decay_steps} steps, run dir {run.run_dir}")
    buffer = ReplayBuffer.from_dataset(dataset, online_capacity=cfg.online_steps, device=run.device, seed=cfg.seed + 1)
    step = run.restore(agent=agent, buffer=buffer) if run.resume else 0
    agent.lambd = lambda_schedule(lambd, step, cfg.lambda_end, decay_steps)

    recorder = Recorder(run, total=cfg.online_steps, start_step=step, checks=[agent.check_divergence])
    try:
        if not run.resume:
            recorder.write(0, {**recorder.evaluate(agent.act), "train/lambda": agent.lambd})
        obs = env.start()  # a new episode, or the one a killed run was in the middle of
        while step < cfg.online_steps:
            action = env.explore(agent.act(obs[None].astype(np.float32))[0], cfg.exploration_noise)
            next_obs, reward, terminated, truncated = env.step(action)
            buffer.add(obs, action, reward, next_obs, terminated)  # truncation is not terminal
            recorder.add(agent.update(buffer.sample(cfg.batch_size)), step)
            step += 1
            agent.lambd = lambda_schedule(lambd, step, cfg.lambda_end, decay_steps)
            recorder.advance()
            if step % cfg.eval_every == 0 or step == cfg.online_steps:
                recorder.write(step, {**recorder.means(), **recorder.evaluate(agent.act), "train/lambda": agent.lambd},
                               speed="time/env_steps_per_s")
            if terminated or truncated:
                recorder.write(step, env.end_episode())
                obs = env.reset()
            else:
                obs = next_obs
            if env.checkpoint_due(step):  # may fall mid-episode: run.env keeps the episode in progress
                run.save_last(step, recorder, agent=agent, buffer=buffer)
        path = run.finish(agent, step, recorder)
    finally:
        recorder.close()
        env.close()
    print(f"wrote {path}")
    return path


if __name__ == "__main__":
    cli(main)
