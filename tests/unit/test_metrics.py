"""Hand-computed checks of the offline metrics (arithmetic in the comments)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import polars as pl
import pytest

from recsys import metrics as M
from recsys.contracts import schema as S


def _recs(rows):
    return pl.DataFrame(rows, schema=[S.USER_ID, S.RANK, S.ITEM_ID], orient="row")


def _rel(rows):
    return pl.DataFrame(rows, schema=[S.USER_ID, S.ITEM_ID, M.RELEVANCE], orient="row")


# User 1: rel 2 (item 10) at rank 1, rel 1 (item 12) at rank 3, rel 1 (item 13) never recommended.
# User 2: recommended but has no relevant items -> not a query.
# User 3: one relevant item (rel 1), no recommendations -> query scoring 0.
RECS = _recs([(1, 1, 10), (1, 2, 11), (1, 3, 12), (1, 4, 14), (2, 1, 10)])
REL = _rel([(1, 10, 2), (1, 12, 1), (1, 13, 1), (3, 5, 1)])

# User 1 at k=3:
#   DCG  = (2^2-1)/log2(2) + (2^1-1)/log2(4)          = 3 + 0.5                 = 3.5
#   IDCG = (2^2-1)/log2(2) + 1/log2(3) + 1/log2(4)    = 3 + 0.6309298 + 0.5     = 4.1309298
#   NDCG = 3.5 / 4.1309298 = 0.8472669
# User 1 at k=1: DCG = 3, IDCG = 3 -> NDCG 1.
NDCG_U1_K3 = 3.5 / (3 + 1 / math.log2(3) + 0.5)


def test_ndcg_graded_relevance_exact():
    table = M.per_user_ndcg(RECS, REL, k=3)
    assert table.columns == [S.USER_ID, "ndcg"]
    assert table[S.USER_ID].to_list() == [1, 3]  # user 2 has no relevant items
    assert table["ndcg"].to_list() == pytest.approx([NDCG_U1_K3, 0.0])
    assert NDCG_U1_K3 == pytest.approx(0.8472669, abs=1e-7)
    assert M.per_user_ndcg(RECS, REL, k=1)["ndcg"].to_list() == pytest.approx([1.0, 0.0])


def test_ranking_metrics_hand_computed():
    m = M.ranking_metrics(RECS, REL, ks=(1, 3))
    assert m["users"] == 2  # users 1 and 3
    # NDCG: mean(0.8472670, 0) ; mean(1, 0)
    assert m["ndcg@3"] == pytest.approx(NDCG_U1_K3 / 2)
    assert m["ndcg@1"] == pytest.approx(0.5)
    # Recall@3: user 1 found 2 of 3, user 3 found 0 of 1 -> (2/3 + 0) / 2 = 1/3
    assert m["recall@3"] == pytest.approx(1 / 3)
    # Recall@1: user 1 found 1 of 3 -> (1/3) / 2 = 1/6
    assert m["recall@1"] == pytest.approx(1 / 6)
    # Hit: user 1 yes, user 3 no
    assert m["hit@1"] == pytest.approx(0.5)
    assert m["hit@3"] == pytest.approx(0.5)
    # Precision@3: user 1 2/3, user 3 0/3 -> 1/3 ; precision@1: (1 + 0) / 2
    assert m["precision@3"] == pytest.approx(1 / 3)
    assert m["precision@1"] == pytest.approx(0.5)
    # MRR: first relevant at rank 1 for user 1 -> (1 + 0) / 2; MRR@10 always reported
    assert m["mrr@10"] == pytest.approx(0.5)
    assert m["mrr@3"] == pytest.approx(0.5)


def test_default_keys():
    m = M.ranking_metrics(RECS, REL)
    expected = {f"{n}@{k}" for n in ("ndcg", "recall", "hit", "precision", "mrr") for k in (10, 20)} | {"users"}
    assert set(m) == expected


def test_mrr_uses_first_relevant_rank():
    # Relevant items at ranks 3 and 5 -> MRR = 1/3; at k=2 nothing found -> 0.
    recs = _recs([(1, r, 100 + r) for r in range(1, 6)])
    rel = _rel([(1, 103, 1), (1, 105, 2)])
    m = M.ranking_metrics(recs, rel, ks=(2, 5))
    assert m["mrr@10"] == pytest.approx(1 / 3)
    assert m["mrr@5"] == pytest.approx(1 / 3)
    assert m["mrr@2"] == 0.0
    assert m["hit@2"] == 0.0 and m["hit@5"] == 1.0
    # NDCG@5: DCG = 1/log2(4) + 3/log2(6) ; IDCG = 3/log2(2) + 1/log2(3)
    dcg = 1 / 2 + 3 / math.log2(6)
    idcg = 3 + 1 / math.log2(3)
    assert m["ndcg@5"] == pytest.approx(dcg / idcg)


def test_user_without_recommendations_counts_as_zero():
    recs = _recs([(1, 1, 10)])
    rel = _rel([(1, 10, 1), (2, 10, 1)])  # user 2 never recommended anything
    m = M.ranking_metrics(recs, rel, ks=(10,))
    assert m["users"] == 2
    for name in ("ndcg@10", "recall@10", "hit@10", "mrr@10"):
        assert m[name] == pytest.approx(0.5)
    # precision@10 counts against k: (1/10 + 0) / 2
    assert m["precision@10"] == pytest.approx(0.05)


def test_users_filter():
    # Restrict queries to user 3 only -> every metric 0; to user 1 only -> NDCG@3 of user 1.
    m3 = M.ranking_metrics(RECS, REL, ks=(3,), users=pl.Series([3]))
    assert m3["users"] == 1 and m3["ndcg@3"] == 0.0 and m3["recall@3"] == 0.0
    m1 = M.ranking_metrics(RECS, REL, ks=(3,), users=[1, 2])  # user 2 has no relevant items: not a query
    assert m1["users"] == 1
    assert m1["ndcg@3"] == pytest.approx(NDCG_U1_K3)
    assert m1["recall@3"] == pytest.approx(2 / 3)
    assert M.per_user_ndcg(RECS, REL, k=3, users=[3])[S.USER_ID].to_list() == [3]


def test_no_queries_gives_nan():
    m = M.ranking_metrics(RECS, REL, ks=(3,), users=[99])
    assert m["users"] == 0 and math.isnan(m["ndcg@3"])


def test_zero_relevance_is_not_relevant_and_duplicate_recs_count_once():
    # Item 11 with relevance 0 is ignored; item 10 listed twice counts once at its best rank.
    recs = _recs([(1, 1, 10), (1, 2, 10), (1, 3, 11)])
    rel = _rel([(1, 10, 1), (1, 11, 0)])
    m = M.ranking_metrics(recs, rel, ks=(3,))
    assert m["recall@3"] == pytest.approx(1.0)
    assert m["ndcg@3"] == pytest.approx(1.0)
    assert m["precision@3"] == pytest.approx(1 / 3)


def test_duplicate_relevant_pair_is_rejected():
    with pytest.raises(ValueError, match="more than once"):
        M.ranking_metrics(RECS, _rel([(1, 10, 1), (1, 10, 2)]))


def test_string_ids_and_int_width_mismatch():
    recs = pl.DataFrame({S.USER_ID: ["a"], S.RANK: [1], S.ITEM_ID: ["x"]})
    rel = pl.DataFrame({S.USER_ID: ["a"], S.ITEM_ID: ["x"], M.RELEVANCE: [2]})
    assert M.ranking_metrics(recs, rel, ks=(1,))["ndcg@1"] == pytest.approx(1.0)
    recs32 = RECS.with_columns(pl.col(S.USER_ID, S.ITEM_ID).cast(pl.Int32))
    assert M.ranking_metrics(recs32, REL, ks=(3,))["ndcg@3"] == pytest.approx(NDCG_U1_K3 / 2)


# --------------------------------------------------------------------------------------------- AUC


def _brute_auc(scores, labels):
    # Count over every (positive, negative) pair: win = 1, tie = 0.5.
    pos = [s for s, y in zip(scores, labels) if y]
    neg = [s for s, y in zip(scores, labels) if not y]
    total = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p, n in itertools.product(pos, neg))
    return total / (len(pos) * len(neg))


def test_auc_with_ties_matches_pairwise_count():
    scores = [0.1, 0.4, 0.4, 0.8, 0.4, 0.1, 0.9]
    labels = [0, 1, 0, 1, 1, 1, 0]
    # positives 0.4, 0.8, 0.4, 0.1 ; negatives 0.1, 0.4, 0.9
    # 0.4: vs 0.1 win, 0.4 tie, 0.9 loss -> 1.5 (twice -> 3.0)
    # 0.8: win, win, loss -> 2 ; 0.1: tie, loss, loss -> 0.5
    # total 5.5 / 12 pairs
    assert M.auc(scores, labels) == pytest.approx(5.5 / 12)
    assert M.auc(scores, labels) == pytest.approx(_brute_auc(scores, labels))


def test_auc_random_against_brute_force():
    rng = np.random.default_rng(7)
    scores = rng.integers(0, 5, 60).astype(float)  # many ties
    labels = rng.random(60) < 0.4
    assert M.auc(scores, labels) == pytest.approx(_brute_auc(scores, labels))


def test_auc_perfect_constant_and_single_class():
    assert M.auc([0.1, 0.2, 0.8, 0.9], [0, 0, 1, 1]) == 1.0
    assert M.auc([0.9, 0.8, 0.2, 0.1], [0, 0, 1, 1]) == 0.0
    assert M.auc([0.5] * 6, [0, 1, 0, 1, 1, 0]) == pytest.approx(0.5)
    assert math.isnan(M.auc([0.1, 0.2], [1, 1]))
    assert math.isnan(M.auc([], []))


def test_auc_rejects_bad_input():
    with pytest.raises(ValueError):
        M.auc([0.1, 0.2], [0, 2])
    with pytest.raises(ValueError):
        M.auc([0.1, 0.2], [0])
    with pytest.raises(ValueError):
        M.auc([0.1, float("nan")], [0, 1])


# --------------------------------------------------------------------------------------------- coverage


def test_catalog_coverage():
    # All ranks: items {10, 11, 12, 14} -> 4 / 10 ; top 1: items {10} (users 1 and 2) -> 1 / 10
    assert M.catalog_coverage(RECS, 10) == pytest.approx(0.4)
    assert M.catalog_coverage(RECS, 10, k=1) == pytest.approx(0.1)
    assert M.catalog_coverage(RECS, 10, k=2) == pytest.approx(0.2)
    with pytest.raises(ValueError):
        M.catalog_coverage(RECS, 0)


# --------------------------------------------------------------------------------------------- calibration


def test_calibration_table_counts_and_values():
    p = [0.05, 0.15, 0.12, 0.5, 0.95, 1.0]
    y = [0, 1, 0, 1, 1, 1]
    t = M.calibration_table(p, y, bins=4)
    assert t.columns == ["bin", "mean_predicted", "observed_rate", "count"]
    assert t["bin"].to_list() == [0, 1, 2, 3]
    # bins [0,.25): .05 .15 .12 ; [.25,.5): none ; [.5,.75): .5 ; [.75,1]: .95 1.0 (1.0 in the last bin)
    assert t["count"].to_list() == [3, 0, 1, 2]
    assert t["count"].sum() == len(p)
    assert t["mean_predicted"][0] == pytest.approx((0.05 + 0.15 + 0.12) / 3)
    assert t["observed_rate"][0] == pytest.approx(1 / 3)
    assert t["mean_predicted"][1] is None
    assert t["observed_rate"][3] == pytest.approx(1.0)


def test_calibration_counts_sum_random():
    rng = np.random.default_rng(3)
    p = rng.random(1000)
    t = M.calibration_table(p, rng.random(1000) < p, bins=10)
    assert t.height == 10 and t["count"].sum() == 1000


def test_expected_calibration_error():
    p = [0.05, 0.15, 0.12, 0.5, 0.95, 1.0]
    y = [0, 1, 0, 1, 1, 1]
    # bin 0: |0.10667 - 0.33333| * 3 ; bin 2: |0.5 - 1| * 1 ; bin 3: |0.975 - 1| * 2 ; / 6
    expected = (abs((0.05 + 0.15 + 0.12) / 3 - 1 / 3) * 3 + 0.5 * 1 + 0.025 * 2) / 6
    assert M.expected_calibration_error(p, y, bins=4) == pytest.approx(expected)
    # Perfectly calibrated in each bin -> 0
    assert M.expected_calibration_error([0.0, 0.0, 1.0], [0, 0, 1], bins=2) == pytest.approx(0.0)
    assert math.isnan(M.expected_calibration_error([], []))
    with pytest.raises(ValueError):
        M.calibration_table([1.2], [1])
