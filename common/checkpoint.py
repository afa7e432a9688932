"""Checkpoints: one file with everything needed to continue a run exactly.

Written to a temporary file and renamed, so a kill never leaves a half-written checkpoint; read with
`weights_only=True`, so a checkpoint file cannot run code.
"""
from __future__ import annotations

import os
import pickle
import tempfile
from pathlib import Path
from typing import Any

import torch

FORMAT = "offline-to-online-checkpoint/1"


class CheckpointError(ValueError):
    pass


def save_checkpoint(path: str | os.PathLike, payload: dict[str, Any]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save({"format": FORMAT, **payload}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_name, path)
    finally:
        Path(tmp_name).unlink(missing_ok=True)
    return path


def load_checkpoint(path: str | os.PathLike, algo: str | None = None, kind: str | None = None,
                    map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Loads and checks a checkpoint; `algo` / `kind` (e.g. 'agent', 'vae') must match when given."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"refusing to load {path}: it holds objects other than tensors and plain data, "
            f"which could run code ({str(exc).splitlines()[0]})") from None
    except Exception as exc:  # truncated zip, foreign pickle, ... all mean: not a usable checkpoint
        raise CheckpointError(f"{path} is truncated or not a checkpoint ({str(exc).splitlines()[0]})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a checkpoint of this repository (no '{FORMAT}' marker)")
    if algo is not None and payload.get("algo") != algo:
        raise CheckpointError(f"{path} is a {payload.get('algo')!r} checkpoint, expected {algo!r}")
    if kind is not None and payload.get("kind") != kind:
        raise CheckpointError(f"{path} holds a {payload.get('kind')!r} checkpoint, expected {kind!r}")
    return payload
