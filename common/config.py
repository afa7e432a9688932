"""Typed configs: a dataclass per algorithm, YAML files, and `--key value` command-line overrides.

Every training script builds its config with `parse_config(ConfigClass, argv)`:
  python -m adaptive_bc.train_offline --config configs/adaptive_bc/hopper-medium.yaml --seed 3
An unknown key or a value that does not convert to the field's type is a `ConfigError` that lists
the valid keys, so a typo never silently falls back to a default.
"""
from __future__ import annotations

import argparse
import dataclasses
import inspect
import math
import os
import re
import types
import typing
from pathlib import Path
from typing import Any, Sequence

import yaml

from common.errors import RunError, yaml_problem


class ConfigError(RunError, ValueError):
    pass


# Written into a run's config.yaml as a record of the run, not settings: ignored when that file is
# passed back with --config.
RECORD_KEYS = ("algo", "phase", "offline_checkpoint", "regularization_metric")


@dataclasses.dataclass
class BaseConfig:
    """Keys shared by every training script (tools such as plots and sweeps rely on these names)."""

    dataset: str = "d4rl:hopper-medium-v2"  # d4rl:<name>, minari:<id>, shared:<file> or a path to a D4RL-format file
    env: str | None = None  # null: taken from the dataset (D4RL name map or the file's metadata)
    seed: int = 0  # seeds torch, numpy, the envs and the replay sampler
    device: str = "auto"  # auto | cpu | cuda
    threads: int = 1  # torch CPU threads; 1 per process when several run at once
    batch_size: int = 256  # transitions per update
    offline_steps: int = 1_000_000  # gradient steps of offline pretraining
    online_steps: int = 250_000  # environment steps of online fine-tuning
    eval_every: int = 5_000  # steps between evaluations (and metric records)
    eval_episodes: int = 10  # deterministic episodes per evaluation, stepped together
    checkpoint_every: int = 50_000  # steps between checkpoints/last.pt (what a killed run resumes from)
    run_dir: str | None = None  # null: runs/<algo>/<dataset name>/seed<seed>/<phase>
    variant: str | None = None  # the run's name in a study (adaptive_bc_naive, ...); null: the algorithm's. Labels it
    wandb_mode: str = "offline"  # online | offline | disabled
    wandb_project: str = "offline-to-online"  # wandb project of the run
    wandb_group: str | None = None  # a study name: wandb groups runs by (it, variant, dataset)
    video: bool = False  # render one deterministic episode to <run_dir>/video.mp4 when the run ends
    compile: bool = False  # torch.compile the updates: networks and losses (CUDA: with CUDA graphs); off by default: 1.07-1.14x eager on our CPU, 10-30 s of compiling per start

    _choices = {
        "device": ("auto", "cpu", "cuda"),
        "wandb_mode": ("online", "offline", "disabled"),
    }

    def resolve(self, env_id: str, dataset_name: str) -> None:
        """Fills keys whose value depends on the data (SPOT: λ per environment). start_run calls it once, after
        loading the dataset and before config.yaml is written, so the saved config holds the value the run uses."""

    def validate(self) -> None:
        """Checks values that a type alone cannot; subclasses extend `_choices` / override."""
        for key, allowed in self._all_choices().items():
            value = getattr(self, key)
            if value not in allowed:
                raise ConfigError(f"{key}={value!r} is not valid; choose one of {', '.join(allowed)}")
        for key in ("batch_size", "eval_episodes", "threads", "eval_every", "checkpoint_every"):
            if getattr(self, key) < 1:
                raise ConfigError(f"{key} must be >= 1, got {getattr(self, key)}")
        for key in ("offline_steps", "online_steps"):
            if getattr(self, key) < 0:
                raise ConfigError(f"{key} must be >= 0, got {getattr(self, key)}")
        self._validate_shared_keys()

    def _validate_shared_keys(self) -> None:
        """Rules by key name, so every algorithm's keys of one meaning are checked alike: every float finite,
        a discount `gamma` in [0, 1], a Polyak rate `tau` in (0, 1], learning rates (`lr`, `*_lr`) > 0."""
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, float) and not math.isfinite(value):
                raise ConfigError(f"{f.name} must be a finite number, got {value}")
            if f.name == "gamma" and not 0.0 <= value <= 1.0:
                raise ConfigError(f"gamma must be in [0, 1], got {value}")
            if f.name == "tau" and not 0.0 < value <= 1.0:
                raise ConfigError(f"tau must be in (0, 1], got {value}")
            if (f.name == "lr" or f.name.endswith("_lr")) and not value > 0:
                raise ConfigError(f"{f.name} must be > 0, got {value}")

    @classmethod
    def _all_choices(cls) -> dict[str, tuple]:
        merged: dict[str, tuple] = {}
        for klass in reversed(cls.__mro__):
            merged.update(vars(klass).get("_choices", {}))
        return merged

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def field_names(cls: type) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


