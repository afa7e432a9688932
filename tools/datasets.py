"""The study's regenerated datasets: an in-repo manifest, a check of the local files, and a fetch from wherever a
maintainer published them.

  python -m tools.datasets list                        # the manifest, and which files are here and intact
  python -m tools.datasets verify                      # sha256 of every local file against the manifest (exit 2 if not)
  python -m tools.datasets fetch --from URL_OR_FOLDER  # get what is missing: resumable, sha256-checked
  python -m tools.datasets manifest FOLDER             # (maintainer) write data/datasets.json from the files
  python -m tools.datasets to-minari FILE ID           # (maintainer) a file as a local Minari dataset (minari:ID)

Files live in $SHARED_DIR/datasets (default ../shared/datasets beside the repository), where `--dataset
shared:<file>` reads them; `--dir` picks another folder. The manifest (data/datasets.json) holds, per file, its
sha256, size, transitions, episodes, the score of its own episodes, its env id and how it was made (generator
settings, library versions, the command that makes it again; SAC on another CPU makes other bytes, so the files, not
the command, are what the study's numbers rest on).

fetch takes `<source>/<file name>` for every file of the manifest that is missing or damaged here. A source is an
http(s) URL (a release page's download folder, any static file server) or a local folder. The transfer goes to
`<dir>/.<name>.part`; a rerun after an interruption continues it (HTTP Range), and only a file whose size and
sha256 match the manifest is renamed into place. A mismatch deletes the partial file and is an error: nothing
half-written or wrong is ever left under the file's name.

Publishing (maintainers): upload the files named in the manifest to one folder, e.g. the assets of a GitHub release
or any static host, and give users `python -m tools.datasets fetch --from <that folder's URL>`.
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import urllib.error
import urllib.request
from pathlib import Path

import h5py

from common.datasets import DatasetError, normalized_score, read_d4rl_hdf5, sha256_of, shared_dir
from common.errors import cli

REPO = Path(__file__).resolve().parents[1]
MANIFEST = REPO / "data" / "datasets.json"
GENERATION_KEYS = ("generator", "env_id", "seed", "target_normalized_score", "stop_step", "dataset", "policy",
                   "gymnasium", "mujoco", "torch")
BLOCK = 1 << 20


# --- the manifest ----------------------------------------------------------------------------------------------
def describe(path: Path) -> dict:
    """One manifest entry, read from the file itself."""
    dataset = read_d4rl_hdf5(path)
    with h5py.File(path) as f:
        generation = json.loads(f["metadata/generation"][()]) if "metadata/generation" in f else {}
    scores = normalized_score(dataset.episode_returns(), dataset.ref_min_return, dataset.ref_max_return)
    family = dataset.env_id.split("-")[0].lower()
    made = {k: generation[k] for k in GENERATION_KEYS if k in generation}
    command = None
    if "seed" in generation and "target_normalized_score" in generation:
        # one generator run writes both files of an (env, seed); --medium-size is the medium file's size
        written = f"{family}-{generation.get('dataset', 'medium')}-gen.hdf5"
        command = (f"python -m tools.generate_dataset --env {family} --out gen/{family}-s{generation['seed']} "
                   f"--seed {generation['seed']} --target {generation['target_normalized_score']:g} --medium-size "
                   "{medium_size}  # writes " + written + ("" if written == path.name else f", shipped as {path.name}"))
    return {"name": path.name, "sha256": sha256_of(path), "bytes": path.stat().st_size, "transitions": len(dataset),
            "episodes": int(len(dataset.episode_returns())), "env_id": dataset.env_id,
            "score_mean": round(float(scores.mean()), 2), "score_std": round(float(scores.std()), 2),
            "generation": made, "command": command}


def write_manifest(folder: Path, out: Path) -> list[dict]:
    files = sorted(folder.glob("*.hdf5"))
    if not files:
        raise DatasetError(f"no .hdf5 files in {folder}")
    entries = [describe(path) for path in files]
    medium = {(e["env_id"], e["generation"].get("seed")): e["transitions"] for e in entries
              if e["generation"].get("dataset") == "medium"}
    for e in entries:
        if e["command"]:
            size = medium.get((e["env_id"], e["generation"].get("seed")))
            e["command"] = e["command"].replace("{medium_size}", str(size) if size else "MEDIUM_SIZE")
    tmp = out.with_name(f".{out.name}.part")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp.write_text(json.dumps({"datasets": entries}, indent=1) + "\n")
    os.replace(tmp, out)
    return entries


def read_manifest(path: Path = MANIFEST) -> list[dict]:
    if not path.is_file():
        raise DatasetError(f"no dataset manifest at {path}")
    return json.loads(path.read_text())["datasets"]


# --- checking and fetching -------------------------------------------------------------------------------------
def status(entry: dict, folder: Path) -> str:
    """'ok', 'missing' or 'damaged' (size or sha256 differ)."""
    path = folder / entry["name"]
    if not path.is_file():
        return "missing"
    if path.stat().st_size != entry["bytes"] or sha256_of(path) != entry["sha256"]:
        return "damaged"
    return "ok"


def _open(source: str, name: str, offset: int):
    """(a readable stream of <source>/<name> from byte `offset`, whether it really starts there)."""
    if "://" not in source:
        stream = open(Path(source) / name, "rb")
        stream.seek(offset)
        return stream, True
    request = urllib.request.Request(f"{source.rstrip('/')}/{name}")
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    response = urllib.request.urlopen(request, timeout=60)
    return response, offset > 0 and response.status == 206


def fetch_one(entry: dict, source: str, folder: Path) -> Path:
    name = entry["name"]
    target, part = folder / name, folder / f".{name}.part"
    offset = part.stat().st_size if part.is_file() else 0
    if offset > entry["bytes"]:
        part.unlink()
        offset = 0
    try:
        stream, continued = _open(source, name, offset)
    except (OSError, urllib.error.URLError) as exc:
        raise DatasetError(f"cannot fetch {name} from {source}: {getattr(exc, 'reason', exc)}") from None
    with stream, open(part, "ab" if continued else "wb") as out:
        try:
            shutil.copyfileobj(stream, out, BLOCK)
        except (OSError, urllib.error.URLError, http.client.HTTPException) as exc:  # cut: keep the part, rerun goes on
            raise DatasetError(f"fetching {name} from {source} stopped at {out.tell()} of {entry['bytes']} bytes "
                               f"({exc}); run the same command again to continue") from None
    size = part.stat().st_size
    if size < entry["bytes"]:
        raise DatasetError(f"fetching {name} from {source} stopped at {size} of {entry['bytes']} bytes; run the "
                           "same command again to continue")
    actual = sha256_of(part)
    if size != entry["bytes"] or actual != entry["sha256"]:
        part.unlink()
        raise DatasetError(f"{name} from {source} is not the manifest's file ({size} bytes, sha256 {actual}; "
                           f"expected {entry['bytes']} bytes, {entry['sha256']}); it was deleted. Check the source")
    os.replace(part, target)
    return target


# --- export to Minari -------------------------------------------------------------------------------------------
def to_minari(path: Path, dataset_id: str) -> str:
    """Writes a D4RL-format file as a local Minari dataset (under $MINARI_DATASETS_PATH, default ~/.minari), which
    `--dataset minari:<id>` then loads with the same arrays: episodes split at terminals and timeouts, each stored as
    its observations plus its last next_observation (so next_observations must continue observations within an
    episode), with the env and D4RL's reference returns. For maintainers who publish the files as Minari datasets."""
    import warnings

    import gymnasium as gym
    import minari
    import numpy as np
    from minari.data_collector.episode_buffer import EpisodeBuffer

    from common.envs import gym_make

    data = read_d4rl_hdf5(path)
    ends = np.flatnonzero(data.terminals | data.timeouts)
    bounds = list(zip(np.r_[0, ends[:-1] + 1], ends + 1)) if len(ends) else []
    if not len(ends) or ends[-1] != len(data) - 1:  # an episode cut by the file's end: kept, with no end flag
        bounds.append((ends[-1] + 1 if len(ends) else 0, len(data)))
    buffers = []
    for start, stop in bounds:
        obs, nxt = data.observations[start:stop], data.next_observations[start:stop]
        if not np.array_equal(obs[1:], nxt[:-1]):
            raise DatasetError(f"{path}: next_observations do not continue observations within the episode at rows "
                               f"{start}–{stop - 1}; a Minari episode holds one observation sequence")
        buffers.append(EpisodeBuffer(id=len(buffers), observations=list(np.concatenate([obs, nxt[-1:]])),
                                     actions=list(data.actions[start:stop]), rewards=list(data.rewards[start:stop]),
                                     terminations=list(data.terminals[start:stop]),
                                     truncations=list(data.timeouts[start:stop])))
    env = gym_make(data.env_id)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # minari asks for an author, a description, ...
            minari.create_dataset_from_buffers(dataset_id, buffer=buffers, env=env, algorithm_name="SAC (D4RL recipe)",
                                               ref_min_score=data.ref_min_return, ref_max_score=data.ref_max_return,
                                               description=f"{path.name}, exported by tools.datasets")
    except (ValueError, gym.error.Error) as exc:
        raise DatasetError(f"cannot export {path} as minari dataset {dataset_id!r}: {exc}") from None
    finally:
        env.close()
    return dataset_id


