"""The record of a run: metrics.jsonl (+ wandb, the progress bar), the means of the update metrics between records
with the divergence check, and the deterministic evaluator of the run's env."""
from __future__ import annotations

import dataclasses
import math
import time
from typing import TYPE_CHECKING

from common.evaluation import EVAL_SEED_OFFSET, EvalResult, Evaluator
from common.logging import RunLogger

if TYPE_CHECKING:
    from common.run import Run


class Recorder:
    """metrics.jsonl + wandb + progress bar, the means of the update metrics since the last record, and the
    deterministic evaluator of the run's env (its episodes use seeds seed + 1,000,000 + i, the same every time).

    `add(metrics)` after each update; `write(step, metrics)` a record; `means()` the train/ means since the last
    call (each metric averaged over the updates that returned it); `evaluate(policy)` the eval/ metrics.
    """

    def __init__(self, run: "Run", total: int, start_step: int):
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
