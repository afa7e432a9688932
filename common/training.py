"""The offline and online training loops both algorithms run, written once.

An agent provides `update(batch) -> dict[str, float]`, `act(obs) -> actions` (deterministic, batched,
normalization inside), `state_dict()` and `load_state_dict()`. The loops own evaluation, logging,
checkpointing and resuming: re-running a killed command with the same run_dir continues from
`checkpoints/last.pt` and ends with the same metrics.jsonl as an uninterrupted run.
"""
from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from common.buffer import ReplayBuffer
from common.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from common.config import BaseConfig, save_config
from common.datasets import Dataset, load_dataset
from common.envs import check_env_matches, make_env
from common.evaluation import EvalResult, Evaluator
from common.logging import RunLogger
from common.utils import resolve_device, seed_everything, set_threads, set_torch_rng_state, torch_rng_state

EVAL_SEED_OFFSET = 1_000_000  # evaluation episodes never share seeds with training episodes


class RunExistsError(RuntimeError):
    pass


@dataclasses.dataclass
class Run:
    cfg: BaseConfig
    algo: str
    phase: str  # offline | online
    run_dir: Path
    device: torch.device
    dataset: Dataset
    env_id: str
    max_action: float
    resume: dict[str, Any] | None  # the last.pt payload when continuing a killed run

    @property
    def checkpoint_dir(self) -> Path:
        return self.run_dir / "checkpoints"

    def payload(self, **parts) -> dict[str, Any]:
        return {"algo": self.algo, "phase": self.phase, "config": dataclasses.asdict(self.cfg),
                "env_id": self.env_id, "dataset": self.dataset.name, **parts}


def default_run_dir(cfg: BaseConfig, algo: str, dataset_name: str, phase: str) -> Path:
    safe = dataset_name.replace("/", "_").replace(":", "_")
    return Path("runs") / algo / safe / f"seed{cfg.seed}" / phase


def online_run_dir_for(offline_run_dir: Path) -> Path:
    """runs/.../offline -> runs/.../online; any other name gets an '-online' suffix."""
    if offline_run_dir.name == "offline":
        return offline_run_dir.with_name("online")
    return offline_run_dir.with_name(offline_run_dir.name + "-online")


def start_run(cfg: BaseConfig, algo: str, phase: str, run_dir: Path | None = None,
              extra_config: dict[str, Any] | None = None, dataset: Dataset | None = None) -> Run:
    """Threads, seeds, device, dataset, env check, run folder; picks up last.pt of a killed run."""
    set_threads(cfg.threads)
    seed_everything(cfg.seed)
    device = resolve_device(cfg.device)
    dataset = dataset if dataset is not None else load_dataset(cfg.dataset)
    env_id = cfg.env or dataset.env_id
    _, _, max_action = check_env_matches(env_id, dataset.obs_dim, dataset.act_dim, f"dataset {dataset.name}")
    run_dir = Path(cfg.run_dir) if cfg.run_dir else (run_dir or default_run_dir(cfg, algo, dataset.name, phase))
    final = run_dir / "checkpoints" / f"{phase}.pt"
    if final.exists():
        raise RunExistsError(
            f"{run_dir} holds a finished {phase} run ({final}); it is not overwritten. "
            "Choose another --run_dir, or delete that folder to start over.")
    last = run_dir / "checkpoints" / "last.pt"
    resume = None
    if last.exists():
        resume = load_checkpoint(last, algo=algo)
        if resume.get("phase") != phase:
            raise CheckpointError(f"{last} belongs to the {resume.get('phase')} phase, not {phase}")
        saved = {k: v for k, v in resume["config"].items() if k != "run_dir"}
        now = {k: v for k, v in dataclasses.asdict(cfg).items() if k != "run_dir"}
        changed = {k for k in now if saved.get(k) != now[k]}
        if changed:
            raise RunExistsError(
                f"{run_dir} holds an unfinished run with a different config ({', '.join(sorted(changed))} differ); "
                "rerun with the same settings to resume, or choose another --run_dir")
        print(f"resuming {run_dir} from step {resume['step']} ({last})")
    cfg.run_dir = str(run_dir)
    save_config(cfg, run_dir / "config.yaml",
                extra={"env": env_id, "algo": algo, "phase": phase, **(extra_config or {})})
    return Run(cfg, algo, phase, run_dir, device, dataset, env_id, max_action, resume)


