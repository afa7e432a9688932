"""Run logging: every scalar to <run_dir>/metrics.jsonl and to wandb, plus a tqdm progress bar."""
from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm


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
        if resume_offset is None:
            self.path.write_text("")
        else:
            with open(self.path, "r+b") as f:
                f.truncate(resume_offset)
        self._file = open(self.path, "a")
        self._wandb = self._init_wandb(config, algo)
        self.last_score: float | None = None
        self.bar = tqdm(total=total_steps, initial=start_step, desc=f"{algo} {phase}", unit="step",
                        dynamic_ncols=True, mininterval=1.0)

    def _init_wandb(self, config: dict[str, Any], algo: str):
        mode = config.get("wandb_mode", "disabled")
        if mode == "disabled":
            return None
        import wandb

        run_id = hashlib.sha1(str(self.run_dir.resolve()).encode()).hexdigest()[:12]  # resume = same run
        return wandb.init(project=config.get("wandb_project"), group=config.get("wandb_group"),
                          name=f"{algo}-{self.phase}-{self.run_dir.parent.name}", id=run_id, resume="allow",
                          dir=str(self.run_dir), mode=mode, config={**config, "algo": algo, "phase": self.phase})

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
        self._file.flush()
        return self._file.tell()

    def close(self) -> None:
        self.bar.close()
        self._file.close()
        if self._wandb is not None:
            self._wandb.finish()
            self._wandb = None
