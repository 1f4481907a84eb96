"""How much of a user's engagement goes to each category (or domain), smoothed toward the catalog-wide share."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import polars as pl

from features._common import events_before, is_engagement, is_event, safe_ratio
from features.item import item_categories
from recsys.contracts import schema as S

# A purchase says more about a taste than a click; it also usually comes with its own click event.
PURCHASE_WEIGHT = 3.0
# β: pseudo-interactions spread over the keys by their catalog-wide share, so a user with few clicks gets
# roughly the global shares and a user with many clicks gets their own.
AFFINITY_PRIOR_STRENGTH = 5.0

AFFINITY = "affinity"
LIFT = "lift"
WEIGHT = "weight"
CLICKS = "clicks"
PURCHASES = "purchases"
SHARE = "share"
USER_WEIGHT = "user_weight"


@dataclass(frozen=True)
class AffinityParts:
    """The three aggregates a smoothed affinity is made of, kept apart so that pairs a user never engaged
    with (absent from `user_key`) still get their smoothed value."""

    key: str
    user_key: pl.LazyFrame  # user_id, key, weight, clicks, purchases — only engaged (user, key)
    user_total: pl.LazyFrame  # user_id, user_weight
    key_share: pl.LazyFrame  # key, share — every key of the catalog; null share when nobody engaged at all


def affinity_parts(events: pl.LazyFrame, items: pl.LazyFrame, *, key: str, cutoff: datetime) -> AffinityParts:
    """Weighted engagement (click 1, purchase PURCHASE_WEIGHT) per user × key, per user and per key."""
    keys = item_categories(items, cutoff=cutoff).select(S.ITEM_ID, key)
    engaged = (
        events_before(events, cutoff=cutoff)
        .filter(is_engagement())
        .join(keys, on=S.ITEM_ID, how="inner")
        .with_columns(pl.when(is_event(S.PURCHASE)).then(PURCHASE_WEIGHT).otherwise(1.0).alias(WEIGHT))
    )
    user_key = engaged.group_by(S.USER_ID, key).agg(
        pl.col(WEIGHT).sum(),
        is_event(S.CLICK).sum().cast(pl.Int64).alias(CLICKS),
        is_event(S.PURCHASE).sum().cast(pl.Int64).alias(PURCHASES),
    )
    user_total = user_key.group_by(S.USER_ID).agg(pl.col(WEIGHT).sum().alias(USER_WEIGHT))
    key_share = (
        keys.select(key)
        .unique()
        .join(user_key.group_by(key).agg(pl.col(WEIGHT).sum()), on=key, how="left")
        .with_columns(pl.col(WEIGHT).fill_null(0.0))
        .select(key, safe_ratio(pl.col(WEIGHT), pl.col(WEIGHT).sum()).alias(SHARE))
    )
    return AffinityParts(key, user_key, user_total, key_share)


def smoothed_affinity(weight: pl.Expr, user_weight: pl.Expr, share: pl.Expr) -> pl.Expr:
    """(weight + β·share) / (user_weight + β): the user's share of engagement in a key, shrunk toward the global share."""
    return (weight + AFFINITY_PRIOR_STRENGTH * share) / (user_weight + AFFINITY_PRIOR_STRENGTH)


def _user_affinity(events: pl.LazyFrame, items: pl.LazyFrame, *, key: str, cutoff: datetime) -> pl.LazyFrame:
    parts = affinity_parts(events, items, key=key, cutoff=cutoff)
    return (
        parts.user_key.join(parts.user_total, on=S.USER_ID, how="inner")
        .join(parts.key_share, on=key, how="inner")
        .with_columns(smoothed_affinity(pl.col(WEIGHT), pl.col(USER_WEIGHT), pl.col(SHARE)).alias(AFFINITY))
        .with_columns(safe_ratio(pl.col(AFFINITY), pl.col(SHARE)).alias(LIFT))
        .select(S.USER_ID, key, AFFINITY, LIFT, WEIGHT, CLICKS, PURCHASES)
        .sort(S.USER_ID, key)
    )


def user_category_affinity(events: pl.LazyFrame, items: pl.LazyFrame, *, cutoff: datetime) -> pl.LazyFrame:
    """One row per (user, category) the user clicked or bought in before the cutoff, sorted.

    Columns: user_id, category, affinity = (w_uc + β·share_c) / (w_u + β) with w = clicks + 3·purchases and
    share_c the category's share of all such weight; lift = affinity / share_c; weight; clicks; purchases.
    A (user, category) pair that is absent has affinity β·share_c / (w_u + β); `pair_features` fills it in.
    """
    return _user_affinity(events, items, key=S.CATEGORY, cutoff=cutoff)


def user_domain_affinity(events: pl.LazyFrame, items: pl.LazyFrame, *, cutoff: datetime) -> pl.LazyFrame:
    """As `user_category_affinity`, per catalog domain: user_id, domain, affinity, lift, weight, clicks, purchases."""
    return _user_affinity(events, items, key=S.DOMAIN, cutoff=cutoff)
