"""The generator's language mode reads the real pretrained encoder: its truth must follow what words mean."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest

from recsys.contracts.config import ModelConfig
from recsys.encoder import resolve_encoder, text_vectors
from recsys.generate import generate_shop
from serving.text import item_texts

pytestmark = pytest.mark.slow


def _held_out_r2(x: np.ndarray, y: np.ndarray) -> float:
    x = np.hstack([x, np.ones((len(x), 1))])
    train, test = slice(0, 4 * len(x) // 5), slice(4 * len(x) // 5, None)
    coef = np.linalg.solve(x[train].T @ x[train] + 0.1 * np.eye(x.shape[1]), x[train].T @ y[train])
    return 1 - ((x[test] @ coef - y[test]) ** 2).sum() / ((y[test] - y[train].mean(0)) ** 2).sum()


def test_language_mode_makes_the_truth_readable_from_text_and_keeps_every_other_draw(tmp_path):
    shops = {}
    for mode in ("behaviour", "language"):
        generate_shop(tmp_path / mode, users=5, items=500, days=1, new_items_per_day=0, seed=4, mode=mode)
        shops[mode] = (
            pl.read_parquet(tmp_path / mode / "items.parquet"),
            np.stack(pl.read_parquet(tmp_path / mode / "truth" / "items.parquet")["factors"].to_list()),
        )
        assert json.loads((tmp_path / mode / "truth" / "params.json").read_text())["mode"] == mode
    (items, behaviour), (same_items, language) = shops["behaviour"], shops["language"]
    assert items.equals(same_items)  # the same catalog, words and prices: only the directions differ
    assert not np.allclose(behaviour, language)
    vectors = text_vectors(item_texts(items), resolve_encoder(ModelConfig())).numpy().astype(np.float64)
    # measured at seeds 0-2 of the full-size shop: 0.61-0.64 (behaviour) vs 0.88 (language)
    assert _held_out_r2(vectors, language) > _held_out_r2(vectors, behaviour) + 0.15


def test_an_unknown_mode_is_refused_before_anything_is_written(tmp_path):
    from recsys.contracts.errors import ConfigError

    with pytest.raises(ConfigError, match="mode must be one of behaviour, language"):
        generate_shop(tmp_path / "x", mode="words")
    assert not (tmp_path / "x").exists()
