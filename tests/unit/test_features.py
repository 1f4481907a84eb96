"""Behavioral features: hand-checked counts, smoothing, point-in-time correctness, id types, logs without impressions."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta, timezone

import polars as pl
import pytest
from polars.testing import assert_frame_equal

import features as F
from features._common import SMOOTHING_ALPHA as ALPHA
from features._common import smoothed_rate
from features.affinity import AFFINITY_PRIOR_STRENGTH, PURCHASE_WEIGHT
from features.neighbors import MAX_CLICKS_PER_USER
from recsys.contracts import schema as S

CUTOFF = datetime(2024, 1, 10)
EVENT_SCHEMA = {
    S.USER_ID: pl.Int64,
    S.ITEM_ID: pl.Int64,
    S.EVENT: pl.String,
    S.TIMESTAMP: pl.Datetime("us"),
    S.SESSION_ID: pl.String,
    S.POSITION: pl.Int32,
}
ITEM_SCHEMA = {
    S.ITEM_ID: pl.Int64,
    S.TITLE: pl.String,
    S.DESCRIPTION: pl.String,
    S.CATEGORY: pl.String,
    S.DOMAIN: pl.String,
    S.PRICE: pl.Float64,
    S.CREATED_AT: pl.Datetime("us"),
}


def make_events(rows: list[tuple], schema: dict = EVENT_SCHEMA) -> pl.LazyFrame:
    """rows of (user, item, event, timestamp[, session]) in the canonical events layout."""
    full = [(*row, None)[:5] + (None,) for row in rows]
    return pl.DataFrame(full, schema=schema, orient="row").lazy()


def make_items(rows: list[tuple], schema: dict = ITEM_SCHEMA) -> pl.LazyFrame:
    """rows of (item, category, domain, price, created_at)."""
    full = [(item, f"title {item}", "", category, domain, price, created) for item, category, domain, price, created in rows]
    return pl.DataFrame(full, schema=schema, orient="row").lazy()


def before(days: float = 0, hours: float = 0, minutes: float = 0) -> datetime:
    return CUTOFF - timedelta(days=days, hours=hours, minutes=minutes)


# u1 clicks books and tools and buys a book; u2 clicks a book and a game in one session; u3 only sees things.
EVENT_ROWS = [
    (1, 1, "impression", before(hours=12)),
    (1, 1, "click", before(hours=11, minutes=55)),
    (1, 2, "impression", before(days=5)),
    (1, 2, "click", before(days=5) + timedelta(minutes=10)),
    (1, 2, "purchase", before(days=5) + timedelta(minutes=20)),
    (1, 3, "impression", before(days=21)),
    (1, 4, "click", before(days=70)),
    (2, 1, "impression", before(hours=1), "s2"),
    (2, 1, "click", before(minutes=50), "s2"),
    (2, 3, "impression", before(hours=1), "s2"),
    (2, 3, "click", before(minutes=30), "s2"),
    (3, 4, "impression", before(days=9)),
]
ITEM_ROWS = [
    (1, "books", "media", 10.0, datetime(2023, 12, 1)),
    (2, "books", "media", 20.0, None),
    (3, "games", "media", 30.0, datetime(2024, 1, 5)),
    (4, "tools", "home", None, datetime(2023, 6, 1)),
]
# What the future brings: events at and after the cutoff (also by a new user, on a new item) and an item
# created at the cutoff and one after it.
FUTURE_EVENT_ROWS = [
    (1, 3, "click", CUTOFF),
    (1, 3, "purchase", CUTOFF),
    (2, 4, "click", CUTOFF + timedelta(seconds=1), "s2"),
    (2, 4, "impression", CUTOFF + timedelta(days=1)),
    (9, 5, "click", CUTOFF + timedelta(days=2)),
    (9, 6, "click", CUTOFF + timedelta(days=2, minutes=1)),
    (3, 5, "click", CUTOFF + timedelta(days=2, minutes=2)),
]
FUTURE_ITEM_ROWS = [
    (5, "books", "media", 5.0, CUTOFF),
    (6, "toys", "kids", 6.0, CUTOFF + timedelta(days=1)),
]
PAIRS = pl.LazyFrame(
    {
        S.USER_ID: [1, 1, 2, 3, 9, 1, 1],
        S.ITEM_ID: [3, 2, 1, 4, 1, 5, 3],
        "label": [1, 0, 1, 0, 0, 1, 1],
        "request": ["a", "a", "b", "c", "d", "a", "a"],
    }
)


@pytest.fixture
def events() -> pl.LazyFrame:
    return make_events(EVENT_ROWS)


@pytest.fixture
def items() -> pl.LazyFrame:
    return make_items(ITEM_ROWS)


def rows_by_id(frame: pl.DataFrame, key: str = S.USER_ID) -> dict:
    return {row[key]: row for row in frame.iter_rows(named=True)}


# ---------------------------------------------------------------- user features


def test_user_feature_counts_per_window_are_hand_checked(events):
    users = rows_by_id(F.user_features(events, cutoff=CUTOFF).collect())
    assert sorted(users) == [1, 2, 3]
    expected = {
        1: {"impressions": (1, 2, 3, 3), "clicks": (1, 2, 2, 3), "purchases": (0, 1, 1, 1)},
        2: {"impressions": (2, 2, 2, 2), "clicks": (2, 2, 2, 2), "purchases": (0, 0, 0, 0)},
        3: {"impressions": (0, 0, 1, 1), "clicks": (0, 0, 0, 0), "purchases": (0, 0, 0, 0)},
    }
    for user, kinds in expected.items():
        for kind, counts in kinds.items():
            got = tuple(users[user][f"user_{kind}_{window}"] for window in ("1d", "7d", "30d", "all"))
            assert got == counts, (user, kind)
    assert users[1]["user_distinct_items_clicked"] == 3
    assert users[2]["user_distinct_items_clicked"] == 2
    assert users[3]["user_distinct_items_clicked"] == 0
    assert users[1]["user_days_since_last_event"] == pytest.approx((11 * 60 + 55) / 1440)
    assert users[1]["user_days_since_last_click"] == pytest.approx((11 * 60 + 55) / 1440)
    assert users[2]["user_days_since_last_event"] == pytest.approx(30 / 1440)
    assert users[3]["user_days_since_last_event"] == pytest.approx(9.0)
    assert users[3]["user_days_since_last_click"] is None


def test_user_rates_follow_the_smoothing_formula(events):
    users = rows_by_id(F.user_features(events, cutoff=CUTOFF).collect())
    # CTR prior: clicks / max(impressions, clicks) over all users = 5 / (3 + 2 + 1)
    ctr_prior = 5 / 6
    for user, clicks, shown in [(1, 3, 3), (2, 2, 2), (3, 0, 1)]:
        assert users[user]["user_ctr"] == pytest.approx((clicks + ALPHA) / (shown + ALPHA / ctr_prior))
    # purchase prior: purchases / max(clicks, purchases) = 1 / (3 + 2 + 0)
    purchase_prior = 1 / 5
    for user, purchases, clicks in [(1, 1, 3), (2, 0, 2), (3, 0, 0)]:
        assert users[user]["user_purchase_rate"] == pytest.approx((purchases + ALPHA) / (clicks + ALPHA / purchase_prior))


def test_smoothed_rate_is_the_prior_without_data_and_the_raw_rate_with_much():
    frame = pl.DataFrame({"s": [0.0, 50_000.0, 3.0, 1.0], "n": [0.0, 100_000.0, 10.0, 2.0], "prior": [0.2, 0.2, 0.25, 0.0]})
    rate = frame.select(smoothed_rate(pl.col("s"), pl.col("n"), pl.col("prior"), alpha=2.0))["s"].to_list()
    assert rate[0] == pytest.approx(0.2)
    assert rate[1] == pytest.approx(0.5, abs=1e-3)
    assert rate[2] == pytest.approx((3 + 2) / (10 + 2 / 0.25))
    assert rate[3] == 0.0
    nulls = pl.DataFrame({"s": [1.0], "n": [2.0], "prior": [None]}, schema={"s": pl.Float64, "n": pl.Float64, "prior": pl.Float64})
    assert nulls.select(smoothed_rate(pl.col("s"), pl.col("n"), pl.col("prior")))["s"].to_list() == [None]


# ---------------------------------------------------------------- item features


def test_item_features_are_hand_checked(events, items):
    frame = F.item_features(events, items, cutoff=CUTOFF).collect()
    assert frame[S.ITEM_ID].to_list() == [1, 2, 3, 4]  # catalog order
    got = rows_by_id(frame, S.ITEM_ID)
    counts = {
        1: {"impressions": (2, 2, 2), "clicks": (2, 2, 2), "purchases": (0, 0, 0)},
        2: {"impressions": (0, 1, 1), "clicks": (0, 1, 1), "purchases": (0, 1, 1)},
        3: {"impressions": (1, 1, 2), "clicks": (1, 1, 1), "purchases": (0, 0, 0)},
        4: {"impressions": (0, 0, 1), "clicks": (0, 0, 1), "purchases": (0, 0, 0)},
    }
    for item, kinds in counts.items():
        for kind, expected in kinds.items():
            assert tuple(got[item][f"item_{kind}_{window}"] for window in ("1d", "7d", "all")) == expected, (item, kind)
    ctr_prior = 5 / 6  # clicks / max(impressions, clicks) summed over items: 2 + 1 + 2 + 1
    assert got[1]["item_ctr"] == pytest.approx((2 + ALPHA) / (2 + ALPHA / ctr_prior))
    assert got[3]["item_ctr"] == pytest.approx((1 + ALPHA) / (2 + ALPHA / ctr_prior))
    purchase_prior = 1 / 5
    assert got[2]["item_purchase_rate"] == pytest.approx((1 + ALPHA) / (1 + ALPHA / purchase_prior))
    assert got[1]["item_age_days"] == pytest.approx(40.0)  # created 2023-12-01
    assert got[2]["item_age_days"] == pytest.approx(5.0)  # no created_at: first event
    assert got[4]["item_age_days"] == pytest.approx(223.0)
    assert got[1]["item_days_since_last_click"] == pytest.approx(50 / 1440)
    assert got[2]["item_days_since_last_click"] == pytest.approx(5 - 20 / 1440)  # the purchase counts as a click
    assert got[4]["item_days_since_last_click"] == pytest.approx(70.0)
    assert [got[i]["item_price"] for i in (1, 2, 3, 4)] == [10.0, 20.0, 30.0, None]
    # click events of the category in the last 7 days: books 3 (items 1, 1, 2), games 1, tools 0 (70 days ago)
    assert [got[i]["item_category_clicks_7d"] for i in (1, 2, 3, 4)] == [3, 3, 1, 0]


def test_untouched_catalog_item_gets_zero_counts_and_prior_rates(events):
    catalog = make_items([*ITEM_ROWS, (7, "books", "media", 1.0, None)])
    got = rows_by_id(F.item_features(events, catalog, cutoff=CUTOFF).collect(), S.ITEM_ID)[7]
    assert got["item_clicks_all"] == 0 and got["item_impressions_7d"] == 0
    assert got["item_ctr"] == pytest.approx(5 / 6)
    assert got["item_age_days"] is None and got["item_days_since_last_click"] is None


# ---------------------------------------------------------------- affinity


def test_user_category_affinity_is_the_smoothed_weighted_share(events, items):
    frame = F.user_category_affinity(events, items, cutoff=CUTOFF).collect()
    assert frame.columns[:3] == [S.USER_ID, S.CATEGORY, "affinity"]
    got = {(r[S.USER_ID], r[S.CATEGORY]): r for r in frame.iter_rows(named=True)}
    assert sorted(got) == [(1, "books"), (1, "tools"), (2, "books"), (2, "games")]
    beta, u1_books = AFFINITY_PRIOR_STRENGTH, 2 + PURCHASE_WEIGHT  # two clicks and one purchase
    total = u1_books + 1 + 1 + 1  # + u1 tools, u2 books, u2 games
    u1_total = u1_books + 1
    share = {"books": (u1_books + 1) / total, "tools": 1 / total, "games": 1 / total}
    assert got[(1, "books")]["affinity"] == pytest.approx((u1_books + beta * share["books"]) / (u1_total + beta))
    assert got[(1, "tools")]["affinity"] == pytest.approx((1 + beta * share["tools"]) / (u1_total + beta))
    assert got[(2, "games")]["affinity"] == pytest.approx((1 + beta * share["games"]) / (2 + beta))
    assert got[(1, "books")]["lift"] == pytest.approx(got[(1, "books")]["affinity"] / share["books"])
    assert (got[(1, "books")]["clicks"], got[(1, "books")]["purchases"]) == (2, 1)
    assert got[(1, "books")]["affinity"] > got[(1, "tools")]["affinity"]


def test_user_domain_affinity(events, items):
    got = {
        (r[S.USER_ID], r[S.DOMAIN]): r["affinity"]
        for r in F.user_domain_affinity(events, items, cutoff=CUTOFF).collect().iter_rows(named=True)
    }
    media, total, beta = 2 + PURCHASE_WEIGHT + 2, 2 + PURCHASE_WEIGHT + 3, AFFINITY_PRIOR_STRENGTH
    assert got[(1, "media")] == pytest.approx((2 + PURCHASE_WEIGHT + beta * media / total) / (2 + PURCHASE_WEIGHT + 1 + beta))
    assert got[(1, "home")] == pytest.approx((1 + beta * 1 / total) / (2 + PURCHASE_WEIGHT + 1 + beta))


# ---------------------------------------------------------------- covisitation

T0 = datetime(2024, 1, 1)
COVISIT_ROWS = [
    ("A", 1, "click", T0),
    ("A", 2, "click", T0 + timedelta(hours=1)),
    ("A", 3, "click", T0 + timedelta(hours=30)),
    ("B", 1, "click", T0),
    ("B", 2, "click", T0 + timedelta(hours=23)),
    ("B", 3, "purchase", T0 + timedelta(hours=23, minutes=30)),
    ("C", 2, "click", T0),
    ("C", 3, "click", T0 + timedelta(hours=24)),  # exactly one window apart: counts
    ("C", 1, "impression", T0),  # an impression is no visit
]
COVISIT_SCHEMA = {**EVENT_SCHEMA, S.USER_ID: pl.String}


def weights(frame: pl.DataFrame) -> dict[tuple, float]:
    return {(r[S.ITEM_ID], r["neighbor_id"]): r["weight"] for r in frame.iter_rows(named=True)}


def test_covisitation_weights_are_cosine_counts_and_symmetric():
    events = make_events(COVISIT_ROWS, COVISIT_SCHEMA)
    frame = F.covisitation(events, cutoff=CUTOFF).collect()
    assert frame.columns == [S.ITEM_ID, "neighbor_id", "weight"]
    got = weights(frame)
    # users per item: 1 {A, B}, 2 {A, B, C}, 3 {A, B, C}
    expected = {(1, 2): 2 / math.sqrt(2 * 3), (1, 3): 1 / math.sqrt(2 * 3), (2, 3): 2 / math.sqrt(3 * 3)}
    assert len(got) == 2 * len(expected)
    for (i, j), weight in expected.items():
        assert got[(i, j)] == pytest.approx(weight)
        assert got[(j, i)] == pytest.approx(weight)
    # sorted by item, heaviest neighbour first
    assert frame[S.ITEM_ID].to_list() == sorted(frame[S.ITEM_ID].to_list())
    assert frame.filter(pl.col(S.ITEM_ID) == 3)["neighbor_id"].to_list() == [2, 1]


def test_covisitation_respects_the_window():
    events = make_events(COVISIT_ROWS, COVISIT_SCHEMA)
    got = weights(F.covisitation(events, cutoff=CUTOFF, window_hours=12).collect())
    # within 12 h: A 1-2 (1 h) and B 2-3 (30 min) only
    assert got == pytest.approx({(1, 2): 1 / math.sqrt(6), (2, 1): 1 / math.sqrt(6), (2, 3): 1 / 3, (3, 2): 1 / 3})


def test_covisitation_pairs_clicks_of_one_session_whatever_the_gap():
    rows = [(*row, "s-A") if row[0] == "A" else row for row in COVISIT_ROWS]
    events = make_events(rows, COVISIT_SCHEMA)
    with_sessions = weights(F.covisitation(events, cutoff=CUTOFF, window_hours=12).collect())
    # A's three clicks share a session, so A now also pairs 1-3 and 2-3 although they are 29-30 h apart
    assert with_sessions[(1, 3)] == pytest.approx(1 / math.sqrt(6))
    assert with_sessions[(2, 3)] == pytest.approx(2 / 3)
    sessions_only = weights(F.covisitation(events, cutoff=CUTOFF, window_hours=None).collect())
    # only A has sessions: one co-visiting user per pair; users per item are still 1: 2, 2: 3, 3: 3
    expected = {(1, 2): 1 / math.sqrt(6), (1, 3): 1 / math.sqrt(6), (2, 3): 1 / 3}
    assert sessions_only == pytest.approx({**expected, **{(j, i): w for (i, j), w in expected.items()}})


def test_covisitation_keeps_top_neighbours_with_deterministic_ties():
    # item 1 co-occurs once with each of 2, 3, 4 (one user each), all with the same weight
    rows = [(u, 1, "click", T0) for u in ("a", "b", "c")] + [("a", 4, "click", T0), ("b", 3, "click", T0), ("c", 2, "click", T0)]
    frame = F.covisitation(make_events(rows, COVISIT_SCHEMA), cutoff=CUTOFF, max_neighbors=2).collect()
    assert frame.filter(pl.col(S.ITEM_ID) == 1)["neighbor_id"].to_list() == [2, 3]
    assert frame.group_by(S.ITEM_ID).len()["len"].max() <= 2


def test_covisitation_caps_a_heavy_users_clicks():
    extra = 10
    rows = [("heavy", 100 + k, "click", T0 + timedelta(minutes=k)) for k in range(MAX_CLICKS_PER_USER + extra)]
    frame = F.covisitation(make_events(rows, COVISIT_SCHEMA), cutoff=CUTOFF, max_neighbors=1000).collect()
    items = set(frame[S.ITEM_ID].to_list())
    assert items == set(range(100 + extra, 100 + MAX_CLICKS_PER_USER + extra))
    assert frame.height == MAX_CLICKS_PER_USER * (MAX_CLICKS_PER_USER - 1)


def test_covisitation_rejects_bad_parameters(events):
    with pytest.raises(ValueError, match="window_hours"):
        F.covisitation(events, cutoff=CUTOFF, window_hours=0)
    with pytest.raises(ValueError, match="max_neighbors"):
        F.covisitation(events, cutoff=CUTOFF, max_neighbors=0)


# ---------------------------------------------------------------- popular items and histories


def test_popular_items_counts_clicks_and_purchases_and_breaks_ties_by_id():
    rows = [
        (1, 7, "click", before(days=1)),
        (2, 7, "click", before(days=2)),
        (3, 7, "purchase", before(days=3)),
        (1, 9, "click", before(days=1)),
        (2, 9, "click", before(days=1)),
        (1, 3, "click", before(days=1)),
        (2, 3, "purchase", before(days=6)),
        (1, 5, "click", before(days=1)),
        (2, 5, "click", before(days=2)),
        (3, 5, "click", before(days=8)),  # older than the window
        (3, 8, "impression", before(days=1)),  # not a click
    ]
    events = make_events(rows)
    frame = F.popular_items(events, cutoff=CUTOFF, days=7, n=3).collect()
    assert frame.columns == [S.ITEM_ID, "popularity", "popularity_rank"]
    assert frame.rows() == [(7, 3, 1), (3, 2, 2), (5, 2, 3)]
    assert F.popular_items(events, cutoff=CUTOFF, days=7, n=10).collect()[S.ITEM_ID].to_list() == [7, 3, 5, 9]
    shuffled = events.collect().sample(fraction=1.0, shuffle=True, seed=3).lazy()
    assert_frame_equal(F.popular_items(shuffled, cutoff=CUTOFF, days=7, n=3).collect(), frame)


def test_last_clicked_items_order_length_and_ages():
    rows = [
        (1, 1, "click", before(days=4)),
        (1, 2, "click", before(days=3)),
        (1, 1, "purchase", before(days=2)),  # item 1 again, later
        (1, 4, "click", before(days=1)),
        (1, 3, "click", before(days=1)),  # same time as item 4: smaller id first
        (1, 9, "impression", before(hours=1)),
        (2, 5, "click", before(days=6)),
        (3, 6, "impression", before(days=1)),  # no click: absent
    ]
    events = make_events(rows)
    frame = F.last_clicked_items(events, cutoff=CUTOFF, length=3).collect()
    assert frame.columns == [S.USER_ID, "history", "history_age_days"]
    assert frame.schema["history_age_days"] == pl.List(pl.Float32)
    got = rows_by_id(frame)
    assert sorted(got) == [1, 2]
    assert got[1]["history"] == [3, 4, 1]
    assert got[1]["history_age_days"] == pytest.approx([1.0, 1.0, 2.0])
    assert got[2]["history"] == [5] and got[2]["history_age_days"] == pytest.approx([6.0])
    longer = rows_by_id(F.last_clicked_items(events, cutoff=CUTOFF, length=10).collect())
    assert longer[1]["history"] == [3, 4, 1, 2]
    with pytest.raises(ValueError, match="length"):
        F.last_clicked_items(events, cutoff=CUTOFF, length=0)


# ---------------------------------------------------------------- pair features


def test_pair_features_keeps_rows_order_and_extra_columns(events, items):
    frame = F.pair_features(PAIRS, events, items, cutoff=CUTOFF).collect()
    pairs = PAIRS.collect()
    assert frame.height == pairs.height
    assert_frame_equal(frame.select(pairs.columns), pairs)
    assert frame.columns == [*pairs.columns, *F.FEATURE_COLUMNS]
    assert len(set(F.FEATURE_COLUMNS)) == len(F.FEATURE_COLUMNS)
    assert all(frame.schema[c].is_numeric() for c in F.FEATURE_COLUMNS)
    assert all(c.startswith(("user_", "item_", "affinity_", "covisit_")) for c in F.FEATURE_COLUMNS)


def test_pair_features_values_and_real_missings(events, items):
    frame = F.pair_features(PAIRS, events, items, cutoff=CUTOFF).collect()
    row = frame.row(0, named=True)  # user 1, item 3 (games: never engaged by user 1)
    assert row["user_clicks_all"] == 3 and row["item_clicks_all"] == 1
    beta, u1_total, total = AFFINITY_PRIOR_STRENGTH, 2 + PURCHASE_WEIGHT + 1, 2 + PURCHASE_WEIGHT + 3
    assert row["affinity_category"] == pytest.approx(beta * (1 / total) / (u1_total + beta))
    assert row["affinity_category_weight"] == 0.0
    assert row["affinity_domain"] == pytest.approx((2 + PURCHASE_WEIGHT + beta * 7 / total) / (u1_total + beta))
    # u1 clicked item 1, which u2 clicked with item 3 in one session: users per item 1: 2, 3: 1
    assert (row["covisit_score"], row["covisit_count"]) == (pytest.approx(1 / math.sqrt(2)), 1)
    no_link = frame.row(1, named=True)  # user 1, item 2: user 1 has clicks, none linked to item 2
    assert (no_link["covisit_score"], no_link["covisit_count"]) == (0.0, 0)
    unknown_user = frame.row(4, named=True)  # user 9 has no event before the cutoff
    assert unknown_user["user_clicks_all"] is None and unknown_user["covisit_score"] is None
    assert unknown_user["item_clicks_all"] == 2
    future_item = frame.row(5, named=True)  # item 5 is created at the cutoff: not in the catalog yet
    assert future_item["item_clicks_all"] is None and future_item["affinity_category"] is None


def test_pair_features_covisit_score_sums_links_from_history():
    events = make_events(COVISIT_ROWS, COVISIT_SCHEMA)
    catalog = make_items([(i, "c", "d", 1.0, None) for i in (1, 2, 3)])
    pairs = pl.LazyFrame({S.USER_ID: ["C", "A"], S.ITEM_ID: [1, 3]})
    frame = F.pair_features(pairs, events, catalog, cutoff=CUTOFF).collect()
    # C clicked 2 and 3: links 2->1 (2/sqrt6) and 3->1 (1/sqrt6)
    assert frame["covisit_score"][0] == pytest.approx(3 / math.sqrt(6))
    assert frame["covisit_max"][0] == pytest.approx(2 / math.sqrt(6))
    assert frame["covisit_count"][0] == 2
    # A clicked 1, 2 and 3 itself: 1->3 and 2->3
    assert frame["covisit_score"][1] == pytest.approx(1 / math.sqrt(6) + 2 / 3)


def test_pair_features_refuses_pairs_that_already_hold_a_feature_column(events, items):
    with pytest.raises(ValueError, match="user_ctr"):
        F.pair_features(PAIRS.with_columns(pl.lit(0.5).alias("user_ctr")), events, items, cutoff=CUTOFF)


# ---------------------------------------------------------------- point in time, id types, no impressions


def every_output(
    events: pl.LazyFrame, items: pl.LazyFrame, pairs: pl.LazyFrame = PAIRS, cutoff: datetime = CUTOFF
) -> dict[str, pl.DataFrame]:
    """Every public function's output, collected and sorted so that equal content compares equal."""
    return {
        "user_features": F.user_features(events, cutoff=cutoff).collect().sort(S.USER_ID),
        "item_features": F.item_features(events, items, cutoff=cutoff).collect().sort(S.ITEM_ID),
        "user_category_affinity": F.user_category_affinity(events, items, cutoff=cutoff).collect().sort(S.USER_ID, S.CATEGORY),
        "user_domain_affinity": F.user_domain_affinity(events, items, cutoff=cutoff).collect().sort(S.USER_ID, S.DOMAIN),
        "covisitation": F.covisitation(events, cutoff=cutoff).collect().sort(S.ITEM_ID, "neighbor_id"),
        "covisitation_session": F.covisitation(events, cutoff=cutoff, window_hours=None).collect().sort(S.ITEM_ID, "neighbor_id"),
        "popular_items": F.popular_items(events, cutoff=cutoff).collect(),
        "last_clicked_items": F.last_clicked_items(events, cutoff=cutoff, length=5).collect().sort(S.USER_ID),
        "pair_features": F.pair_features(pairs, events, items, cutoff=cutoff).collect(),
    }


