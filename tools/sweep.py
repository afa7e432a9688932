"""Multi-seed sweeps on Ray: every (algorithm, dataset, seed) trial runs offline, then online.

  python -m tools.sweep configs/sweeps/paper.yaml                    # local Ray, all cores
  python -m tools.sweep configs/sweeps/paper.yaml --num-cpus 8       # local Ray, 8 CPUs
  python -m tools.sweep configs/sweeps/paper.yaml --address auto     # a cluster (`ray start --head` first)
  python -m tools.sweep configs/sweeps/paper.yaml --dry-run          # print the trials and commands
  python -m tools.sweep configs/sweeps/paper.yaml --datasets hopper-medium --seeds 0,1   # a part of it

A trial is one Ray task holding `resources.cpus` CPUs (and `resources.gpus`, a fraction is fine); it
runs the training scripts as subprocesses with `--threads` = its CPUs and OMP_NUM_THREADS set:

  <root>/<algo>/<dataset>/seed<k>/offline/      run folder of `python -m <algo>.train_offline`
  <root>/<algo>/<dataset>/seed<k>/online/       run folder of `python -m <algo>.train_online`
  <root>/<algo>/<dataset>/seed<k>/offline.log   stdout + stderr of each phase (appended on reruns)
  <root>/<algo>/<dataset>/seed<k>/status.json   what the trial is doing (read by the live summary)

Rerunning the same sweep skips every phase whose final checkpoint (offline.pt / online.pt) exists and
reruns the others with the same command, which resumes them from their last.pt (so a part of a sweep,
chosen with --algos / --datasets / --seeds, can run first and the rest later into the same root). A failed trial is
reported with its log and does not stop the others; the exit code is 1 if any trial failed.

On a cluster, --root, the repository and the datasets must be at the same paths on every node (a
shared filesystem), as the trials write their run folders there and the driver reads them for the
live summary. The sweep file format is described in configs/sweeps/paper.yaml.
"""
from __future__ import annotations

import argparse
import contextlib
import ctypes
import dataclasses
import fcntl
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import yaml

from common import layout
from common.errors import yaml_problem
from common.layout import dataset_label

REPO_ROOT = Path(__file__).resolve().parent.parent
PHASES = layout.PHASES
SCORE = "eval/normalized_score"
# Set by the sweep for every run; an override of these would break the trial layout or the resources.
MANAGED_KEYS = ("run_dir", "seed", "threads", "checkpoint", "variant")
LOCK_WAIT_S = 60.0  # a rerun right after a kill waits this long for the killed trial's processes to exit


class SweepError(ValueError):
    pass


# ---------------------------------------------------------------------------------------------------------------
# The sweep file -> a list of trials


@dataclasses.dataclass
class Trial:
    """One (algorithm, dataset, seed): the two commands and where they write. Plain data, sent to Ray."""

    algo: str
    dataset: str  # the label used in folder names
    seed: int
    trial_dir: str
    commands: dict[str, list[str]]  # phase -> argv
    cpus: float
    gpus: float
    env: dict[str, str]  # extra environment variables of the training processes
    cwd: str
    # `offline_from`: the trial (name) whose offline run this one fine-tunes; it has no offline phase of its own
    offline_source: str | None = None
    offline_source_dir: str | None = None

    @property
    def name(self) -> str:
        return f"{self.algo}/{self.dataset}/seed{self.seed}"

    @property
    def phases(self) -> tuple[str, ...]:
        """The phases this trial runs itself."""
        return tuple(p for p in PHASES if p in self.commands)

    def run_dir(self, phase: str) -> Path:
        if phase == "offline" and self.offline_source_dir:
            return Path(self.offline_source_dir) / phase
        return Path(self.trial_dir) / phase

    def final_checkpoint(self, phase: str) -> Path:
        return layout.checkpoint_path(self.run_dir(phase), phase)

    def log_path(self, phase: str) -> Path:
        return Path(self.trial_dir) / f"{phase}.log"


TOP_KEYS = {"root", "seeds", "datasets", "algorithms", "overrides", "offline_overrides", "online_overrides",
            "resources", "env"}
