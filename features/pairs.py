"""Features of (user, candidate item) pairs for the ranker: user, item, affinity and co-visitation columns."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import numpy as np
import polars as pl

from features._common import EVENT_NAMES, events_before, is_engagement
from features.affinity import USER_WEIGHT, WEIGHT, AffinityParts, affinity_parts, smoothed_affinity
from features.item import ITEM_FEATURE_COLUMNS, item_categories, item_features
from features.neighbors import NEIGHBOR_ID, covisitation
from features.neighbors import WEIGHT as COVISIT_WEIGHT
from features.user import HISTORY, USER_WINDOWS, last_clicked_items, user_features
from recsys.contracts import schema as S

# How many of the user's latest clicked items vote for a candidate through their co-visitation neighbours.
COVISIT_HISTORY_LENGTH = 20

USER_FEATURE_COLUMNS: tuple[str, ...] = (
    *(f"user_{name}_{label}" for name in EVENT_NAMES.values() for label in USER_WINDOWS),
    "user_ctr",
    "user_purchase_rate",
    "user_days_since_last_event",
    "user_days_since_last_click",
    "user_distinct_items_clicked",
)
AFFINITY_FEATURE_COLUMNS: tuple[str, ...] = (
    "affinity_category",
    "affinity_category_lift",
    "affinity_category_weight",
    "affinity_domain",
    "affinity_domain_lift",
    "affinity_domain_weight",
)
COVISIT_FEATURE_COLUMNS: tuple[str, ...] = ("covisit_score", "covisit_max", "covisit_count")

# Exactly the numeric columns `pair_features` adds, in the order it adds them; the ranker trains on these.
FEATURE_COLUMNS: tuple[str, ...] = (
    *USER_FEATURE_COLUMNS,
    *ITEM_FEATURE_COLUMNS,
    *AFFINITY_FEATURE_COLUMNS,
    *COVISIT_FEATURE_COLUMNS,
)

_CATEGORY = "_pair_category"
_DOMAIN = "_pair_domain"
_HAS_HISTORY = "_has_history"
_HISTORY_ITEM = "_history_item"


def _with_affinity(pairs: pl.LazyFrame, parts: AffinityParts, *, key_column: str, name: str) -> pl.LazyFrame:
    """Add affinity_{name}, _lift, _weight for each pair's key (its item's category or domain)."""
    user_key = parts.user_key.select(S.USER_ID, pl.col(parts.key).alias(key_column), pl.col(WEIGHT).alias("_w"))
    key_share = parts.key_share.rename({parts.key: key_column, "share": "_share"})
    known = pl.col(key_column).is_not_null()
    weight = pl.when(known).then(pl.col("_w").fill_null(0.0))
    affinity = smoothed_affinity(weight, pl.col("_user_weight").fill_null(0.0), pl.col("_share"))
    return (
        pairs.join(user_key, on=[S.USER_ID, key_column], how="left", maintain_order="left")
        .join(parts.user_total.rename({USER_WEIGHT: "_user_weight"}), on=S.USER_ID, how="left", maintain_order="left")
        .join(key_share, on=key_column, how="left", maintain_order="left")
        .with_columns(affinity.alias(f"affinity_{name}"), weight.alias(f"affinity_{name}_weight"))
        .with_columns(pl.when(pl.col("_share") > 0).then(pl.col(f"affinity_{name}") / pl.col("_share")).alias(f"affinity_{name}_lift"))
        .drop("_w", "_user_weight", "_share")
    )


@dataclass(frozen=True)
class FeatureTables:
    """Everything `pair_features` joins, as of one cutoff. Build it once per run with `feature_tables`, then
    `.collect()` it to reuse the aggregates across many chunks of pairs (streaming scoring)."""

    users: pl.LazyFrame
    items: pl.LazyFrame
    categories: pl.LazyFrame
    category: AffinityParts
    domain: AffinityParts
    history: pl.LazyFrame  # user_id, history item: the user's latest clicked items, exploded
    links: pl.LazyFrame  # history item, item_id, weight: co-visitation neighbours
    has_history: pl.LazyFrame

    def collect(self) -> FeatureTables:
        """Materialise every table (one `collect_all`, so shared sub-plans run once)."""
        frames = [
            self.users,
            self.items,
            self.categories,
            *_parts(self.category),
            *_parts(self.domain),
            self.history,
            self.links,
            self.has_history,
        ]
        done = [frame.lazy() for frame in pl.collect_all(frames)]
        category = AffinityParts(self.category.key, *done[3:6])
        domain = AffinityParts(self.domain.key, *done[6:9])
        return FeatureTables(done[0], done[1], done[2], category, domain, done[9], done[10], done[11])

    def indexed(self) -> IndexedTables:
        """These (collected) tables sorted by their keys, for cutting them down to a few users cheaply."""
        return IndexedTables(self)


class IndexedTables:
    """Feature tables sorted by key, so that the rows of a few users and items are found by binary search:
    `restrict` returns FeatureTables holding only the rows those pairs can join, with the same features
    for them. A join builds its hash table on its right side, so joining one user's ~200 candidates
    against the whole shop's tables cost 6.7 ms a request at 50k items; filtering them first, 2.3 ms."""

    def __init__(self, tables: FeatureTables):
        def by(frame: pl.LazyFrame, key: str) -> tuple[pl.DataFrame, np.ndarray]:
            frame = frame.collect().sort(key, nulls_last=True)
            return frame, frame[key].to_numpy()

        self.users, self.items, self.categories = by(tables.users, S.USER_ID), by(tables.items, S.ITEM_ID), by(tables.categories, S.ITEM_ID)
        self.parts = [
            (p.key, by(p.user_key, S.USER_ID), by(p.user_total, S.USER_ID), p.key_share.collect().lazy())
            for p in (tables.category, tables.domain)
        ]
        self.history, self.has_history = by(tables.history, S.USER_ID), by(tables.has_history, S.USER_ID)
        self.links = by(tables.links, _HISTORY_ITEM)

    def restrict(self, user_ids: pl.Series, item_ids: pl.Series) -> FeatureTables:
        users, items = np.unique(user_ids.to_numpy()), np.unique(item_ids.to_numpy())
        history = _rows(self.history, users)
        parts = [AffinityParts(key, _rows(uk, users).lazy(), _rows(ut, users).lazy(), share) for key, uk, ut, share in self.parts]
        return FeatureTables(
            users=_rows(self.users, users).lazy(),
            items=_rows(self.items, items).lazy(),
            categories=_rows(self.categories, items).lazy(),
            category=parts[0],
            domain=parts[1],
            history=history.lazy(),
            links=_rows(self.links, np.unique(history[_HISTORY_ITEM].drop_nulls().to_numpy())).lazy(),
            has_history=_rows(self.has_history, users).lazy(),
        )


