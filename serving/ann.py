"""Approximate nearest items for large catalogs: a faiss inverted-file index (IVF, flat inner product)
behind the same contract as the exact product (docs/ARCHITECTURE.md, "Retrieval").

The item vectors are L2-normalised, so inner product is cosine. The user vectors are too, but they lie
away from every item (each user's best item has a negative cosine, median −0.09: the towers meet through
a learned temperature, not by overlapping), the hard case for any approximate index; the recall/speed
curve in benchmarks/RESULTS.md is measured with the product's own user vectors. Items that do not exist
at the cutoff are excluded inside the search (an ID selector); each user's seen items by asking for more
neighbours than needed (`k` plus the most seen items of any user in the block) and dropping them. IVF
rather than HNSW: it trains in seconds on a sample, and HNSW measured worse on these queries (recall 0.59
at efSearch 512 on a 50k catalog); `nprobe` trades recall for speed.
"""

from __future__ import annotations

import math

import numpy as np

TRAIN_SAMPLE = 64  # training points per list, the most k-means needs to place the centroids


class AnnIndex:
    """An IVF-Flat inner-product index over the catalog's item vectors (row i = item index i)."""

    def __init__(self, index, n_items: int, nprobe: int):
        self.index, self.n_items, self.nprobe = index, n_items, nprobe

    def __getstate__(self) -> dict:  # faiss objects do not pickle; their bytes do (Ray's object store)
        import faiss

        return {"index": faiss.serialize_index(self.index), "n_items": self.n_items, "nprobe": self.nprobe}

    def __setstate__(self, state: dict) -> None:
        import faiss

        self.index, self.n_items, self.nprobe = faiss.deserialize_index(state["index"]), state["n_items"], state["nprobe"]

    @classmethod
    def build(cls, vectors: np.ndarray, *, nlist: int | None = None, nprobe: int = 32, seed: int = 0, threads: int = 0) -> AnnIndex:
        """`nlist` defaults to ~4·√N lists (the usual rule), at least 1; centroids from a sample."""
        import faiss

        if threads:
            faiss.omp_set_num_threads(threads)
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        n, dim = vectors.shape
        nlist = max(1, min(nlist or int(4 * math.sqrt(n)), n))
        quantizer = faiss.IndexFlatIP(dim)
        index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
        rng = np.random.default_rng(seed)
        sample = vectors[rng.choice(n, min(n, nlist * TRAIN_SAMPLE), replace=False)]
        index.cp.seed = seed
        index.cp.spherical = True  # unit centroids: lists chosen by cosine, as the items are
        index.train(sample)
        index.add(vectors)
        return cls(index, n, min(nprobe, nlist))

    def search(
        self, users: np.ndarray, k: int, available: np.ndarray, seen_rows: np.ndarray, seen_cols: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """(items (B, k), similarities (B, k)): like the exact search, best first (equal similarities:
        lower item index first), -inf where fewer than k available unseen items were found."""
        import faiss

        return search_index(
            self.index, faiss.SearchParametersIVF(nprobe=self.nprobe), self.n_items, users, k, available, seen_rows, seen_cols
        )


def search_index(index, params, n_items: int, users, k: int, available, seen_rows, seen_cols) -> tuple[np.ndarray, np.ndarray]:
    """A faiss search with the candidate contract: items that do not exist at the cutoff excluded by an
    ID selector, each row's seen items by asking for that many more and dropping them; best first,
    ties by item index, -inf (item 0) where fewer than k were found."""
    import faiss

    rows = len(users)
    k = min(k, n_items)
    seen_per_row = np.bincount(seen_rows, minlength=rows) if len(seen_rows) else np.zeros(rows, np.int64)
    wanted = min(n_items, k + int(seen_per_row.max(initial=0)))
    if not available.all():
        bitmap = np.packbits(available.astype(np.uint8), bitorder="little")  # alive until the search returns
        params.sel = faiss.IDSelectorBitmap(n_items, faiss.swig_ptr(bitmap))
    sims, items = index.search(np.ascontiguousarray(users, dtype=np.float32), wanted, params=params)
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
