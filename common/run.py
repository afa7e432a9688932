"""The run: what every training loop needs and no algorithm owns, as small helpers the algorithms' scripts call.

- `start_run(cfg, algo, phase)` -> `Run`: the algorithm checked against its contract (common/algorithm.py), threads,
  seeds, device, dataset, env check, the run folder (common/run_folder.py: refused when it holds another run's
  files, locked, checked writable) and its config.yaml, and last.pt of a killed run of the same config and data.
  `run.restore(...)`, `run.save_last(...)` and `run.finish(...)` read and write the run's checkpoints.
  The online phase starts with common.online.start_online_run, whose `run.env` carries the online resume state.
- common/recorder.py: `Recorder`, the run's metrics.jsonl (+ wandb, progress bar), update-metric means and evaluator.

A re-run of a killed command continues from last.pt and ends with the same metrics.jsonl as an uninterrupted run.
"""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from common import layout, run_folder
from common.algorithm import check_algorithm
from common.checkpoint import remove_temporaries, save_checkpoint
from common.config import BaseConfig, save_config
from common.datasets import Dataset, dataset_fingerprint, load_dataset
from common.envs import check_env_matches
from common.evaluation import EVAL_SEED_OFFSET
from common.utils import resolve_device, seed_everything, set_threads, set_torch_rng_state, torch_rng_state

if TYPE_CHECKING:
    from common.online import OnlineEnv
    from common.recorder import Recorder


def _now() -> float:
    """The clock of a run's wall time (a test replaces it)."""
    return time.monotonic()


@dataclasses.dataclass
class Run:
    cfg: BaseConfig
    algo: str
    module: str  # the package (= algo) whose agent.agent_from_checkpoint rebuilds this run's agent
    phase: str  # offline | online
    run_dir: Path
    device: torch.device
    dataset: Dataset
    env_id: str
    max_action: float
    resume: dict[str, Any] | None  # the last.pt payload when continuing a killed run
    dataset_fingerprint: str = ""
    lock: Any = None  # the open .lock file: the exclusive lock on the folder, held while the run lives
    started_at: float = dataclasses.field(default_factory=lambda: _now())  # this segment's start
    env: "OnlineEnv | None" = None  # online runs (common.online.start_online_run): env + online resume state

    def wall_s(self) -> float:
        """Wall seconds of the whole run so far: the earlier segments' time up to their last checkpoint (recorded in
        last.pt) plus this segment's. Work a kill threw away after a checkpoint is not counted twice."""
        before = float((self.resume or {}).get("wall_s") or 0.0)
        return before + _now() - self.started_at

    @property
    def checkpoint_dir(self) -> Path:
        return self.run_dir / layout.CHECKPOINTS

    def payload(self, **parts) -> dict[str, Any]:
        return {"algo": self.algo, "module": self.module, "phase": self.phase, "config": dataclasses.asdict(self.cfg),
                "env_id": self.env_id, "dataset": self.dataset.name, "dataset_fingerprint": self.dataset_fingerprint,
                **parts}

    def restore(self, **objects) -> int:
        """Loads each object's state from last.pt (key = the keyword) and the RNG states; returns the step."""
        for name, obj in objects.items():
            obj.load_state_dict(self.resume[name])
        set_torch_rng_state(self.resume["rng"])
        return int(self.resume["step"])

    def save_last(self, step: int, recorder: "Recorder", **state) -> None:
        """checkpoints/last.pt: objects with a state_dict() by their keyword, plain values as they are (and an online
        run's env state: common.online.OnlineEnv.state_dict)."""
        parts = {k: v.state_dict() if hasattr(v, "state_dict") else v for k, v in state.items()}
        if self.env is not None:
            parts.update(self.env.state_dict())
        save_checkpoint(layout.checkpoint_path(self.run_dir, "last"), self.payload(
            kind="resume", step=step, rng=torch_rng_state(), wall_s=self.wall_s(), **recorder.state_dict(), **parts))

    def finish(self, agent, step: int, recorder: "Recorder") -> Path:
        """Writes checkpoints/<phase>.pt, drops last.pt (the run is complete) and renders the video if asked."""
        final = save_checkpoint(layout.checkpoint_path(self.run_dir, self.phase), self.payload(
            kind="agent", step=step, agent=agent.state_dict(), logger_offset=recorder.logger.offset(),
            wall_s=self.wall_s()))
        layout.checkpoint_path(self.run_dir, "last").unlink(missing_ok=True)
        remove_temporaries(self.checkpoint_dir)
        video = render_video(self, agent) if self.cfg.video else None
        recorder.logger.log_final(final, video, recorder.logger.last_score)
        return final

    def release(self) -> None:
        """Gives the folder's lock back (the OS does it too when the process ends, even on kill -9)."""
        if self.lock is not None:
            self.lock.close()
            self.lock = None


def start_run(cfg: BaseConfig, algo: str, phase: str, *, run_dir: Path | None = None,
              extra_config: dict[str, Any] | None = None) -> Run:
    """The algorithm's contract, threads, seeds, device, dataset, env check, the run folder (checked, locked,
    writable); picks up last.pt of a killed run of the same config and data."""
    check_algorithm(algo, cfg)
    set_threads(cfg.threads)
    seed_everything(cfg.seed)
    device = resolve_device(cfg.device)
    dataset = load_dataset(cfg.dataset)
    env_id = cfg.env or dataset.env_id
    cfg.resolve(env_id, dataset.name)
    _, _, max_action = check_env_matches(env_id, dataset.obs_dim, dataset.act_dim, f"dataset {dataset.name}")
    run_dir = Path(cfg.run_dir) if cfg.run_dir else (run_dir or layout.default_run_dir(algo, dataset.name, cfg.seed, phase))
    run_folder.refuse_foreign_contents(run_dir, algo, phase, cfg, env_id)  # before anything is written there
    lock = run_folder.lock(run_dir)
    try:
        run_folder.refuse_foreign_contents(run_dir, algo, phase, cfg, env_id, announce=True)  # again: no one else writes now
        run_folder.check_writable(run_dir)
        remove_temporaries(run_dir / layout.CHECKPOINTS)  # left by a kill during a checkpoint write
        fingerprint = dataset_fingerprint(dataset)
        resume = run_folder.resume_payload(run_dir, algo, phase, cfg, fingerprint)
        cfg.run_dir = str(run_dir)
        save_config(cfg, run_dir / "config.yaml",
                    extra={"env": env_id, "algo": algo, "phase": phase, **(extra_config or {})})
    except BaseException:
        lock.close()
        raise
    return Run(cfg, algo, algo, phase, run_dir, device, dataset, env_id, max_action, resume, fingerprint,
               lock)


def render_video(run: Run, agent) -> Path | None:
    """The finished policy's episode as <run_dir>/video.mp4 (config key `video`); the run's results are
    already saved, so a machine without offscreen OpenGL gets a message instead of a failed run."""
    path = run.run_dir / "video.mp4"
    try:
        from common.video import render_episode

        info = render_episode(agent.act, run.env_id, path, seed=run.cfg.seed + EVAL_SEED_OFFSET)
    except Exception as exc:  # noqa: BLE001 - any GL/ffmpeg failure
        from common.gl import INSTALL_HINT

        hint = "" if INSTALL_HINT in str(exc) else f" To render: {INSTALL_HINT}."
        print(f"video not rendered ({type(exc).__name__}: {exc}).{hint}")
        return None
    score = float(run.dataset.normalized_score(info["return"]))
    print(f"wrote {path}: return {info['return']:.1f}, normalized score {score:.1f}, {info['length']} steps")
    return path
