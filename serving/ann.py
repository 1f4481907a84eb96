"""Approximate nearest items for large catalogs: a faiss inverted-file index (IVF, flat) behind the same
contract as the exact product (docs/ARCHITECTURE.md, "Retrieval").

The product's user vectors lie away from every item: the item vectors share a large common direction
(the catalog mean has norm ~0.6) that the user vectors point against, so each user's best item has a
negative cosine (median −0.09) and the query's nearest lists by inner product are poor guides to its best
items (recall@100 0.80 at 1M items, nprobe 128, when the index was built on the raw vectors). Two exact
rewrites of the search fix that, since they change no user's ranking:

- centring: u·v = u·(v − m) + u·m, and u·m is one constant per user, so items are indexed as v − m;
- maximum inner product as nearest neighbour (Bachrach et al., 2014): each centred vector x gets one more
  coordinate √(R² − ‖x‖²) (R the largest ‖x‖), the query a 0 there; then ‖q − x̃‖² = ‖u‖² + R² − 2u·x,
  so the L2-nearest items are the inner-product best, and k-means lists become real neighbourhoods.

The similarities returned are u·v again, recovered from the L2 distance. Items that do not exist at the
cutoff are excluded inside the search (an ID selector); each user's seen items by asking for more
neighbours than needed (`k` plus the most seen items of any user in the block) and dropping them. IVF
rather than HNSW: it trains in seconds on a sample; `nprobe` trades recall for speed
(benchmarks/RESULTS.md has the curve).
"""

from __future__ import annotations

import math

import numpy as np

TRAIN_SAMPLE = 64  # training points per list, the most k-means needs to place the centroids
MAX_DRIFT = 0.2  # rebuild once this share of the built catalog has been added or removed since