ALGO_KEYS = {"module", "overrides", "offline_overrides", "online_overrides", "resources", "env", "offline_from"}
DATASET_KEYS = {"name", "config", "dataset", "overrides", "algorithm_overrides", "seeds"}
RESOURCE_KEYS = {"cpus", "gpus"}


def _mapping(value: Any, where: str, allowed: set[str] | None = None) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise SweepError(f"{where} must be a mapping, got {type(value).__name__}")
    if allowed is not None:
        unknown = sorted(set(value) - allowed)
        if unknown:
            raise SweepError(f"unknown key(s) {', '.join(unknown)} in {where}; valid: {', '.join(sorted(allowed))}")
    return value


def _override_value(key: str, value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, (int, float, str)):
        return str(value)
    raise SweepError(f"override {key}: {value!r} is not a scalar (only numbers, strings, booleans and null)")


def _overrides(value: Any, where: str) -> dict[str, str]:
    overrides = {}
    for key, raw in _mapping(value, where).items():
        key = str(key).replace("-", "_")
        if key in MANAGED_KEYS:
            raise SweepError(f"{where} sets {key!r}, which the sweep sets itself for every run")
        overrides[key] = _override_value(key, raw)
    return overrides


def _resources(value: Any, where: str, base: dict[str, float] | None = None) -> dict[str, float]:
    resources = dict(base or {"cpus": 1.0, "gpus": 0.0})
    for key, raw in _mapping(value, where, RESOURCE_KEYS).items():
        try:
            resources[key] = float(raw)
        except (TypeError, ValueError):
            raise SweepError(f"{where}.{key} must be a number, got {raw!r}") from None
    if resources["cpus"] <= 0 or resources["gpus"] < 0:
        raise SweepError(f"{where}: cpus must be > 0 and gpus >= 0, got {resources}")
    return resources


def _absolute(path: str, base: Path) -> str:
    return str(path if Path(path).is_absolute() else (base / path).resolve())


def _datasets(entries: Any, cwd: Path) -> list[dict]:
    """Each entry -> {"name", "config" (a template, {algo} = the package; or None), "dataset" (or None),
    "overrides", "algorithm_overrides", "seeds" (its own seeds, or None: the sweep's)}."""
    if not isinstance(entries, list) or not entries:
        raise SweepError("datasets must be a non-empty list")
    out = []
    for i, entry in enumerate(entries):
        where = f"datasets[{i}]"
        if isinstance(entry, str):
            entry = {"config": entry} if entry.endswith((".yaml", ".yml")) else {"dataset": entry}
        entry = _mapping(entry, where, DATASET_KEYS)
        config, spec = entry.get("config"), entry.get("dataset")
        if not config and not spec:
            raise SweepError(f"{where} needs a config file and/or a dataset spec")
        if spec and not spec.startswith(("d4rl:", "minari:", "shared:")):
            spec = _absolute(spec, cwd)  # a file path: the training processes may run in another folder
        name = entry.get("name") or dataset_label(str(config or spec).replace("{algo}", ""))
        per_algo = {str(algo): _overrides(values, f"{where}.algorithm_overrides.{algo}")
                    for algo, values in _mapping(entry.get("algorithm_overrides"), f"{where}.algorithm_overrides").items()}
        out.append({"name": str(name), "config": _absolute(config, cwd) if config else None, "dataset": spec,
                    "overrides": _overrides(entry.get("overrides"), f"{where}.overrides"),
                    "algorithm_overrides": per_algo,
                    "seeds": _seeds(entry["seeds"], f"{where}.seeds") if "seeds" in entry else None})
    names = [d["name"] for d in out]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise SweepError(f"datasets {duplicates} share a folder name; give the entries a distinct `name`")
    return out


def _seeds(value: Any, where: str = "seeds") -> list[int]:
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return list(range(value))
    if isinstance(value, list) and value and all(isinstance(s, int) and not isinstance(s, bool) for s in value):
        if len(set(value)) != len(value):
            raise SweepError(f"{where} repeat: {value}")
        return list(value)
    raise SweepError(f"{where} must be a count (5 -> 0..4) or a list of integers, got {value!r}")


