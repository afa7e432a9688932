"""What every training loop needs and no algorithm owns, as small helpers the algorithms' scripts call:

- `start_run(cfg, ...)` -> `Run`: threads, seeds, device, dataset, env check, the run folder and its config.yaml.
  A run folder belongs to one run: it is locked for the life of the process, a folder holding a finished run,
  another phase's or algorithm's run or foreign results is refused, and `checkpoints/last.pt` of a killed run is
  picked up only with the same config and data.
  `run.restore(...)`, `run.save_last(...)` and `run.finish(...)` read and write the run's checkpoints.
- `Recorder`: metrics.jsonl (+ wandb, progress bar), the means of the update metrics since the last record
  (a non-finite value stops the run) and the deterministic evaluator.
- `OnlineEnv`: the online environment, each training episode reset with its own seed (so no env state is
  checkpointed), with the episode's return and length.

A re-run of a killed command continues from last.pt and ends with the same metrics.jsonl as an uninterrupted run.
"""
from __future__ import annotations

import dataclasses
import fcntl
import math
import os
import re
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from common import layout
from common.checkpoint import CheckpointError, load_checkpoint, remove_temporaries, save_checkpoint
from common.config import BaseConfig, save_config
from common.datasets import Dataset, dataset_fingerprint, load_dataset
from common.envs import check_env_matches, make_env
from common.errors import RunError
from common.evaluation import EvalResult, Evaluator
from common.logging import RunLogger
from common.utils import resolve_device, seed_everything, set_threads, set_torch_rng_state, torch_rng_state

EVAL_SEED_OFFSET = 1_000_000  # evaluation episodes never share seeds with training episodes


class RunExistsError(RunError, RuntimeError):
    """The run folder holds something this run must not overwrite, or is in use by another process."""


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
        """checkpoints/last.pt: objects with a state_dict() by their keyword, plain values as they are."""
        parts = {k: v.state_dict() if hasattr(v, "state_dict") else v for k, v in state.items()}
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


def _refuse_foreign_contents(run_dir: Path, algo: str, phase: str, cfg: BaseConfig, env_id: str,
                             announce: bool = False) -> None:
    """A run folder belongs to one run: refuse one holding another phase's or algorithm's run, finished results,
    or results this code did not start there (e.g. committed results: config.yaml + metrics.jsonl, no checkpoint)."""
    if run_dir.exists() and not run_dir.is_dir():
        raise RunExistsError(f"run_dir {run_dir} is a file, not a folder; choose another --run_dir")
    if not run_dir.is_dir():
        return
    final = layout.checkpoint_path(run_dir, phase)
    if final.exists():
        raise RunExistsError(
            f"{run_dir} holds a finished {phase} run ({final}); it is not overwritten. "
            "Choose another --run_dir, or delete that folder to start over.")
    for other in layout.PHASES:
        if other != phase and layout.checkpoint_path(run_dir, other).exists():
            raise RunExistsError(
                f"{run_dir} holds a finished {other} run ({layout.checkpoint_path(run_dir, other)}); a run folder "
                f"belongs to one run: choose another --run_dir for this {phase} run")
    if (run_dir / "config.yaml").is_file():
        saved = layout.read_config(run_dir)
        if (saved.get("algo"), saved.get("phase")) != (algo, phase):
            raise RunExistsError(
                f"{run_dir} holds a {saved.get('algo')} {saved.get('phase')} run (its config.yaml); a run folder "
                f"belongs to one run: choose another --run_dir for this {algo} {phase} run")
    results = [name for name in ("config.yaml", "metrics.jsonl") if (run_dir / name).exists()]
    if results and not layout.checkpoint_path(run_dir, "last").exists():
        started_for = _lock_folder(run_dir)
        if not (run_dir / LOCK_FILE).exists() or (started_for is not None and started_for != run_dir.resolve()):
            # not started here by this code: committed results, or a run's folder copied here from elsewhere
            raise RunExistsError(
                f"{run_dir} holds results ({', '.join(results)}) without a checkpoint to resume from"
                + (f" (copied from {started_for})" if started_for is not None and started_for != run_dir.resolve()
                   else "") + "; they are not overwritten. Choose another --run_dir.")
        saved = {k: v for k, v in layout.read_config(run_dir).items() if k in _compared_keys(cfg)}
        now = {k: v for k, v in {**dataclasses.asdict(cfg), "env": env_id}.items() if k in _compared_keys(cfg)}
        if saved != now:
            changed = sorted(k for k in now if saved.get(k) != now[k])
            raise RunExistsError(
                f"{run_dir} holds the start of a run with a different config ({', '.join(changed)} differ) that "
                "wrote no checkpoint yet; rerun with those settings, or choose another --run_dir")
        if announce:
            print(f"restarting {run_dir}: the run there was stopped before its first checkpoint")


