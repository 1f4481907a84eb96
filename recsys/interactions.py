"""From canonical events to what the models learn from: index maps, exposures with labels, click logs.

An exposure is an item shown to a user (an impression) with whether it was clicked and bought. Logs
without impressions (ratings, click streams) yield only positive exposures; negatives are then sampled.
"""

from __future__ import annotations

import polars as pl

from recsys.contracts import schema as S
from serving.catalog import Catalog, make_catalog  # noqa: F401 (re-exported for the training side)
from serving.history import ClickLog

_MATCH_WINDOW = "1d"  # a click counts for the latest impression of the same item within a day before it


def epoch_seconds(column: str = S.TIMESTAMP) -> pl.Expr:
    return pl.col(column).dt.epoch("s")


def click_log(events: pl.DataFrame, catalog: Catalog, user_index: pl.DataFrame) -> ClickLog:
    """History look-up over the engagement events of known items and users (the same rule as serving)."""
    engaged = events.filter(pl.col(S.EVENT).is_in([S.CLICK, S.PURCHASE]))
    return ClickLog.from_events(catalog.index_of(engaged).join(user_index, on=S.USER_ID, how="inner"))


def user_index_of(events: pl.DataFrame) -> pl.DataFrame:
    users = events.select(S.USER_ID).unique().sort(S.USER_ID)
    return users.with_columns(pl.int_range(pl.len(), dtype=pl.Int64).alias("user_index"))


def has_impressions(events: pl.DataFrame) -> bool:
    return bool((events[S.EVENT] == S.IMPRESSION).any())


def exposures(events: pl.DataFrame) -> pl.DataFrame:
    """(user_id, item_id, timestamp, clicked, purchased, position) for every exposure in `events`.

    With impressions: each impression, labelled by the clicks and purchases that follow it (same user
    and item, within a day); clicks that match no impression are exposures too. Without impressions:
    each click (or purchase), labelled purchased when the user bought the item within a day after.
    """
    if S.POSITION not in events.columns:
        events = events.with_columns(pl.lit(None, dtype=pl.Int32).alias(S.POSITION))
    key = [S.USER_ID, S.ITEM_ID]
    cols = [*key, S.TIMESTAMP]
    clicks = events.filter(pl.col(S.EVENT) == S.CLICK).select(cols).unique().sort(S.TIMESTAMP)
    purchases = events.filter(pl.col(S.EVENT) == S.PURCHASE).select(cols).unique().sort(S.TIMESTAMP)
    if has_impressions(events):
        shown = events.filter(pl.col(S.EVENT) == S.IMPRESSION).select(*cols, S.POSITION).unique(cols).sort(S.TIMESTAMP)
        shown = shown.with_columns(pl.col(S.TIMESTAMP).alias("shown_at"))

        def matched(actions: pl.DataFrame, flag: str) -> pl.DataFrame:
            hit = actions.join_asof(shown, on=S.TIMESTAMP, by=key, strategy="backward", tolerance=_MATCH_WINDOW, check_sortedness=False)
            return hit.select(key + [pl.col("shown_at")]).with_columns(pl.lit(1.0).alias(flag))

        click_hits, purchase_hits = matched(clicks, "clicked"), matched(purchases, "purchased")
        out = shown.join(click_hits.filter(pl.col("shown_at").is_not_null()).unique(key + ["shown_at"]), on=key + ["shown_at"], how="left")
        out = out.join(purchase_hits.filter(pl.col("shown_at").is_not_null()).unique(key + ["shown_at"]), on=key + ["shown_at"], how="left")
        organic = clicks.join_asof(
            shown, on=S.TIMESTAMP, by=key, strategy="backward", tolerance=_MATCH_WINDOW, check_sortedness=False
        ).filter(pl.col("shown_at").is_null())
        organic = organic.select(cols).with_columns(
            pl.lit(1.0).alias("clicked"), pl.lit(None, dtype=pl.Float64).alias("purchased"), pl.lit(None, dtype=pl.Int32).alias(S.POSITION)
        )
        out = pl.concat(
            [out.select(cols + ["clicked", "purchased", S.POSITION]), organic.select(cols + ["clicked", "purchased", S.POSITION])]
        )
    else:
        base = clicks if clicks.height else purchases
        after = purchases.with_columns(pl.col(S.TIMESTAMP).alias("bought_at"))
        out = base.join_asof(after, on=S.TIMESTAMP, by=key, strategy="forward", tolerance=_MATCH_WINDOW, check_sortedness=False)
        out = out.with_columns(
            pl.lit(1.0).alias("clicked"),
            pl.col("bought_at").is_not_null().cast(pl.Float64).alias("purchased"),
            pl.lit(None, dtype=pl.Int32).alias(S.POSITION),
        )
        out = out.select(cols + ["clicked", "purchased", S.POSITION])
    out = out.with_columns(pl.col("clicked").fill_null(0.0), pl.col("purchased").fill_null(0.0))
    # a purchase implies a click (the funnel impression → click → purchase)
    out = out.with_columns(pl.max_horizontal("clicked", "purchased").alias("clicked"))
    return out.sort([S.TIMESTAMP, S.USER_ID, S.ITEM_ID])