def load_sweep(path: str | os.PathLike, root: str | None = None, cwd: str | os.PathLike | None = None) -> list[Trial]:
    """Reads a sweep file and expands it into trials, ordered seed by seed (a partial sweep covers all cells).

    Relative paths (root, dataset configs and files) are relative to `cwd`, the folder the sweep is
    started from, as on the training scripts' command line.
    """
    cwd = Path(cwd or os.getcwd()).resolve()
    path = Path(path)
    if not path.is_file():
        raise SweepError(f"sweep file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise SweepError(yaml_problem(path, exc)) from None
    spec = _mapping(raw, str(path), TOP_KEYS)
    for key in ("seeds", "datasets", "algorithms"):
        if key not in spec:
            raise SweepError(f"{path} needs `{key}`")
    root_dir = Path(_absolute(root or spec.get("root") or f"runs/sweeps/{path.stem}", cwd))
    seeds = _seeds(spec["seeds"])
    datasets = _datasets(spec["datasets"], cwd)
    algorithms = _mapping(spec["algorithms"], "algorithms")
    if not algorithms:
        raise SweepError("algorithms must name at least one algorithm")
    shared = {phase: {**_overrides(spec.get("overrides"), "overrides"),
                      **_overrides(spec.get(f"{phase}_overrides"), f"{phase}_overrides")} for phase in PHASES}
    base_resources = _resources(spec.get("resources"), "resources")
    base_env = {str(k): str(v) for k, v in _mapping(spec.get("env"), "env").items()}

    algorithms = {algo: _mapping(algo_spec, f"algorithms.{algo}", ALGO_KEYS) for algo, algo_spec in algorithms.items()}
    _check_offline_from(algorithms)
    for data in datasets:
        unknown = sorted(set(data["algorithm_overrides"]) - set(algorithms))
        if unknown:
            raise SweepError(f"datasets entry {data['name']!r}: algorithm_overrides names {', '.join(unknown)}, not an "
                             f"algorithm of this sweep ({', '.join(algorithms)})")

    for data in datasets:  # a dataset entry's own seeds replace the sweep's
        data["seeds"] = data["seeds"] if data["seeds"] is not None else seeds
    # seed by seed: the sweep's seeds in its order, then the seeds only some entries have
    all_seeds = dict.fromkeys([*seeds, *sorted(seed for data in datasets for seed in data["seeds"])])
    trials = []
    for seed in all_seeds:
        for data in datasets:
            if seed not in data["seeds"]:
                continue
            for algo, algo_spec in algorithms.items():
                where = f"algorithms.{algo}"
                module = str(algo_spec.get("module") or algo)
                source = algo_spec.get("offline_from")
                resources = _resources(algo_spec.get("resources"), f"{where}.resources", base_resources)
                algo_env = _mapping(algo_spec.get("env"), f"{where}.env")
                env = {**base_env, **{str(k): str(v) for k, v in algo_env.items()}}
                trial_dir = layout.trial_dir(root_dir, algo, data["name"], seed)
                threads = max(1, int(resources["cpus"]))
                source_dir = layout.trial_dir(root_dir, source, data["name"], seed) if source else None
                commands = {}
                for phase in PHASES:
                    if phase == "offline" and source:
                        continue
                    overrides = {"device": "cuda" if resources["gpus"] > 0 else "cpu", **shared[phase],
                                 **_overrides(algo_spec.get("overrides"), f"{where}.overrides"),
                                 **_overrides(algo_spec.get(f"{phase}_overrides"), f"{where}.{phase}_overrides"),
                                 **data["overrides"], **data["algorithm_overrides"].get(algo, {})}
                    argv = ["python", "-m", f"{module}.train_{phase}"]  # run with the worker's interpreter
                    if phase == "online":
                        argv += ["--checkpoint", str(layout.checkpoint_path((source_dir or trial_dir) / "offline", "offline"))]
                    if data["config"]:
                        config = data["config"].replace("{algo}", module)  # variants share their package's configs
                        if not Path(config).is_file():
                            raise SweepError(f"{where}: config file not found: {config} (datasets entry "
                                             f"{data['name']!r})")
                        argv += ["--config", config]
                    if data["dataset"]:
                        argv += ["--dataset", data["dataset"]]
                    argv += ["--seed", str(seed), "--run_dir", str(trial_dir / phase), "--threads", str(threads),
                             "--variant", algo]  # the sweep's name of the algorithm labels its runs everywhere
                    for key, value in overrides.items():
                        argv += [f"--{key}", value]
                    commands[phase] = argv
                trials.append(Trial(algo, data["name"], seed, str(trial_dir), commands, resources["cpus"],
                                    resources["gpus"], env, str(cwd),
                                    offline_source=f"{source}/{data['name']}/seed{seed}" if source else None,
                                    offline_source_dir=str(source_dir) if source else None))
    return trials


def _check_offline_from(algorithms: dict[str, dict]) -> None:
    """`offline_from` must name an algorithm listed before this one (so sources are submitted first) that
    runs its own offline phase with the same package (its checkpoint must load into this one's agent)."""
    names = list(algorithms)
    for index, (algo, spec) in enumerate(algorithms.items()):
        source = spec.get("offline_from")
        if source is None:
            continue
        where = f"algorithms.{algo}.offline_from"
        if source not in names[:index]:
            raise SweepError(f"{where}: {source!r} is not an algorithm listed before {algo!r} in this sweep "
                             f"(listed before it: {', '.join(names[:index]) or 'none'})")
        if algorithms[source].get("offline_from"):
            raise SweepError(f"{where}: {source!r} itself takes its offline run from another algorithm; "
                             f"name that one ({algorithms[source]['offline_from']!r})")
        modules = [str(algorithms[a].get("module") or a) for a in (algo, source)]
        if modules[0] != modules[1]:
            raise SweepError(f"{where}: {algo!r} runs {modules[0]} but {source!r} runs {modules[1]}; an offline "
                             f"checkpoint only loads into its own algorithm")
        if "offline_overrides" in spec:
            raise SweepError(f"{where}: {algo!r} has no offline phase of its own, so offline_overrides would be "
                             f"ignored; put them on {source!r}")


def select_trials(trials: list[Trial], algos: str | None = None, datasets: str | None = None,
                  seeds: str | None = None) -> list[Trial]:
    """The trials whose algorithm, dataset and seed are in the given comma-separated lists (None: all), so
    part of a sweep can run first (e.g. one dataset) and the rest later into the same root."""
    wanted = {}
    for field, text in (("algo", algos), ("dataset", datasets), ("seed", seeds)):
        if text is None:
            continue
        values = [v.strip() for v in text.split(",") if v.strip()]
        known = sorted({str(getattr(t, field)) for t in trials}, key=str)
        unknown = [v for v in values if v not in known]
        if unknown or not values:
            raise SweepError(f"no {field} {', '.join(unknown) or repr(text)} in this sweep; it has: {', '.join(known)}")
        wanted[field] = set(values)
    return [t for t in trials if all(str(getattr(t, f)) in v for f, v in wanted.items())]


# ---------------------------------------------------------------------------------------------------------------
# Running one trial (inside a Ray worker, or directly)


def _parent_death_signal():
    """A preexec_fn making the training process get SIGTERM when the Ray worker that started it dies
    (Linux), so a killed sweep leaves no orphan writing into a run folder that a rerun resumes.
    prctl is looked up here, in the parent: the child of a threaded process should only call it."""
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):  # not Linux: orphans are still kept out by the trial lock
        return None
    return lambda: prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG


