"""Checkpoints: one file with everything needed to continue a run exactly.

Written to a temporary file and renamed, so a kill never leaves a half-written checkpoint; read with
`weights_only=True`, so a checkpoint file cannot run code.
"""
from __future__ import annotations

import errno
import os
import pickle
import re
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import torch

from common.errors import RunError

FORMAT = "offline-to-online-checkpoint/1"


TMP_SUFFIX = ".tmp"


class CheckpointError(RunError, ValueError):
    pass


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_umask()


def remove_temporaries(directory: str | os.PathLike) -> list[Path]:
    """Deletes what an interrupted save_checkpoint left in `directory` (.<name>.pt.<random>.tmp)."""
    directory = Path(directory)
    stale = [p for p in directory.glob(f".*.pt.*{TMP_SUFFIX}") if p.is_file()] if directory.is_dir() else []
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


def _write_failure(path: Path, exc: RuntimeError) -> BaseException:
    """torch's zip writer turns a full disk into RuntimeError('[enforce fail at inline_container.cc…] unexpected
    pos …' or '… file write failed'): the same one-line OSError as at the other write points (exit 2)."""
    text = str(exc)
    if "inline_container" not in text and "write failed" not in text and "unexpected pos" not in text:
        return exc
    free = shutil.disk_usage(path.parent).free
    if free < 64 * 2**20:
        return OSError(errno.ENOSPC, f"No space left on device while writing {path.name} ({free // 1024} KB free); "
                       "free some space and rerun the same command: the run resumes from its last checkpoint",
                       str(path))
    return OSError(errno.EIO, f"could not write {path.name}: {text.splitlines()[0][:200]}", str(path))


def save_checkpoint(path: str | os.PathLike, payload: dict[str, Any]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TMP_SUFFIX, dir=path.parent)
    try:
        os.fchmod(fd, _FILE_MODE)  # mkstemp makes it 0600; a checkpoint is as readable as the run's other files
        with os.fdopen(fd, "wb") as f:
            try:
                torch.save({"format": FORMAT, **payload}, f)
            except RuntimeError as exc:  # torch's zip writer reports a failed write as "enforce fail ... pos"
                raise _write_failure(path, exc) from None
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_name, path)
    finally:
        Path(tmp_name).unlink(missing_ok=True)
    return path


def load_checkpoint(path: str | os.PathLike, algo: str | None = None, kind: str | tuple[str, ...] | None = None,
                    map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Loads and checks a checkpoint; `algo` / `kind` (e.g. 'agent', 'vae') must match when given."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    if not zipfile.is_zipfile(path):  # torch.save writes a zip archive; anything else is not one of ours
        raise CheckpointError(f"{path} is truncated or not a checkpoint of this repository (not a complete torch checkpoint file)")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"unsupported (?:global: )?GLOBAL (\S+)", str(exc), re.IGNORECASE)
        if not found:
            raise CheckpointError(f"{path} is corrupted or not a checkpoint of this repository") from None
        raise CheckpointError(
            f"refusing to load {path}: it holds objects other than tensors and plain data (it references "
            f"{found.group(1)}), which could run code when loaded; only checkpoints written by this repository "
            "load") from None
    except Exception as exc:  # truncated zip, foreign pickle, ... all mean: not a usable checkpoint
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CheckpointError(f"{path} is truncated or not a checkpoint ({reason})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a checkpoint of this repository (no '{FORMAT}' marker)")
    if algo is not None and payload.get("algo") != algo:
        raise CheckpointError(f"{path} is a {payload.get('algo')!r} checkpoint, expected {algo!r}")
    kinds = (kind,) if isinstance(kind, str) else kind
    if kinds is not None and payload.get("kind") not in kinds:
        raise CheckpointError(f"{path} holds a {payload.get('kind')!r} checkpoint, expected {' or '.join(kinds)!r}")
    return payload


def load_module_state(module: torch.nn.Module, state: dict, name: str) -> None:
    """module.load_state_dict(state), with torch's shape/key mismatch turned into a one-line CheckpointError."""
    try:
        module.load_state_dict(state)
    except RuntimeError as exc:
        detail = " ".join(line.strip() for line in str(exc).splitlines()[1:3])
        raise CheckpointError(
            f"the checkpoint's {name} does not fit this agent ({detail[:300]}): it was written with other network "
            "sizes than its config.yaml says, or by a version of this code whose networks are laid out differently "
            "(one this version cannot convert)") from None
