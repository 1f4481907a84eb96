from __future__ import annotations

import tomllib

import pytest

from recsys.contracts.config import Config, config_from_dict, dump_toml, load_config
from recsys.contracts.errors import ConfigError


def test_defaults_round_trip_through_toml():
    cfg = Config()
    assert config_from_dict(tomllib.loads(dump_toml(cfg))) == cfg


def test_unknown_keys_and_sections_are_named(tmp_path):
    with pytest.raises(ConfigError, match="unknown key 'epoch'"):
        config_from_dict({"train": {"epoch": 3}})
    with pytest.raises(ConfigError, match="unknown section 'trian'"):
        config_from_dict({"trian": {}})
    path = tmp_path / "bad.toml"
    path.write_text("[model]\ndim = 'wide'\n")
    with pytest.raises(ConfigError, match=r"bad.toml: model.dim: expected an integer"):
        load_config(path)


def test_tasks_are_data():
    cfg = config_from_dict({"tasks": [{"name": "click", "weight": 1.0}]})
    assert [t.name for t in cfg.tasks] == ["click"]
    with pytest.raises(ConfigError, match="tasks"):
        config_from_dict({"tasks": [{"name": "purchase"}]})
