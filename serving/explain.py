"""Why each recommendation is there, in words (docs/ARCHITECTURE.md, "Explanations").

LightGBM's `pred_contrib` splits every ranker score exactly into a base value plus one contribution per
feature (TreeSHAP). The ranker's 54 features are grouped into the reasons a person understands ("similar
to a title you clicked", "popular this week in <category>", "new arrival"); a reason's contribution is
the sum of its features'. Each recommendation carries its three largest reasons, the base and the rest,
so `base + sum(reasons) + other == score` (to float precision), and the item of the user's history that
is closest to it in text.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from recsys.contracts import schema as S
from serving.candidates import Snapshot
from serving.history import to_seconds
from serving.ranking import feature_matrix

TOP_REASONS = 3
NEW_DAYS = 7.0  # an item younger than this is a "new arrival"

# reason -> the ranker features it sums; every ranker feature belongs to exactly one (tested)
REASONS: dict[str, tuple[str, ...]] = {
    "interest": (S.P_CLICK, S.P_PURCHASE, "similarity", "p_click_rank", "p_click_z", "cand_text_rank"),
    "similar_clicked": ("sim_last", "sim_recent_max", "sim_recent_mean"),
    "clicked_together": ("cand_covisit_weight", "covisit_score", "covisit_max", "covisit_count"),
    "popular": (
        "cand_popular_rank",
        *(f"item_{name}_{window}" for name in ("impressions", "clicks", "purchases") for window in ("1d", "7d", "all")),
        "item_ctr",
        "item_purchase_rate",
        "item_days_since_last_click",
    ),
    "popular_in_category": ("item_category_clicks_7d",),
    "new": ("cand_new_rank", "cand_fresh_rank", "item_age_days"),
    "category": ("affinity_category", "affinity_category_lift", "affinity_category_weight"),
    "domain": ("affinity_domain", "affinity_domain_lift", "affinity_domain_weight"),
    "price": ("item_price",),
    "activity": (
        *(f"user_{name}_{window}" for name in ("impressions", "clicks", "purchases") for window in ("1d", "7d", "30d", "all")),
        "user_ctr",
        "user_purchase_rate",
        "user_days_since_last_event",
        "user_days_since_last_click",
        "user_distinct_items_clicked",
    ),
    "sources": ("cand_sources",),
}
EXPLANATION_COLUMNS = ("reasons", "explain_base", "explain_other", "similar_clicked_item_id", "similar_clicked_similarity")


def reason_matrix(feature_names: list[str]) -> np.ndarray:
    """(features, reasons) 0/1: which reason each feature's contribution adds to."""
    group = {feature: r for r, features in enumerate(REASONS.values()) for feature in features}
    unknown = [f for f in feature_names if f not in group]
    if unknown:
        raise ValueError(f"ranker features without a reason: {unknown}")
    matrix = np.zeros((len(feature_names), len(REASONS)))
    matrix[np.arange(len(feature_names)), [group[f] for f in feature_names]] = 1.0
    return matrix


def explain(ranker, snapshot: Snapshot, rows: pl.DataFrame, history_length: int) -> pl.DataFrame:
    """The EXPLANATION_COLUMNS of each row of `rows` (ranked candidates with their features, in order)."""
    if rows.height == 0:
        return pl.DataFrame(schema=explanation_schema(snapshot.catalog.ids.dtype))
    contrib = ranker.contributions(feature_matrix(rows, ranker.feature_names))  # (R, F + 1), last column the base
    by_reason = contrib[:, :-1] @ reason_matrix(ranker.feature_names)  # (R, G)
    top = np.argsort(-by_reason, axis=1, kind="stable")[:, :TOP_REASONS]
    top_values = np.take_along_axis(by_reason, top, 1)

    items = rows["item_index"].to_numpy()
    users = rows["user_index"].to_numpy()
    times = np.full(len(users), to_seconds(snapshot.cutoff), dtype=np.int64)
    history = snapshot.log.histories(np.where(users < 0, -(10**12), users), times, history_length)  # (R, L)
    mask = history >= 0
    vectors = snapshot.item_vectors
    sims = np.einsum("rd,rld->rl", vectors[items], vectors[np.where(mask, history, 0)])
    sims = np.where(mask, sims, -np.inf)
    best = sims.argmax(1)
    has = mask.any(1)
    closest = np.where(has, history[np.arange(len(items)), best], -1)
    closest_sim = np.where(has, sims[np.arange(len(items)), best], np.nan)

    catalog = snapshot.catalog.items
    titles = catalog[S.TITLE].to_list()
    category = _column(catalog, S.CATEGORY)
    domain = _column(catalog, S.DOMAIN)
    age = rows["item_age_days"].to_numpy() if "item_age_days" in rows.columns else np.full(len(items), np.nan)
    price = rows["item_price"].to_numpy() if "item_price" in rows.columns else np.full(len(items), np.nan)
    names = list(REASONS)

    reasons = []
    for r in range(len(items)):
        words = {
            "clicked": f"“{titles[closest[r]]}”" if closest[r] >= 0 else "what you clicked",
            "category": category[items[r]] or "its category",
            "domain": domain[items[r]] or "its department",
            "age": age[r],
            "price": price[r],
        }
        reasons.append(
            [{"reason": names[g], "text": _text(names[g], words), "contribution": float(v)} for g, v in zip(top[r], top_values[r])]
        )
    base = contrib[:, -1]
    other = contrib[:, :-1].sum(1) - top_values.sum(1)
    ids = snapshot.catalog.ids
    return pl.DataFrame(
        {
            "reasons": reasons,
            "explain_base": base.astype(np.float64),
            "explain_other": other.astype(np.float64),
            "similar_clicked_item_id": pl.Series([ids[int(i)] if i >= 0 else None for i in closest], dtype=ids.dtype),
            "similar_clicked_similarity": pl.Series(closest_sim.astype(np.float64), nan_to_null=True),
        },
        schema=explanation_schema(ids.dtype),
    )


def explanation_schema(item_dtype) -> dict:
    reason = pl.Struct({"reason": pl.String, "text": pl.String, "contribution": pl.Float64})
    return {
        "reasons": pl.List(reason),
        "explain_base": pl.Float64,
        "explain_other": pl.Float64,
        "similar_clicked_item_id": item_dtype,
        "similar_clicked_similarity": pl.Float64,
    }


def _column(items: pl.DataFrame, name: str) -> list:
    return items[name].cast(pl.String).to_list() if name in items.columns else [None] * items.height


def _text(reason: str, words: dict) -> str:
    if reason == "interest":
        return "matches what you read and click"
    if reason == "similar_clicked":
        return f"similar to {words['clicked']}, which you clicked"
    if reason == "clicked_together":
        return "often clicked together with items you clicked"
    if reason == "popular":
        return "popular this week"
    if reason == "popular_in_category":
        return f"popular this week in {words['category']}"
    if reason == "new":
        age = words["age"]
        return "new arrival" if np.isfinite(age) and age <= NEW_DAYS else "how long it has been in the catalog"
    if reason == "category":
        return f"you often choose {words['category']}"
    if reason == "domain":
        return f"you often shop in {words['domain']}"
    if reason == "price":
        price = words["price"]
        return f"its price ({price:.2f})" if np.isfinite(price) else "its price"
    if reason == "activity":
        return "how you have been shopping lately"
    return "found by several of our sources"
