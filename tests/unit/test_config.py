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


def test_rolling_cutoffs_tile_the_ranker_window():
    from recsys.contracts.config import WindowConfig

    assert WindowConfig(ranker_days=7.0).cutoff_offsets() == [(0.0, 7.0)]
    assert WindowConfig(ranker_days=7.0, ranker_cutoffs=7).cutoff_offsets() == [(float(k), 1.0) for k in range(7)]
    # overlapping label windows: 3 days each, the last one ending with the window
    assert WindowConfig(ranker_days=7.0, ranker_cutoffs=5, label_days=3.0).cutoff_offsets() == [(float(k), 3.0) for k in range(5)]
    with pytest.raises(ConfigError, match="windows: .*label_days"):
        config_from_dict({"windows": {"ranker_days": 3.0, "label_days": 4.0}})
    with pytest.raises(ConfigError, match="ranker_cutoffs at least 1"):
        config_from_dict({"windows": {"ranker_cutoffs": 0}})


def test_keep_rule_is_checked():
    assert config_from_dict({"train": {"keep": "best-fine-tuned"}}).train.keep == "best-fine-tuned"
    with pytest.raises(ConfigError, match="train.keep: expected one of 'best', 'best-fine-tuned', found 'last'"):
        config_from_dict({"train": {"keep": "last"}})


def test_user_tower_is_checked():
    assert config_from_dict({"model": {"user_tower": "transformer", "user_layers": 1}}).model.user_tower == "transformer"
    with pytest.raises(ConfigError, match="model.user_tower: expected one of 'attention', 'transformer', found 'gru'"):
        config_from_dict({"model": {"user_tower": "gru"}})
    with pytest.raises(ConfigError, match="model.user_layers: must be at least 1"):
        config_from_dict({"model": {"user_layers": 0}})


def test_retrieval_negatives_are_checked():
    assert config_from_dict({"train": {"retrieval_negatives": "catalog"}}).train.retrieval_negatives == "catalog"
    with pytest.raises(ConfigError, match="train.retrieval_negatives: expected one of 'batch', 'catalog', found 'all'"):
        config_from_dict({"train": {"retrieval_negatives": "all"}})


def test_ranker_workers_are_checked():
    assert config_from_dict({"engine": {"ranker_workers": 4}}).engine.ranker_workers == 4
    for bad in (1, -2):  # one worker would be the job's own fit with a network round it
        with pytest.raises(ConfigError, match=f"engine.ranker_workers: 0 .* or at least 2, found {bad}"):
            config_from_dict({"engine": {"ranker_workers": bad}})


def test_ranker_bag_is_checked():
    assert config_from_dict({"ranker": {"bag": 5}}).ranker.bag == 5
    with pytest.raises(ConfigError, match="ranker.bag: at least 1"):
        config_from_dict({"ranker": {"bag": 0}})
