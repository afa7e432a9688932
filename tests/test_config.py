"""Typed configs: YAML, command-line overrides with type conversion, unknown keys, bad values."""
from __future__ import annotations

import dataclasses

import pytest
import yaml

from common.config import BaseConfig, ConfigError, parse_config, save_config


@dataclasses.dataclass
class ToyConfig(BaseConfig):
    lr: float = 3e-4
    utd: int = 10
    iwae: bool = False
    decay_steps: int | None = None
    target: str = "redq"
    _choices = {"target": ("redq", "min")}


def test_defaults_yaml_and_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("lr: 1.0e-3\nutd: 5\nseed: 3\ndecay_steps: null\n")
    cfg, _ = parse_config(ToyConfig, ["--config", str(path), "--utd", "20", "--iwae=true", "--decay-steps", "1e5",
                                      "--wandb_mode", "disabled", "--env", "Hopper-v5"])
    assert (cfg.lr, cfg.utd, cfg.seed, cfg.iwae, cfg.decay_steps) == (1e-3, 20, 3, True, 100000)
    assert cfg.env == "Hopper-v5" and cfg.wandb_mode == "disabled" and cfg.batch_size == 256
    cfg2, _ = parse_config(ToyConfig, ["--decay_steps", "null", "--offline_steps", "1_000"])
    assert cfg2.decay_steps is None and cfg2.offline_steps == 1000


def test_unknown_key_lists_valid_keys(tmp_path):
    with pytest.raises(ConfigError) as err:
        parse_config(ToyConfig, ["--learning_rate", "0.1"])
    assert "learning_rate" in str(err.value) and "lr" in str(err.value) and "offline_steps" in str(err.value)
    path = tmp_path / "c.yaml"
    path.write_text("utdd: 3\n")
    with pytest.raises(ConfigError, match="unknown config key 'utdd'.*Valid keys:.*utd"):
        parse_config(ToyConfig, ["--config", str(path)])


@pytest.mark.parametrize("args, match", [
    (["--utd", "ten"], "bad value for utd"),
    (["--utd", "2.5"], "bad value for utd"),
    (["--lr", "fast"], "bad value for lr"),
    (["--iwae", "maybe"], "bad value for iwae"),
    (["--seed", "null"], "seed cannot be null"),
    (["--target", "max"], "target='max' is not valid; choose one of redq, min"),
    (["--device", "tpu"], "device='tpu' is not valid"),
    (["--batch_size", "0"], "batch_size must be >= 1"),
    (["--utd"], "needs a value"),
    (["stray"], "unexpected argument"),
])
def test_bad_values_are_errors(args, match):
    with pytest.raises(ConfigError, match=match):
        parse_config(ToyConfig, args)


def test_missing_file_and_saved_config_round_trip(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        parse_config(ToyConfig, ["--config", str(tmp_path / "none.yaml")])
    cfg, _ = parse_config(ToyConfig, ["--utd", "7"])
    save_config(cfg, tmp_path / "run" / "config.yaml", extra={"offline_checkpoint": "/x/offline.pt"})
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert saved["utd"] == 7 and saved["offline_checkpoint"] == "/x/offline.pt"
    # The saved file, record keys included, is itself a valid config.
    again, _ = parse_config(ToyConfig, ["--config", str(tmp_path / "run" / "config.yaml")])
    assert again == cfg


def test_base_precedence():
    cfg, _ = parse_config(ToyConfig, ["--seed", "5"], base={"seed": 1, "utd": 3})
    assert (cfg.seed, cfg.utd) == (5, 3)


@pytest.mark.parametrize("module", ["adaptive_bc", "spot"])
def test_help_gives_each_key_its_type_default_and_meaning(module, capsys):
    """--help lists every config key as `--key (type, default value)` with its one-line meaning (the comment on its
    line in the dataclass), so no key is left unexplained."""
    import dataclasses
    import importlib

    from common.config import field_docs

    config = importlib.import_module(f"{module}.agent").Config
    docs = field_docs(config)
    assert not [f.name for f in dataclasses.fields(config) if not docs.get(f.name)], "document every key"
    with pytest.raises(SystemExit):
        importlib.import_module(f"{module}.train_offline").main(["--help"])
    out = capsys.readouterr().out
    assert "  --batch_size (int, default 256)\n      transitions per update" in out
    assert "  --buffer_capacity (int | None, default None)\n      online FIFO size" in out or module == "spot"
    assert "  --lambd (float | None, default None)\n      support-constraint weight" in out or module == "adaptive_bc"