def test_nothing_at_or_after_the_cutoff_changes_any_output(events, items):
    now = every_output(events, items)
    assert all(frame.height > 0 for frame in now.values())
    with_future = every_output(
        pl.concat([make_events(FUTURE_EVENT_ROWS), events]),
        pl.concat([items, make_items(FUTURE_ITEM_ROWS)]),
    )
    for name in now:
        assert_frame_equal(with_future[name], now[name], check_exact=True)


def test_covisitation_ignores_the_future_too():
    events = make_events(COVISIT_ROWS, COVISIT_SCHEMA)
    cutoff = T0 + timedelta(hours=23, minutes=30)  # B's purchase of item 3 is at the cutoff: left out
    now = F.covisitation(events, cutoff=cutoff).collect()
    assert (1, 3) not in weights(now)
    later = pl.concat([events, make_events([("A", 1, "click", cutoff), ("B", 2, "click", cutoff + timedelta(hours=1))], COVISIT_SCHEMA)])
    assert_frame_equal(F.covisitation(later, cutoff=cutoff).collect(), now)


def as_strings(frame: pl.DataFrame) -> pl.DataFrame:
    """Ids (also inside history lists) as strings, so Int64 and String runs compare."""
    casts = []
    for column in (S.USER_ID, S.ITEM_ID, "neighbor_id"):
        if column in frame.columns:
            casts.append(pl.col(column).cast(pl.String))
    if "history" in frame.columns:
        casts.append(pl.col("history").cast(pl.List(pl.String)))
    return frame.with_columns(casts)


