"""SPOT offline pretraining: fit the behaviour VAE, then train TD3 with the VAE's density penalty.

  python -m spot.train_offline --config configs/spot/hopper-medium.yaml [--key value ...]

One loop over vae_steps + offline_steps updates (the logged `step` counts both stages): sample a batch from
all of the data → a VAE update while in the VAE stage (at its end the VAE is frozen and written alone to
checkpoints/vae.pt with its state normalizer), else a SPOT update → record the metrics → every eval_every
steps write a record (evaluated in the policy stage) → every checkpoint_every steps write last.pt, so a killed
run resumes in either stage. `--vae_checkpoint PATH` reuses a vae.pt and skips the VAE stage.
"""
from __future__ import annotations

from pathlib import Path

from common.buffer import ReplayBuffer
from common.checkpoint import save_checkpoint
from common.config import parse_config
from common.errors import cli
from common.layout import checkpoint_path
from common.normalizer import ObsNormalizer
from common.recorder import Recorder
from common.run import start_run
from spot.agent import ALGO, Config, SpotAgent, VaeTrainer, load_vae_checkpoint, vae_checkpoint_payload


def main(argv=None) -> Path:
    cfg, _ = parse_config(Config, argv, "SPOT offline pretraining (VAE, then TD3 with the support constraint)")
    run = start_run(cfg, ALGO, "offline")  # resolves a null λ from the environment (Config.resolve)
    dataset = run.dataset
    print(f"SPOT offline: {dataset.name} ({len(dataset)} transitions), env {run.env_id}, "
          f"lambda {cfg.lambd}, run dir {run.run_dir}")
    normalizer = ObsNormalizer.for_dataset(dataset, cfg.normalize_states, run.device)
    agent = SpotAgent(dataset.obs_dim, dataset.act_dim, run.max_action, cfg, run.device, normalizer)
    vae_steps = 0 if cfg.vae_checkpoint else cfg.vae_steps
    if cfg.vae_checkpoint:
        load_vae_checkpoint(cfg.vae_checkpoint, agent)
        print(f"reusing the VAE of {cfg.vae_checkpoint}; VAE stage skipped")
    vae_trainer = VaeTrainer(agent.vae, normalizer, cfg.vae_lr, cfg.beta, total_steps=vae_steps)
    buffer = ReplayBuffer.from_dataset(dataset, online_capacity=0, device=run.device, seed=cfg.seed)
    step = run.restore(agent=agent, vae_trainer=vae_trainer, buffer=buffer) if run.resume else 0

    total = vae_steps + cfg.offline_steps
    recorder = Recorder(run, total=total, start_step=step, checks=[agent.check_divergence])
    try:
        while step < total:
            if step < vae_steps:
                recorder.add(vae_trainer.update(buffer.sample(cfg.batch_size)), step, "vae")
            else:
                recorder.add(agent.update(buffer.sample(cfg.batch_size)), step, "policy")
            step += 1
            recorder.advance()
            if step == vae_steps:  # the VAE is done (and frozen): keep it on its own for reuse
                save_checkpoint(checkpoint_path(run.run_dir, "vae"), run.payload(
                    kind="vae", step=vae_steps, **vae_checkpoint_payload(agent.vae, normalizer, cfg)))
            if step % cfg.eval_every == 0 or step in (vae_steps, total):
                metrics = recorder.means()
                if step > vae_steps:
                    metrics.update(recorder.evaluate(agent.act))
                recorder.write(step, metrics, speed="time/updates_per_s")
            if step % cfg.checkpoint_every == 0 and step < total:
                run.save_last(step, recorder, agent=agent, vae_trainer=vae_trainer, buffer=buffer)
        path = run.finish(agent, step, recorder)
    finally:
        recorder.close()
    print(f"wrote {path}")
    return path


if __name__ == "__main__":
    cli(main)