class AnnIndex:
    """An IVF-Flat index over the catalog's item vectors, centred and lifted one dimension so that L2
    nearest = inner-product best (module docstring). faiss ids are slots; `item_of_slot` maps them to
    the catalog's item indices (-1: a removed slot), so that an update can keep every unchanged item's
    entry while the catalog's order changes around it (`updated`)."""

    def __init__(self, index, item_of_slot: np.ndarray, nprobe: int, mean: np.ndarray, radius_sq: float, built: int, drift: int = 0):
        self.index, self.item_of_slot, self.nprobe = index, item_of_slot, nprobe
        self.mean, self.radius_sq = mean, radius_sq
        self.built, self.drift = built, drift  # items at the last build; items added or removed since

    def __getstate__(self) -> dict:  # faiss objects do not pickle; their bytes do (Ray's object store)
        import faiss

        return {**self.__dict__, "index": faiss.serialize_index(self.index)}

    def __setstate__(self, state: dict) -> None:
        import faiss

        self.__dict__.update({**state, "index": faiss.deserialize_index(state["index"])})

    def _lift(self, vectors: np.ndarray) -> np.ndarray | None:
        """[v − m, √(R² − ‖v − m‖²)] per row; None where a vector lies outside the radius R."""
        lifted, norms = _centred(vectors, self.mean)
        if norms.max(initial=0.0) > self.radius_sq:
            return None
        lifted[:, -1] = np.sqrt(np.maximum(self.radius_sq - norms, 0.0))
        return lifted

    @classmethod
    def build(cls, vectors: np.ndarray, *, nlist: int | None = None, nprobe: int = 32, seed: int = 0, threads: int = 0) -> AnnIndex:
        """`nlist` defaults to ~4·√N lists (the usual rule), at least 1; centroids from a sample."""
        import faiss

        if threads:
            faiss.omp_set_num_threads(threads)
        vectors = np.asarray(vectors, dtype=np.float32)
        n, dim = vectors.shape
        mean = vectors.mean(axis=0, dtype=np.float64).astype(np.float32)
        lifted, norms = _centred(vectors, mean)  # one (N, D + 1) array: at 5M items a copy is 2.5 GB
        radius_sq = float(norms.max(initial=0.0))  # R²: the lift then fits every vector
        lifted[:, -1] = np.sqrt(np.maximum(radius_sq - norms, 0.0))
        nlist = max(1, min(nlist or int(4 * math.sqrt(n)), n))
        index = faiss.IndexIVFFlat(faiss.IndexFlatL2(dim + 1), dim + 1, nlist, faiss.METRIC_L2)
        ann = cls(index, np.arange(n, dtype=np.int64), min(nprobe, nlist), mean, radius_sq, built=n)
        rng = np.random.default_rng(seed)
        index.cp.seed = seed
        index.train(lifted[np.sort(rng.choice(n, min(n, nlist * TRAIN_SAMPLE), replace=False))])
        index.add_with_ids(lifted, np.arange(n, dtype=np.int64))
        return ann

    def updated(self, vectors: np.ndarray, slot_of_item: np.ndarray) -> AnnIndex | None:
        """This index for a new catalog (`vectors`, row i = item index i), where `slot_of_item[i]` is the
        slot that already holds item i's unchanged vector, or -1 for a new or changed item. Slots no item
        keeps are removed, the rest added into the lists the centroids choose, under the same centre
        and radius (any centre keeps the rankings exact). None where a rebuild is due: a new vector
        outside the radius, or more than MAX_DRIFT of the built catalog changed since the build. The
        index is modified in place; the returned object shares it."""
        import faiss

        slot_of_item = np.asarray(slot_of_item, dtype=np.int64)
        kept = slot_of_item >= 0
        gone = np.setdiff1d(np.flatnonzero(self.item_of_slot >= 0), slot_of_item[kept])
        fresh = np.flatnonzero(~kept)
        drift = self.drift + len(gone) + len(fresh)
        if drift > MAX_DRIFT * self.built:
            return None
        lifted = self._lift(np.asarray(vectors, dtype=np.float32)[fresh])
        if lifted is None:
            return None
        if len(gone):
            self.index.remove_ids(faiss.IDSelectorBatch(gone.astype(np.int64)))
        free = np.concatenate([np.flatnonzero(self.item_of_slot < 0), gone])  # reuse removed slots first
        slots = np.concatenate([free, len(self.item_of_slot) + np.arange(max(0, len(fresh) - len(free)))])[: len(fresh)]
        item_of_slot = np.full(max(len(self.item_of_slot), int(slots.max(initial=-1)) + 1), -1, np.int64)
        item_of_slot[slot_of_item[kept]] = np.flatnonzero(kept)
        item_of_slot[slots] = fresh
        if len(fresh):
            self.index.add_with_ids(lifted, slots.astype(np.int64))
        return AnnIndex(self.index, item_of_slot, self.nprobe, self.mean, self.radius_sq, self.built, drift)

    def search(
        self, users: np.ndarray, k: int, available: np.ndarray, seen_rows: np.ndarray, seen_cols: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """(items (B, k), similarities u·v (B, k)): like the exact search, best first (equal similarities:
        lower item index first), -inf where fewer than k available unseen items were found."""
        import faiss

        users = np.asarray(users, dtype=np.float32)
        queries = np.zeros((len(users), users.shape[1] + 1), np.float32)
        queries[:, :-1] = users
        params = faiss.SearchParametersIVF(nprobe=self.nprobe)
        n_items = len(available)
        k = min(k, n_items)
        wanted = min(n_items, k + most_per_row(seen_rows, len(users)))
        slot_alive = self.item_of_slot >= 0
        slot_alive[slot_alive] = available[self.item_of_slot[slot_alive]]
        if not slot_alive.all():
            bitmap = np.packbits(slot_alive.astype(np.uint8), bitorder="little")  # alive until the search returns
            params.sel = faiss.IDSelectorBitmap(len(slot_alive), faiss.swig_ptr(bitmap))
        distances, slots = self.index.search(queries, wanted, params=params)
        items = np.where(slots >= 0, self.item_of_slot[np.maximum(slots, 0)], -1)
        # ‖q − x̃‖² = ‖u‖² + R² − 2·u·(v − m), so u·v = (‖u‖² + R² − d) / 2 + u·m
        offset = 0.5 * (np.einsum("ij,ij->i", users, users) + self.radius_sq) + users @ self.mean
        return best_unseen(items, offset[:, None] - 0.5 * distances, k, n_items, seen_rows, seen_cols)


def _centred(vectors: np.ndarray, mean: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, D + 1) float32 holding v − m with the last column left to fill, and ‖v − m‖² per row."""
    dim = len(mean)
    lifted = np.empty((len(vectors), dim + 1), np.float32)
    np.subtract(vectors, mean, out=lifted[:, :dim])
    return lifted, np.einsum("ij,ij->i", lifted[:, :dim], lifted[:, :dim])


def most_per_row(seen_rows: np.ndarray, rows: int) -> int:
    """The most seen items of any row: how many more neighbours than k a row must ask for."""
    return int(np.bincount(seen_rows, minlength=rows).max(initial=0)) if len(seen_rows) else 0


def best_unseen(items: np.ndarray, sims: np.ndarray, k: int, n_items: int, seen_rows, seen_cols) -> tuple[np.ndarray, np.ndarray]:
    """The candidate contract over a search's answers (item -1: none found): each row's seen items
    dropped, best first, ties by item index, -inf (item 0) where fewer than k are left."""
    rows = len(items)
    if len(seen_rows):  # drop each row's seen items
        keys = np.unique(seen_rows.astype(np.int64) * n_items + seen_cols)
        probe = np.arange(rows)[:, None] * n_items + np.where(items >= 0, items, 0)
        pos = np.clip(np.searchsorted(keys, probe), 0, len(keys) - 1)
        seen = (keys[pos] == probe) & (items >= 0)
        sims = np.where(seen, -np.inf, sims)
    sims = np.where(items >= 0, sims, -np.inf).astype(np.float32)
    order = np.lexsort((np.where(items >= 0, items, np.iinfo(np.int64).max), -sims), axis=1)[:, :k]
    top = np.take_along_axis(items, order, 1)
    best = np.take_along_axis(sims, order, 1)
    top = np.where(np.isfinite(best), top, 0)
    return top.astype(np.int64), best