def _convert(cls: type, key: str, raw: Any) -> Any:
    """Converts a YAML or command-line value to the declared type of `key` (or raises ConfigError)."""
    hints = typing.get_type_hints(cls)
    declared = hints[key]
    args = typing.get_args(declared)
    optional = (typing.get_origin(declared) in (typing.Union, types.UnionType)) and type(None) in args
    base = next((a for a in args if a is not type(None)), declared) if optional else declared
    if isinstance(raw, str) and raw.strip().lower() in ("null", "none", "~"):
        if optional:
            return None
        raise ConfigError(f"{key} cannot be null (expected {base.__name__})")
    if raw is None:
        if optional:
            return None
        raise ConfigError(f"{key} cannot be null (expected {base.__name__})")
    try:
        if base is bool:
            if isinstance(raw, bool):
                return raw
            text = str(raw).strip().lower()
            if text in ("true", "1", "yes", "on"):
                return True
            if text in ("false", "0", "no", "off"):
                return False
            raise ValueError
        if base is int:
            if isinstance(raw, bool):
                raise ValueError
            if isinstance(raw, float):
                if not raw.is_integer():
                    raise ValueError
                return int(raw)
            text = str(raw).replace("_", "")
            try:
                return int(text)
            except ValueError:
                value = float(text)  # accept 1e6
                if not value.is_integer():
                    raise
                return int(value)
        if base is float:
            if isinstance(raw, bool):
                raise ValueError
            return float(raw)
        if base is str:
            return str(raw)
    except (TypeError, ValueError):
        raise ConfigError(f"bad value for {key}: {raw!r} is not a valid {base.__name__}") from None
    raise ConfigError(f"unsupported config type for {key}: {declared}")


def _unknown_key_error(cls: type, key: str, where: str) -> ConfigError:
    valid = ", ".join(field_names(cls))
    return ConfigError(f"unknown config key {key!r} ({where}). Valid keys: {valid}")


def from_dict(cls: type, values: dict[str, Any], where: str = "config") -> Any:
    names = set(field_names(cls))
    kwargs = {}
    for key, raw in values.items():
        if key not in names:
            raise _unknown_key_error(cls, key, where)
        kwargs[key] = _convert(cls, key, raw)
    cfg = cls(**kwargs)
    cfg.validate()
    return cfg


def load_yaml(path: str | os.PathLike) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        with open(path) as f:
            data = yaml.safe_load(f) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(yaml_problem(path, exc)) from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of key: value")
    return data


def parse_overrides(cls: type, tokens: Sequence[str]) -> dict[str, str]:
    """`--key value` / `--key=value` pairs; keys may use '-' or '_'."""
    overrides: dict[str, str] = {}
    names = set(field_names(cls))
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if not token.startswith("--"):
            raise ConfigError(f"unexpected argument {token!r}: overrides are written --key value")
        key, sep, value = token[2:].partition("=")
        key = key.replace("-", "_")
        if key not in names:
            raise _unknown_key_error(cls, key, "command line")
        if not sep:
            if i + 1 >= len(tokens):
                raise ConfigError(f"--{key} needs a value")
            value = tokens[i + 1]
            i += 1
        overrides[key] = value
        i += 1
    return overrides