def render_video(run: Run, agent) -> Path | None:
    """The finished policy's episode as <run_dir>/video.mp4 (config key `video`); the run's results are
    already saved, so a machine without offscreen OpenGL gets a message instead of a failed run."""
    path = run.run_dir / "video.mp4"
    try:
        from common.video import render_episode

        info = render_episode(agent.act, run.env_id, path, seed=run.cfg.seed + EVAL_SEED_OFFSET)
    except Exception as exc:  # noqa: BLE001 - any GL/ffmpeg failure
        print(f"video not rendered ({type(exc).__name__}: {exc}). Offscreen MuJoCo needs MUJOCO_GL=egl "
              "(libegl1) or MUJOCO_GL=osmesa (libosmesa6).")
        return None
    score = float(run.dataset.normalized_score(info["return"]))
    print(f"wrote {path}: return {info['return']:.1f}, normalized score {score:.1f}, {info['length']} steps")
    return path


def _finish(run: Run, agent, step: int, logger: RunLogger, extra: dict | None = None) -> Path:
    """Writes checkpoints/<phase>.pt, drops last.pt (the run is complete) and renders the video if asked."""
    final = save_checkpoint(run.checkpoint_dir / f"{run.phase}.pt", run.payload(
        kind="agent", step=step, agent=agent.state_dict(), logger_offset=logger.offset(), **(extra or {})))
    (run.checkpoint_dir / "last.pt").unlink(missing_ok=True)
    if run.cfg.video:
        render_video(run, agent)
    return final


class _MeanTracker:
    """Means of the update metrics since the last evaluation; raises on a non-finite value.

    Each metric is averaged over the updates that returned it (actor metrics come every policy_delay)."""

    def __init__(self):
        self.sums: dict[str, float] = {}
        self.counts: dict[str, int] = {}

    def add(self, metrics: dict[str, float], step: int, stage: str) -> None:
        for key, value in metrics.items():
            if not math.isfinite(value):
                raise FloatingPointError(
                    f"{key} became {value} at {stage} step {step}: training diverged. The checkpoints written so "
                    "far are kept; lower the learning rate or check the dataset for extreme values.")
            self.sums[key] = self.sums.get(key, 0.0) + value
            self.counts[key] = self.counts.get(key, 0) + 1

    def state_dict(self) -> dict:
        return {"sums": dict(self.sums), "counts": dict(self.counts)}

    def load_state_dict(self, state: dict) -> None:
        self.sums, self.counts = dict(state["sums"]), {k: int(v) for k, v in state["counts"].items()}

    def pop(self) -> dict[str, float]:
        means = {f"train/{k}": v / self.counts[k] for k, v in self.sums.items()}
        self.sums, self.counts = {}, {}
        return means


def _logger(run: Run, total: int, start_step: int) -> RunLogger:
    offset = run.resume["logger_offset"] if run.resume else None
    return RunLogger(run.run_dir, run.phase, total, dataclasses.asdict(run.cfg), run.algo,
                     resume_offset=offset, start_step=start_step)


