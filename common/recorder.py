"""The record of a run: metrics.jsonl (+ wandb, the progress bar), the means of the update metrics between records
with the divergence check, and the deterministic evaluator of the run's env."""
from __future__ import annotations

import dataclasses
import time
from typing import TYPE_CHECKING

import torch

from common.evaluation import EVAL_SEED_OFFSET, EvalResult, Evaluator
from common.logging import RunLogger

if TYPE_CHECKING:
    from common.run import Run


class UpdateMeans:
    """The means of the update metrics between records, kept on the device: `add` never waits for it.

    Each metric's sum is a float64 running sum in update order (a metric an update does not report adds an exact 0),
    the same additions the host did with Python floats, so the means are the same numbers to the last bit. The first
    non-finite value of each metric is noted on the device with its step; `read()` (once per record) raises
    FloatingPointError naming the metric, its value and the step, as a check on every update did."""

    def __init__(self, phase: str, sums: dict[str, float] | None = None, counts: dict[str, int] | None = None):
        self.phase = phase
        self.keys: list[str] = list(sums or {})
        self.counts: dict[str, int] = {k: int(v) for k, v in (counts or {}).items()}
        self._sums = torch.tensor([float((sums or {})[k]) for k in self.keys], dtype=torch.float64)
        self._bad_step = torch.full((len(self.keys),), -1, dtype=torch.int64)
        self._bad_value = torch.zeros(len(self.keys), dtype=torch.float64)
        self._stages: list[tuple[int, str]] = []  # (first step, stage) whenever the stage changes

    def add(self, metrics: dict, step: int, stage: str) -> None:
        if not metrics:
            return
        values = [v if isinstance(v, torch.Tensor) else torch.tensor(float(v), dtype=torch.float64)
                  for v in metrics.values()]  # a Python float stays a float64, as the host sums had it
        device = next((v.device for v in metrics.values() if isinstance(v, torch.Tensor)), self._sums.device)
        if self._sums.device != device:
            self._sums, self._bad_step, self._bad_value = (t.to(device) for t in (self._sums, self._bad_step,
                                                                                  self._bad_value))
        new = [k for k in metrics if k not in self.keys]
        if new:
            self.keys += new
            self._sums = torch.cat([self._sums, torch.zeros(len(new), dtype=torch.float64, device=device)])
            self._bad_step = torch.cat([self._bad_step, torch.full((len(new),), -1, dtype=torch.int64, device=device)])
            self._bad_value = torch.cat([self._bad_value, torch.zeros(len(new), dtype=torch.float64, device=device)])
        if not self._stages or self._stages[-1][1] != stage:
            self._stages.append((step, stage))
        given = dict(zip(metrics, values))
        zero = torch.zeros((), dtype=torch.float64, device=device)
        row = torch.stack([given[k].to(device=device, dtype=torch.float64) if k in given else zero
                           for k in self.keys])
        self._sums = self._sums + row
        first = ~torch.isfinite(row) & (self._bad_step < 0)
        self._bad_step = torch.where(first, step, self._bad_step)
        self._bad_value = torch.where(first, row, self._bad_value)
        for key in metrics:
            self.counts[key] = self.counts.get(key, 0) + 1

    def read(self) -> tuple[dict[str, float], dict[str, int]]:
        """(sums, counts) on the host (one transfer); raises FloatingPointError at a non-finite value."""
        if not self.keys:
            return {}, {}
        sums, bad_steps, bad_values = (torch.stack([self._sums, self._bad_step.double(), self._bad_value])
                                       .cpu().tolist())
        bad = [(int(step), i) for i, step in enumerate(bad_steps) if step >= 0]
        if bad:
            step, i = min(bad)  # the first in update order (and in the update's own order of its metrics)
            stage = next((name for start, name in reversed(self._stages) if start <= step), "")
            raise FloatingPointError(
                f"{self.keys[i]} became {bad_values[i]} at {stage or self.phase} step {step}: training diverged. The "
                "checkpoints written so far are kept; lower the learning rate or check the dataset for extreme values.")
        return ({k: v for k, v in zip(self.keys, sums) if k in self.counts},
                {k: self.counts[k] for k in self.keys if k in self.counts})

    def reset(self) -> None:
        self.__init__(self.phase)


class Recorder:
    """metrics.jsonl + wandb + progress bar, the means of the update metrics since the last record, and the
    deterministic evaluator of the run's env (its episodes use seeds seed + 1,000,000 + i, the same every time).

    `add(metrics)` after each update (tensors or floats: kept on the device, see UpdateMeans); `write(step,
    metrics)` a record; `means()` the train/ means since the last call (each metric averaged over the updates that
    returned it); `evaluate(policy)` the eval/ metrics. `checks`: callables run before every record and checkpoint
    (e.g. SPOT's divergence check), where the run reads the device anyway; so is the non-finite check of the update
    metrics: no record or checkpoint is written after an update went wrong.
    """

    def __init__(self, run: "Run", total: int, start_step: int, checks=()):
        self.run = run
        resume = run.resume
        self.logger = RunLogger(run.run_dir, run.phase, total, dataclasses.asdict(run.cfg), run.algo,
                                resume_offset=resume["logger_offset"] if resume else None, start_step=start_step)
        self.evaluator = Evaluator(run.env_id, run.cfg.eval_episodes,
                                   (run.dataset.ref_min_return, run.dataset.ref_max_return))
        tracker = resume["tracker"] if resume else {}
        self.updates = UpdateMeans(run.phase, tracker.get("sums"), tracker.get("counts"))
        self.checks = list(checks)
        self._t0, self._t_steps = time.perf_counter(), start_step

    def add(self, metrics: dict, step: int, stage: str = "") -> None:
        self.updates.add(metrics, step, stage)

    def check(self) -> tuple[dict[str, float], dict[str, int]]:
        """Runs the checks and reads the update sums (raising at a non-finite value); returns (sums, counts)."""
        for check in self.checks:
            check()
        return self.updates.read()

    def advance(self) -> None:
        """One step (update offline, env step online) done: moves the progress bar."""
        self.logger.advance()

    def means(self) -> dict[str, float]:
        sums, counts = self.check()
        self.updates.reset()
        return {f"train/{k}": v / counts[k] for k, v in sums.items()}

    def evaluate_result(self, policy) -> EvalResult:
        return self.evaluator.run(policy, self.run.cfg.seed + EVAL_SEED_OFFSET)

    def evaluate(self, policy) -> dict[str, float]:
        return self.evaluate_result(policy).metrics()

    def write(self, step: int, metrics: dict[str, float], speed: str | None = None) -> None:
        """One record; `speed` names a wall-clock rate (steps since the last timed record per second) that goes to
        wandb and the bar only, so identical runs write identical files."""
        self.check()  # nothing is recorded after an update went wrong
        unlogged = None
        if speed:
            unlogged = {speed: (step - self._t_steps) / max(time.perf_counter() - self._t0, 1e-9)}
        self.logger.log(step, metrics, unlogged=unlogged)
        if speed:
            self._t0, self._t_steps = time.perf_counter(), step

    def state_dict(self) -> dict:
        """For last.pt; checks first, so no checkpoint is written after an update went wrong."""
        sums, counts = self.check()
        return {"logger_offset": self.logger.offset(), "tracker": {"sums": sums, "counts": counts}}

    def close(self) -> None:
        """Closes the log and the evaluator and gives the run folder's lock back."""
        self.logger.close()
        self.evaluator.close()
        self.run.release()
