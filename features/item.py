"""Per-item behavioral features and the most popular items, as of a cutoff."""

from __future__ import annotations

from datetime import datetime

import polars as pl

from features._common import (
    EVENT_NAMES,
    catalog_at,
    days_before,
    events_before,
    is_engagement,
    is_event,
    rate_features,
    window_counts,
    within_days,
)
from recsys.contracts import schema as S

ITEM_WINDOWS: dict[str, float | None] = {"1d": 1, "7d": 7, "all": None}
ITEM_COUNT_COLUMNS: tuple[str, ...] = tuple(f"item_{name}_{label}" for name in EVENT_NAMES.values() for label in ITEM_WINDOWS)
ITEM_FEATURE_COLUMNS: tuple[str, ...] = (
    *ITEM_COUNT_COLUMNS,
    "item_ctr",
    "item_purchase_rate",
    "item_age_days",
    "item_days_since_last_click",
    "item_price",
    "item_category_clicks_7d",
)
CATEGORY_POPULARITY_DAYS = 7

POPULARITY = "popularity"
POPULARITY_RANK = "popularity_rank"


def item_categories(items: pl.LazyFrame, *, cutoff: datetime) -> pl.LazyFrame:
    """item_id, category, domain of the catalog at the cutoff (a missing value reads as 'unknown')."""
    return catalog_at(items, cutoff=cutoff).select(
        S.ITEM_ID,
        pl.col(S.CATEGORY).fill_null(S.UNKNOWN),
        pl.col(S.DOMAIN).fill_null(S.UNKNOWN),
    )


def item_features(events: pl.LazyFrame, items: pl.LazyFrame, *, cutoff: datetime) -> pl.LazyFrame:
    """One row per catalog item existing at the cutoff (created before it or with no created_at), catalog order.

    Columns: item_id; item_{impressions,clicks,purchases}_{1d,7d,all} (event counts, 0 for untouched items);
    item_ctr, item_purchase_rate (smoothed toward the catalog-wide rates; item_ctr null for a log without
    impressions); item_age_days (from created_at, else from the first event, else null); item_days_since_last_click
    (click or purchase; null if none); item_price; item_category_clicks_7d (click events of the item's category
    in the 7 days before the cutoff).
    """
    past = events_before(events, cutoff=cutoff)
    catalog = catalog_at(items, cutoff=cutoff).with_columns(pl.col(S.CATEGORY).fill_null(S.UNKNOWN))
    counts = list(ITEM_COUNT_COLUMNS)
    activity = past.group_by(S.ITEM_ID).agg(
        *window_counts("item", ITEM_WINDOWS, cutoff=cutoff),
        pl.col(S.TIMESTAMP).min().alias("_first_event"),
        pl.col(S.TIMESTAMP).filter(is_engagement()).max().alias("_last_click"),
    )
    category_clicks = (
        past.filter(is_event(S.CLICK) & within_days(CATEGORY_POPULARITY_DAYS, cutoff=cutoff))
        .join(catalog.select(S.ITEM_ID, S.CATEGORY), on=S.ITEM_ID, how="inner")
        .group_by(S.CATEGORY)
        .agg(pl.len().cast(pl.Int64).alias("item_category_clicks_7d"))
    )
    return (
        catalog.select(S.ITEM_ID, S.CATEGORY, S.PRICE, S.CREATED_AT)
        .join(activity, on=S.ITEM_ID, how="left", maintain_order="left")
        .join(category_clicks, on=S.CATEGORY, how="left", maintain_order="left")
        .with_columns(pl.col(counts).fill_null(0), pl.col("item_category_clicks_7d").fill_null(0))
        .with_columns(
            *rate_features("item"),
            days_before(pl.coalesce(S.CREATED_AT, "_first_event"), cutoff=cutoff).alias("item_age_days"),
            days_before(pl.col("_last_click"), cutoff=cutoff).alias("item_days_since_last_click"),
            pl.col(S.PRICE).cast(pl.Float64).alias("item_price"),
        )
        .select(S.ITEM_ID, *ITEM_FEATURE_COLUMNS)
    )


def popular_items(events: pl.LazyFrame, *, cutoff: datetime, days: float = 7, n: int = 50) -> pl.LazyFrame:
    """The `n` items with the most clicks + purchases in the `days` before the cutoff.

    Columns: item_id, popularity (Int64 count), popularity_rank (1 = most popular). Ties go to the smaller
    item_id, so the list is the same on every run. Fewer than `n` rows when fewer items were engaged with.
    """
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    return (
        events_before(events, cutoff=cutoff)
        .filter(is_engagement() & within_days(days, cutoff=cutoff))
        .group_by(S.ITEM_ID)
        .agg(pl.len().cast(pl.Int64).alias(POPULARITY))
        .sort([POPULARITY, S.ITEM_ID], descending=[True, False])
        .head(n)
        .with_columns(pl.int_range(1, pl.len() + 1, dtype=pl.Int64).alias(POPULARITY_RANK))
    )