def train_offline(run: Run, agent, buffer: ReplayBuffer, stages: list[tuple[str, int, Any, bool]],
                  final_extra: Callable[[], dict] | None = None) -> Path:
    """Runs the offline stages in order and writes checkpoints/offline.pt.

    stages: (name, steps, updater, evaluate). `updater.update(batch)` is called `steps` times; e.g.
    spot's ("vae", vae_steps, vae_trainer, False) then ("policy", offline_steps, agent, True). Steps and
    the logged `step` count across all stages. Checkpoints every `checkpoint_every` steps hold the agent
    (all networks), each other updater's state (e.g. the VAE optimizer), the buffer's sampler, RNG
    states and the metrics.jsonl offset.
    """
    cfg = run.cfg
    total = sum(steps for _, steps, _, _ in stages)
    updaters = {name: updater for name, _, updater, _ in stages if updater is not agent}
    resume = run.resume
    step = 0
    if resume:
        agent.load_state_dict(resume["agent"])
        for name, updater in updaters.items():
            updater.load_state_dict(resume["updaters"][name])
        buffer.load_state_dict(resume["buffer"])
        set_torch_rng_state(resume["rng"])
        step = int(resume["step"])
    logger = _logger(run, total, step)
    evaluator = Evaluator(run.env_id, cfg.eval_episodes, (run.dataset.ref_min_return, run.dataset.ref_max_return))
    tracker = _MeanTracker()
    if resume:
        tracker.load_state_dict(resume["tracker"])
    t0, t_steps = time.perf_counter(), step
    try:
        begin = 0
        for name, steps, updater, do_eval in stages:
            end = begin + steps
            while step < end:
                tracker.add(updater.update(buffer.sample(cfg.batch_size)), step, name)
                step += 1
                logger.advance()
                if step % cfg.eval_every == 0 or step == end:
                    metrics = tracker.pop()
                    speed = {"time/updates_per_s": (step - t_steps) / max(time.perf_counter() - t0, 1e-9)}
                    if do_eval:
                        metrics.update(evaluator.run(agent.act, cfg.seed + EVAL_SEED_OFFSET).metrics())
                    logger.log(step, metrics, unlogged=speed)
                    t0, t_steps = time.perf_counter(), step
                if step % cfg.checkpoint_every == 0 and step < total:
                    save_checkpoint(run.checkpoint_dir / "last.pt", run.payload(
                        kind="resume", stage=name, step=step, agent=agent.state_dict(),
                        updaters={n: u.state_dict() for n, u in updaters.items()}, buffer=buffer.state_dict(),
                        rng=torch_rng_state(), logger_offset=logger.offset(), tracker=tracker.state_dict()))
            begin = end
        return _finish(run, agent, step, logger, final_extra() if final_extra else {})
    finally:
        logger.close()
        evaluator.close()


@dataclasses.dataclass
class OnlineHooks:
    """Algorithm-specific parts of the online loop."""

    on_start: Callable[[EvalResult], dict[str, float]] | None = None  # fresh start, given the step-0 evaluation
    before_step: Callable[[int], None] | None = None  # e.g. spot's lambda schedule
    on_episode_end: Callable[[float, int], dict[str, float]] | None = None  # (return, length) -> metrics
    on_eval: Callable[[int], dict[str, float]] | None = None  # extra metrics in each eval record
    state: Callable[[], dict] | None = None  # extra state to checkpoint (e.g. the alpha controller)
    load_state: Callable[[dict], None] | None = None


def episode_seed(seed: int, episode: int) -> int:
    """Each training episode resets with its own seed, so no env state needs checkpointing."""
    return int(np.random.SeedSequence([seed, episode]).generate_state(1)[0])


