"""Per-user behavioral features and click histories, as of a cutoff."""

from __future__ import annotations

from datetime import datetime

import polars as pl

from features._common import days_before, events_before, is_engagement, rate_features, window_counts
from recsys.contracts import schema as S

USER_WINDOWS: dict[str, float | None] = {"1d": 1, "7d": 7, "30d": 30, "all": None}
HISTORY = "history"
HISTORY_AGE_DAYS = "history_age_days"


def user_features(events: pl.LazyFrame, *, cutoff: datetime) -> pl.LazyFrame:
    """One row per user with an event before the cutoff, sorted by user_id.

    Columns: user_id; user_{impressions,clicks,purchases}_{1d,7d,30d,all} (event counts, Int64);
    user_ctr, user_purchase_rate (smoothed, see `features._common.rate_features`; user_ctr is null for a log without impressions);
    user_days_since_last_event; user_days_since_last_click (click or purchase; null if none);
    user_distinct_items_clicked (distinct items clicked or bought).
    """
    past = events_before(events, cutoff=cutoff)
    last_event = pl.col(S.TIMESTAMP).max()
    last_click = pl.col(S.TIMESTAMP).filter(is_engagement()).max()
    return (
        past.group_by(S.USER_ID)
        .agg(
            *window_counts("user", USER_WINDOWS, cutoff=cutoff),
            days_before(last_event, cutoff=cutoff).alias("user_days_since_last_event"),
            days_before(last_click, cutoff=cutoff).alias("user_days_since_last_click"),
            pl.col(S.ITEM_ID).filter(is_engagement()).n_unique().cast(pl.Int64).alias("user_distinct_items_clicked"),
        )
        .with_columns(rate_features("user"))
        .sort(S.USER_ID)
    )


def last_clicked_items(events: pl.LazyFrame, *, cutoff: datetime, length: int) -> pl.LazyFrame:
    """Each user's `length` most recent distinct clicked or bought items before the cutoff, sorted by user_id.

    Columns: user_id; history (list of item_id, most recent first); history_age_days (list of Float32, days
    between the item's latest click/purchase and the cutoff, aligned with history). An item's recency is its
    latest click or purchase; equal timestamps are ordered by item_id, ascending. Users without a click are
    absent.
    """
    if length < 1:
        raise ValueError(f"length must be at least 1, got {length}")
    latest = events_before(events, cutoff=cutoff).filter(is_engagement()).group_by(S.USER_ID, S.ITEM_ID).agg(pl.col(S.TIMESTAMP).max())
    order = dict(by=[pl.col(S.TIMESTAMP), pl.col(S.ITEM_ID)], descending=[True, False])
    return (
        latest.group_by(S.USER_ID)
        .agg(
            pl.col(S.ITEM_ID).sort_by(**order).head(length).alias(HISTORY),
            days_before(pl.col(S.TIMESTAMP), cutoff=cutoff).cast(pl.Float32).sort_by(**order).head(length).alias(HISTORY_AGE_DAYS),
        )
        .sort(S.USER_ID)
    )
