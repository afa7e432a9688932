"""The contract between an algorithm's folder and common/ (and the tools on top): what `<name>/` must provide.

An algorithm is a package beside adaptive_bc/ and spot/ (tests/plainbc/ is a complete small one):

    <name>/agent.py
        ALGO = "<name>"            the package's own name: checkpoints record it, load_agent imports <ALGO>.agent
        Config                     a dataclass subclassing common.config.BaseConfig (its keys, defaults, checks)
        WEIGHT_METRIC              the metric drawn under the scores in plots (its regularisation weight, e.g.
                                   "train/alpha"), or None
        agent_from_checkpoint(payload, device) -> Agent    rebuilds the agent of offline.pt / online.pt / last.pt
        agent_from_policy(payload, device) -> Agent        rebuilds it from a model file (common.inference.export_policy)
        the agent itself, an `Agent` (below)
    <name>/train_offline.py, <name>/train_online.py
        main(argv) -> Path of the final checkpoint; start with common.run.start_run / common.online.start_online_run,
        which check this contract, so a broken one is one line at start-up instead of a KeyError in a later tool
    <name>/networks.py, <name>/__init__.py

`config_from_payload` rebuilds an algorithm's Config from a checkpoint, for its agent_from_* hooks.
"""
from __future__ import annotations

import dataclasses
import importlib
from types import ModuleType
from typing import Any, Protocol, runtime_checkable

import numpy as np

from common.errors import RunError

HOOKS = ("agent_from_checkpoint", "agent_from_policy")


class AlgorithmError(RunError, TypeError):
    """An algorithm's package does not keep the contract of common/algorithm.py."""


@runtime_checkable
class Agent(Protocol):
    """What common/ and the tools use of an agent. `update` is the algorithm's own learning step: a pure function of
    the batch (and the agent's state) returning its metrics; `actor` and `normalizer` are what a model file keeps."""

    obs_dim: int
    act_dim: int
    max_action: float
    actor: Any  # torch.nn.Module: obs (normalized) -> action
    normalizer: Any  # common.normalizer.ObsNormalizer

    def act(self, obs: np.ndarray) -> np.ndarray:
        """Deterministic actions for a batch of raw observations (normalization inside)."""

    def update(self, batch: Any) -> dict[str, Any]:
        """One learning step on a common.buffer batch; its metrics as 0-dim tensors (floats work too), read nothing
        back from the device (common.recorder reads them once per record; tests/test_sync_free.py)."""

    def state_dict(self) -> dict[str, Any]:
        """Everything a checkpoint needs to continue training (networks, optimizers, counters)."""

    def load_state_dict(self, state: dict[str, Any]) -> None:
        ...


def check_algorithm(algo: str, cfg: Any = None) -> ModuleType:
    """`<algo>.agent`, checked against the contract; raises AlgorithmError (one line) naming what is wrong.

    With the run's config, also that the config class lives in the package `algo` names (ALGO is the package's
    own name, not another algorithm's)."""
    from common.config import BaseConfig

    where = f"ALGO = {algo!r}"
    if cfg is not None:
        package = type(cfg).__module__.split(".")[0]
        where = f"ALGO = {algo!r} (in {type(cfg).__module__})"
        if package != algo:
            raise AlgorithmError(
                f"{where} is not its package's name {package!r}: ALGO must be the name of the algorithm's folder "
                f"(checkpoints record it and load_agent imports <ALGO>.agent); set ALGO = {package!r}")
    try:
        module = importlib.import_module(f"{algo}.agent")
    except ImportError as exc:
        raise AlgorithmError(f"{where}: no importable package {algo}.agent ({exc}); ALGO must be the name of the "
                             "algorithm's folder, which must be importable (on sys.path / PYTHONPATH)") from None
    problems = []
    if getattr(module, "ALGO", None) != algo:
        problems.append(f"ALGO = {algo!r} (it has {getattr(module, 'ALGO', None)!r})")
    config = getattr(module, "Config", None)
    if not (isinstance(config, type) and issubclass(config, BaseConfig) and dataclasses.is_dataclass(config)):
        problems.append("Config (a dataclass subclassing common.config.BaseConfig)")
    problems += [f"{hook}(payload, device)" for hook in HOOKS if not callable(getattr(module, hook, None))]
    metric = getattr(module, "WEIGHT_METRIC", None)
    if metric is not None and not isinstance(metric, str):
        problems.append(f"WEIGHT_METRIC as a metric name or None (it is {metric!r})")
    if problems:
        raise AlgorithmError(f"{algo}.agent must define {'; '.join(problems)}: see the contract in "
                             "common/algorithm.py (README, Add an algorithm)")
    return module


def weight_metric(algo: str) -> str | None:
    """The algorithm's WEIGHT_METRIC (None when it has none)."""
    return getattr(importlib.import_module(f"{algo}.agent"), "WEIGHT_METRIC", None)


def config_from_payload(cls: type, payload: dict[str, Any], where: str = "checkpoint config") -> Any:
    """The Config of a checkpoint or model file: its saved keys that `cls` has (records such as algo, phase or
    offline_checkpoint are not config keys), checked as any config is."""
    from common.config import field_names, from_dict

    names = set(field_names(cls))
    return from_dict(cls, {k: v for k, v in payload["config"].items() if k in names}, where=where)