def _write_status(trial: Trial, **status) -> None:
    path = Path(trial.trial_dir) / "status.json"
    tmp = path.with_name("status.json.tmp")
    tmp.write_text(json.dumps({"time": time.time(), "host": socket.gethostname(), **status}))
    os.replace(tmp, path)


def _environment(trial: Trial) -> dict[str, str]:
    threads = str(max(1, int(trial.cpus)))
    env = {**os.environ, **trial.env}
    env.update(OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads, OPENBLAS_NUM_THREADS=threads,
               PYTHONUNBUFFERED="1")
    paths = [p for p in (trial.env.get("PYTHONPATH"), str(REPO_ROOT), os.environ.get("PYTHONPATH")) if p]
    env["PYTHONPATH"] = os.pathsep.join(paths)  # the repository's packages, wherever the worker started
    return env


@contextlib.contextmanager
def _trial_lock(trial: Trial, wait_s: float):
    """An exclusive lock on <trial>/.lock, also held by the training process it starts (so an orphan
    of a killed sweep still holds it). Yields the file descriptor, or None if it stayed locked."""
    path = Path(trial.trial_dir) / ".lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    yield None
                    return
                time.sleep(0.5)
        yield fd
    finally:
        os.close(fd)


def run_trial(trial: Trial, sweep_id: str = "", lock_wait_s: float = LOCK_WAIT_S) -> dict[str, Any]:
    """Runs the phases whose final checkpoint is missing; returns {"name", "status": done|failed, ...}."""
    result: dict[str, Any] = {"name": trial.name, "trial_dir": trial.trial_dir, "ran": []}
    Path(trial.trial_dir).mkdir(parents=True, exist_ok=True)
    cwd = trial.cwd if Path(trial.cwd).is_dir() else str(REPO_ROOT)
    with _trial_lock(trial, lock_wait_s) as lock_fd:
        if lock_fd is None:
            return {**result, "status": "failed", "phase": None, "log": str(Path(trial.trial_dir) / ".lock"),
                    "error": f"another process holds {trial.trial_dir}/.lock (this trial is running elsewhere)"}
        for phase in PHASES:
            if trial.final_checkpoint(phase).exists():
                continue
            if phase not in trial.commands:  # offline_from: the source trial's offline run is missing
                error = (f"the offline run this trial fine-tunes is missing: {trial.final_checkpoint(phase)} "
                         f"(trial {trial.offline_source} failed or has not run; rerun the sweep with it)")
                _write_status(trial, state="failed", phase=phase, sweep_id=sweep_id, error=error)
                return {**result, "status": "failed", "phase": phase, "log": None, "error": error}
            log = trial.log_path(phase)
            _write_status(trial, state="running", phase=phase, sweep_id=sweep_id)
            started = time.time()
            argv = [sys.executable, *trial.commands[phase][1:]]
            with open(log, "a") as out:
                out.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} on {socket.gethostname()}: {shlex.join(argv)}\n")
                out.flush()
                process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT,
                                           stdin=subprocess.DEVNULL, cwd=cwd, env=_environment(trial),
                                           pass_fds=(lock_fd,), preexec_fn=_parent_death_signal())
                returncode = process.wait()
            result["ran"].append(phase)
            error = None
            if returncode != 0:
                error = f"{phase} exited with code {returncode}"
            elif not trial.final_checkpoint(phase).exists():
                error = f"{phase} exited normally but wrote no {trial.final_checkpoint(phase)}"
            if error:
                last_line = _last_line(log)
                error += f" ({last_line})" if last_line else ""
                _write_status(trial, state="failed", phase=phase, sweep_id=sweep_id, error=error)
                return {**result, "status": "failed", "phase": phase, "log": str(log), "error": error,
                        "returncode": returncode, "seconds": time.time() - started}
        _write_status(trial, state="done", sweep_id=sweep_id)
    return {**result, "status": "done", **{f"{p}_final": last_score(trial.run_dir(p)) for p in PHASES}}


