"""Candidates and interest scores as of a cutoff: the text model's nearest items, co-visitation, popularity.

Retrieval is a blocked matrix product of user vectors against all item vectors (exact top-k per user
with argpartition), never a Python loop over users or items.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
import polars as pl

import features
from features.neighbors import NEIGHBOR_ID
from recsys.contracts import schema as S
from recsys.contracts.config import CandidateConfig
from serving.ann import AnnIndex
from serving.catalog import Catalog
from serving.history import ClickLog, to_seconds

SOURCE_TYPES = {
    "cand_text_rank": pl.Int32,
    "cand_fresh_rank": pl.Int32,
    "cand_covisit_weight": pl.Float64,
    "cand_popular_rank": pl.Int32,
    "cand_new_rank": pl.Int32,
}
TEXT_SOURCES = ("cand_text_rank", "cand_fresh_rank")  # the sources that rank by the text model's vectors
SOURCE_COLUMNS = (*SOURCE_TYPES, "cand_sources")
RECENT_CLICKS = 5  # the latest clicks every candidate is compared with, item vector to item vector
# the candidate's cosine to the user's last click, the max and mean over the RECENT_CLICKS latest (null
# for a user with no past); p_click's rank and z-score among the user's own candidates
HISTORY_COLUMNS = ("sim_last", "sim_recent_max", "sim_recent_mean")
WITHIN_USER_COLUMNS = ("p_click_rank", "p_click_z")
MODEL_COLUMNS = (S.P_CLICK, S.P_PURCHASE, "similarity", *HISTORY_COLUMNS, *WITHIN_USER_COLUMNS)
USER_BLOCK = 1024  # users per block of candidate generation
ROW_BLOCK = 256  # users per retrieval matrix product (a (256, N) float32 buffer)
TOPK_ROWS = 16  # rows per argpartition: its (16, N) int64 result stays in cache
SCORE_USERS = 128  # users per scorer run (a (128, ~200, D) candidate batch)
FRESH_MAX = 5_000  # the newest arrivals the fresh source compares every user with (a (1024, 5k) product per block)


@dataclass
class Snapshot:
    """What is known at a cutoff, computed once per run and shared by every block of users."""

    catalog: Catalog
    item_vectors: np.ndarray | None  # (N, D) float32, L2-normalised; None until a scoring run has encoded the catalog
    cutoff: datetime
    events: pl.LazyFrame | None  # None once a scoring run has summarised them and let them go
    items: pl.LazyFrame | None
    users: pl.DataFrame  # user_id, user_index: users with events before the cutoff
    log: ClickLog
    seen: pl.DataFrame  # user_index, item_index: clicked or bought before the cutoff
    popular: np.ndarray  # item indices, most popular first
    newest: np.ndarray  # item indices of the latest arrivals, newest first
    fresh: np.ndarray  # item indices created in the `fresh_days` before the cutoff (at most FRESH_MAX, newest)
    covisit: pl.DataFrame  # item_index, neighbor_index, weight
    available: np.ndarray  # (N,) bool: items that exist at the cutoff
    index: AnnIndex | None = None  # approximate text retrieval (candidates.retrieval); None: the exact product
    # the item vectors as columns, (D, N) C-contiguous, for the exact product (None where the index
    # answers instead), and the fresh arrivals' ones (D, len(fresh)): see `with_item_vectors`
    item_columns: np.ndarray | None = None
    fresh_columns: np.ndarray | None = None


def uses_ann(config: CandidateConfig, n_items: int) -> bool:
    return config.retrieval == "ann" or (config.retrieval == "auto" and n_items >= config.ann_min_items)


def with_item_vectors(snapshot: Snapshot, item_vectors: np.ndarray, config: CandidateConfig, index: AnnIndex | None = None) -> Snapshot:
    """The snapshot with its catalog's vectors, and the approximate index over them when the config asks
    for one (built here, in seconds: docs/ARCHITECTURE.md, "Retrieval"). faiss' exact flat index was
    tried for the exact case: 2.5x faster on the search alone at 1,024 users × 50k items, but excluding
    each user's seen items by asking for that many more neighbours made whole runs 15% slower, so the
    exact product stays numpy's.

    The exact product reads a copy of the vectors laid out as columns: OpenBLAS multiplies a few users by
    a (D, N) C-contiguous matrix 2.4x faster than by the transposed view of the (N, D) one (1.6 ms
    instead of 3.8 for 4 users × 50k items on 2 cores; 15% faster for a 256-user block), which is most
    of an online request's retrieval. The copy doubles the vectors' memory, so it is made only where
    the exact product runs (not beside an approximate index), and for the fresh arrivals (≤ FRESH_MAX).
    `index`: an approximate index over these vectors already at hand (the cache's), used where the config
    asks for one."""
    vectors = np.ascontiguousarray(item_vectors, dtype=np.float32)
    if not uses_ann(config, len(vectors)):
        index = None
    elif index is None:
        index = AnnIndex.build(vectors, nprobe=config.ann_nprobe)
    return dataclasses.replace(
        snapshot,
        item_vectors=vectors,
        index=index,
        item_columns=np.ascontiguousarray(vectors.T) if index is None else None,
        fresh_columns=np.ascontiguousarray(vectors[snapshot.fresh].T),
    )


def build_snapshot(
    catalog: Catalog, item_vectors: np.ndarray, events: pl.LazyFrame, items: pl.LazyFrame, *, cutoff: datetime, config: CandidateConfig
) -> Snapshot:
    """Histories, seen items, popularity and co-visitation from the events strictly before `cutoff`."""
    past = events.filter(pl.col(S.TIMESTAMP) < cutoff)
    users = (
        past.select(S.USER_ID).unique().sort(S.USER_ID).collect().with_columns(pl.int_range(pl.len(), dtype=pl.Int64).alias("user_index"))
    )
    engaged = past.filter(pl.col(S.EVENT).is_in([S.CLICK, S.PURCHASE])).select(S.USER_ID, S.ITEM_ID, S.EVENT, S.TIMESTAMP).collect()
    engaged = catalog.index_of(engaged).join(users, on=S.USER_ID, how="inner")
    log = ClickLog.from_events(engaged)
    seen = engaged.select("user_index", "item_index").unique().sort(["user_index", "item_index"])
    popular = catalog.index_of(
        features.popular_items(events, cutoff=cutoff, days=config.popularity_days, n=max(config.popular, 1)).collect()
    ).sort("popularity_rank")
    covisit = features.covisitation(events, cutoff=cutoff).collect()
    covisit = catalog.index_of(catalog.index_of(covisit), column=NEIGHBOR_ID, name="neighbor_index")
    snapshot = Snapshot(
        catalog=catalog,
        item_vectors=None,
        cutoff=cutoff,
        events=events,
        items=items,
        users=users,
        log=log,
        seen=seen,
        popular=popular["item_index"].to_numpy(),
        newest=_newest(catalog, cutoff, config.new),
        fresh=_newest(catalog, cutoff, FRESH_MAX if config.fresh > 0 else 0, since=cutoff - timedelta(days=config.fresh_days)),
        covisit=covisit.select("item_index", "neighbor_index", pl.col("weight").cast(pl.Float32)),
        available=catalog.available_at(cutoff),
    )
    return snapshot if item_vectors is None else with_item_vectors(snapshot, item_vectors, config)


def _newest(catalog: Catalog, cutoff: datetime, n: int, since: datetime | None = None) -> np.ndarray:
    """The `n` most recently created items that exist at the cutoff (ties: higher index first), created
    at or after `since` if given."""
    created = catalog.items[S.CREATED_AT]
    if n <= 0 or created.null_count() == len(created):
        return np.zeros(0, dtype=np.int64)
    window = pl.col("created") < cutoff
    if since is not None:
        window &= pl.col("created") >= since
    frame = pl.DataFrame({"item_index": np.arange(len(catalog)), "created": created}).filter(pl.col("created").is_not_null() & window)
    return frame.sort(["created", "item_index"], descending=True).head(n)["item_index"].to_numpy()


def user_vectors(model, snapshot: Snapshot, user_index: np.ndarray, history_length: int) -> tuple[np.ndarray, np.ndarray]:
    """(user vectors (B, D), histories (B, L)) as of the cutoff; index -1 means a user with no past."""
    times = np.full(len(user_index), to_seconds(snapshot.cutoff), dtype=np.int64)
    history = snapshot.log.histories(np.where(user_index < 0, -(10**12), user_index), times, history_length)
    mask = history >= 0
    vectors = snapshot.item_vectors[np.where(mask, history, 0)] * mask[..., None]
    return model.user_vectors(vectors.astype(np.float32), mask.astype(np.float32)), history


def _text_top_k(
    users: np.ndarray,
    columns: np.ndarray,
    available: np.ndarray,
    seen_rows: np.ndarray,
    seen_cols: np.ndarray,
    k: int,
    among: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(items (B, k), similarities (B, k)): each user's k nearest available, unseen items, best first,
    equal similarities by lower item index (earlier in `among`); -inf where a user has fewer than k
    such items. `columns`: the (D, n) item vectors as columns (`Snapshot.item_columns`), `available`
    their (n,) flags; with `among` (the fresh source's arrivals) they are those items' only, and seen
    items are mapped to their column in it.

    Exact: a matrix product of ROW_BLOCK users against every item vector, into one buffer reused for
    every block, then `_top_k_rows` over TOPK_ROWS rows at a time. Measured on 2 cores: a fresh
    (1024, 50k) product costs as much again in page faults as in arithmetic, and splitting rows across
    threads made that worse, not better.
    """
    if among is not None:
        position = np.full(int(among.max(initial=-1)) + 1, -1, dtype=np.int64)
        position[among] = np.arange(len(among))
        inside = seen_cols < len(position)
        inside[inside] = position[seen_cols[inside]] >= 0
        seen_rows, seen_cols = seen_rows[inside], position[seen_cols[inside]]
    rows, n = len(users), columns.shape[1]
    k = min(k, n)
    unavailable = np.flatnonzero(~available)
    sims = np.empty((min(rows, ROW_BLOCK), n), dtype=np.float32)
    top = np.empty((rows, k), dtype=np.int64)
    similarity = np.empty((rows, k), dtype=np.float32)
    for start in range(0, rows, ROW_BLOCK):
        stop = min(start + ROW_BLOCK, rows)
        block = sims[: stop - start]
        np.matmul(users[start:stop], columns, out=block)
        if len(unavailable):
            block[:, unavailable] = -np.inf
        lo, hi = np.searchsorted(seen_rows, [start, stop])
        block[seen_rows[lo:hi] - start, seen_cols[lo:hi]] = -np.inf
        for first in range(0, stop - start, TOPK_ROWS):
            part = block[first : first + TOPK_ROWS]
            where = slice(start + first, start + first + len(part))
            top[where], similarity[where] = _top_k_rows(part, k)
    return (top if among is None else among[top]), similarity


def _top_k_rows(part: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(columns, values) of each row's k largest values, best first, equal values by lower column.

    Exact, in two steps: a threshold per row at or below its k-th largest value, then a sort of only the
    values at or above it. The threshold comes from a strided sample of the row (the sample's value with
    about 2k/stride above it, so ~2k of the row's values pass); a row where fewer than k pass falls back
    to its exact k-th value (np.partition). Measured on 2 cores, 4 rows × 50k items, k = 300: 0.3 ms
    instead of 2.4 for np.argpartition, which also left ties at the k-th value to chance.
    """
    rows, n = part.shape
    stride = n // (8 * k) if k else 0
    if stride >= 4:
        sample = part[:, ::stride]
        m = min(-(-2 * k // stride), sample.shape[1])
        threshold = np.partition(sample, sample.shape[1] - m, axis=1)[:, sample.shape[1] - m]
        passing = part >= threshold[:, None]
        short = np.flatnonzero(passing.sum(1) < k)
        if len(short):
            threshold[short] = np.partition(part[short], n - k, axis=1)[:, n - k]
            passing[short] = part[short] >= threshold[short, None]
    else:
        threshold = np.partition(part, n - k, axis=1)[:, n - k] if k else np.full(rows, np.inf, np.float32)
        passing = part >= threshold[:, None]
    row, column = np.nonzero(passing)
    value = part[row, column]
    order = np.lexsort((column, -value, row))  # by row, then best first, then lower column
    counts = np.bincount(row, minlength=rows)
    take = ((np.cumsum(counts) - counts)[:, None] + np.arange(k)[None, :]).ravel()
    return column[order[take]].reshape(rows, k), value[order[take]].reshape(rows, k)


def _merge_sources(sources: list[tuple[str, np.ndarray, np.ndarray, np.ndarray]], n_items: int) -> pl.DataFrame:
    """One row per distinct (row, item_index), sorted by both, a column per source (null where that
    source did not list the pair; a source switched off in the config is all null) and cand_sources."""
    keys = np.concatenate([rows * n_items + items for _, rows, items, _ in sources]) if sources else np.zeros(0, np.int64)
    unique, inverse = np.unique(keys, return_inverse=True)  # sorted: by row, then item
    count = np.zeros(len(unique), dtype=np.int8)
    columns = {"row": unique // n_items, "item_index": unique % n_items}
    given = {}
    offset = 0
    for column, rows, _, values in sources:
        where = inverse[offset : offset + len(rows)]
        offset += len(rows)
        filled = np.full(len(unique), np.nan)
        filled[where] = values
        count[where] += 1
        given[column] = filled
    for column, dtype in SOURCE_TYPES.items():
        columns[column] = pl.Series(column, given.get(column, np.full(len(unique), np.nan)), nan_to_null=True).cast(dtype)
    columns["cand_sources"] = count
    return pl.DataFrame(columns)


def score_pairs(
    model, users: np.ndarray, item_vectors: np.ndarray, rows: np.ndarray, items: np.ndarray, history: np.ndarray | None = None
) -> tuple[np.ndarray, ...]:
    """(p_click, p_purchase, similarity) of each pair (users[rows[j]], item_vectors[items[j]]), `rows`
    sorted, and with `history` (B, L) the HISTORY_COLUMNS too. The scorer runs on (users, candidates)
    batches, its per-user work once per user: users with similar candidate counts share a batch of
    SCORE_USERS, padded to the longest; the history similarities reuse the batch's gathered vectors."""
    out = np.zeros((3 + (len(HISTORY_COLUMNS) if history is not None else 0), len(rows)), dtype=np.float32)
    if history is not None:
        recent = history[:, :RECENT_CLICKS]
        recent_mask = recent >= 0
    counts = np.bincount(rows, minlength=len(users))
    starts = np.cumsum(counts) - counts
    by_count = np.argsort(counts, kind="stable")
    by_count = by_count[counts[by_count] > 0]
    for begin in range(0, len(by_count), SCORE_USERS):
        group = by_count[begin : begin + SCORE_USERS]
        width = counts[group].max()
        valid = np.arange(width)[None, :] < counts[group][:, None]
        pair = np.where(valid, starts[group][:, None] + np.arange(width)[None, :], 0)
        candidates = item_vectors[np.where(valid, items[pair], 0)]  # (G, W, D)
        scores = model.score(users[group], candidates)
        if history is not None:
            mask = recent_mask[group]  # (G, R)
            clicked = item_vectors[np.where(mask, recent[group], 0)]  # (G, R, D)
            sims = candidates @ clicked.transpose(0, 2, 1)  # (G, W, R)
            has = mask.any(1)[:, None]
            count = np.maximum(mask.sum(1), 1)[:, None]
            scores = (
                *scores,
                np.where(mask[:, None, 0], sims[..., 0], np.nan),
                np.where(has, np.where(mask[:, None, :], sims, -np.inf).max(-1), np.nan),
                np.where(has, (sims * mask[:, None, :]).sum(-1) / count, np.nan),
            )
        for target, values in zip(out, scores):
            target[pair[valid]] = values[valid]
    return tuple(out)


def within_user(by: str) -> list[pl.Expr]:
    """The WITHIN_USER_COLUMNS: p_click's rank and z-score among the rows of one user (`by`)."""
    p = pl.col(S.P_CLICK)
    return [
        p.rank("ordinal", descending=True).over(by).cast(pl.Int32).alias("p_click_rank"),
        ((p - p.mean().over(by)) / p.std().over(by)).fill_nan(0.0).fill_null(0.0).alias("p_click_z"),
    ]


def _seen_lists(snapshot: Snapshot, user_index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(row in block, item index) of every seen pair of the block's users."""
    seen_users = snapshot.seen["user_index"].to_numpy()
    seen_items = snapshot.seen["item_index"].to_numpy()
    start = np.searchsorted(seen_users, user_index, side="left")
    end = np.searchsorted(seen_users, user_index, side="right")
    end = np.where(user_index < 0, start, end)
    counts = end - start
    rows = np.repeat(np.arange(len(user_index)), counts)
    offsets = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    return rows, seen_items[np.repeat(start, counts) + offsets]


def generate_candidates(
    model, snapshot: Snapshot, user_ids: pl.Series, config: CandidateConfig, history_length: int, progress=None
) -> pl.DataFrame:
    """Candidates per user with their sources and the text model's p_click, p_purchase and similarity.

    Columns: user_id, item_id, user_index, item_index, cand_* sources, p_click, p_purchase, similarity.
    """
    requested = pl.DataFrame({S.USER_ID: user_ids}).unique(maintain_order=True)
    requested = requested.join(snapshot.users, on=S.USER_ID, how="left").with_columns(pl.col("user_index").fill_null(-1))
    blocks = []
    n = requested.height
    for begin in range(0, n, USER_BLOCK):
        block = requested.slice(begin, USER_BLOCK)
        blocks.append(_candidates_for_block(model, snapshot, block, config, history_length))
        if progress:
            progress("candidates", min(begin + USER_BLOCK, n), n)
    if not blocks:
        return pl.DataFrame()
    return pl.concat(blocks)


def _candidates_for_block(model, snapshot: Snapshot, block: pl.DataFrame, config: CandidateConfig, history_length: int) -> pl.DataFrame:
    user_index = block["user_index"].to_numpy()
    users, history = user_vectors(model, snapshot, user_index, history_length)
    n_items = len(snapshot.catalog)
    seen_rows, seen_cols = _seen_lists(snapshot, user_index) if config.exclude_seen else (np.zeros(0, np.int64), np.zeros(0, np.int64))
    # sparse (row, item) exclusions: a dense (B, N) mask costs more than the matrix product at 50k items
    seen_keys = np.unique(seen_rows * n_items + seen_cols)

    def allowed(rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        keys = rows * n_items + cols
        ok = snapshot.available[cols]
        if len(seen_keys):
            pos = np.clip(np.searchsorted(seen_keys, keys), 0, len(seen_keys) - 1)
            ok &= seen_keys[pos] != keys
        return ok

    sources = []  # (column, rows, item indices, values): each source lists a (row, item) pair at most once
    # 1. the text model's nearest items to the user's interest; 2. the last days' arrivals nearest to it:
    # items no behaviour has surfaced yet, found by what their text says (not by date alone, source 5)
    for column, wanted, among in (("cand_text_rank", config.text, None), ("cand_fresh_rank", config.fresh, snapshot.fresh)):
        k = min(wanted, n_items if among is None else len(among))
        if k <= 0:
            continue
        if among is None and snapshot.index is not None:
            top, top_sims = snapshot.index.search(users, k, snapshot.available, seen_rows, seen_cols)
        elif among is None:
            top, top_sims = _text_top_k(users, snapshot.item_columns, snapshot.available, seen_rows, seen_cols, k)
        else:
            top, top_sims = _text_top_k(users, snapshot.fresh_columns, snapshot.available[among], seen_rows, seen_cols, k, among=among)
        keep = np.isfinite(top_sims.ravel())
        rows = np.repeat(np.arange(len(user_index)), k)
        sources.append((column, rows[keep], top.ravel()[keep], np.tile(np.arange(1, k + 1), len(user_index))[keep]))
    # 3. co-visitation with the user's recent clicks
    if config.covisit > 0 and snapshot.covisit.height:
        recent = pl.DataFrame({"row": np.repeat(np.arange(len(user_index)), history.shape[1]), "item_index": history.ravel()}).filter(
            pl.col("item_index") >= 0
        )
        co = (
            recent.join(snapshot.covisit, on="item_index")
            .group_by("row", "neighbor_index")
            .agg(pl.col("weight").sum().alias("cand_covisit_weight"))
            .rename({"neighbor_index": "item_index"})
        )
        co = co.filter(pl.Series(allowed(co["row"].to_numpy(), co["item_index"].to_numpy())))
        co = (
            co.sort(["row", "cand_covisit_weight", "item_index"], descending=[False, True, False])
            .group_by("row", maintain_order=True)
            .head(config.covisit)
        )
        sources.append(("cand_covisit_weight", co["row"].to_numpy(), co["item_index"].to_numpy(), co["cand_covisit_weight"].to_numpy()))
    # 4. recent popularity (what a user with no history mostly gets), 5. new arrivals: a catalog's
    # freshest items, which no behaviour has surfaced yet
    for column, listed in (("cand_popular_rank", snapshot.popular[: max(config.popular, 0)]), ("cand_new_rank", snapshot.newest)):
        rows = np.repeat(np.arange(len(user_index)), len(listed))
        cols = np.tile(listed, len(user_index))
        keep = allowed(rows, cols)
        sources.append((column, rows[keep], cols[keep], np.tile(np.arange(1, len(listed) + 1), len(user_index))[keep]))
    cand = _merge_sources(sources, n_items)
    if cand.height == 0:
        return pl.DataFrame()
    rows, items = cand["row"].to_numpy(), cand["item_index"].to_numpy()
    p_click, p_purchase, similarity, *near = score_pairs(model, users, snapshot.item_vectors, rows, items, history)
    cand = cand.with_columns(
        pl.Series(S.P_CLICK, p_click.astype(np.float64)),
        pl.Series(S.P_PURCHASE, p_purchase.astype(np.float64)),
        pl.Series("similarity", similarity.astype(np.float64)),
        *[pl.Series(name, values.astype(np.float64), nan_to_null=True) for name, values in zip(HISTORY_COLUMNS, near)],
        pl.Series(S.ITEM_ID, snapshot.catalog.ids.gather(items)),
        pl.Series("user_index", user_index[rows]),
        pl.Series(S.USER_ID, block[S.USER_ID].gather(rows)),
    )
    cand = cand.with_columns(within_user(by="row"))  # a block holds all of a user's candidates
    return cand.select(S.USER_ID, S.ITEM_ID, "user_index", "item_index", *SOURCE_COLUMNS, *MODEL_COLUMNS)
