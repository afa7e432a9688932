"""Where runs live on disk: the one description of the run-folder layout, used by the training scripts,
sweeps, aggregation, plots and inference.

  runs/<algo>/<dataset>/seed<k>/offline/     a run folder: config.yaml, metrics.jsonl, checkpoints/<phase>.pt
  runs/<algo>/<dataset>/seed<k>/online/      the online run started from offline/checkpoints/offline.pt
  <sweep root>/<algo>/<dataset>/seed<k>/     a sweep trial: its offline/ and online/ run folders, <phase>.log, status.json
  benchmarks/results/.../<phase>/            committed results (tools.collect_results): config.yaml, metrics.jsonl
                                             and result.json (finished, wall time, starts), no checkpoints

An online run's config.yaml records the checkpoint it started from (`offline_checkpoint`), which links it to
its offline run.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import yaml

from common.errors import RunError, yaml_problem

PHASES = ("offline", "online")
CHECKPOINTS = "checkpoints"
RESULT = "result.json"  # what a copied, finished run keeps of its checkpoints: that it finished, and its wall time


def safe_name(dataset_name: str) -> str:
    return dataset_name.replace("/", "_").replace(":", "_")


def dataset_label(spec: str) -> str:
    """A folder name for a dataset spec: shared:hopper-medium-gen.hdf5 -> hopper-medium-gen."""
    name = spec.split(":", 1)[1] if ":" in spec and not Path(spec).exists() else spec
    path = Path(name)
    if path.suffix in (".hdf5", ".h5", ".yaml", ".yml"):
        return path.stem
    return name.strip("/").replace("/", "_")


def default_run_dir(algo: str, dataset_name: str, seed: int, phase: str, root: str | os.PathLike = "runs") -> Path:
    return Path(root) / algo / safe_name(dataset_name) / f"seed{seed}" / phase


def trial_dir(root: str | os.PathLike, algo: str, dataset: str, seed: int) -> Path:
    """A sweep trial's folder; its run folders are trial_dir / phase."""
    return Path(root) / algo / dataset / f"seed{seed}"


def checkpoint_path(run_dir: str | os.PathLike, name: str) -> Path:
    """<run_dir>/checkpoints/<name>.pt (name: offline, online, last, vae)."""
    return Path(run_dir) / CHECKPOINTS / f"{name}.pt"


def online_run_dir_for(offline_run_dir: Path) -> Path:
    """runs/.../offline -> runs/.../online; any other name gets an '-online' suffix."""
    offline_run_dir = Path(offline_run_dir)
    if offline_run_dir.name == "offline":
        return offline_run_dir.with_name("online")
    return offline_run_dir.with_name(offline_run_dir.name + "-online")


def run_dir_of_checkpoint(checkpoint: str | os.PathLike) -> Path:
    """<run>/checkpoints/offline.pt -> <run>."""
    checkpoint = Path(checkpoint)
    return checkpoint.parent.parent if checkpoint.parent.name == CHECKPOINTS else checkpoint.parent


def is_run_dir(path: Path) -> bool:
    return (path / "config.yaml").is_file() and (path / "metrics.jsonl").is_file()


def find_run_dirs(path: str | os.PathLike, required: bool = True) -> list[Path]:
    """Every run folder at or under `path`."""
    path = Path(path)
    if is_run_dir(path):
        return [path]
    if not path.is_dir():
        raise FileNotFoundError(f"{path} is neither a run folder nor a folder holding run folders")
    found = sorted(p.parent for p in path.rglob("metrics.jsonl") if is_run_dir(p.parent))
    if required and not found:
        raise FileNotFoundError(f"no run folders (config.yaml + metrics.jsonl) under {path}")
    return found


def read_config(run_dir: str | os.PathLike) -> dict[str, Any]:
    path = Path(run_dir) / "config.yaml"
    try:
        return yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise RunError(yaml_problem(path, exc)) from None


def read_metrics(path: str | os.PathLike, tail_bytes: int | None = None) -> list[dict[str, Any]]:
    """The records of a metrics.jsonl file (or of a run folder's). `tail_bytes`: only the records in the file's
    last bytes (a live run's latest; a line cut by the window or still being written is skipped)."""
    path = Path(path)
    if path.is_dir():
        path = path / "metrics.jsonl"
    if tail_bytes is None:
        with open(path) as f:
            return [json.loads(line) for line in f if line.strip()]
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        f.seek(max(0, f.tell() - tail_bytes))
        lines = f.read().decode(errors="replace").splitlines()
    records = []
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


def read_run(run_dir: str | os.PathLike) -> tuple[dict, list[dict]]:
    run_dir = Path(run_dir)
    if not is_run_dir(run_dir):
        raise FileNotFoundError(f"{run_dir} is not a run folder (needs config.yaml and metrics.jsonl)")
    return read_config(run_dir), read_metrics(run_dir)


def phase_of(run_dir: Path) -> str:
    return read_config(run_dir).get("phase", "offline")


def read_result(run_dir: str | os.PathLike) -> dict[str, Any] | None:
    """A collected run's result.json (None for a live run folder)."""
    path = Path(run_dir) / RESULT
    return json.loads(path.read_text()) if path.is_file() else None


def is_finished(run_dir: Path) -> bool:
    """The run wrote its final checkpoint (checkpoints/<phase>.pt), or is a collected finished run."""
    if checkpoint_path(run_dir, phase_of(run_dir)).is_file():
        return True
    result = read_result(run_dir)
    return bool(result and result.get("finished"))


def offline_run_of(online_dir: Path, config: dict) -> Path:
    """The offline run an online run started from: the recorded checkpoint's run folder, or, when that folder was
    copied or moved, the online run's sibling (a run pair) or the same place under the online run's sweep root
    (a sweep's naive trial fine-tunes <root>/<algo>/<dataset>/seed<k>/offline of another algorithm)."""
    recorded = run_dir_of_checkpoint(Path(config["offline_checkpoint"]).resolve())
    candidates = [online_dir.with_name("offline")]
    if len(recorded.parts) >= 4 and len(online_dir.parents) >= 4:
        candidates.append(online_dir.parents[3].joinpath(*recorded.parts[-4:]))
    candidates = [c for c in candidates if is_run_dir(c)]
    for candidate in candidates:  # a copy of that very run beside this one (collected results) comes first
        if candidate.resolve() == recorded or str(read_config(candidate).get("run_dir")) == str(recorded):
            return candidate
    if (recorded / "metrics.jsonl").is_file():
        return recorded
    return candidates[0] if candidates else recorded