def _last_line(log: Path) -> str:
    """The log's last non-empty line: usually the exception that ended the run."""
    try:
        with open(log, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 4096))
            lines = [line.strip() for line in f.read().decode(errors="replace").replace("\r", "\n").splitlines()]
    except OSError:
        return ""
    lines = [line for line in lines if line and not line.startswith("===")]
    return lines[-1][:200] if lines else ""


# ---------------------------------------------------------------------------------------------------------------
# Progress


def last_eval(run_dir: Path, tail_bytes: int = 65536) -> dict | None:
    """The last record holding an evaluation score in <run_dir>/metrics.jsonl (read from the file's end)."""
    try:
        records = layout.read_metrics(Path(run_dir) / "metrics.jsonl", tail_bytes=tail_bytes)
    except OSError:
        return None
    return next((r for r in reversed(records) if isinstance(r.get(SCORE), (int, float))), None)


def last_score(run_dir: Path) -> float | None:
    record = last_eval(run_dir)
    return float(record[SCORE]) if record else None


def trial_state(trial: Trial, sweep_id: str) -> dict[str, Any]:
    """What the trial's files say: finished phases, whether this sweep is running it, its last score."""
    finished = [p for p in PHASES if trial.final_checkpoint(p).exists()]
    status = {}
    with contextlib.suppress(OSError, ValueError):
        status = json.loads((Path(trial.trial_dir) / "status.json").read_text())
    running = status.get("state") == "running" and status.get("sweep_id") == sweep_id
    phase = status.get("phase") if running else (finished[-1] if finished else "offline")
    record = last_eval(trial.run_dir(phase))
    if record is None and phase == "online":  # before the online phase's first evaluation
        phase, record = "offline", last_eval(trial.run_dir("offline"))
    return {"finished": finished, "running": running, "phase": phase,
            "step": record.get("step") if record else None, "score": record.get(SCORE) if record else None}


