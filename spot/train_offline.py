"""SPOT offline pretraining: fit the behaviour VAE, then train TD3 with the VAE's density penalty.

  python -m spot.train_offline --config configs/spot/hopper-medium.yaml [--key value ...]

Both stages run in one `common.training.train_offline` call ("vae" then "policy"), so a killed run
resumes in either stage. The finished VAE is also written alone to checkpoints/vae.pt (with its state
normalizer); `--vae_checkpoint PATH` reuses such a file and skips the VAE stage.
"""
from __future__ import annotations

from pathlib import Path

from common.buffer import ObsNormalizer, ReplayBuffer
from common.checkpoint import save_checkpoint
from common.config import parse_config
from common.datasets import load_dataset
from common.training import Run, start_run, train_offline
from spot.agent import ALGO, Config, SpotAgent, VaeTrainer, load_vae_checkpoint, resolve_lambda, vae_checkpoint_payload


def make_normalizer(cfg: Config, dataset, device) -> ObsNormalizer:
    if cfg.normalize_states:
        return ObsNormalizer.from_observations(dataset.observations, device=device)
    return ObsNormalizer.identity(dataset.obs_dim, device=device)


def build(run: Run) -> tuple[SpotAgent, list]:
    """The agent and the stages (VAE stage skipped when reusing a VAE). The loop checkpoints the agent
    and the VAE trainer (its optimizer), so a run killed in either stage resumes exactly."""
    cfg, dataset = run.cfg, run.dataset
    normalizer = make_normalizer(cfg, dataset, run.device)
    agent = SpotAgent(dataset.obs_dim, dataset.act_dim, run.max_action, cfg, run.device, normalizer)
    stages = []
    if cfg.vae_checkpoint:
        load_vae_checkpoint(cfg.vae_checkpoint, agent)
        print(f"reusing the VAE of {cfg.vae_checkpoint}; VAE stage skipped")
    else:
        vae_path = run.checkpoint_dir / "vae.pt"

        def write_vae():
            save_checkpoint(vae_path, run.payload(kind="vae", step=cfg.vae_steps,
                                                  **vae_checkpoint_payload(agent.vae, normalizer, cfg)))

        trainer = VaeTrainer(agent.vae, normalizer, cfg.vae_lr, cfg.beta, total_steps=cfg.vae_steps,
                             on_finish=write_vae)
        stages.append(("vae", cfg.vae_steps, trainer, False))
    stages.append(("policy", cfg.offline_steps, agent, True))
    return agent, stages


def main(argv=None) -> Path:
    cfg, _ = parse_config(Config, argv, "SPOT offline pretraining (VAE, then TD3 with the support constraint)")
    dataset = load_dataset(cfg.dataset)
    cfg.lambd = resolve_lambda(cfg.lambd, cfg.env or dataset.env_id, dataset.name)  # the saved config shows λ
    run = start_run(cfg, ALGO, "offline", dataset=dataset)
    print(f"SPOT offline: {run.dataset.name} ({len(run.dataset)} transitions), env {run.env_id}, "
          f"lambda {cfg.lambd}, run dir {run.run_dir}")
    agent, stages = build(run)
    buffer = ReplayBuffer.from_dataset(run.dataset, extra_capacity=0, device=run.device, seed=cfg.seed)
    path = train_offline(run, agent, buffer, stages)
    print(f"wrote {path}")
    return path


if __name__ == "__main__":
    main()
