"""Users' recent click histories at given times, as item-index matrices (numpy, vectorised).

The same function builds the history of every training exposure (at its own timestamp) and of every
user at a scoring cutoff, so training and serving read a user's past in exactly the same way.
"""

from __future__ import annotations

from datetime import datetime

import numpy as np
import polars as pl

from recsys.contracts import schema as S


def to_seconds(moment: datetime) -> int:
    """A (naive UTC) datetime as integer epoch seconds, the time unit of ClickLog."""
    return int(pl.Series([moment]).cast(pl.Datetime(S.TIME_UNIT)).dt.epoch("s")[0])


def engagement_events(events: pl.DataFrame) -> pl.DataFrame:
    """The events that make a user's history: clicks (or purchases, in a log that has no clicks)."""
    clicks = events.filter(pl.col(S.EVENT) == S.CLICK)
    return clicks if clicks.height else events.filter(pl.col(S.EVENT) == S.PURCHASE)


class ClickLog:
    """Click events as (user index, item index, time) sorted by user then time, for history look-ups."""

    def __init__(self, user_index: np.ndarray, item_index: np.ndarray, times: np.ndarray):
        order = np.lexsort((item_index, times, user_index))  # deterministic among equal timestamps
        self.users = np.asarray(user_index, dtype=np.int64)[order]
        self.items = np.asarray(item_index, dtype=np.int64)[order]
        self.times = np.asarray(times, dtype=np.int64)[order]

    @classmethod
    def from_events(cls, events: pl.DataFrame) -> ClickLog:
        """From canonical events that already carry `user_index` and `item_index` columns."""
        clicks = engagement_events(events)
        return cls(
            clicks["user_index"].to_numpy(),
            clicks["item_index"].to_numpy(),
            clicks.select(pl.col(S.TIMESTAMP).dt.epoch("s")).to_series().to_numpy(),
        )

    def __len__(self) -> int:
        return len(self.users)

    def histories(self, user_index: np.ndarray, times: np.ndarray, length: int) -> np.ndarray:
        """(Q, length) item indices of each query (times in integer seconds)'s most recent clicks strictly before its time, -1 padded.

        Column 0 is the most recent click.
        """
        user_index = np.asarray(user_index, dtype=np.int64)
        times = np.asarray(times, dtype=np.int64)
        if len(self) == 0:
            return np.full((len(user_index), length), -1, dtype=np.int64)
        # composite keys sort the same way as (user, time): position of the first click at or after t
        start = np.searchsorted(self.users, user_index, side="left")
        end = np.searchsorted(self.users, user_index, side="right")
        # binary search inside each user's slice, vectorised over a combined key
        span = np.int64(self.times.max() - min(self.times.min(), times.min()) + 2)
        base = np.int64(min(self.times.min(), times.min()))
        keys = self.users * span + (self.times - base)
        query = user_index * span + (times - base)
        stop = np.searchsorted(keys, query, side="left")  # exclusive: clicks strictly before t
        stop = np.clip(stop, start, end)
        offsets = stop[:, None] - 1 - np.arange(length)[None, :]  # (Q, L), most recent first
        valid = offsets >= start[:, None]
        out = np.where(valid, self.items[np.clip(offsets, 0, len(self) - 1)], -1)
        return out.astype(np.int64)