def _score_text(state: dict) -> str:
    if state["score"] is None:
        return "no eval yet"
    return f"{state['phase']} step {state['step']}: score {state['score']:.1f}"


def _failure_text(result: dict) -> str:
    return result["error"] + (f"; log: {result['log']}" if result.get("log") else "")


def summary(trials: list[Trial], results: dict[str, dict], sweep_id: str, elapsed: float) -> str:
    """A few lines: counts, then each running trial with its last score and each failure with its log."""
    states = {t.name: trial_state(t, sweep_id) for t in trials if t.name not in results}
    running = [t for t in trials if t.name in states and states[t.name]["running"]]
    done = sum(r["status"] == "done" for r in results.values())
    failed = [r for r in results.values() if r["status"] == "failed"]
    pending = len(trials) - len(results) - len(running)
    lines = [f"[sweep {time.strftime('%H:%M:%S')} +{elapsed / 60:.1f} min] {done}/{len(trials)} done, "
             f"{len(running)} running, {pending} pending, {len(failed)} failed"]
    for t in running:
        lines.append(f"  running  {t.name:<45} {_score_text(states[t.name])}")
    for r in failed:
        lines.append(f"  FAILED   {r['name']:<45} {_failure_text(r)}")
    return "\n".join(lines)


def final_table(trials: list[Trial], results: dict[str, dict]) -> str:
    lines = [f"{'trial':<45} {'status':<14} {'offline final':>13} {'online final':>12}"]
    for t in trials:
        r = results.get(t.name, {"status": "not run"})
        scores = [last_score(t.run_dir(p)) if t.final_checkpoint(p).exists() else None for p in PHASES]
        cells = [f"{s:.1f}" if s is not None else "-" for s in scores]
        status = r["status"] + (" (skipped)" if r.get("skipped") else "")
        lines.append(f"{t.name:<45} {status:<14} {cells[0]:>13} {cells[1]:>12}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------------------
# The driver


def _start_ray(address: str | None, num_cpus: int | None):
    import ray

    if ray.is_initialized():  # e.g. tests that share one instance
        return ray, False
    # Workers import this module; on a cluster the repository sits at the same path on every node.
    pythonpath = os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH")) if p)
    kwargs: dict[str, Any] = {"include_dashboard": False, "logging_level": "WARNING", "log_to_driver": False,
                              "runtime_env": {"env_vars": {"PYTHONPATH": pythonpath}}}
    if address:
        if num_cpus:
            print("--num-cpus is ignored with --address: the cluster's nodes declare their CPUs", file=sys.stderr)
        ray.init(address=address, **kwargs)
    else:
        # Small object store: trials exchange only small dicts; the memory is better left to training.
        ray.init(num_cpus=num_cpus or os.cpu_count(), object_store_memory=128 * 2**20, **kwargs)
    return ray, True


def _plan_text(trials: list[Trial]) -> str:
    lines = []
    for t in trials:
        state = ("done" if t.final_checkpoint("online").exists()
                 else "offline done" if t.final_checkpoint("offline").exists() else "to run")
        lines.append(f"{t.name}  [{state}]  cpus={t.cpus:g} gpus={t.gpus:g}")
        if t.offline_source:
            lines.append(f"  offline: the offline run of {t.offline_source} (runs first)")
        for phase in t.phases:
            lines.append(f"  {phase}: {shlex.join(t.commands[phase])}")
    return "\n".join(lines)


def infeasible(trial: Trial, nodes: list[dict[str, float]]) -> str | None:
    """Why no node of the cluster could ever run the trial (Ray would queue it forever), or None.
    `nodes`: each alive node's resources, e.g. {"CPU": 8.0, "GPU": 1.0}."""
    if any(trial.cpus <= node.get("CPU", 0.0) and trial.gpus <= node.get("GPU", 0.0) for node in nodes):
        return None
    largest = max(nodes, key=lambda node: (node.get("GPU", 0.0), node.get("CPU", 0.0)), default={})
    return (f"needs {trial.cpus:g} CPUs and {trial.gpus:g} GPUs per trial; no node of the Ray cluster has them "
            f"(largest: {largest.get('CPU', 0.0):g} CPUs and {largest.get('GPU', 0.0):g} GPUs)")


def next_to_submit(pending: list[Trial], unfinished: set[str], free: tuple[float, float],
                   allow_first: bool = False) -> list[Trial]:
    """The trials to hand to Ray now: in the order of `pending`, each that fits the free (CPUs, GPUs) and whose
    offline source (if any) has its final offline checkpoint or is no longer among the `unfinished` trial names (a
    naive twin need not wait for its source's online phase). `allow_first`: nothing is running, so the first eligible
    trial goes even if it does not fit (Ray then waits for room; the sweep never stalls)."""
    chosen = []
    cpus, gpus = free
    for t in pending:
        if (t.offline_source is not None and t.offline_source in unfinished
                and not t.final_checkpoint("offline").exists()):
            continue
        if (t.cpus <= cpus + 1e-9 and t.gpus <= gpus + 1e-9) or (allow_first and not chosen):
            chosen.append(t)
            cpus, gpus = cpus - t.cpus, gpus - t.gpus
    return chosen


def run_sweep(trials: list[Trial], address: str | None = None, num_cpus: int | None = None,
              interval: float = 60.0, out=None) -> dict[str, dict]:
    """Runs the trials on Ray, printing a summary every `interval` seconds; returns name -> result."""
    out = out or sys.stdout
    sweep_id = uuid.uuid4().hex
    started = time.time()
    results: dict[str, dict] = {}
    todo = []
    for t in trials:
        if t.final_checkpoint("online").exists():
            results[t.name] = {"name": t.name, "status": "done", "skipped": True, "trial_dir": t.trial_dir}
        else:
            todo.append(t)
    print(f"{len(trials)} trials: {len(results)} already finished, {len(todo)} to run", file=out, flush=True)
    if not todo:
        return results
    ray, owned = _start_ray(address, num_cpus)
    # SIGTERM (kill, a batch scheduler) stops the sweep like Ctrl-C: Ray is shut down, which ends the trials'
    # processes; their run folders resume on the next run. (After `kill -9` Ray may leave agent processes.)
    # Set after ray.init, which installs a handler of its own.
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        remote = ray.remote(run_trial)
        refs = {}
        nodes = [node["Resources"] for node in ray.nodes() if node.get("Alive")]
        pending = []
        for t in todo:
            reason = infeasible(t, nodes)
            if reason:
                results[t.name] = {"name": t.name, "status": "failed", "phase": None, "log": None, "error": reason}
                print(f"FAILED   {t.name}: {reason}", file=out, flush=True)
            else:
                pending.append(t)
        capacity = (sum(n.get("CPU", 0.0) for n in nodes), sum(n.get("GPU", 0.0) for n in nodes))
        next_summary = time.time() + interval
        while refs or pending:
            # Trials are handed to Ray only when a slot is free, in the sweep's order (seed by seed), and a trial
            # fine-tuning another's offline run only once that run has its final checkpoint (or its trial is over):
            # so a naive twin runs beside its source's online phase and goes before any later seed, and a stop
            # leaves whole (dataset, seed) cells.
            in_flight = list(refs.values())
            free = (capacity[0] - sum(t.cpus for t in in_flight), capacity[1] - sum(t.gpus for t in in_flight))
            waiting_for = {t.name for t in in_flight} | {t.name for t in pending}
            for t in next_to_submit(pending, waiting_for, free, allow_first=not in_flight):
                pending.remove(t)
                # max_retries: a trial whose worker or node died is started again and resumes from last.pt.
                refs[remote.options(num_cpus=t.cpus, num_gpus=t.gpus, max_retries=2,
                                    name=f"trial {t.name}").remote(t, sweep_id, LOCK_WAIT_S)] = t
            ready, _ = ray.wait(list(refs), num_returns=1, timeout=max(0.1, min(next_summary - time.time(), 5.0)))
            for ref in ready:
                t = refs.pop(ref)
                try:
                    result = ray.get(ref)
                except Exception as exc:  # the task itself broke (not the training script): report, go on
                    result = {"name": t.name, "status": "failed", "phase": None, "log": t.trial_dir,
                              "error": f"Ray task error: {type(exc).__name__}: {str(exc).splitlines()[0]}"}
                results[t.name] = result
                if result["status"] == "done":
                    finals = "  ".join(f"{p} final {result.get(f'{p}_final'):.1f}" for p in PHASES
                                       if result.get(f"{p}_final") is not None)
                    print(f"done     {t.name}  {finals}", file=out, flush=True)
                else:
                    print(f"FAILED   {t.name}: {_failure_text(result)}", file=out, flush=True)
            if time.time() >= next_summary and refs:
                print(summary(trials, results, sweep_id, time.time() - started), file=out, flush=True)
                next_summary = time.time() + interval
    finally:
        if owned:
            ray.shutdown()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    return results


def record_sweep_file(root: Path, sweep_file: Path) -> Path:
    """Keep a copy of the sweep file in its root, the record of what ran there: root/sweep.yaml for the first one.
    Another sweep file run into the same root (a variant such as configs/sweeps/truncated-utd10.yaml, or the same
    file edited since) is kept beside it as root/sweep-<its name>.yaml, so no record replaces another."""
    root.mkdir(parents=True, exist_ok=True)
    text = sweep_file.read_bytes()
    first = root / "sweep.yaml"
    if first.exists() and first.read_bytes() != text:
        target = root / f"sweep-{sweep_file.stem}.yaml"
    else:
        target = first
    if not target.exists() or target.read_bytes() != text:
        tmp = target.with_name(target.name + ".tmp")
        tmp.write_bytes(text)
        tmp.replace(target)
    return target


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sweep", help="sweep YAML file")
    parser.add_argument("--address", help="Ray cluster address (e.g. auto, or host:6379); default: a local instance")
    parser.add_argument("--num-cpus", type=int, help="CPUs of the local Ray instance (default: all cores)")
    parser.add_argument("--root", help="folder of the trials (default: the sweep file's `root`)")
    parser.add_argument("--interval", type=float, default=60.0, help="seconds between progress summaries")
    parser.add_argument("--dry-run", action="store_true", help="print the trials and their commands, run nothing")
    parser.add_argument("--algos", help="comma-separated: run only these algorithms of the sweep file")
    parser.add_argument("--datasets", help="comma-separated: run only these datasets (their `name`s)")
    parser.add_argument("--seeds", help="comma-separated: run only these seeds")
    args = parser.parse_args(argv)
    try:
        trials = select_trials(load_sweep(args.sweep, args.root), args.algos, args.datasets, args.seeds)
    except SweepError as exc:
        parser.exit(2, f"error: {exc}\n")
    if args.dry_run:
        print(_plan_text(trials))
        return 0
    if trials:  # a record of what ran; tools.aggregate also recognizes a sweep's root by it
        record_sweep_file(Path(trials[0].trial_dir).parents[2], Path(args.sweep))
    started = time.time()
    try:
        results = run_sweep(trials, args.address, args.num_cpus, args.interval)
    except KeyboardInterrupt:
        print("\ninterrupted: rerun the same command to resume (finished trials are skipped)", file=sys.stderr)
        return 130
    failed = [r for r in results.values() if r["status"] == "failed"]
    print(f"\n=== sweep finished in {(time.time() - started) / 60:.1f} min: "
          f"{len(results) - len(failed)}/{len(trials)} done, {len(failed)} failed")
    print(final_table(trials, results))
    for r in failed:
        print(f"FAILED {r['name']}: {r['error']}" + (f"\n  log: {r['log']}" if r.get("log") else ""))
    if trials:
        root = str(Path(trials[0].trial_dir).parents[2])  # <root>/<algo>/<dataset>/seed<k>
        print(f"\naggregate with: python -m tools.aggregate {shlex.quote(root)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
