"""One user at a time from an opened export: the list `recsys score` writes for that user at the same
cutoff (docs/ARCHITECTURE.md, "Serving"), plus what a live session adds.

`recent_events` (clicks or purchases since the cutoff, e.g. today's session) enter the user's history
(the user vector, the history similarities, co-visitation candidates) and the items not to recommend
again; the behavioural feature tables (counts, recency, popularity, affinity) stay as of the cutoff,
because they are aggregates over the whole log that a request cannot update.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Sequence

import numpy as np
import polars as pl

import features
from recsys.contracts import schema as S
from recsys.contracts.config import CandidateConfig
from recsys.contracts.interest import InterestModel
from serving.candidates import Snapshot
from serving.history import ClickLog, to_seconds
from serving.ranking import LambdaRanker
from serving.score import rank_users

MAX_K = 1000


class RequestError(ValueError):
    """A request this export cannot answer; `field` is where in the request, e.g. `recent_events.2.item_id`."""

    def __init__(self, field: str, problem: str):
        super().__init__(f"{field}: {problem}")
        self.field, self.problem = field, problem


@dataclasses.dataclass(frozen=True)
class RecentEvent:
    item_id: int | str
    event: str = S.CLICK
    timestamp: dt.datetime | None = None  # None: after the cutoff, in the order given


class OnlineRecommender:
    """Rankings of single users from shared, read-only state (thread-safe: nothing is mutated after
    construction; ONNX Runtime sessions and LightGBM boosters accept concurrent runs)."""

    def __init__(
        self,
        model: InterestModel,
        ranker: LambdaRanker,
        snapshot: Snapshot,
        tables: features.FeatureTables,
        *,
        candidates: CandidateConfig,
        history_length: int,
        metadata: dict | None = None,
    ):
        self.model, self.ranker, self.snapshot, self.tables = model, ranker, snapshot, tables
        self.candidates, self.history_length = candidates, history_length
        self.metadata = dict(metadata or {})
        self.user_dtype = snapshot.users[S.USER_ID].dtype
        self.item_dtype = snapshot.catalog.ids.dtype
        self._user_index = dict(zip(snapshot.users[S.USER_ID].to_list(), snapshot.users["user_index"].to_list()))
        self._item_index = {item: i for i, item in enumerate(snapshot.catalog.ids.to_list())}

    @property
    def n_users(self) -> int:
        return len(self._user_index)

    @property
    def n_items(self) -> int:
        return len(self._item_index)

    def knows(self, user_id) -> bool:
        return self._id(user_id, self.user_dtype, "user_id") in self._user_index

    def recommend(
        self, user_id, k: int = 20, *, exclude: Sequence = (), recent_events: Sequence[RecentEvent] = (), explain: bool = False
    ) -> pl.DataFrame:
        """(user_id, rank, item_id, score, p_click, p_purchase) of the user's top `k`, as `recsys score`
        ranks them; `exclude` items are left out (the rest move up), `recent_events` join the history;
        with `explain`, the EXPLANATION_COLUMNS too."""
        if not 1 <= k <= MAX_K:
            raise RequestError("k", f"must be between 1 and {MAX_K}, found {k}")
        user_id = self._id(user_id, self.user_dtype, "user_id")
        excluded = {self._id(item, self.item_dtype, f"exclude.{i}") for i, item in enumerate(exclude)}
        snapshot = self._with_recent(user_id, recent_events) if recent_events else self.snapshot
        users = pl.Series(S.USER_ID, [user_id], dtype=self.user_dtype)
        wanted = k + len(excluded & self._item_index.keys())
        ranked = rank_users(
            self.model, self.ranker, snapshot, self.tables, users, wanted, self.candidates, self.history_length, explain=explain
        )
        if excluded:
            ranked = (
                ranked.filter(~pl.col(S.ITEM_ID).is_in(pl.Series(list(excluded), dtype=self.item_dtype)))
                .head(k)
                .with_columns(pl.int_range(1, pl.len() + 1, dtype=pl.Int32).alias(S.RANK))
            )
        return ranked

    @staticmethod
    def _id(value, dtype: pl.DataType, field: str):
        """`value` as a Python value of the column's type, or a RequestError naming the field."""
        if dtype.is_integer():
            if isinstance(value, bool) or not isinstance(value, int):
                if isinstance(value, str) and value.strip().lstrip("-").isdigit():
                    return int(value)
                raise RequestError(field, f"must be an integer (this model's ids are {dtype}), found {value!r}")
            return value
        if dtype == pl.String:
            if isinstance(value, bool) or not isinstance(value, (str, int)):
                raise RequestError(field, f"must be a string (this model's ids are {dtype}), found {value!r}")
            return str(value)
        return value

    def _with_recent(self, user_id, recent: Sequence[RecentEvent]) -> Snapshot:
        """The snapshot as this one user sees it with `recent` added: their clicks and seen items only
        (user index 0 in a one-user log), the cutoff moved just past the latest recent event."""
        snapshot = self.snapshot
        cutoff_s = to_seconds(snapshot.cutoff)
        items, times, events = [], [], []
        for i, event in enumerate(recent):
            item = self._id(event.item_id, self.item_dtype, f"recent_events.{i}.item_id")
            if item not in self._item_index:
                raise RequestError(f"recent_events.{i}.item_id", f"item {item!r} is not in the catalog")
            if event.event not in (S.CLICK, S.PURCHASE):
                raise RequestError(f"recent_events.{i}.event", f"must be '{S.CLICK}' or '{S.PURCHASE}', found {event.event!r}")
            items.append(self._item_index[item])
            times.append(cutoff_s + 1 + i if event.timestamp is None else to_seconds(_naive_utc(event.timestamp)))
            events.append(event.event)
        items, times, events = np.asarray(items, np.int64), np.asarray(times, np.int64), np.asarray(events)

        log, seen_items = snapshot.log, np.zeros(0, np.int64)
        index = self._user_index.get(user_id)
        if index is not None:
            lo, hi = np.searchsorted(log.users, [index, index + 1])
            old_items, old_times = log.items[lo:hi], log.times[lo:hi]
            seen = snapshot.seen["user_index"].to_numpy()
            lo, hi = np.searchsorted(seen, [index, index + 1])
            seen_items = snapshot.seen["item_index"].to_numpy()[lo:hi]
        else:
            old_items, old_times = np.zeros(0, np.int64), np.zeros(0, np.int64)
        # the history is clicks, purchases where there are none (as `engagement_events` reads a log)
        clicks = events == S.CLICK if (events == S.CLICK).any() else events == S.PURCHASE
        merged = ClickLog(
            np.zeros(len(old_items) + int(clicks.sum()), np.int64),
            np.concatenate([old_items, items[clicks]]),
            np.concatenate([old_times, times[clicks]]),
        )
        seen_items = np.unique(np.concatenate([seen_items, items]))
        latest = int(times.max()) + 1
        cutoff = max(snapshot.cutoff, dt.datetime(1970, 1, 1) + dt.timedelta(seconds=latest))
        return dataclasses.replace(
            snapshot,
            log=merged,
            seen=pl.DataFrame({"user_index": np.zeros(len(seen_items), np.int64), "item_index": seen_items}),
            users=pl.DataFrame(
                {S.USER_ID: pl.Series([user_id], dtype=self.user_dtype), "user_index": [0]}, schema_overrides={"user_index": pl.Int64}
            ),
            cutoff=cutoff,
        )


def _naive_utc(moment: dt.datetime) -> dt.datetime:
    return moment.astimezone(dt.UTC).replace(tzinfo=None) if moment.tzinfo else moment