def _rows(table: tuple[pl.DataFrame, np.ndarray], keys: np.ndarray) -> pl.DataFrame:
    """The rows of a key-sorted table whose key is one of `keys` (sorted, distinct)."""
    frame, sorted_keys = table
    if len(keys) == 0 or frame.height == 0:
        return frame.clear()
    lo = np.searchsorted(sorted_keys, keys, side="left")
    hi = np.searchsorted(sorted_keys, keys, side="right")
    counts = hi - lo
    if counts.sum() == 0:
        return frame.clear()
    index = np.repeat(lo, counts) + (np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts))
    return frame[index]


def _parts(parts: AffinityParts) -> list[pl.LazyFrame]:
    return [parts.user_key, parts.user_total, parts.key_share]


def feature_tables(events: pl.LazyFrame, items: pl.LazyFrame, *, cutoff: datetime) -> FeatureTables:
    """The per-user, per-item and per-key aggregates behind FEATURE_COLUMNS, as of the cutoff (lazy)."""
    events = events.cache()
    categories = item_categories(items, cutoff=cutoff).select(
        S.ITEM_ID, pl.col(S.CATEGORY).alias(_CATEGORY), pl.col(S.DOMAIN).alias(_DOMAIN)
    )
    has_history = (
        events_before(events, cutoff=cutoff)
        .filter(is_engagement())
        .select(S.USER_ID)
        .unique()
        .with_columns(pl.lit(True).alias(_HAS_HISTORY))
    )
    history = (
        last_clicked_items(events, cutoff=cutoff, length=COVISIT_HISTORY_LENGTH)
        .select(S.USER_ID, pl.col(HISTORY).alias(_HISTORY_ITEM))
        .explode(_HISTORY_ITEM)
    )
    links = covisitation(events, cutoff=cutoff).rename({S.ITEM_ID: _HISTORY_ITEM, NEIGHBOR_ID: S.ITEM_ID})
    return FeatureTables(
        users=user_features(events, cutoff=cutoff),
        items=item_features(events, items, cutoff=cutoff),
        categories=categories,
        category=affinity_parts(events, items, key=S.CATEGORY, cutoff=cutoff),
        domain=affinity_parts(events, items, key=S.DOMAIN, cutoff=cutoff),
        history=history,
        links=links,
        has_history=has_history,
    )


