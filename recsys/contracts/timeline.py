"""The time rule (docs/ARCHITECTURE.md, "Time"): everything is computed as of a cutoff, from events
strictly before it. These helpers name the moments every job derives from an event log."""

from __future__ import annotations

import datetime as dt

import polars as pl

from recsys.contracts import schema as S

# timestamps are microsecond datetimes: the first moment after an event is one microsecond later
RESOLUTION = dt.timedelta(microseconds=1)


def time_bounds(events: pl.LazyFrame | pl.DataFrame) -> tuple[dt.datetime, dt.datetime]:
    """(first, last) event time."""
    frame = events.select(pl.col(S.TIMESTAMP).min().alias("lo"), pl.col(S.TIMESTAMP).max().alias("hi"))
    row = (frame.collect() if isinstance(frame, pl.LazyFrame) else frame).row(0)
    return row[0], row[1]


def just_after(moment: dt.datetime) -> dt.datetime:
    """The cutoff that includes `moment`: events at `moment` are before it."""
    return moment + RESOLUTION


def parse_moment(value: str | int | float | dt.date | dt.datetime, *, what: str, epoch: bool = True) -> dt.datetime:
    """A naive UTC datetime from an ISO date/time (naive = UTC, aware = converted), a date, or epoch
    seconds (when `epoch`). Raises ValueError with a message that starts with `what`."""
    if isinstance(value, dt.datetime):
        moment = value
    elif isinstance(value, dt.date):
        moment = dt.datetime(value.year, value.month, value.day)
    else:
        text = str(value).strip()
        try:
            if epoch and text.lstrip("-").replace(".", "", 1).isdigit():
                return dt.datetime(1970, 1, 1) + dt.timedelta(seconds=float(text))
            moment = dt.datetime.fromisoformat(text)
        except (ValueError, OverflowError):
            forms = "an ISO date/time (2026-01-25 or 2026-01-25T12:00)" + (" or epoch seconds" if epoch else "")
            raise ValueError(f"{what}: expected {forms}, found {value!r}") from None
    if moment.tzinfo is not None:
        moment = moment.astimezone(dt.UTC).replace(tzinfo=None)
    return moment
