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


def test_a_bag_of_rankers_is_one_model_scoring_their_mean(tmp_path):
    """`ranker.bag = 3`: three seeds' rankers merged into one LightGBM model (`average_boosters`) whose score
    and TreeSHAP contributions are the members' means, and which saves and loads as one text file."""
    from dataclasses import replace

    rng = np.random.default_rng(1)
    users, per_user = 200, 20
    signal = rng.normal(size=users * per_user)
    noisy = signal + rng.normal(scale=0.7, size=signal.shape)
    frame = pl.DataFrame(
        {
            "user_id": np.repeat(np.arange(users), per_user),
            "item_index": np.tile(np.arange(per_user), users),
            "signal": np.where(rng.random(signal.shape) < 0.1, np.nan, signal),
            "noise": rng.normal(size=users * per_user),
            RELEVANCE: np.where(noisy > 1.2, 2, np.where(noisy > 0.5, 1, 0)),
        }
    )
    names = ["signal", "noise"]
    config = RankerConfig(n_estimators=40, min_data_in_leaf=5, bag=3)
    bag = LambdaRanker(config, names).fit(frame)
    members = [LambdaRanker(replace(config, seed=config.seed + i, bag=1), names).fit(frame) for i in range(3)]
    assert bag.metrics_["bag"] == 3 and bag.metrics_["bag_best_iterations"] == [m.metrics_["best_iteration"] for m in members]
    assert bag.n_trees == sum(m.n_trees for m in members)
    expected = np.mean([m.predict(frame) for m in members], axis=0)
    assert not np.allclose(members[0].predict(frame), expected)  # the seeds' models differ
    bag.save(tmp_path / "ranker.txt")
    loaded = LambdaRanker.load(tmp_path / "ranker.txt", names)
    assert np.abs(loaded.predict(frame) - expected).max() < 1e-12
    matrix = frame.select(names).to_numpy()
    contributions = loaded.contributions(matrix)
    assert np.abs(contributions.sum(1) - expected).max() < 1e-12
    assert np.abs(contributions - np.mean([m.contributions(matrix) for m in members], axis=0)).max() < 1e-12