def _covisit_scores(pairs: pl.LazyFrame, tables: FeatureTables) -> pl.LazyFrame:
    """user_id, item_id, covisit_score (sum of co-visitation weights from the user's latest clicked items to the
    item), covisit_max, covisit_count (how many of those items link to it) — for the distinct pairs asked only.

    Scoring only the asked pairs keeps this near len(pairs) × COVISIT_HISTORY_LENGTH rows; every user's whole
    neighbourhood would be tens of millions of rows at 10M events.
    """
    candidates = pairs.select(S.USER_ID, S.ITEM_ID).unique()
    return (
        candidates.join(tables.history, on=S.USER_ID, how="inner")
        .join(tables.links, on=[_HISTORY_ITEM, S.ITEM_ID], how="inner")
        .group_by(S.USER_ID, S.ITEM_ID)
        .agg(
            pl.col(COVISIT_WEIGHT).sum().alias("covisit_score"),
            pl.col(COVISIT_WEIGHT).max().alias("covisit_max"),
            pl.len().cast(pl.Int64).alias("covisit_count"),
        )
    )


def pair_features(pairs: pl.LazyFrame, events: pl.LazyFrame, items: pl.LazyFrame, *, cutoff: datetime) -> pl.LazyFrame:
    """Left-join every feature of FEATURE_COLUMNS onto (user_id, item_id, ...) pairs, as of the cutoff.

    Row count and order and every column of `pairs` are kept. Nulls mean a real unknown: a user with no event
    before the cutoff (user_*), an item outside the catalog at the cutoff (item_*, affinity_*), a rate with no
    exposure to divide by (user_ctr, item_ctr without impressions), a user without any click (covisit_*:
    0 when the user has clicks but none co-visited with the item).
    """
    return join_features(pairs, feature_tables(events, items, cutoff=cutoff))


def join_features(pairs: pl.LazyFrame, tables: FeatureTables) -> pl.LazyFrame:
    """`pair_features` over precomputed tables: the per-chunk step of streaming scoring."""
    pair_columns = pairs.collect_schema().names()
    clashing = sorted(set(pair_columns) & set(FEATURE_COLUMNS))
    if clashing:
        raise ValueError(f"pairs already hold feature columns {clashing}; drop or rename them first")
    covisit = [pl.when(pl.col(_HAS_HISTORY)).then(pl.col(name).fill_null(0)).alias(name) for name in COVISIT_FEATURE_COLUMNS]
    return (
        pairs.join(tables.users, on=S.USER_ID, how="left", maintain_order="left")
        .join(tables.items, on=S.ITEM_ID, how="left", maintain_order="left")
        .join(tables.categories, on=S.ITEM_ID, how="left", maintain_order="left")
        .pipe(_with_affinity, tables.category, key_column=_CATEGORY, name="category")
        .pipe(_with_affinity, tables.domain, key_column=_DOMAIN, name="domain")
        .join(_covisit_scores(pairs, tables), on=[S.USER_ID, S.ITEM_ID], how="left", maintain_order="left")
        .join(tables.has_history, on=S.USER_ID, how="left", maintain_order="left")
        .with_columns(covisit)
        .select(*pair_columns, *FEATURE_COLUMNS)
    )
