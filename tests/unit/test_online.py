"""Online answers: one user at a time equals the batch file, recent events, exclusions, explanations, and
the HTTP server as a real uvicorn process on 127.0.0.1 (started and stopped here, every loop bounded)."""

from __future__ import annotations

import shutil
import socket
import threading
import time

import numpy as np
import polars as pl
import pytest

from recsys.contracts import schema as S
from tests.unit._processes import CliProcess

httpx = pytest.importorskip("httpx")


@pytest.fixture(scope="module")
def online(exported_model, tiny_shop):
    from recsys.jobs.serve import load_recommender

    return load_recommender(exported_model, tiny_shop / "items.parquet", tiny_shop / "events", device="cpu")


@pytest.fixture(scope="module")
def batch(exported_model, tiny_shop, tmp_path_factory):
    """`recsys score` for every user with a past plus two it has never seen, k=10, with explanations."""
    from recsys.jobs.score import score

    folder = tmp_path_factory.mktemp("online-batch")
    users = pl.read_parquet(tiny_shop / "events").select(S.USER_ID).unique().sort(S.USER_ID)[S.USER_ID]
    unknown = pl.Series(S.USER_ID, [users.max() + 1, users.max() + 2], dtype=users.dtype)
    pl.DataFrame({S.USER_ID: pl.concat([users, unknown])}).write_parquet(folder / "users.parquet")
    out = folder / "recs.parquet"
    score(exported_model, tiny_shop / "items.parquet", tiny_shop / "events", out, k=10, users_path=folder / "users.parquet", device="cpu", explain=True)
    return pl.read_parquet(out), unknown.to_list()


def _one(frame: pl.DataFrame, user) -> pl.DataFrame:
    return frame.filter(pl.col(S.USER_ID) == user).sort(S.RANK).select(S.RECOMMENDATION_COLUMNS)


def test_each_user_online_equals_the_batch_file(online, batch):
    frame, unknown = batch
    users = frame[S.USER_ID].unique().sort().to_list()
    for user in [*users[:: max(1, len(users) // 25)], *unknown]:
        assert online.recommend(user, 10).equals(_one(frame, user)), user
    # an unknown user gets the no-history list: the one every user without a past gets in the batch
    cold = online.recommend(unknown[0], 10).drop(S.USER_ID)
    assert cold.equals(_one(frame, unknown[1]).drop(S.USER_ID))


def test_exclude_removes_items_and_the_rest_move_up(online):
    user = online.snapshot.users[S.USER_ID][3]
    full = online.recommend(user, 10)
    dropped = full[S.ITEM_ID].gather([0, 4]).to_list()
    shorter = online.recommend(user, 8, exclude=[*dropped, 10**9])  # an unknown item is simply not there
    assert not set(dropped) & set(shorter[S.ITEM_ID].to_list())
    expected = full.filter(~pl.col(S.ITEM_ID).is_in(dropped))
    assert shorter[S.ITEM_ID].to_list() == expected[S.ITEM_ID].to_list()
    assert shorter[S.RANK].to_list() == list(range(1, 9))
    assert shorter[S.SCORE].to_list() == expected[S.SCORE].to_list()


def test_recent_events_enter_the_history_and_are_not_recommended_again(online):
    from serving.online import RecentEvent, RequestError

    unknown = int(online.snapshot.users[S.USER_ID].max()) + 10
    before = online.recommend(unknown, 10, explain=True)
    clicked = before[S.ITEM_ID].to_list()[:2]
    after = online.recommend(unknown, 10, recent_events=[RecentEvent(clicked[0]), RecentEvent(clicked[1], "purchase")], explain=True)
    assert not set(clicked) & set(after[S.ITEM_ID].to_list())
    assert before[S.ITEM_ID].to_list() != after[S.ITEM_ID].to_list()
    # the no-history user had no clicked item to compare with; now the click (not the purchase) is the history
    assert before["similar_clicked_item_id"].null_count() == before.height
    assert after["similar_clicked_item_id"].to_list() == [clicked[0]] * after.height
    # a known user's recent click joins their stored history (and is excluded like their past clicks)
    user = online.snapshot.users[S.USER_ID][0]
    top = online.recommend(user, 5)[S.ITEM_ID][0]
    assert top not in online.recommend(user, 5, recent_events=[RecentEvent(top)])[S.ITEM_ID].to_list()
    with pytest.raises(RequestError, match="recent_events.1.item_id"):
        online.recommend(user, 5, recent_events=[RecentEvent(top), RecentEvent(10**9)])
    with pytest.raises(RequestError, match="user_id"):
        online.recommend("not-a-number", 5)
    with pytest.raises(RequestError, match="^k:"):
        online.recommend(user, 0)


def test_explanations_sum_to_the_score_and_name_every_feature(online, batch, tiny_shop):
    from serving.explain import EXPLANATION_COLUMNS, REASONS, reason_matrix
    from serving.ranking import RANKER_FEATURES

    matrix = reason_matrix(list(RANKER_FEATURES))
    assert (matrix.sum(1) == 1).all() and (matrix.sum(0) >= 1).all()  # each feature in one reason, no empty reason
    frame, _ = batch
    assert set(EXPLANATION_COLUMNS) <= set(frame.columns)
    total = frame["explain_base"] + frame["explain_other"] + frame["reasons"].list.eval(pl.element().struct.field("contribution")).list.sum()
    np.testing.assert_allclose(total.to_numpy(), frame[S.SCORE].to_numpy(), rtol=1e-9, atol=1e-9)
    reasons = frame["reasons"].explode().struct.unnest()
    assert set(reasons["reason"].unique()) <= set(REASONS) and reasons["text"].str.len_chars().min() > 5
    assert frame["reasons"].list.len().unique().to_list() == [3]
    # largest first, as a reader sees them
    contributions = frame["reasons"].list.eval(pl.element().struct.field("contribution"))
    assert all(c == sorted(c, reverse=True) for c in contributions.to_list())
    # a user with a past: the closest clicked item is one they clicked
    row = frame.filter(pl.col("similar_clicked_item_id").is_not_null()).row(0, named=True)
    clicks = pl.read_parquet(tiny_shop / "events").filter(
        (pl.col(S.USER_ID) == row[S.USER_ID]) & (pl.col(S.EVENT) == S.CLICK)
    )
    assert row["similar_clicked_item_id"] in clicks[S.ITEM_ID].to_list()
    # explaining changes nothing about the list
    assert online.recommend(row[S.USER_ID], 10, explain=True).select(S.RECOMMENDATION_COLUMNS).equals(online.recommend(row[S.USER_ID], 10))
