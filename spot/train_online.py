"""SPOT online fine-tuning from an offline checkpoint.

  python -m spot.train_online --checkpoint runs/spot/<dataset>/seed0/offline/checkpoints/offline.pt [--key value ...]

The config starts from the offline run's saved config, then --config YAML, then --key overrides. All
offline transitions stay in the buffer and online ones are appended (uniform sampling).

The loop: evaluate the pretrained policy → then per env step: act with Gaussian exploration noise → step the
env → store the transition → one update → λ for the next step, λ_t = λ · max(lambda_end, 1 − t /
lambda_decay_steps) → every eval_every steps evaluate and write a record (with the λ the agent uses) → at an
episode end after each checkpoint_every steps, last.pt.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from common.buffer import ReplayBuffer
from common.config import parse_online_config
from common.errors import cli
from common.layout import online_run_dir_for, run_dir_of_checkpoint
from common.normalizer import ObsNormalizer
from common.run import OnlineEnv, Recorder, explore, next_checkpoint_after, start_run
from spot.agent import ALGO, Config, SpotAgent, lambda_schedule

# Fixed by the checkpoint's networks and normalizer.
ARCHITECTURE_KEYS = ("hidden_dim", "vae_hidden", "vae_latent_dim", "normalize_states")


def main(argv=None) -> Path:
    cfg, checkpoint, offline = parse_online_config(Config, argv, ALGO, "SPOT online fine-tuning from an offline "
                                                   "checkpoint", ARCHITECTURE_KEYS)
    run = start_run(cfg, ALGO, "online", run_dir=online_run_dir_for(run_dir_of_checkpoint(checkpoint)),
                    extra_config={"offline_checkpoint": str(checkpoint.resolve()),
                                  "regularization_metric": "train/lambda"})
    dataset = run.dataset
    normalizer = ObsNormalizer.from_state_dict(offline["agent"]["normalizer"], run.device)
    agent = SpotAgent(dataset.obs_dim, dataset.act_dim, run.max_action, cfg, run.device, normalizer)
    agent.load_state_dict(offline["agent"])  # a resumed run then loads last.pt over it
    if cfg.reset_optimizers:
        agent.reset_optimizers()
    lambd = cfg.lambd if cfg.lambd is not None else agent.lambd
    decay_steps = cfg.lambda_decay_steps or max(cfg.online_steps, 1)
    print(f"SPOT online: from {checkpoint} (offline step {offline['step']}), {dataset.name}, "
          f"lambda {lambd} -> {lambd * cfg.lambda_end} over {decay_steps} steps, run dir {run.run_dir}")
    buffer = ReplayBuffer.from_dataset(dataset, online_capacity=cfg.online_steps, device=run.device, seed=cfg.seed + 1)
    noise_rng = np.random.default_rng(cfg.seed)
    env = OnlineEnv(run)
    step, next_checkpoint = 0, cfg.checkpoint_every
    if run.resume:
        step = run.restore(agent=agent, buffer=buffer)
        noise_rng.bit_generator.state = run.resume["noise_rng"]
        env.episode, next_checkpoint = int(run.resume["episode"]), int(run.resume["next_checkpoint"])
    agent.lambd = lambda_schedule(lambd, step, cfg.lambda_end, decay_steps)

    recorder = Recorder(run, total=cfg.online_steps, start_step=step)
    try:
        if not run.resume:
            recorder.write(0, {**recorder.evaluate(agent.act), "train/lambda": agent.lambd})
        obs = env.reset()
        while step < cfg.online_steps:
            action = explore(agent.act(obs[None].astype(np.float32))[0], noise_rng, cfg.exploration_noise,
                             run.max_action)
            next_obs, reward, terminated, truncated = env.step(action)
            buffer.add(obs, action, reward, next_obs, terminated)  # truncation is not terminal
            recorder.add(agent.update(buffer.sample(cfg.batch_size)), step)
            step += 1
            agent.lambd = lambda_schedule(lambd, step, cfg.lambda_end, decay_steps)
            recorder.advance()
            if step % cfg.eval_every == 0 or step == cfg.online_steps:
                recorder.write(step, {**recorder.means(), **recorder.evaluate(agent.act), "train/lambda": agent.lambd},
                               speed="time/env_steps_per_s")
            if not (terminated or truncated):
                obs = next_obs
                continue
            recorder.write(step, env.end_episode())
            obs = env.reset()
            if step >= next_checkpoint and step < cfg.online_steps:
                next_checkpoint = next_checkpoint_after(step, cfg.checkpoint_every)
                run.save_last(step, recorder, agent=agent, buffer=buffer, noise_rng=noise_rng.bit_generator.state,
                              episode=env.episode, next_checkpoint=next_checkpoint)
        path = run.finish(agent, step, recorder)
    finally:
        recorder.close()
        env.close()
    print(f"wrote {path}")
    return path


if __name__ == "__main__":
    cli(main)
