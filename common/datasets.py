"""Offline datasets: D4RL downloads, D4RL-format HDF5 files, and Minari datasets.

`load_dataset(spec)` accepts
  d4rl:<name>        e.g. d4rl:hopper-medium-v2 (downloaded once into $D4RL_DATASET_DIR or ~/.d4rl/datasets)
  minari:<id>        e.g. minari:mujoco/hopper/medium-v0 (needs the `minari` package)
  shared:<file>      a file in $SHARED_DIR/datasets/ (the regenerated D4RL-format files)
  <path>.hdf5        any D4RL-format file
and returns a `Dataset` of float32 / bool numpy arrays with D4RL's shapes.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

import h5py
import numpy as np

from common.errors import RunError

REPO_ROOT = Path(__file__).resolve().parent.parent

# D4RL's reference returns (d4rl/infos.py) used for normalized scores.
REF_RETURNS = {
    "hopper": (-20.272305, 3234.3),
    "walker2d": (1.629008, 4592.3),
    "halfcheetah": (-280.178953, 12135.0),
}
# D4RL v2 locomotion data came from the v3 envs; gymnasium's v4 envs use the same models.
D4RL_ENV_IDS = {"hopper": "Hopper-v4", "walker2d": "Walker2d-v4", "halfcheetah": "HalfCheetah-v4"}
D4RL_LEVELS = ("random", "medium", "medium-replay", "medium-expert", "expert")
D4RL_DEFAULT_BASE_URL = "http://rail.eecs.berkeley.edu/datasets/offline_rl"
# sha256 of the official files (TFDS catalog). Other names are accepted after a format check.
D4RL_SHA256 = {
    "hopper-medium-v2": "5bdf1bc4a713c82941de44633df669b36c89850b652a25985166796d25cf71a0",
    "hopper-medium-replay-v2": "e121c5f7c9857a307baa9edc6a2c3b48e85fedb9ac316ecddd0f48ca7ef4e39b",
    "walker2d-medium-v2": "cf00f43add04c17fdfc2958dd581dea0851b2e5bedbe6fda073758a8f841aeda",
    "walker2d-medium-replay-v2": "e75de96a4f77acf7d4e0d6fdf0d7ccb177c26c44bb4388e4fd99f543ccfa18db",
    "halfcheetah-medium-v2": "41324e8487a9556d8cfa4538827f8937f4d63dae3030825ebc9f3a726ed08ca0",
    "halfcheetah-medium-replay-v2": "48d494a4770c11f48260736dec090b78bdca8375647ed4d24bfa5b6610c7f683",
}
REQUIRED_KEYS = ("observations", "actions", "rewards", "terminals", "timeouts")


class DatasetError(RunError, ValueError):
    pass


@dataclasses.dataclass
class Dataset:
    name: str
    env_id: str
    observations: np.ndarray  # float32 (N, obs_dim)
    actions: np.ndarray  # float32 (N, act_dim)
    rewards: np.ndarray  # float32 (N,)
    next_observations: np.ndarray  # float32 (N, obs_dim)
    terminals: np.ndarray  # bool (N,)  true environment termination: no bootstrapping
    timeouts: np.ndarray  # bool (N,)  time-limit truncation: bootstrapping continues
    ref_min_return: float
    ref_max_return: float
    source: str = ""

    @property
    def obs_dim(self) -> int:
        return int(self.observations.shape[1])

    @property
    def act_dim(self) -> int:
        return int(self.actions.shape[1])

    def __len__(self) -> int:
        return int(self.rewards.shape[0])

    def normalized_score(self, returns):
        return normalized_score(returns, self.ref_min_return, self.ref_max_return)

    def episode_returns(self) -> np.ndarray:
        """Returns of the complete episodes (ending in a terminal or a timeout)."""
        ends = np.flatnonzero(self.terminals | self.timeouts)
        if len(ends) == 0:
            return np.zeros(0, dtype=np.float64)
        sums = np.cumsum(self.rewards, dtype=np.float64)[ends]
        return np.diff(np.concatenate([[0.0], sums]))


def normalized_score(returns, ref_min: float, ref_max: float):
    """D4RL normalized score, x100 (0 = random policy, 100 = expert)."""
    return 100.0 * (np.asarray(returns, dtype=np.float64) - ref_min) / (ref_max - ref_min)


def env_family(name: str) -> str | None:
    """'hopper' / 'walker2d' / 'halfcheetah' from a dataset name or env id, else None."""
    key = name.lower().replace("_", "").replace("-", "")
    for family in ("halfcheetah", "walker2d", "hopper"):
        if family in key:
            return family
    return None


def shared_dir() -> Path:
    """$SHARED_DIR, else ../shared beside the repository root."""
    return Path(os.environ.get("SHARED_DIR", REPO_ROOT.parent / "shared"))


def d4rl_dataset_dir() -> Path:
    return Path(os.path.expanduser(os.environ.get("D4RL_DATASET_DIR", "~/.d4rl/datasets")))


def d4rl_filename(name: str) -> str:
    """hopper-medium-replay-v2 -> hopper_medium_replay-v2.hdf5 (the official URL and cache layout)."""
    match = re.fullmatch(r"([a-z0-9]+)-(.+)-(v\d+)", name)
    if not match:
        raise DatasetError(f"not a D4RL dataset name: {name!r} (expected e.g. hopper-medium-v2)")
    env, level, version = match.groups()
    return f"{env}_{level.replace('-', '_')}-{version}.hdf5"


def d4rl_url(name: str, base_url: str | None = None) -> str:
    base = (base_url or os.environ.get("D4RL_BASE_URL") or D4RL_DEFAULT_BASE_URL).rstrip("/")
    return f"{base}/gym_mujoco_v2/{d4rl_filename(name)}"


def _check_d4rl_name(name: str) -> None:
    match = re.fullmatch(r"([a-z0-9]+)-(.+)-(v\d+)", name)
    if not match or match.group(1) not in REF_RETURNS or match.group(2) not in D4RL_LEVELS:
        known = ", ".join(f"{e}-{lvl}-v2" for e in REF_RETURNS for lvl in D4RL_LEVELS)
        raise DatasetError(f"unknown D4RL dataset {name!r}. Known: {known}")


def sha256_of(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def dataset_fingerprint(dataset: "Dataset") -> str:
    """What the run trained on: sha256 of the file, or, for data that is not one file (minari:), of the arrays."""
    path = Path(dataset.source)
    if dataset.source and path.is_file():
        return "file-sha256:" + sha256_of(path)
    digest = hashlib.sha256()
    for array in (dataset.observations, dataset.actions, dataset.rewards, dataset.next_observations,
                  dataset.terminals, dataset.timeouts):
        digest.update(np.ascontiguousarray(array).tobytes())
    return "arrays-sha256:" + digest.hexdigest()


def download_d4rl(name: str, dataset_dir: str | os.PathLike | None = None, base_url: str | None = None,
                  progress: bool = True) -> Path:
    """Returns the cached file, downloading it first if needed.

    The transfer goes to a hidden temporary file in the dataset directory, is checked (length,
    sha256, HDF5 keys) and only then renamed into place, so the directory never holds a partial file.
    """
    _check_d4rl_name(name)
    directory = Path(dataset_dir) if dataset_dir else d4rl_dataset_dir()
    target = directory / d4rl_filename(name)
    if target.exists():
        return target
    directory.mkdir(parents=True, exist_ok=True)
    url = d4rl_url(name, base_url)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=directory)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            received, expected_len = _stream(url, out, progress, target.name)
        actual = sha256_of(tmp)
        expected = D4RL_SHA256.get(name)
        if expected_len is not None and received != expected_len:
            raise DatasetError(
                f"download of {target.name} from {url} was truncated: {received} of {expected_len} bytes; "
                f"sha256 expected {expected or 'unknown'}, got {actual}. Nothing was kept; try again.")
        if expected is not None and actual != expected:
            raise DatasetError(
                f"sha256 mismatch for {target.name} from {url}: expected {expected}, got {actual}. "
                "The file was deleted; check D4RL_BASE_URL or try again.")
        if expected is None:
            _read_hdf5_arrays(tmp, label=f"{target.name} (downloaded from {url})",
                              remedy="nothing was kept; try the download again")
            print(f"{target.name}: no known checksum; format checked, sha256 {actual}")
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


def _stream(url: str, out, progress: bool, label: str) -> tuple[int, int | None]:
    from tqdm.auto import tqdm

    try:
        response = urllib.request.urlopen(url, timeout=60)
    except urllib.error.URLError as exc:
        raise DatasetError(
            f"cannot download {url}: {exc}. Without internet, use a local D4RL-format file "
            "(a path or shared:<file>) or set D4RL_BASE_URL to a mirror.") from None
    with response:
        length = response.headers.get("Content-Length")
        expected_len = int(length) if length is not None else None
        received = 0
        with tqdm(total=expected_len, unit="B", unit_scale=True, desc=label, disable=not progress) as bar:
            while True:
                try:
                    block = response.read(1 << 20)
                except (ConnectionError, TimeoutError, OSError, urllib.error.URLError):
                    break  # a cut connection shows up as a short transfer below
                except Exception as exc:  # http.client.IncompleteRead
                    if exc.__class__.__name__ != "IncompleteRead":
                        raise
                    break
                if not block:
                    break
                out.write(block)
                received += len(block)
                bar.update(len(block))
    return received, expected_len


def _read_hdf5_arrays(path: Path, label: str | None = None, remedy: str | None = None) -> tuple[dict[str, np.ndarray], dict]:
    """`remedy`: what to tell the user when the file is not HDF5 (a downloaded file can be fetched again)."""
    label = label or str(path)
    try:
        f = h5py.File(path, "r")
    except (OSError, ValueError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DatasetError(f"{label} is not a readable HDF5 file ({reason}); "
                           f"{remedy or 'check that it is the D4RL-format .hdf5 file you meant'}") from None
    with f:
        missing = [k for k in REQUIRED_KEYS if k not in f]
        if missing:
            raise DatasetError(f"{label} is missing required key(s) {missing}; a D4RL-format file needs {list(REQUIRED_KEYS)}")
        try:
            arrays = {k: f[k][()] for k in REQUIRED_KEYS}
            if "next_observations" in f:
                arrays["next_observations"] = f["next_observations"][()]
        except (OSError, KeyError) as exc:
            raise DatasetError(f"{label} is corrupted: cannot read its arrays ({exc})") from None
        metadata = {}
        if "metadata" in f and isinstance(f["metadata"], h5py.Group):
            for key, item in f["metadata"].items():
                if isinstance(item, h5py.Dataset):
                    value = item[()]
                    metadata[key] = value.decode() if isinstance(value, bytes) else value
    return arrays, metadata


def read_d4rl_hdf5(path: str | os.PathLike, name: str | None = None, remedy: str | None = None) -> Dataset:
    """Reads a D4RL-format file into transitions that never cross an episode boundary."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"dataset file not found: {path}")
    arrays, metadata = _read_hdf5_arrays(path, remedy=remedy)
    obs, act = arrays["observations"], arrays["actions"]
    rew = np.asarray(arrays["rewards"])
    if rew.ndim == 2 and rew.shape[1] == 1:
        rew = rew[:, 0]
    term, tout = np.asarray(arrays["terminals"]), np.asarray(arrays["timeouts"])
    if obs.ndim != 2 or act.ndim != 2:
        raise DatasetError(f"{path}: observations and actions must be 2-D (N, dim); got {obs.shape} and {act.shape}")
    n = obs.shape[0]
    for key, arr in (("actions", act), ("rewards", rew), ("terminals", term), ("timeouts", tout)):
        if arr.shape[0] != n:
            raise DatasetError(f"{path}: inconsistent lengths: observations has {n} rows, {key} has {arr.shape[0]}")
    for key, arr in (("rewards", rew), ("terminals", term), ("timeouts", tout)):
        if arr.ndim != 1:
            raise DatasetError(f"{path}: {key} must be 1-D (N,), got shape {arr.shape}")
    if n == 0:
        raise DatasetError(f"{path}: the dataset is empty")
    term, tout = term.astype(bool), tout.astype(bool)
    if "next_observations" in arrays:
        nxt = arrays["next_observations"]
        if nxt.shape != obs.shape:
            raise DatasetError(f"{path}: next_observations has shape {nxt.shape}, observations {obs.shape}")
        keep = np.ones(n, dtype=bool)
    else:
        # As d4rl.qlearning_dataset: next = following row; timeout rows and an unfinished final
        # row have no valid next observation and are dropped. A terminal row's next is never used.
        nxt = np.concatenate([obs[1:], obs[-1:]], axis=0)
        keep = ~tout | term
        keep[-1] = term[-1]
    for key, arr in (("observations", obs), ("actions", act), ("rewards", rew), ("next_observations", nxt)):
        if not np.all(np.isfinite(arr)):
            bad = int(np.count_nonzero(~np.isfinite(arr)))
            raise DatasetError(f"{path}: {key} holds {bad} NaN/inf value(s); the file is corrupted")
    dataset_name = name or _name_from(path, metadata)
    env_id = _env_id_from(dataset_name, metadata)
    family = env_family(env_id) or env_family(dataset_name)
    if family not in REF_RETURNS:
        raise DatasetError(f"{path}: no D4RL reference returns for env {env_id!r} (known: {list(REF_RETURNS)})")
    ref_min, ref_max = REF_RETURNS[family]
    return Dataset(
        name=dataset_name, env_id=env_id,
        observations=np.ascontiguousarray(obs[keep], dtype=np.float32),
        actions=np.ascontiguousarray(act[keep], dtype=np.float32),
        rewards=np.ascontiguousarray(rew[keep], dtype=np.float32),
        next_observations=np.ascontiguousarray(nxt[keep], dtype=np.float32),
        terminals=term[keep], timeouts=tout[keep] & ~term[keep],
        ref_min_return=ref_min, ref_max_return=ref_max, source=str(path),
    )


