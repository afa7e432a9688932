"""A run folder belongs to one run: what may be in it before a run starts, its lock, and the checkpoint a killed run
continues from.

- `refuse_foreign_contents`: a folder holding a finished run, another phase's or algorithm's run, or results this
  code did not start there (committed results, a copied folder) is refused and left as it is.
- `lock`: an exclusive lock on <run_dir>/.lock for the life of the process (the OS drops it when the process dies).
- `resume_payload`: checkpoints/last.pt of a killed run, taken only with the same config and data, and only when
  metrics.jsonl still holds every record the checkpoint counted.
"""
from __future__ import annotations

import dataclasses
import fcntl
import os
import re
import tempfile
import time
from pathlib import Path

from common import layout
from common.checkpoint import CheckpointError, load_checkpoint
from common.config import BaseConfig
from common.errors import RunError


class RunExistsError(RunError, RuntimeError):
    """The run folder holds something this run must not overwrite, or is in use by another process."""


def refuse_foreign_contents(run_dir: Path, algo: str, phase: str, cfg: BaseConfig, env_id: str,
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
        started_for = lock_folder(run_dir)
        if not (run_dir / LOCK_FILE).exists() or (started_for is not None and started_for != run_dir.resolve()):
            # not started here by this code: committed results, or a run's folder copied here from elsewhere
            raise RunExistsError(
                f"{run_dir} holds results ({', '.join(results)}) without a checkpoint to resume from"
                + (f" (copied from {started_for})" if started_for is not None and started_for != run_dir.resolve()
                   else "") + "; they are not overwritten. Choose another --run_dir.")
        saved = {k: v for k, v in layout.read_config(run_dir).items() if k in compared_keys(cfg)}
        now = {k: v for k, v in {**dataclasses.asdict(cfg), "env": env_id}.items() if k in compared_keys(cfg)}
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


def compared_keys(cfg: BaseConfig) -> set[str]:
    """Config keys that must match to continue a run."""
    return {f.name for f in dataclasses.fields(cfg)} - UNCOMPARED_KEYS


LOCK_FILE = ".lock"


def lock_folder(run_dir: Path) -> Path | None:
    """The folder the run that left <run_dir>/.lock was started for (None: no lock, or one written before the lock
    recorded it): a different one means the folder was copied here."""
    try:
        line = (run_dir / LOCK_FILE).read_text().strip()
    except OSError:
        return None
    found = re.search(r"\) for (/.+)$", line)
    return Path(found.group(1)) if found else None


def lock(run_dir: Path):
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


def check_writable(run_dir: Path) -> None:
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


def resume_payload(run_dir: Path, algo: str, phase: str, cfg: BaseConfig, fingerprint: str) -> dict | None:
    last = layout.checkpoint_path(run_dir, "last")
    if not last.exists():
        return None
    resume = load_checkpoint(last, algo=algo)
    if resume.get("phase") != phase:
        raise CheckpointError(f"{last} belongs to the {resume.get('phase')} phase, not {phase}")
    keys = compared_keys(cfg)
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
