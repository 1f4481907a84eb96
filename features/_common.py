"""Shared pieces of the feature modules: the cutoff, event kinds, ages in days, smoothing, catalog as of a cutoff."""

from __future__ import annotations

from datetime import UTC, datetime

import polars as pl

from recsys.contracts import schema as S

MICROSECONDS_PER_DAY = 86_400_000_000

# event value -> the plural used in column names
EVENT_NAMES = {S.IMPRESSION: "impressions", S.CLICK: "clicks", S.PURCHASE: "purchases"}

# Pseudo-successes of the Bayesian smoothing (clicks + α) / (trials + α / prior): with a CTR prior of 5 %,
# α = 1 is worth 20 pseudo-impressions; with a conversion prior of 20 %, 5 pseudo-clicks.
SMOOTHING_ALPHA = 1.0


def cutoff_literal(cutoff: datetime) -> pl.Expr:
    """The cutoff as a naive-UTC Datetime("us") literal (the canonical timestamp type of recsys.data)."""
    if not isinstance(cutoff, datetime):
        raise TypeError(f"cutoff must be a datetime, got {type(cutoff).__name__}")
    if cutoff.tzinfo is not None:
        cutoff = cutoff.astimezone(UTC).replace(tzinfo=None)
    return pl.lit(cutoff, dtype=pl.Datetime(S.TIME_UNIT))


def events_before(events: pl.LazyFrame, *, cutoff: datetime) -> pl.LazyFrame:
    """Only what was known before the cutoff: events with timestamp strictly before it."""
    return events.filter(pl.col(S.TIMESTAMP) < cutoff_literal(cutoff))


def catalog_at(items: pl.LazyFrame, *, cutoff: datetime) -> pl.LazyFrame:
    """Items that existed at the cutoff: created before it, or of unknown creation time."""
    created = pl.col(S.CREATED_AT)
    return items.filter(created.is_null() | (created < cutoff_literal(cutoff)))


def is_event(kind: str) -> pl.Expr:
    return pl.col(S.EVENT) == kind


def is_engagement() -> pl.Expr:
    """A click or a purchase (a purchase implies a click: docs/ARCHITECTURE.md, "Data")."""
    return pl.col(S.EVENT).is_in([S.CLICK, S.PURCHASE])


def within_days(days: float, *, cutoff: datetime) -> pl.Expr:
    """Timestamp in [cutoff - days, cutoff); the caller has already dropped events at or after the cutoff."""
    start = cutoff_literal(cutoff) - pl.duration(microseconds=round(days * MICROSECONDS_PER_DAY))
    return pl.col(S.TIMESTAMP) >= start


def days_before(expr: pl.Expr, *, cutoff: datetime) -> pl.Expr:
    """Fractional days between a timestamp expression and the cutoff (positive for the past)."""
    return (cutoff_literal(cutoff) - expr).dt.total_microseconds().cast(pl.Float64) / MICROSECONDS_PER_DAY


def smoothed_rate(successes: pl.Expr, trials: pl.Expr, prior: pl.Expr, *, alpha: float = SMOOTHING_ALPHA) -> pl.Expr:
    """Bayesian-smoothed rate (successes + α) / (trials + α / prior): the prior with no data, the raw rate with much.

    Null where the prior is null (nothing to smooth toward, e.g. a log without impressions); 0 where the prior
    is 0 (no success anywhere in the log, so none in this row either).
    """
    return (
        pl.when(prior > 0).then((successes + alpha) / (trials + alpha / prior)).when(prior == 0).then(0.0).otherwise(None).cast(pl.Float64)
    )


def safe_ratio(numerator: pl.Expr, denominator: pl.Expr) -> pl.Expr:
    """numerator / denominator as Float64, null where the denominator is zero or null."""
    return pl.when(denominator > 0).then(numerator.cast(pl.Float64) / denominator).otherwise(None).cast(pl.Float64)


def window_counts(prefix: str, windows: dict[str, float | None], *, cutoff: datetime) -> list[pl.Expr]:
    """`{prefix}_{impressions|clicks|purchases}_{window}` event counts, as aggregations."""
    counts = []
    for kind, name in EVENT_NAMES.items():
        for label, days in windows.items():
            hit = is_event(kind) if days is None else is_event(kind) & within_days(days, cutoff=cutoff)
            counts.append(hit.sum().cast(pl.Int64).alias(f"{prefix}_{name}_{label}"))
    return counts


def rate_features(prefix: str) -> list[pl.Expr]:
    """Smoothed `{prefix}_ctr` and `{prefix}_purchase_rate` from the all-time counts of a frame with one row per key.

    The priors are the rates over the whole frame (the global rates). A click implies the item was shown and
    a purchase implies a click (docs/ARCHITECTURE.md, "Data"), so the denominators are max(impressions, clicks) and
    max(clicks, purchases): logs that miss some impressions or clicks still give rates in [0, 1].
    The CTR is null when the log holds no impression at all (ratings data, bare click logs): there is no
    exposure to divide by, and LightGBM treats the column as missing rather than as a made-up number.
    """
    impressions = pl.col(f"{prefix}_impressions_all")
    clicks = pl.col(f"{prefix}_clicks_all")
    purchases = pl.col(f"{prefix}_purchases_all")
    shown = pl.max_horizontal(impressions, clicks)
    clicked = pl.max_horizontal(clicks, purchases)
    ctr_prior = pl.when(impressions.sum() > 0).then(safe_ratio(clicks.sum(), shown.sum()))
    purchase_prior = safe_ratio(purchases.sum(), clicked.sum())
    return [
        smoothed_rate(clicks, shown, ctr_prior).alias(f"{prefix}_ctr"),
        smoothed_rate(purchases, clicked, purchase_prior).alias(f"{prefix}_purchase_rate"),
    ]
