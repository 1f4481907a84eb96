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


class AnnIndex:
    """An IVF-Flat index over the catalog's item vectors (row i = item index i), centred and lifted one
    dimension so that L2 nearest = inner-product best (module docstring)."""

    def __init__(self, index, n_items: int, nprobe: int, mean: np.ndarray, radius_sq: float):
        self.index, self.n_items, self.nprobe = index, n_items, nprobe
        self.mean, self.radius_sq = mean, radius_sq

    def __getstate__(self) -> dict:  # faiss objects do not pickle; their bytes do (Ray's object store)
        import faiss

        return {**self.__dict__, "index": faiss.serialize_index(self.index)}

    def __setstate__(self, state: dict) -> None:
        import faiss

        self.__dict__.update({**state, "index": faiss.deserialize_index(state["index"])})

    @classmethod
    def build(cls, vectors: np.ndarray, *, nlist: int | None = None, nprobe: int = 32, seed: int = 0, threads: int = 0) -> AnnIndex:
        """`nlist` defaults to ~4·√N lists (the usual rule), at least 1; centroids from a sample."""
        import faiss

        if threads:
            faiss.omp_set_num_threads(threads)
        vectors = np.asarray(vectors, dtype=np.float32)
        n, dim = vectors.shape
        mean = vectors.mean(axis=0, dtype=np.float64).astype(np.float32)
        lifted = np.empty((n, dim + 1), np.float32)
        np.subtract(vectors, mean, out=lifted[:, :dim])
        norms = np.einsum("ij,ij->i", lifted[:, :dim], lifted[:, :dim])
        radius_sq = float(norms.max(initial=0.0))  # R²
        lifted[:, dim] = np.sqrt(np.maximum(radius_sq - norms, 0.0))
        nlist = max(1, min(nlist or int(4 * math.sqrt(n)), n))
        index = faiss.IndexIVFFlat(faiss.IndexFlatL2(dim + 1), dim + 1, nlist, faiss.METRIC_L2)
        rng = np.random.default_rng(seed)
        index.cp.seed = seed
        index.train(lifted[np.sort(rng.choice(n, min(n, nlist * TRAIN_SAMPLE), replace=False))])
        index.add(lifted)
        return cls(index, n, min(nprobe, nlist), mean, radius_sq)

    def search(
        self, users: np.ndarray, k: int, available: np.ndarray, seen_rows: np.ndarray, seen_cols: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """(items (B, k), similarities u·v (B, k)): like the exact search, best first (equal similarities:
        lower item index first), -inf where fewer than k available unseen items were found."""
        import faiss

        users = np.asarray(users, dtype=np.float32)
        queries = np.zeros((len(users), users.shape[1] + 1), np.float32)
        queries[:, :-1] = users
        # ‖q − x̃‖² = ‖u‖² + R² − 2·u·(v − m), so u·v = (‖u‖² + R² − d) / 2 + u·m
        offset = 0.5 * (np.einsum("ij,ij->i", users, users) + self.radius_sq) + users @ self.mean
        return search_index(
            self.index,
            faiss.SearchParametersIVF(nprobe=self.nprobe),
            self.n_items,
            queries,
            k,
            available,
            seen_rows,
            seen_cols,
            similarity=lambda distances: offset[:, None] - 0.5 * distances,
        )


def search_index(
    index, params, n_items: int, queries, k: int, available, seen_rows, seen_cols, similarity=None
) -> tuple[np.ndarray, np.ndarray]:
    """A faiss search with the candidate contract: items that do not exist at the cutoff excluded by an
    ID selector, each row's seen items by asking for that many more and dropping them; best first by
    `similarity(faiss' distances)` (the distances themselves where None), ties by item index, -inf
    (item 0) where fewer than k were found."""
    import faiss

    rows = len(queries)
    k = min(k, n_items)
    seen_per_row = np.bincount(seen_rows, minlength=rows) if len(seen_rows) else np.zeros(rows, np.int64)
    wanted = min(n_items, k + int(seen_per_row.max(initial=0)))
    if not available.all():
        bitmap = np.packbits(available.astype(np.uint8), bitorder="little")  # alive until the search returns
        params.sel = faiss.IDSelectorBitmap(n_items, faiss.swig_ptr(bitmap))
    distances, items = index.search(np.ascontiguousarray(queries, dtype=np.float32), wanted, params=params)
    sims = distances if similarity is None else similarity(distances)
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
