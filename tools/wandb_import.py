"""Replay committed runs into wandb offline runs, so `wandb sync` turns a study into dashboards.

  python -m tools.wandb_import benchmarks/results/truncated --out wandb-import
  wandb sync wandb-import/*/wandb/offline-run-*          # with a wandb account and internet

Every run folder under the given folder (config.yaml + metrics.jsonl) becomes one offline wandb run with the
identity a live run gets (common.logging.wandb_identity): named <variant>/<dataset>/seed<k>/<phase>, grouped by
(study, variant, dataset), tagged, job_type = phase, every record logged against its own step (gradient steps
offline, env steps online), an online run's config naming its offline run's id. In a sweep root the folder names are
the variants (runs collected before config.yaml recorded one). Ids derive from the study name and the run's path
inside it, so importing again gives the same runs. `read_offline_run` reads such a run back with wandb's own
record format (wandb.proto), for checking.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import struct
import time
from pathlib import Path

from google.protobuf.message import DecodeError

from common import layout
from common.errors import RunError, cli
from common.logging import step_by_phase, wandb_identity
from tools.plots import SWEEP_MARKER


def _id(study: str, rel: Path) -> str:
    return hashlib.sha1(f"{study}/{rel.as_posix()}".encode()).hexdigest()[:12]


def import_runs(root: Path, out: Path, project: str = "offline-to-online", study: str | None = None) -> list[Path]:
    import wandb

    root = root.resolve()
    study = study or root.name
    sweep_root = (root / SWEEP_MARKER).is_file()
    written = []
    for run_dir in layout.find_run_dirs(root):
        rel = run_dir.relative_to(root)
        config = layout.read_config(run_dir)
        algo, phase = config.get("algo", "?"), config.get("phase", "offline")
        variant = config.get("variant") or (rel.parts[0] if sweep_root and len(rel.parts) >= 4 else algo)
        identity = wandb_identity({**config, "variant": variant, "wandb_group": study, "wandb_project": project},
                                  algo, phase, run_dir)
        identity["id"] = _id(study, rel)
        if phase == "online" and config.get("offline_checkpoint"):
            identity["config"]["offline_wandb_run_id"] = _id(study, layout.offline_run_of(run_dir, config).relative_to(root))
        target = out / rel.as_posix().replace("/", "_")
        target.mkdir(parents=True, exist_ok=True)
        run = wandb.init(**identity, dir=str(target), mode="offline", settings=wandb.Settings(silent=True, console="off"))
        step_key = f"{phase}_step"
        step_by_phase(run, phase)
        for record in layout.read_metrics(run_dir):
            run.log({**{k: v for k, v in record.items() if k not in ("phase", "step")}, step_key: record["step"]})
        run.finish()
        written.append(wait_for_offline_run(next(target.glob("wandb/offline-run-*"))))
    return written


# --- reading an offline run back (the .wandb file: a LevelDB-style log of wandb.proto Record messages) ------------
HEADER = struct.Struct("<4sHB")  # ":W&B", magic 0xBEE1, version
CHUNK = struct.Struct("<IHB")  # crc32, length, type (1 full, 2 first, 3 middle, 4 last)
BLOCK = 32768


def read_offline_run(run_folder: str | os.PathLike) -> dict:
    """{"run": {id, name, group, job_type, tags, config}, "metrics": {name: step_metric}, "history": [dict, ...]} of
    an offline run folder (…/wandb/offline-run-*), parsed with wandb's protobuf definitions."""
    from wandb.proto import wandb_internal_pb2 as pb

    (path,) = Path(run_folder).glob("run-*.wandb")
    data = path.read_bytes()
    ident, magic, _ = HEADER.unpack_from(data)
    if ident != b":W&B" or magic != 0xBEE1:
        raise RunError(f"{path} is not a wandb run file")
    messages, pending, pos = [], b"", HEADER.size
    while pos + CHUNK.size <= len(data):
        left = BLOCK - pos % BLOCK
        if left < CHUNK.size:
            pos += left
            continue
        _, length, kind = CHUNK.unpack_from(data, pos)
        if length == 0 and kind == 0:  # padding to the end of the block
            pos += left
            continue
        chunk = data[pos + CHUNK.size:pos + CHUNK.size + length]
        pos += CHUNK.size + length
        pending = chunk if kind in (1, 2) else pending + chunk
        if kind in (1, 4):
            messages.append(pending)
    out = {"run": None, "metrics": {}, "history": [], "complete": False}
    for message in messages:
        record = pb.Record()
        record.ParseFromString(message)
        kind = record.WhichOneof("record_type")
        if kind == "run":
            r = record.run
            out["run"] = {"id": r.run_id, "name": r.display_name, "group": r.run_group, "job_type": r.job_type,
                          "tags": list(r.tags), "project": r.project,
                          "config": {i.key: json.loads(i.value_json) for i in r.config.update}}
        elif kind == "metric" and record.metric.step_metric:
            out["metrics"][record.metric.glob_name or record.metric.name] = record.metric.step_metric
        elif kind == "history":
            out["history"].append({i.key or "/".join(i.nested_key): json.loads(i.value_json)
                                   for i in record.history.item})
        elif kind == "exit":  # the last record wandb writes when a run finishes
            out["complete"] = True
    return out


def wait_for_offline_run(run_folder: Path, timeout: float = 120.0) -> Path:
    """`run.finish()` can return before wandb's service has written the whole .wandb file (seen on a loaded machine:
    a file with no run record yet); wait until it ends with the exit record."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if read_offline_run(run_folder)["complete"]:
                return run_folder
        except (ValueError, struct.error, RunError, DecodeError):  # no file yet, or one cut inside a record
            pass
        if time.monotonic() > deadline:
            raise RunError(f"wandb did not finish writing {run_folder} within {timeout:.0f} s")
        time.sleep(0.2)


def main(argv=None) -> list[Path]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("root", type=Path, help="committed runs, e.g. benchmarks/results/truncated")
    parser.add_argument("--out", type=Path, required=True, help="where the offline wandb runs go")
    parser.add_argument("--project", default="offline-to-online")
    parser.add_argument("--study", help="the group prefix (default: the folder's name)")
    args = parser.parse_args(argv)
    if not args.root.is_dir():
        raise RunError(f"{args.root} is not a folder")
    written = import_runs(args.root, args.out, args.project, args.study)
    print(f"{len(written)} offline wandb runs in {args.out}; upload them with: wandb sync {args.out}/*/wandb/offline-run-*")
    return written


if __name__ == "__main__":
    cli(main)