_FIELD_LINE = re.compile(r"^\s+(\w+): [^=]+=.*?(?:#\s*(.*))?$")


def field_docs(cls: type) -> dict[str, str]:
    """Each config key's one-line meaning: the comment on its line in the dataclass (read from the source of the
    class and its bases; a test keeps every key documented)."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        try:
            lines = inspect.getsource(klass).splitlines()
        except (OSError, TypeError):
            continue
        for line in lines:
            match = _FIELD_LINE.match(line)
            if match and match.group(2) and not line.strip().startswith(("def ", "_")):
                docs[match.group(1)] = match.group(2).strip()
    return docs


def build_parser(cls: type, description: str, extra: Sequence[tuple[str, dict]] = ()) -> argparse.ArgumentParser:
    """Parser whose --help lists every config key with its type, default and meaning; keys are parsed by
    parse_config."""
    defaults, docs = cls(), field_docs(cls)
    lines = []
    for f in dataclasses.fields(cls):
        kind = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
        lines.append(f"  --{f.name} ({kind}, default {getattr(defaults, f.name)!r})"
                     + (f"\n      {docs[f.name]}" if docs.get(f.name) else ""))
    parser = argparse.ArgumentParser(
        description=description,
        epilog="config keys (override any with --key value):\n" + "\n".join(lines),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", help="YAML config file (configs/<algo>/<dataset>.yaml)")
    for name, kwargs in extra:
        parser.add_argument(name, **kwargs)
    return parser


def parse_config(cls: type, argv: Sequence[str] | None, description: str = "",
                 extra: Sequence[tuple[str, dict]] = (), base: dict[str, Any] | None = None):
    """Returns (config, parsed extra args). Precedence: dataclass defaults < base < --config YAML < --key."""
    parser = build_parser(cls, description, extra)
    args, rest = parser.parse_known_args(argv)
    values: dict[str, Any] = dict(base or {})
    if args.config:
        file_values = {k: v for k, v in load_yaml(args.config).items() if k not in RECORD_KEYS}
        for key in file_values:
            if key not in set(field_names(cls)):
                raise _unknown_key_error(cls, key, f"in {args.config}")
        values.update(file_values)
    values.update(parse_overrides(cls, rest))
    return from_dict(cls, values), args


def parse_online_config(cls: type, argv: Sequence[str] | None, algo: str, description: str,
                        architecture_keys: Sequence[str]):
    """The online scripts' command line: --checkpoint (an offline.pt of `algo`) plus config keys.

    Returns (config, checkpoint path, checkpoint payload). The config starts from the one saved in the
    checkpoint (run_dir excluded), then --config YAML, then --key overrides; `architecture_keys`, fixed by the
    checkpoint's networks, may not change.
    """
    from common.checkpoint import load_checkpoint

    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--checkpoint")
    known, _ = pre.parse_known_args(argv)
    base, offline = {}, None
    if known.checkpoint:  # without it parse_config below prints the usage error
        offline = load_checkpoint(known.checkpoint, algo=algo, kind="agent")
        names = set(field_names(cls))
        base = {k: v for k, v in offline["config"].items() if k in names and k != "run_dir"}
    cfg, args = parse_config(cls, argv, description=description, base=base, extra=[
        ("--checkpoint", {"required": True, "help": f"an {algo} agent checkpoint (the offline run's offline.pt)"})])
    changed = [k for k in architecture_keys if getattr(cfg, k) != offline["config"].get(k)]
    if changed:
        raise ConfigError(f"{', '.join(changed)} cannot change after pretraining (the checkpoint's networks fix them)")
    return cfg, Path(args.checkpoint), offline


def save_config(cfg: Any, path: str | os.PathLike, extra: dict[str, Any] | None = None) -> None:
    data = dataclasses.asdict(cfg)
    if extra:
        data.update(extra)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        yaml.safe_dump(data, f, sort_keys=False)
    os.replace(tmp, path)