def test_string_ids_give_the_same_features_as_integer_ids(events, items):
    # single-digit ids, so string order agrees with integer order and ties break the same way
    string_events = events.with_columns(pl.col(S.USER_ID, S.ITEM_ID).cast(pl.String))
    string_items = items.with_columns(pl.col(S.ITEM_ID).cast(pl.String))
    string_pairs = PAIRS.with_columns(pl.col(S.USER_ID, S.ITEM_ID).cast(pl.String))
    integer = every_output(events, items)
    string = every_output(string_events, string_items, string_pairs)
    for name in integer:
        assert string[name].schema.get(S.ITEM_ID, pl.String) == pl.String
        assert_frame_equal(string[name], as_strings(integer[name]), check_exact=False)


def test_a_log_without_impressions_gives_null_ctr_and_everything_else(events, items):
    clicks_only = events.filter(pl.col(S.EVENT) != S.IMPRESSION)
    users = F.user_features(clicks_only, cutoff=CUTOFF).collect()
    assert users[S.USER_ID].to_list() == [1, 2]
    assert users["user_ctr"].null_count() == users.height
    assert users["user_impressions_all"].to_list() == [0, 0]
    assert users["user_purchase_rate"].null_count() == 0
    item_frame = F.item_features(clicks_only, items, cutoff=CUTOFF).collect()
    assert item_frame["item_ctr"].null_count() == item_frame.height
    assert item_frame["item_purchase_rate"].null_count() == 0
    frame = F.pair_features(PAIRS, clicks_only, items, cutoff=CUTOFF).collect()
    assert frame.height == PAIRS.collect().height
    assert frame["user_ctr"].null_count() == frame.height
    assert frame["covisit_score"][1] == 0.0


