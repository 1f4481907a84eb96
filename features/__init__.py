"""Behavioral features as polars expressions over LazyFrames, computed as of a cutoff.

Every function takes canonical frames (`recsys.data`) and returns a LazyFrame built only from events with
timestamp strictly before `cutoff` and from items that existed then; nothing is collected inside, so callers
compose with `.pipe` and collect once.
"""

from features.affinity import user_category_affinity, user_domain_affinity
from features.item import item_features, popular_items
from features.neighbors import covisitation
from features.pairs import FEATURE_COLUMNS, FeatureTables, IndexedTables, feature_tables, join_features, pair_features
from features.user import last_clicked_items, user_features

__all__ = [
    "FEATURE_COLUMNS",
    "FeatureTables",
    "IndexedTables",
    "feature_tables",
    "join_features",
    "covisitation",
    "item_features",
    "last_clicked_items",
    "pair_features",
    "popular_items",
    "user_category_affinity",
    "user_domain_affinity",
    "user_features",
]
