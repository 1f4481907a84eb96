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
import queue
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future

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


@dataclasses.dataclass(frozen=True)
class Request:
    """A request checked against one recommender (`OnlineRecommender.request`)."""

    user_id: int | str
    k: int
    exclude: frozenset  # catalog items only
    recent_events: tuple[RecentEvent, ...]
    explain: bool


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
        self.model, self.ranker, self.snapshot = model, ranker, snapshot
        self.tables = tables if isinstance(tables, features.IndexedTables) else tables.indexed()
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

    def request(
        self, user_id, k: int = 20, *, exclude: Sequence = (), recent_events: Sequence[RecentEvent] = (), explain: bool = False
    ) -> Request:
        """A checked request: ids of this model's types, recent items in the catalog (else RequestError)."""
        if not 1 <= k <= MAX_K:
            raise RequestError("k", f"must be between 1 and {MAX_K}, found {k}")
        user_id = self._id(user_id, self.user_dtype, "user_id")
        excluded = frozenset(self._id(item, self.item_dtype, f"exclude.{i}") for i, item in enumerate(exclude))
        recent = []
        for i, event in enumerate(recent_events):
            item = self._id(event.item_id, self.item_dtype, f"recent_events.{i}.item_id")
            if item not in self._item_index:
                raise RequestError(f"recent_events.{i}.item_id", f"item {item!r} is not in the catalog")
            if event.event not in (S.CLICK, S.PURCHASE):
                raise RequestError(f"recent_events.{i}.event", f"must be '{S.CLICK}' or '{S.PURCHASE}', found {event.event!r}")
            recent.append(dataclasses.replace(event, item_id=item))
        return Request(user_id, k, excluded & self._item_index.keys(), tuple(recent), explain)

    def recommend(
        self, user_id, k: int = 20, *, exclude: Sequence = (), recent_events: Sequence[RecentEvent] = (), explain: bool = False
    ) -> pl.DataFrame:
        """(user_id, rank, item_id, score, p_click, p_purchase) of the user's top `k`, as `recsys score`
        ranks them; `exclude` items are left out (the rest move up), `recent_events` join the history;
        with `explain`, the EXPLANATION_COLUMNS too."""
        request = self.request(user_id, k, exclude=exclude, recent_events=recent_events, explain=explain)
        return self.recommend_many([request])[0]

    def recommend_many(self, requests: Sequence[Request]) -> list[pl.DataFrame]:
        """The answers to checked requests, ranked together: one candidate, feature and ranker pass for
        all requests without recent events (8 users together cost 2.3 ms each instead of 10 alone, at
        50k items), one pass each for those with (each sees its own history). Each answer equals
        ranking its user alone: every stage scores a user independently of the others in its batch."""
        answers: list[pl.DataFrame | None] = [None] * len(requests)
        for explain in (False, True):
            group = [i for i, r in enumerate(requests) if r.explain == explain and not r.recent_events]
            if not group:
                continue
            users = pl.Series(S.USER_ID, [requests[i].user_id for i in group], dtype=self.user_dtype).unique(maintain_order=True)
            wanted = max(requests[i].k + len(requests[i].exclude) for i in group)
            ranked = self._rank(self.snapshot, users, wanted, explain)
            by_user = ranked.partition_by(S.USER_ID, as_dict=True, maintain_order=True)
            for i in group:
                answers[i] = self._finish(by_user.get((requests[i].user_id,), ranked.clear()), requests[i])
        for i, request in enumerate(requests):
            if request.recent_events:
                users = pl.Series(S.USER_ID, [request.user_id], dtype=self.user_dtype)
                snapshot = self._with_recent(request.user_id, request.recent_events)
                answers[i] = self._finish(self._rank(snapshot, users, request.k + len(request.exclude), request.explain), request)
        return answers

    def _rank(self, snapshot: Snapshot, users: pl.Series, k: int, explain: bool) -> pl.DataFrame:
        return rank_users(self.model, self.ranker, snapshot, self.tables, users, k, self.candidates, self.history_length, explain=explain)

    def _finish(self, ranked: pl.DataFrame, request: Request) -> pl.DataFrame:
        """One user's ranked rows cut to the request: excluded items out, the first k, ranks 1..k."""
        if not request.exclude:
            return ranked.head(request.k)
        return (
            ranked.filter(~pl.col(S.ITEM_ID).is_in(pl.Series(list(request.exclude), dtype=self.item_dtype)))
            .head(request.k)
            .with_columns(pl.int_range(1, pl.len() + 1, dtype=pl.Int32).alias(S.RANK))
        )

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
        for i, event in enumerate(recent):  # checked by `request`
            items.append(self._item_index[event.item_id])
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


class Batcher:
    """Requests from many threads ranked together (dynamic batching, as Triton does it): one thread takes
    every request waiting when it is free, up to `max_batch`, and answers them with one
    `recommend_many` per recommender. A lone request waits for nothing; under load, batches grow by
    themselves and each user costs less. Answers are the same as one at a time."""

    def __init__(self, max_batch: int = 64, linger_s: float = 0.002):
        self.max_batch, self.linger_s = max_batch, linger_s
        self.batches = 0
        self.requests = 0
        self._busy = False
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="recsys-batcher", daemon=True)
        self._thread.start()

    def submit(self, recommender: OnlineRecommender, request: Request) -> Future:
        future: Future = Future()
        self._queue.put((recommender, request, future))
        return future

    def close(self, timeout: float = 30.0) -> None:
        """Answer what is queued, then stop."""
        self._queue.put(None)
        self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch, stop = [first], False
            # under load (the last batch had company), wait up to linger_s for more: fuller batches cost
            # less per user; a lone request (quiet server) waits for nothing
            until = time.perf_counter() + (self.linger_s if self._busy else 0.0)
            while len(batch) < self.max_batch:
                try:
                    job = self._queue.get(timeout=max(until - time.perf_counter(), 0.0)) if self._busy else self._queue.get_nowait()
                except queue.Empty:
                    break
                if job is None:
                    stop = True
                    break
                batch.append(job)
            self.batches += 1
            self.requests += len(batch)
            self._busy = len(batch) > 1
            by_recommender: dict[int, list] = {}
            for job in batch:  # a reload may leave requests of the old and the new model in one batch
                by_recommender.setdefault(id(job[0]), []).append(job)
            for jobs in by_recommender.values():
                try:
                    answers = jobs[0][0].recommend_many([request for _, request, _ in jobs])
                except Exception as exc:  # a bug, not a bad request: every waiting caller gets it
                    for _, _, future in jobs:
                        future.set_exception(exc)
                    continue
                for (_, _, future), answer in zip(jobs, answers):
                    future.set_result(answer)
            if stop:
                return
