"""Copy the finished runs of a sweep (or any folder of runs) into the repository, without their checkpoints.

  python -m tools.collect_results ~/campaign/runs/truncated benchmarks/results/truncated

Each finished run folder (its checkpoints/<phase>.pt exists) becomes <dest>/<same relative path>/ with its
config.yaml and metrics.jsonl, and a result.json holding what the checkpoints and file times told and a git
clone loses: that the run finished, its wall time in minutes (the sum of its segments, recorded in the final
checkpoint; for older checkpoints the progress bars of the trial's log, summed over its segments, or where there is
no log config.yaml's mtime to the final checkpoint's, the last segment only if resumed),
how many times it was started (a sweep trial's <phase>.log has one `=== ` line per start) and where it was
collected from. `common.layout.is_finished` and
`benchmarks.quality` read it, so reports regenerate from what is committed. A sweep root's sweep.yaml is copied
too: it marks <dest> as a sweep root, whose folder names (adaptive_bc_naive, ...) label the runs; so are the
sweep-<name>.yaml records of other sweep files run into the same root.

Unfinished runs are skipped. A run already collected with the same files is left alone; one whose committed files
differ is an error (nothing is overwritten; delete the folder in <dest> to collect it again). Files are written to
a temporary name and renamed, so an interrupted collection leaves no half-written file.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import tempfile
from pathlib import Path

from common import layout
from common.errors import RunError, cli
from tools.plots import SWEEP_MARKER

FILES = ("config.yaml", "metrics.jsonl")


class CollectError(RunError):
    pass


def starts(run_dir: Path, phase: str) -> int | None:
    log = run_dir.parent / f"{phase}.log"
    if not log.is_file():
        return None
    return sum(line.startswith("=== ") for line in log.read_text(errors="replace").splitlines())


# A progress-bar update in a run's log: "| 160073/200000 [00:01<09:09" or "[1:02:03<" (tqdm's elapsed time)
BAR = re.compile(r"\| *(\d+)/(\d+) \[(?:(\d+):)?(\d+):(\d+)<")


def progress_wall_s(log: Path) -> float | None:
    """The seconds a sweep trial's <phase>.log shows its run working: the last elapsed time of each progress bar,
    summed over the bars (a bar ends where its elapsed time or its step goes back, or its total changes: a resumed
    process starts a new one). Lines between updates of one bar (another process's `=== ` line, a refused start) do not split it. None
    when the log shows no bar. Start-up before the bar (loading the data) is not counted."""
    if not log.is_file():
        return None
    total, last = 0.0, None
    for match in BAR.finditer(log.read_text(errors="replace")):
        step, steps = int(match.group(1)), int(match.group(2))
        elapsed = int(match.group(3) or 0) * 3600 + int(match.group(4)) * 60 + int(match.group(5))
        if last is not None and (elapsed < last[0] or step < last[1] or steps != last[2]):
            total += last[0]
        last = (elapsed, step, steps)
    return None if last is None else total + last[0]


def result_of(run_dir: Path) -> dict:
    """What a git clone loses. wall_min: the final checkpoint's `wall_s` (every segment of a resumed run, summed);
    for a checkpoint written before that was recorded, the progress bars of the trial's <phase>.log summed over its
    segments (tools.sweep writes it), or else config.yaml's mtime to the final checkpoint's: the last segment only
    when the run was resumed (wall_source says which)."""
    from common.checkpoint import load_checkpoint

    phase = layout.phase_of(run_dir)
    final = layout.checkpoint_path(run_dir, phase)
    recorded = load_checkpoint(final, kind=("agent",)).get("wall_s")
    from_log = None if recorded is not None else progress_wall_s(run_dir.parent / f"{phase}.log")
    if recorded is not None:
        wall, source = float(recorded) / 60.0, "segments"
    elif from_log is not None:
        wall, source = from_log / 60.0, "log"
    else:
        wall, source = (final.stat().st_mtime - (run_dir / "config.yaml").stat().st_mtime) / 60.0, "mtimes"
    return {"finished": True, "phase": phase, "wall_min": round(wall, 2), "wall_source": source,
            "starts": starts(run_dir, phase), "collected_from": str(run_dir)}


def _write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def remove_stale_temporaries(folder: Path) -> None:
    """The hidden .<name>.*.tmp files a killed collection left (a file is written to one, then renamed)."""
    for stale in folder.glob(".*.tmp"):
        stale.unlink(missing_ok=True)


def collect(source: Path, dest: Path) -> list[Path]:
    """Copies the finished runs under `source` to `dest`; returns the folders written (not the unchanged ones)."""
    source = Path(source).resolve()
    runs = [r for r in layout.find_run_dirs(source, required=False)
            if layout.checkpoint_path(r, layout.phase_of(r)).is_file()]
    plans = []
    for run in runs:
        target = Path(dest) / run.relative_to(source)
        contents = {name: (run / name).read_bytes() for name in FILES}
        present = [n for n in FILES if (target / n).is_file()]
        differ = [n for n in present if (target / n).read_bytes() != contents[n]]
        if differ:
            raise CollectError(f"{target} already holds a different {' and '.join(differ)} than {run}; nothing "
                               "was copied. Delete that folder to collect the run again.")
        if len(present) == len(FILES) and (target / layout.RESULT).is_file():
            continue  # collected before
        # not collected, or a collection killed midway (some files, or a temporary one): (re)written below
        plans.append((run, target, contents))
    written = []
    # a sweep root's copy of its sweep file marks it (its folder names label the runs); other sweep files run into
    # the same root are kept beside it as sweep-<name>.yaml (tools.sweep.record_sweep_file)
    if Path(dest).is_dir():
        remove_stale_temporaries(Path(dest))
    if plans and (source / SWEEP_MARKER).is_file():
        for record in [source / SWEEP_MARKER, *sorted(source.glob("sweep-*.yaml"))]:
            if not (Path(dest) / record.name).is_file():
                Path(dest).mkdir(parents=True, exist_ok=True)
                _write(Path(dest) / record.name, record.read_bytes())
    for run, target, contents in plans:  # checked all first: an error above leaves dest untouched
        target.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(target)
        for name, data in contents.items():
            _write(target / name, data)
        _write(target / layout.RESULT, (json.dumps(result_of(run), indent=1) + "\n").encode())
        shutil.copystat(run / "metrics.jsonl", target / "metrics.jsonl")
        written.append(target)
    return written


def main(argv=None) -> list[Path]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", type=Path, help="a sweep root, a folder of runs, or one run folder")
    parser.add_argument("dest", type=Path, help="where the runs go (the same relative paths)")
    args = parser.parse_args(argv)
    if not args.source.is_dir():
        raise CollectError(f"{args.source} is not a folder")
    written = collect(args.source, args.dest)
    for target in written:
        print(f"collected {target}")
    print(f"{len(written)} run(s) collected into {args.dest}")
    return written


if __name__ == "__main__":
    cli(main)