def train_online(run: Run, agent, buffer: ReplayBuffer, *, updates_per_step: int, exploration_std: float,
                 hooks: OnlineHooks | None = None) -> Path:
    """Interacts for `online_steps` env steps with `updates_per_step` updates after each; writes online.pt.

    `last.pt` is written at the first episode end after each `checkpoint_every` steps, so a resumed run
    starts a fresh episode exactly where the uninterrupted one did.
    """
    cfg, hooks = run.cfg, hooks or OnlineHooks()
    env = make_env(run.env_id, seed=cfg.seed)
    evaluator = Evaluator(run.env_id, cfg.eval_episodes, (run.dataset.ref_min_return, run.dataset.ref_max_return))
    noise_rng = np.random.default_rng(cfg.seed)
    act_dim = run.dataset.act_dim
    step, episode, next_checkpoint = 0, 0, cfg.checkpoint_every
    resume = run.resume
    if resume:
        agent.load_state_dict(resume["agent"])
        buffer.load_state_dict(resume["buffer"])
        set_torch_rng_state(resume["rng"])
        noise_rng.bit_generator.state = resume["noise_rng"]
        step, episode, next_checkpoint = int(resume["step"]), int(resume["episode"]), int(resume["next_checkpoint"])
        if hooks.load_state:
            hooks.load_state(resume["hooks"])
    logger = _logger(run, cfg.online_steps, step)
    tracker = _MeanTracker()
    if resume:
        tracker.load_state_dict(resume["tracker"])
    try:
        if not resume:
            result = evaluator.run(agent.act, cfg.seed + EVAL_SEED_OFFSET)
            first = result.metrics()
            if hooks.on_start:
                first.update(hooks.on_start(result))
            if hooks.on_eval:
                first.update(hooks.on_eval(0))
            logger.log(0, first)
        obs, _ = env.reset(seed=episode_seed(cfg.seed, episode))
        episode_return, episode_length = 0.0, 0
        t0, t_steps = time.perf_counter(), step
        while step < cfg.online_steps:
            if hooks.before_step:
                hooks.before_step(step)
            action = agent.act(obs[None].astype(np.float32))[0]
            if exploration_std > 0:
                action = action + noise_rng.normal(0.0, exploration_std * run.max_action, act_dim)
            action = np.clip(action, -run.max_action, run.max_action).astype(np.float32)
            next_obs, reward, terminated, truncated, _ = env.step(action)
            buffer.add(obs, action, float(reward), next_obs, bool(terminated))  # truncation is not terminal
            episode_return += float(reward)
            episode_length += 1
            for _ in range(updates_per_step):
                tracker.add(agent.update(buffer.sample(cfg.batch_size)), step, "online")
            step += 1
            logger.advance()
            if step % cfg.eval_every == 0 or step == cfg.online_steps:
                metrics = tracker.pop()
                speed = {"time/env_steps_per_s": (step - t_steps) / max(time.perf_counter() - t0, 1e-9)}
                metrics.update(evaluator.run(agent.act, cfg.seed + EVAL_SEED_OFFSET).metrics())
                if hooks.on_eval:
                    metrics.update(hooks.on_eval(step))
                logger.log(step, metrics, unlogged=speed)
                t0, t_steps = time.perf_counter(), step
            if terminated or truncated:
                record = {"online/episode_return": episode_return, "online/episode_length": float(episode_length),
                          "online/episode_normalized_score": float(run.dataset.normalized_score(episode_return))}
                if hooks.on_episode_end:
                    record.update(hooks.on_episode_end(episode_return, episode_length))
                logger.log(step, record)
                episode += 1
                obs, _ = env.reset(seed=episode_seed(cfg.seed, episode))
                episode_return, episode_length = 0.0, 0
                if step >= next_checkpoint and step < cfg.online_steps:
                    next_checkpoint = (step // cfg.checkpoint_every + 1) * cfg.checkpoint_every
                    save_checkpoint(run.checkpoint_dir / "last.pt", run.payload(
                        kind="resume", step=step, episode=episode, next_checkpoint=next_checkpoint,
                        agent=agent.state_dict(), buffer=buffer.state_dict(), rng=torch_rng_state(),
                        noise_rng=noise_rng.bit_generator.state, logger_offset=logger.offset(),
                        tracker=tracker.state_dict(),
                        hooks=hooks.state() if hooks.state else {}))
            else:
                obs = next_obs
        return _finish(run, agent, step, logger)
    finally:
        logger.close()
        evaluator.close()
        env.close()
