"""Run logging: every scalar to <run_dir>/metrics.jsonl and to wandb, plus a tqdm progress bar."""
from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from common.errors import RunError
from common.layout import read_config


def wandb_run_id(run_dir: str | os.PathLike) -> str:
    """A run folder's wandb id: the same on every start of that folder, so a resumed run continues its wandb run."""
    return hashlib.sha1(str(Path(run_dir).resolve()).encode()).hexdigest()[:12]


def wandb_identity(config: dict[str, Any], algo: str, phase: str, run_dir: str | os.PathLike) -> dict[str, Any]:
    """How a run appears in wandb: named <variant>/<dataset>/seed<k>/<phase>; grouped by (wandb_group if set,
    variant, dataset) so a group's seeds aggregate in the UI; tagged; job_type = phase; an online run's config
    names its offline run's wandb id."""
    from common.layout import dataset_label, run_dir_of_checkpoint

    variant = config.get("variant") or algo
    dataset = dataset_label(str(config.get("dataset", "?")))
    study = config.get("wandb_group")
    extra = {"algo": algo, "phase": phase, "variant": variant}
    if config.get("offline_checkpoint"):
        extra["offline_wandb_run_id"] = wandb_run_id(run_dir_of_checkpoint(config["offline_checkpoint"]))
    return {"project": config.get("wandb_project"), "group": "/".join(filter(None, [study, variant, dataset])),
            "name": f"{variant}/{dataset}/seed{config.get('seed')}/{phase}", "job_type": phase,
            "tags": sorted({algo, variant, dataset, phase, *([study] if study else [])}), "id": wandb_run_id(run_dir),
            "config": {**config, **extra}}


def step_by_phase(run, phase: str):
    """Every metric of a wandb run plotted against `<phase>_step` (gradient steps offline, env steps online), not
    against wandb's count of log calls; returns the run."""
    run.define_metric(f"{phase}_step")
    run.define_metric("*", step_metric=f"{phase}_step")
    return run


class RunLogger:
    """One JSON object per event: {"phase", "step", metric: value, ...} with unrounded floats.

    `offset()` is stored in checkpoints; resuming truncates metrics.jsonl back to it, so a resumed
    run's file equals an uninterrupted run's.
    """

    def __init__(self, run_dir: str | os.PathLike, phase: str, total_steps: int, config: dict[str, Any],
                 algo: str, resume_offset: int | None = None, start_step: int = 0):
        self.run_dir, self.phase = Path(run_dir), phase
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.path = self.run_dir / "metrics.jsonl"
        self._wandb = self._init_wandb(config, algo)  # first: a wandb failure leaves metrics.jsonl as it was
        if resume_offset is None:
            self.path.write_text("")
        else:
            with open(self.path, "r+b") as f:
                f.truncate(resume_offset)
        self._file = open(self.path, "a")
        self.last_score: float | None = None
        self.bar = tqdm(total=total_steps, initial=start_step, desc=f"{algo} {phase}", unit="step",
                        dynamic_ncols=True, mininterval=1.0)

    def _init_wandb(self, config: dict[str, Any], algo: str):
        mode = config.get("wandb_mode", "disabled")
        if mode == "disabled":
            return None
        import wandb

        recorded = read_config(self.run_dir) if (self.run_dir / "config.yaml").is_file() else {}
        saved = {**config, **recorded}  # config.yaml adds what the script recorded (its offline run, ...)
        kwargs = wandb_identity(saved, algo, self.phase, self.run_dir)
        debug = os.environ.get("OFFLINE_TO_ONLINE_DEBUG", "") not in ("", "0")
        quiet = not debug and not any(k in os.environ for k in ("WANDB_SILENT", "WANDB_QUIET", "WANDB_CONSOLE"))
        try:
            run = wandb.init(**kwargs, resume="allow", dir=str(self.run_dir), mode=mode,
                             settings=wandb.Settings(silent=True, console="off") if quiet else None)
        except Exception as exc:  # noqa: BLE001 - no login, no network, a bad project name: one line, exit 2
            raise RunError(f"wandb could not start ({mode} mode): {' '.join(str(exc).split())[:300]}. Log in "
                           "(wandb login), or rerun with --wandb_mode offline (sync later) or disabled; the run "
                           "resumes with either") from None
        return step_by_phase(run, self.phase)

    def log_final(self, checkpoint: Path, video: Path | None, score: float | None) -> None:
        """At the end of a run, with wandb on: the rollout video and the exported policy (a model artifact)."""
        if self._wandb is None:
            return
        import wandb

        from common.inference import export_policy

        if video is not None and Path(video).is_file():
            self._wandb.log({"video/rollout": wandb.Video(str(video), format="mp4")})
        policy = export_policy(checkpoint, self.run_dir / "policy.pt", f"{self.phase} phase, {checkpoint.name}", score)
        artifact = wandb.Artifact(f"policy-{self._wandb.id}", type="model", metadata={"score": score})
        artifact.add_file(str(policy))
        self._wandb.log_artifact(artifact)

    def log(self, step: int, metrics: dict[str, float], unlogged: dict[str, float] | None = None) -> None:
        """`unlogged`: wall-clock values (speeds) that go to wandb and the bar only, keeping
        metrics.jsonl identical between identical runs."""
        record = {"phase": self.phase, "step": int(step)}
        for key, value in metrics.items():
            value = float(value)
            record[key] = value if math.isfinite(value) else str(value)
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        if self._wandb is not None:
            self._wandb.log({**{k: v for k, v in record.items() if k != "phase"}, **(unlogged or {}),
                             f"{self.phase}_step": step})
        if "eval/normalized_score" in metrics:
            self.last_score = float(metrics["eval/normalized_score"])
        if "eval/normalized_score" in metrics or unlogged:
            postfix = {"score": f"{self.last_score:.1f}"} if self.last_score is not None else {}
            postfix.update({k.split("/")[-1]: f"{v:.1f}" for k, v in (unlogged or {}).items()})
            self.bar.set_postfix(postfix, refresh=False)

    def advance(self, n: int = 1) -> None:
        self.bar.update(n)

    def offset(self) -> int:
        """The file's length, on disk (fsynced) before a checkpoint records it, so the two stay durable together."""
        self._file.flush()
        os.fsync(self._file.fileno())
        return self._file.tell()

    def close(self) -> None:
        self.bar.close()
        self._file.close()
        if self._wandb is not None:
            self._wandb.finish()
            self._wandb = None