# Keys that change neither the data nor the arithmetic: a run may continue with other values (threads changes the
# speed, the wandb keys only where the records are mirrored, variant only the label).
UNCOMPARED_KEYS = {"run_dir", "threads", "variant", "wandb_mode", "wandb_project", "wandb_group"}


def _compared_keys(cfg: BaseConfig) -> set[str]:
    """Config keys that must match to continue a run."""
    return {f.name for f in dataclasses.fields(cfg)} - UNCOMPARED_KEYS


LOCK_FILE = ".lock"


def _lock_folder(run_dir: Path) -> Path | None:
    """The folder the run that left <run_dir>/.lock was started for (None: no lock, or one written before the lock
    recorded it): a different one means the folder was copied here."""
    try:
        line = (run_dir / LOCK_FILE).read_text().strip()
    except OSError:
        return None
    found = re.search(r"\) for (/.+)$", line)
    return Path(found.group(1)) if found else None


def _lock(run_dir: Path):
    """An exclusive lock on <run_dir>/.lock for the life of the process (the OS drops it when the process dies)."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        handle = open(run_dir / LOCK_FILE, "a+")
    except OSError as exc:
        raise RunExistsError(f"cannot use {run_dir} as the run folder: {exc.strerror or exc}") from None
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        holder = ""
        for _ in range(40):  # the holder writes its line right after it takes the lock: give it up to 2 s to appear
            handle.seek(0)
            holder = handle.read().strip()
            if holder:
                break
            time.sleep(0.05)
        handle.close()
        holder = holder or "another process"
        raise RunExistsError(f"{run_dir} is in use by {holder}; two processes never share a run folder: wait for it "
                             "to end, or choose another --run_dir") from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"process {os.getpid()} (started {time.strftime('%Y-%m-%d %H:%M:%S')}) for {run_dir.resolve()}\n")
    handle.flush()
    return handle


def _check_writable(run_dir: Path) -> None:
    """Found now rather than at the first checkpoint, 50,000 updates in."""
    for folder in (run_dir, run_dir / layout.CHECKPOINTS):
        try:
            folder.mkdir(parents=True, exist_ok=True)
            fd, probe = tempfile.mkstemp(prefix=".write-test.", dir=folder)
            os.close(fd)
            os.unlink(probe)
        except OSError as exc:
            raise RunExistsError(f"cannot write in {folder} ({exc.strerror or exc}); the run needs to write its "
                                 "config, metrics and checkpoints there: fix the permissions or choose another "
                                 "--run_dir") from None


def start_run(cfg: BaseConfig, algo: str, phase: str, *, run_dir: Path | None = None,
              extra_config: dict[str, Any] | None = None, dataset: Dataset | None = None) -> Run:
    """Threads, seeds, device, dataset, env check, the run folder (checked, locked, writable); picks up last.pt of
    a killed run of the same config and data."""
    set_threads(cfg.threads)
    seed_everything(cfg.seed)
    device = resolve_device(cfg.device)
    dataset = dataset if dataset is not None else load_dataset(cfg.dataset)
    env_id = cfg.env or dataset.env_id
    _, _, max_action = check_env_matches(env_id, dataset.obs_dim, dataset.act_dim, f"dataset {dataset.name}")
    run_dir = Path(cfg.run_dir) if cfg.run_dir else (run_dir or layout.default_run_dir(algo, dataset.name, cfg.seed, phase))
    _refuse_foreign_contents(run_dir, algo, phase, cfg, env_id)  # before anything is written there
    lock = _lock(run_dir)
    try:
        _refuse_foreign_contents(run_dir, algo, phase, cfg, env_id, announce=True)  # again: no one else writes now
        _check_writable(run_dir)
        remove_temporaries(run_dir / layout.CHECKPOINTS)  # left by a kill during a checkpoint write
        fingerprint = dataset_fingerprint(dataset)
        resume = _resume_payload(run_dir, algo, phase, cfg, fingerprint)
        cfg.run_dir = str(run_dir)
        save_config(cfg, run_dir / "config.yaml",
                    extra={"env": env_id, "algo": algo, "phase": phase, **(extra_config or {})})
    except BaseException:
        lock.close()
        raise
    return Run(cfg, algo, algo, phase, run_dir, device, dataset, env_id, max_action, resume, fingerprint,
               lock)


def _resume_payload(run_dir: Path, algo: str, phase: str, cfg: BaseConfig, fingerprint: str) -> dict | None:
    last = layout.checkpoint_path(run_dir, "last")
    if not last.exists():
        return None
    resume = load_checkpoint(last, algo=algo)
    if resume.get("phase") != phase:
        raise CheckpointError(f"{last} belongs to the {resume.get('phase')} phase, not {phase}")
    keys = _compared_keys(cfg)
    saved = {k: v for k, v in resume["config"].items() if k in keys}
    now = {k: v for k, v in dataclasses.asdict(cfg).items() if k in keys}
    changed = {k for k in now if saved.get(k) != now[k]}
    if changed:
        raise RunExistsError(
            f"{run_dir} holds an unfinished run with a different config ({', '.join(sorted(changed))} differ); "
            "rerun with the same settings to resume, or choose another --run_dir")
    metrics = run_dir / "metrics.jsonl"
    size, expected = (metrics.stat().st_size if metrics.is_file() else 0), int(resume.get("logger_offset") or 0)
    if size < expected:  # e.g. a power cut after last.pt was written but before the records reached the disk
        raise RunExistsError(
            f"{metrics} holds {size} bytes but its checkpoint {last.name} was written after {expected}: records the "
            "run had written are gone, and resuming would leave a hole. Restore metrics.jsonl from a copy, or start "
            "the run again in another --run_dir (this folder is left as it is)")
    saved_data = resume.get("dataset_fingerprint")
    if saved_data and saved_data != fingerprint:
        raise RunExistsError(
            f"{run_dir} holds an unfinished run trained on different data: its dataset {cfg.dataset} was "
            f"{saved_data} and is now {fingerprint}; resuming would mix the two. Restore the data, or choose "
            "another --run_dir")
    if resume["config"].get("threads") != cfg.threads:
        print(f"resuming with threads={cfg.threads} (the run used {resume['config'].get('threads')}): the results "
              "stay valid, though not bit-identical to an uninterrupted run")
    print(f"resuming {run_dir} from step {resume['step']} ({last})")
    return resume


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


class Recorder:
    """metrics.jsonl + wandb + progress bar, the means of the update metrics since the last record, and the
    deterministic evaluator of the run's env (its episodes use seeds seed + 1,000,000 + i, the same every time).

    `add(metrics)` after each update; `write(step, metrics)` a record; `means()` the train/ means since the last
    call (each metric averaged over the updates that returned it); `evaluate(policy)` the eval/ metrics.
    """

    def __init__(self, run: Run, total: int, start_step: int):
        self.run = run
        resume = run.resume
        self.logger = RunLogger(run.run_dir, run.phase, total, dataclasses.asdict(run.cfg), run.algo,
                                resume_offset=resume["logger_offset"] if resume else None, start_step=start_step)
        self.evaluator = Evaluator(run.env_id, run.cfg.eval_episodes,
                                   (run.dataset.ref_min_return, run.dataset.ref_max_return))
        self.sums: dict[str, float] = dict(resume["tracker"]["sums"]) if resume else {}
        self.counts: dict[str, int] = {k: int(v) for k, v in resume["tracker"]["counts"].items()} if resume else {}
        self._t0, self._t_steps = time.perf_counter(), start_step

    def add(self, metrics: dict[str, float], step: int, stage: str = "") -> None:
        for key, value in metrics.items():
            if not math.isfinite(value):
                raise FloatingPointError(
                    f"{key} became {value} at {stage or self.run.phase} step {step}: training diverged. The "
                    "checkpoints written so far are kept; lower the learning rate or check the dataset for extreme "
                    "values.")
            self.sums[key] = self.sums.get(key, 0.0) + value
            self.counts[key] = self.counts.get(key, 0) + 1

    def advance(self) -> None:
        """One step (update offline, env step online) done: moves the progress bar."""
        self.logger.advance()

    def means(self) -> dict[str, float]:
        means = {f"train/{k}": v / self.counts[k] for k, v in self.sums.items()}
        self.sums, self.counts = {}, {}
        return means

    def evaluate_result(self, policy) -> EvalResult:
        return self.evaluator.run(policy, self.run.cfg.seed + EVAL_SEED_OFFSET)

    def evaluate(self, policy) -> dict[str, float]:
        return self.evaluate_result(policy).metrics()

    def write(self, step: int, metrics: dict[str, float], speed: str | None = None) -> None:
        """One record; `speed` names a wall-clock rate (steps since the last timed record per second) that goes to
        wandb and the bar only, so identical runs write identical files."""
        unlogged = None
        if speed:
            unlogged = {speed: (step - self._t_steps) / max(time.perf_counter() - self._t0, 1e-9)}
        self.logger.log(step, metrics, unlogged=unlogged)
        if speed:
            self._t0, self._t_steps = time.perf_counter(), step

    def state_dict(self) -> dict:
        return {"logger_offset": self.logger.offset(), "tracker": {"sums": dict(self.sums), "counts": dict(self.counts)}}

    def close(self) -> None:
        """Closes the log and the evaluator and gives the run folder's lock back."""
        self.logger.close()
        self.evaluator.close()
        self.run.release()


