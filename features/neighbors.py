"""Item-to-item co-visitation: items clicked by the same user close together in time or in one session."""

from __future__ import annotations

from datetime import datetime

import polars as pl

from features._common import MICROSECONDS_PER_DAY, events_before, is_engagement
from recsys.contracts import schema as S

# Only a user's most recent clicks take part: bounds the self-join at MAX_CLICKS_PER_USER² rows per user, so a
# crawler or a heavy user cannot blow it up, and recent tastes are what the neighbours should reflect.
MAX_CLICKS_PER_USER = 50

NEIGHBOR_ID = "neighbor_id"
WEIGHT = "weight"

_OTHER_ITEM = "_other_item"
_OTHER_TIMESTAMP = "_other_timestamp"
_BUCKET = "_bucket"


def recent_clicks(events: pl.LazyFrame, *, cutoff: datetime, per_user: int = MAX_CLICKS_PER_USER) -> pl.LazyFrame:
    """Each user's `per_user` latest clicks/purchases before the cutoff (equal timestamps: larger item_id first)."""
    return (
        events_before(events, cutoff=cutoff)
        .filter(is_engagement())
        .select(S.USER_ID, S.ITEM_ID, S.TIMESTAMP, S.SESSION_ID)
        .unique(subset=[S.USER_ID, S.ITEM_ID, S.TIMESTAMP, S.SESSION_ID])
        .filter(pl.int_range(pl.len()).over(S.USER_ID, order_by=[S.TIMESTAMP, S.ITEM_ID], descending=True) < per_user)
    )


def _pairs_in_window(clicks: pl.LazyFrame, window_hours: float) -> pl.LazyFrame:
    """(user, item, other item) for clicks at most `window_hours` apart, as a band join on time buckets.

    With buckets as wide as the window, a later click lies in the same bucket as the earlier one or in the
    next; two equi-joins on (user, bucket) keep the work near the size of the output instead of the
    per-user square (two joins measured 1.5x faster than one join on an exploded [bucket, bucket - 1]).
    """
    window_us = max(1, round(window_hours * MICROSECONDS_PER_DAY / 24))
    bucket = (pl.col(S.TIMESTAMP).dt.epoch("us") // window_us).alias(_BUCKET)
    earlier = clicks.select(S.USER_ID, S.ITEM_ID, S.TIMESTAMP, bucket)
    later = clicks.select(S.USER_ID, pl.col(S.ITEM_ID).alias(_OTHER_ITEM), pl.col(S.TIMESTAMP).alias(_OTHER_TIMESTAMP), bucket)
    gap = pl.col(_OTHER_TIMESTAMP) - pl.col(S.TIMESTAMP)
    close = (pl.col(S.ITEM_ID) != pl.col(_OTHER_ITEM)) & (gap >= pl.duration(microseconds=0)) & (gap <= pl.duration(microseconds=window_us))
    same_bucket = earlier.join(later, on=[S.USER_ID, _BUCKET], how="inner").filter(close)
    next_bucket = earlier.with_columns(pl.col(_BUCKET) + 1).join(later, on=[S.USER_ID, _BUCKET], how="inner").filter(close)
    return pl.concat([same_bucket, next_bucket]).select(S.USER_ID, S.ITEM_ID, _OTHER_ITEM)


def _pairs_in_session(clicks: pl.LazyFrame) -> pl.LazyFrame:
    """(user, item, other item) for clicks in the same (non-null) session."""
    sessions = clicks.filter(pl.col(S.SESSION_ID).is_not_null()).select(S.USER_ID, S.SESSION_ID, S.ITEM_ID)
    return (
        sessions.join(sessions.rename({S.ITEM_ID: _OTHER_ITEM}), on=[S.USER_ID, S.SESSION_ID], how="inner")
        .filter(pl.col(S.ITEM_ID) < pl.col(_OTHER_ITEM))
        .select(S.USER_ID, S.ITEM_ID, _OTHER_ITEM)
    )


def covisitation(
    events: pl.LazyFrame,
    *,
    cutoff: datetime,
    window_hours: float | None = 24,
    max_neighbors: int = 50,
) -> pl.LazyFrame:
    """Item neighbours from clicks (and purchases) of the same user before the cutoff.

    Two items co-occur for a user when the user clicked both at most `window_hours` apart or in the same
    session (`window_hours=None`: same session only). Only each user's MAX_CLICKS_PER_USER latest clicks count.
    weight(i, j) = users(i, j) / sqrt(users(i) · users(j)) — the cosine of the items' user sets — which is
    symmetric and in (0, 1]. Each item keeps its `max_neighbors` heaviest neighbours (ties: smaller
    neighbor_id), so after the cut j may list i without i listing j.

    Columns: item_id, neighbor_id, weight (Float64); sorted by item_id, then weight descending.
    """
    if max_neighbors < 1:
        raise ValueError(f"max_neighbors must be at least 1, got {max_neighbors}")
    if window_hours is not None and window_hours <= 0:
        raise ValueError(f"window_hours must be positive or None, got {window_hours}")
    # Read by five branches; projection pushdown makes their plans differ, so polars' common-subplan
    # elimination missed them and recomputed the windowed filter each time (3x slower at 10M events).
    clicks = recent_clicks(events, cutoff=cutoff).cache()
    pairs = _pairs_in_session(clicks)
    if window_hours is not None:
        pairs = pl.concat([_pairs_in_window(clicks, window_hours), pairs])
    first = pl.min_horizontal(S.ITEM_ID, _OTHER_ITEM)
    second = pl.max_horizontal(S.ITEM_ID, _OTHER_ITEM)
    co_users = (
        pairs.select(S.USER_ID, first.alias(S.ITEM_ID), second.alias(NEIGHBOR_ID))
        .unique()
        .group_by(S.ITEM_ID, NEIGHBOR_ID)
        .agg(pl.len().alias("_co_users"))
    )
    item_users = clicks.select(S.USER_ID, S.ITEM_ID).unique().group_by(S.ITEM_ID).agg(pl.len().alias("_users"))
    weighted = (
        co_users.join(item_users, on=S.ITEM_ID, how="inner")
        .join(item_users.rename({S.ITEM_ID: NEIGHBOR_ID, "_users": "_neighbor_users"}), on=NEIGHBOR_ID, how="inner")
        .select(
            S.ITEM_ID,
            NEIGHBOR_ID,
            (pl.col("_co_users") / (pl.col("_users").cast(pl.Float64) * pl.col("_neighbor_users")).sqrt()).alias(WEIGHT),
        )
    )
    both_ways = pl.concat([weighted, weighted.select(pl.col(NEIGHBOR_ID).alias(S.ITEM_ID), pl.col(S.ITEM_ID).alias(NEIGHBOR_ID), WEIGHT)])
    return both_ways.sort([S.ITEM_ID, WEIGHT, NEIGHBOR_ID], descending=[False, True, False]).filter(
        pl.int_range(pl.len()).over(S.ITEM_ID) < max_neighbors
    )