def _name_from(path: Path, metadata: dict) -> str:
    stem = path.stem
    match = re.fullmatch(r"([a-z0-9]+)_(.+)-(v\d+)", stem)  # official cache name hopper_medium_replay-v2
    if match:
        return f"{match.group(1)}-{match.group(2).replace('_', '-')}-{match.group(3)}"
    return stem


def _env_id_from(name: str, metadata: dict) -> str:
    generation = metadata.get("generation")
    if generation:
        try:
            env_id = json.loads(generation).get("env_id")
        except (json.JSONDecodeError, AttributeError):
            env_id = None
        if env_id:
            return env_id
    family = env_family(name)
    if family in D4RL_ENV_IDS:
        return D4RL_ENV_IDS[family]
    raise DatasetError(f"cannot tell which environment dataset {name!r} comes from; set the config key env")


def _minari_root() -> str:
    return os.environ.get("MINARI_DATASETS_PATH", str(Path.home() / ".minari" / "datasets"))


def _local_minari_ids(minari) -> set[str]:
    try:
        return set(minari.list_local_datasets())
    except Exception:  # noqa: BLE001 - an unreadable local folder counts as empty
        return set()


def load_minari(dataset_id: str) -> Dataset:
    try:
        import minari
    except ImportError:
        raise DatasetError("minari datasets need the minari package: pip install minari") from None
    local = _local_minari_ids(minari)
    if dataset_id not in local:
        try:
            ds = minari.load_dataset(dataset_id, download=True)
        except Exception as exc:  # noqa: BLE001 - an unknown id, no network, a missing optional package
            reason = (str(exc).splitlines()[0] if str(exc) else type(exc).__name__) if not isinstance(
                exc, ImportError) else f"minari's download support is not installed: pip install 'minari[hf]' ({exc})"
            raise DatasetError(
                f"minari dataset {dataset_id!r} is not among the local ones in {_minari_root()} "
                f"({', '.join(sorted(local)) or 'none'}) and could not be downloaded ({reason}). Check the id, or "
                f"download it on a machine with internet (minari download {dataset_id}) and set MINARI_DATASETS_PATH."
            ) from None
    else:
        try:
            ds = minari.load_dataset(dataset_id)
        except Exception as exc:  # noqa: BLE001
            raise DatasetError(f"local minari dataset {dataset_id!r} in {_minari_root()} cannot be read: {exc}") from None
    parts = {k: [] for k in ("obs", "act", "rew", "next", "term", "tout")}
    for episode in ds.iterate_episodes():
        o = np.asarray(episode.observations)
        if o.ndim != 2:
            raise DatasetError(f"minari dataset {dataset_id!r} has non-array observations; only Box spaces are supported")
        parts["obs"].append(o[:-1])
        parts["next"].append(o[1:])
        parts["act"].append(np.asarray(episode.actions))
        parts["rew"].append(np.asarray(episode.rewards))
        parts["term"].append(np.asarray(episode.terminations, dtype=bool))
        parts["tout"].append(np.asarray(episode.truncations, dtype=bool))
    if not parts["obs"]:
        raise DatasetError(f"minari dataset {dataset_id!r} holds no episodes")
    cat = {k: np.concatenate(v) for k, v in parts.items()}
    env_id = ds.spec.env_spec.id if ds.spec.env_spec is not None else None
    family = env_family(env_id or dataset_id)
    metadata = ds.storage.metadata
    if "ref_min_score" in metadata and "ref_max_score" in metadata:
        ref_min, ref_max = float(metadata["ref_min_score"]), float(metadata["ref_max_score"])
    elif family in REF_RETURNS:
        ref_min, ref_max = REF_RETURNS[family]
    else:
        raise DatasetError(f"minari dataset {dataset_id!r} has no reference scores")
    if env_id is None:
        env_id = D4RL_ENV_IDS.get(family or "", "")
    return Dataset(
        name=dataset_id, env_id=env_id,
        observations=cat["obs"].astype(np.float32), actions=cat["act"].astype(np.float32),
        rewards=cat["rew"].astype(np.float32), next_observations=cat["next"].astype(np.float32),
        terminals=cat["term"], timeouts=cat["tout"] & ~cat["term"],
        ref_min_return=ref_min, ref_max_return=ref_max, source=f"minari:{dataset_id}",
    )


def resolve_path(spec: str) -> Path:
    """A dataset path, relative to the working directory or, failing that, the repository root."""
    if spec.startswith("shared:"):
        return shared_dir() / "datasets" / spec[len("shared:"):]
    path = Path(os.path.expanduser(spec))
    if not path.is_absolute() and not path.exists() and (REPO_ROOT / path).exists():
        return REPO_ROOT / path
    return path


def load_dataset(spec: str) -> Dataset:
    if spec.startswith("d4rl:"):
        name = spec[len("d4rl:"):]
        path = download_d4rl(name)
        return read_d4rl_hdf5(path, name=name, remedy=f"delete {path} to download it again")
    if spec.startswith("minari:"):
        return load_minari(spec[len("minari:"):])
    path = resolve_path(spec)
    if path.suffix not in (".hdf5", ".h5"):
        raise DatasetError(
            f"unknown dataset spec {spec!r}: use d4rl:<name>, minari:<id>, shared:<file>.hdf5 or a path to a .hdf5 file")
    return read_d4rl_hdf5(path)