# --- command line ----------------------------------------------------------------------------------------------
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--manifest", type=Path, default=MANIFEST, help=f"default: {MANIFEST.relative_to(REPO)}")
    commands = parser.add_subparsers(dest="command", required=True)
    for name in ("list", "verify", "fetch"):
        sub = commands.add_parser(name)
        sub.add_argument("--dir", type=Path, help="the datasets folder (default: $SHARED_DIR/datasets)")
        if name == "fetch":
            sub.add_argument("--from", dest="source", required=True, help="a URL or a folder holding the files")
            sub.add_argument("names", nargs="*", help="only these files (default: every file of the manifest)")
    export = commands.add_parser("to-minari", help="write a D4RL-format file as a local Minari dataset")
    export.add_argument("file", type=Path)
    export.add_argument("dataset_id", help="e.g. regenerated/hopper/medium-v0")
    make = commands.add_parser("manifest")
    make.add_argument("folder", type=Path, help="the folder holding the files")
    args = parser.parse_args(argv)

    if args.command == "to-minari":
        if not args.file.is_file():
            raise DatasetError(f"no such file: {args.file}")
        print(f"wrote minari dataset {to_minari(args.file, args.dataset_id)}; load it with --dataset "
              f"minari:{args.dataset_id}")
        return 0
    if args.command == "manifest":
        entries = write_manifest(args.folder, args.manifest)
        print(f"wrote {args.manifest}: {len(entries)} files")
        return 0
    entries = read_manifest(args.manifest)
    folder = args.dir or shared_dir() / "datasets"
    if args.command == "list":
        print(f"{'file':36} {'transitions':>11} {'episodes':>8} {'score':>13} {'MiB':>6}  here ({folder})")
        for e in entries:
            score = f"{e['score_mean']:.1f} ± {e['score_std']:.1f}"
            print(f"{e['name']:36} {e['transitions']:>11,} {e['episodes']:>8,} {score:>13} "
                  f"{e['bytes'] / 2**20:>6.1f}  {status(e, folder)}")
        return 0
    if args.command == "verify":
        states = {e["name"]: status(e, folder) for e in entries}
        for name, state in states.items():
            print(f"{name}: {state}")
        bad = [n for n, s in states.items() if s != "ok"]
        if bad:
            raise DatasetError(f"{len(bad)} of {len(states)} files in {folder} are missing or differ from the "
                               f"manifest ({', '.join(bad)}); fetch them: python -m tools.datasets fetch --from "
                               "URL_OR_FOLDER")
        print(f"all {len(states)} files in {folder} match the manifest")
        return 0
    wanted = set(args.names) or {e["name"] for e in entries}
    unknown = wanted - {e["name"] for e in entries}
    if unknown:
        raise DatasetError(f"not in the manifest: {', '.join(sorted(unknown))}; it lists "
                           f"{', '.join(e['name'] for e in entries)}")
    folder.mkdir(parents=True, exist_ok=True)
    for e in entries:
        if e["name"] not in wanted:
            continue
        if status(e, folder) == "ok":
            print(f"{e['name']}: already here")
            continue
        if (folder / e["name"]).is_file():
            raise DatasetError(f"{folder / e['name']} differs from the manifest's file; move it away to fetch it again")
        fetch_one(e, args.source, folder)
        print(f"{e['name']}: fetched and verified ({e['bytes']:,} bytes)")
    return 0


if __name__ == "__main__":
    cli(main)