def episode_seed(seed: int, episode: int) -> int:
    """Each training episode resets with its own seed, so no env state needs checkpointing."""
    return int(np.random.SeedSequence([seed, episode]).generate_state(1)[0])


class OnlineEnv:
    """The online training env: episode k resets with episode_seed(seed, k); tracks the episode's return/length.
    Time-limit truncation ends an episode but is not a terminal (the caller stores `terminated` only)."""

    def __init__(self, run: Run, episode: int = 0):
        self.env = make_env(run.env_id, seed=run.cfg.seed)
        self.seed, self.episode, self.dataset = run.cfg.seed, episode, run.dataset
        self.episode_return, self.episode_length = 0.0, 0

    def reset(self) -> np.ndarray:
        obs, _ = self.env.reset(seed=episode_seed(self.seed, self.episode))
        self.episode_return, self.episode_length = 0.0, 0
        return obs

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool]:
        next_obs, reward, terminated, truncated, _ = self.env.step(action)
        self.episode_return += float(reward)
        self.episode_length += 1
        return next_obs, float(reward), bool(terminated), bool(truncated)

    def end_episode(self) -> dict[str, float]:
        """The finished episode's record (return, length, normalized score); the next reset starts a new one."""
        record = {"online/episode_return": self.episode_return, "online/episode_length": float(self.episode_length),
                  "online/episode_normalized_score": float(self.dataset.normalized_score(self.episode_return))}
        self.episode += 1
        return record

    def close(self) -> None:
        self.env.close()


def explore(action: np.ndarray, rng: np.random.Generator, std: float, max_action: float) -> np.ndarray:
    """Gaussian exploration noise (std × max_action), clipped to the action bounds, as float32."""
    if std > 0:
        action = action + rng.normal(0.0, std * max_action, action.shape[-1])
    return np.clip(action, -max_action, max_action).astype(np.float32)


def next_checkpoint_after(step: int, every: int) -> int:
    return (step // every + 1) * every