def test_a_cutoff_before_every_event_gives_empty_features_and_all_missing_pairs(events, items):
    early = datetime(2000, 1, 1)
    assert F.user_features(events, cutoff=early).collect().height == 0
    assert F.covisitation(events, cutoff=early).collect().height == 0
    assert F.popular_items(events, cutoff=early).collect().height == 0
    frame = F.pair_features(PAIRS, events, items, cutoff=early).collect()
    assert frame.height == PAIRS.collect().height
    assert frame["user_clicks_all"].null_count() == frame.height
    # only item 2 (no created_at) may have existed then, untouched; the others were created later
    assert frame["item_clicks_all"].to_list() == [None, 0, None, None, None, None, None]


def test_a_timezone_aware_cutoff_means_the_same_instant(events, items):
    aware = CUTOFF.replace(tzinfo=UTC).astimezone(timezone(timedelta(hours=2)))
    assert_frame_equal(F.user_features(events, cutoff=aware).collect(), F.user_features(events, cutoff=CUTOFF).collect())
    with pytest.raises(TypeError, match="datetime"):
        F.user_features(events, cutoff="2024-01-10")  # type: ignore[arg-type]


def test_features_import_no_other_recsys_module_nor_torch():
    import subprocess
    import sys

    code = (
        "import sys, features; "
        "bad = sorted(m for m in sys.modules if m == 'torch' or (m.startswith('recsys.') and not m.startswith('recsys.contracts'))); "
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_precomputed_tables_join_like_pair_features():
    """Streaming scoring computes the aggregates once and joins per chunk: same result as pair_features."""
    import datetime as _dt

    import numpy as _np

    import features as F

    rng = _np.random.default_rng(3)
    n = 3000
    start = _dt.datetime(2026, 1, 1)
    events = pl.DataFrame(
        {
            S.USER_ID: rng.integers(0, 80, n),
            S.ITEM_ID: rng.integers(0, 60, n),
            S.EVENT: rng.choice(["impression", "click", "purchase"], n, p=[0.7, 0.25, 0.05]),
            S.TIMESTAMP: [start + _dt.timedelta(minutes=int(m)) for m in rng.integers(0, 20 * 1440, n)],
            S.SESSION_ID: rng.integers(0, 400, n).astype(str),
            S.POSITION: rng.integers(1, 10, n).astype(_np.int32),
        }
    ).lazy()
    items = pl.DataFrame(
        {
            S.ITEM_ID: _np.arange(60),
            S.TITLE: ["t"] * 60,
            S.DESCRIPTION: [""] * 60,
            S.CATEGORY: [f"c{i % 7}" for i in range(60)],
            S.DOMAIN: [f"d{i % 3}" for i in range(60)],
            S.PRICE: rng.random(60) * 50,
            S.CREATED_AT: [start - _dt.timedelta(days=1)] * 60,
        }
    ).lazy()
    cutoff = start + _dt.timedelta(days=15)
    pairs = pl.DataFrame({S.USER_ID: rng.integers(0, 90, 500), S.ITEM_ID: rng.integers(0, 60, 500), "extra": _np.arange(500)}).lazy()
    expected = F.pair_features(pairs, events, items, cutoff=cutoff).collect()
    tables = F.feature_tables(events, items, cutoff=cutoff).collect()
    chunks = [F.join_features(pairs.slice(i, 100), tables).collect() for i in range(0, 500, 100)]
    assert_frame_equal(pl.concat(chunks), expected)
