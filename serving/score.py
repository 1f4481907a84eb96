"""Ranking users with an opened export, frames in and frames out: what `recsys score` (the score job,
`recsys.jobs.score`, which owns files, parts and resume) and evaluation both run.

Users are ranked in chunks: candidates, features and ranking per chunk, so peak memory follows the
chunk size, not the number of users.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator

import polars as pl

import features
from recsys.contracts import schema as S
from recsys.contracts.config import CandidateConfig
from recsys.contracts.interest import InterestModel
from serving.candidates import Snapshot, build_snapshot, generate_candidates
from serving.catalog import make_catalog
from serving.explain import explain as explain_rows
from serving.explain import explanation_schema
from serving.ranking import ROW, LambdaRanker, top_k
from serving.text import item_texts

CHUNK_USERS = 2_000  # ~400k candidate rows × ~55 features per chunk: a few hundred MB


def rank_chunks(
    model: InterestModel,
    ranker: LambdaRanker,
    snapshot: Snapshot,
    tables: features.FeatureTables,
    user_ids: pl.Series,
    *,
    k: int,
    candidates: CandidateConfig,
    history_length: int,
    chunk_users: int = CHUNK_USERS,
    share_cold: bool = True,
    skip: frozenset[int] = frozenset(),
    explain: bool = False,
) -> Iterator[tuple[int, pl.DataFrame]]:
    """(chunk number, top-k recommendations of that chunk's users), lazily, one chunk at a time;
    chunks numbered in `skip` (finished by an earlier, interrupted run) are not ranked.

    A user with no event before the cutoff has nothing that tells them apart: the "no history" interest
    vector, no seen items, no co-visitation, null user features. Every such user gets the same list,
    so with `share_cold` it is ranked once per run and repeated (equal to ranking each of them, tested),
    instead of costing as much as a user with a history (64% of the benchmark's users).
    """
    known = snapshot.users[S.USER_ID].implode()
    shared = None
    for number, begin in enumerate(range(0, user_ids.len(), chunk_users)):
        if number in skip:
            continue
        chunk = user_ids.slice(begin, chunk_users)
        if not share_cold:
            yield number, rank_users(model, ranker, snapshot, tables, chunk, k, candidates, history_length, explain=explain)
            continue
        has_past = chunk.is_in(known)
        parts = [rank_users(model, ranker, snapshot, tables, chunk.filter(has_past), k, candidates, history_length, explain=explain)]
        cold = chunk.filter(~has_past)
        if cold.len():
            if shared is None:
                shared = rank_users(model, ranker, snapshot, tables, cold.head(1), k, candidates, history_length, explain=explain)
                shared = shared.drop(S.USER_ID)
            parts.append(cold.to_frame(S.USER_ID).join(shared, how="cross"))
        yield number, pl.concat(parts).sort(S.USER_ID, S.RANK)


def rank_users(
    model: InterestModel,
    ranker: LambdaRanker,
    snapshot: Snapshot,
    tables: features.FeatureTables,
    users: pl.Series,
    k: int,
    candidates: CandidateConfig,
    history_length: int,
    *,
    explain: bool = False,
) -> pl.DataFrame:
    """The top-k recommendations of `users`, with the EXPLANATION_COLUMNS when `explain`."""
    cand = generate_candidates(model, snapshot, users, candidates, history_length) if users.len() else pl.DataFrame()
    if cand.height == 0:
        return empty_recommendations(users.dtype, snapshot.catalog.ids.dtype, explain=explain, snapshot=snapshot)
    if isinstance(tables, features.IndexedTables):  # online: join against only the rows these pairs can meet
        tables = tables.restrict(users, cand[S.ITEM_ID])
    # in memory already: polars' in-memory engine joins a chunk 2.5x faster than the streaming default
    frame = features.join_features(cand.lazy(), tables).collect(engine="in-memory")
    if not explain:
        ranked = top_k(frame, ranker.predict(frame), k)
        return ranked.select(*S.RECOMMENDATION_COLUMNS)
    ranked = top_k(frame.with_row_index(ROW), ranker.predict(frame), k)
    why = explain_rows(ranker, snapshot, frame[ranked[ROW].to_numpy()], history_length)
    return ranked.select(*S.RECOMMENDATION_COLUMNS).hstack(why)


def empty_recommendations(user_dtype, item_dtype, *, explain: bool = False, snapshot: Snapshot | None = None) -> pl.DataFrame:
    why = explanation_schema(snapshot.catalog.ids.dtype) if explain else {}
    return pl.DataFrame(
        schema={
            S.USER_ID: user_dtype,
            S.RANK: pl.Int32,
            S.ITEM_ID: item_dtype,
            S.SCORE: pl.Float64,
            S.P_CLICK: pl.Float64,
            S.P_PURCHASE: pl.Float64,
            **why,
        }
    )


def prepare(
    catalog,
    item_vectors,
    events: pl.LazyFrame,
    items: pl.LazyFrame,
    *,
    cutoff: dt.datetime,
    candidates: CandidateConfig,
    snapshot: Snapshot | None = None,
) -> tuple[Snapshot, features.FeatureTables]:
    """What every chunk of users shares, computed once per run: the snapshot and the feature tables."""
    snapshot = snapshot or build_snapshot(catalog, item_vectors, events, items, cutoff=cutoff, config=candidates)
    return snapshot, features.feature_tables(events, items, cutoff=cutoff).collect()


def recommend(
    model: InterestModel,
    ranker: LambdaRanker,
    items: pl.LazyFrame,
    events: pl.LazyFrame,
    *,
    cutoff: dt.datetime,
    user_ids: pl.Series,
    k: int,
    candidates: CandidateConfig,
    history_length: int,
    item_vectors=None,
    snapshot: Snapshot | None = None,
    progress=None,
    timings: dict | None = None,
    chunk_users: int = CHUNK_USERS,
) -> pl.DataFrame:
    """Top-k recommendations as of `cutoff`, in memory (evaluation); `score` streams to disk instead.

    A caller that already holds the snapshot at `cutoff` passes it, and nothing is encoded or rebuilt.
    """
    timings = timings if timings is not None else {}
    started = time.perf_counter()
    catalog = snapshot.catalog if snapshot is not None else make_catalog(items)
    if snapshot is None and item_vectors is None:
        item_vectors = model.encode_items(item_texts(catalog.items), progress=progress)
    timings["encode_items_s"] = round(time.perf_counter() - started, 3)
    started = time.perf_counter()
    snapshot, tables = prepare(catalog, item_vectors, events, items, cutoff=cutoff, candidates=candidates, snapshot=snapshot)
    timings["snapshot_s"] = round(time.perf_counter() - started, 3)
    started = time.perf_counter()
    parts = [
        frame
        for _, frame in rank_chunks(
            model, ranker, snapshot, tables, user_ids, k=k, candidates=candidates, history_length=history_length, chunk_users=chunk_users
        )
    ]
    timings["rank_s"] = round(time.perf_counter() - started, 3)
    return pl.concat(parts) if parts else empty_recommendations(user_ids.dtype, catalog.ids.dtype)
