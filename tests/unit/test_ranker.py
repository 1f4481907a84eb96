"""The LambdaRank ranker learns an ordering that the features carry."""

from __future__ import annotations

import numpy as np
import polars as pl

from recsys.contracts.config import RankerConfig
from recsys.contracts.schema import RELEVANCE
from serving.ranking import LambdaRanker, top_k


def test_ranker_orders_by_the_signal_and_survives_a_text_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    users, per_user = 300, 20
    signal = rng.normal(size=users * per_user)
    noise = rng.normal(size=users * per_user)
    relevance = np.where(signal > 1.2, 2, np.where(signal > 0.5, 1, 0))
    frame = pl.DataFrame(
        {
            "user_id": np.repeat(np.arange(users), per_user),
            "user_index": np.repeat(np.arange(users), per_user),
            "item_index": np.tile(np.arange(per_user), users),
            "signal": signal,
            "noise": noise,
            RELEVANCE: relevance,
            "p_click": rng.random(users * per_user),
        }
    )
    ranker = LambdaRanker(RankerConfig(n_estimators=60, min_data_in_leaf=5), ["signal", "noise"]).fit(frame)
    assert ranker.metrics_["valid_ndcg@10"] > 0.9
    ranker.save(tmp_path / "ranker.txt")
    loaded = LambdaRanker.load(tmp_path / "ranker.txt", ["signal", "noise"])
    scores = loaded.predict(frame)
    assert np.corrcoef(scores, signal)[0, 1] > 0.8
    assert np.allclose(
        scores,
        ranker.booster_.predict(
            frame.select("signal", "noise").to_numpy(),
        ),
    )
    best = top_k(frame, scores, 3)
    assert best.group_by("user_id").len()["len"].max() == 3


def test_users_without_a_past_are_separate_queries():
    """Every user new at the cutoff has user_index -1; each must still be a query of its own."""
    rng = np.random.default_rng(1)
    users, per_user = 600, 20  # 12,000 rows: one merged group would exceed LightGBM's 10,000-row query limit
    signal = rng.normal(size=users * per_user)
    frame = pl.DataFrame(
        {
            "user_id": np.repeat(np.arange(users), per_user),
            "user_index": np.full(users * per_user, -1),
            "item_index": np.tile(np.arange(per_user), users),
            "signal": signal,
            RELEVANCE: (signal > 1).astype(int),
        }
    )
    ranker = LambdaRanker(RankerConfig(n_estimators=20, min_data_in_leaf=5), ["signal"]).fit(frame)
    assert ranker.metrics_["users"] == frame.filter(pl.col(RELEVANCE).max().over("user_id") > 0)["user_id"].n_unique()


def test_a_user_at_two_cutoffs_is_two_queries():
    """Rows of several cutoffs (QUERY) are grouped by cutoff × user in LightGBM's own Dataset."""
    from serving.ranking import QUERY, _dataset

    rng = np.random.default_rng(2)
    users, per_user = 200, 10
    rows = 2 * users * per_user
    signal = rng.normal(size=rows)
    frame = pl.DataFrame(
        {
            QUERY: np.repeat([1, 0], users * per_user).astype(np.int32),  # out of order on purpose: fit sorts
            "user_id": np.tile(np.repeat(np.arange(users), per_user), 2),
            "user_index": np.tile(np.repeat(np.arange(users), per_user), 2),
            "item_index": np.tile(np.arange(per_user), 2 * users),
            "signal": signal,
            RELEVANCE: (signal > 0.8).astype(int),
        }
    )
    ranker = LambdaRanker(RankerConfig(n_estimators=20, min_data_in_leaf=5), ["signal"]).fit(frame)
    kept = frame.filter(pl.col(RELEVANCE).max().over(QUERY, "user_id") > 0)
    assert ranker.metrics_["queries"] == kept.select(QUERY, "user_id").n_unique() > ranker.metrics_["users"]
    ordered = kept.sort(QUERY, "user_id", "item_index")
    groups = _dataset(ordered, np.ones(ordered.height, dtype=bool), ["signal"]).construct().get_group()
    assert groups.tolist() == ordered.group_by(QUERY, "user_id", maintain_order=True).len()["len"].to_list()
    assert len(groups) == ranker.metrics_["queries"]
