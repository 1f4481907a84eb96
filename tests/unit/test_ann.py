"""Approximate text retrieval (faiss IVF) behind the exact search's contract: recall against exact,
exclusions of unavailable and seen items, order and padding, pickling, and end to end in `recsys score`."""

from __future__ import annotations

import pickle

import numpy as np
import polars as pl
import pytest

from recsys.contracts import schema as S

faiss = pytest.importorskip("faiss")


def clustered(n: int, dim: int, clusters: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, dim))
    x = centres[rng.integers(0, clusters, n)] + 0.35 * rng.normal(size=(n, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def exact(users, vectors, k, available, seen_rows, seen_cols):
    sims = users @ vectors.T
    sims[:, ~available] = -np.inf
    sims[seen_rows, seen_cols] = -np.inf
    order = np.lexsort((np.broadcast_to(np.arange(len(vectors)), sims.shape), -sims), axis=1)[:, :k]
    return order, np.take_along_axis(sims, order, 1)


def test_recall_against_exact_and_every_exclusion():
    from serving.ann import AnnIndex

    vectors = clustered(20_000, 32, 200, seed=0)
    users = clustered(300, 32, 200, seed=1)
    rng = np.random.default_rng(2)
    available = rng.random(len(vectors)) > 0.1
    seen_rows = np.repeat(np.arange(len(users)), 5)
    seen_cols = rng.integers(0, len(vectors), len(seen_rows))
    index = AnnIndex.build(vectors, nprobe=32)
    top, sims = index.search(users, 100, available, seen_rows, seen_cols)
    truth, _ = exact(users, vectors, 100, available, seen_rows, seen_cols)
    recall = np.mean([len(set(a) & set(b)) / 100 for a, b in zip(top, truth)])
    assert recall >= 0.95, recall
    assert available[top].all()
    assert not (set(zip(seen_rows.tolist(), seen_cols.tolist())) & {(r, int(i)) for r in range(len(users)) for i in top[r]})
    assert (np.diff(sims, axis=1) <= 0).all()  # best first
    np.testing.assert_allclose(sims, np.take_along_axis(users @ vectors.T, top, 1), rtol=1e-5, atol=1e-5)
    # fewer probed lists: faster and worse, never better than exact
    coarse, _ = AnnIndex.build(vectors, nprobe=1).search(users, 100, available, seen_rows, seen_cols)
    assert np.mean([len(set(a) & set(b)) / 100 for a, b in zip(coarse, truth)]) < recall
    # bytes through pickle (Ray's object store): the same answers
    again = pickle.loads(pickle.dumps(index)).search(users, 100, available, seen_rows, seen_cols)
    assert np.array_equal(again[0], top)


def test_padding_when_fewer_items_than_asked():
    from serving.ann import AnnIndex

    vectors = clustered(50, 8, 3, seed=0)
    index = AnnIndex.build(vectors, nprobe=100)
    available = np.ones(50, bool)
    available[:45] = False
    top, sims = index.search(vectors[:2], 10, available, np.array([0]), np.array([47]))
    assert np.isfinite(sims[0]).sum() == 4 and np.isfinite(sims[1]).sum() == 5
    assert set(top[0][np.isfinite(sims[0])]) == {45, 46, 48, 49}


def test_score_with_approximate_retrieval(exported_model, tiny_shop, tmp_path):
    from recsys.jobs.score import score

    runs = {}
    for retrieval in ("exact", "ann"):
        out = tmp_path / f"{retrieval}.parquet"
        manifest = score(exported_model, tiny_shop / "items.parquet", tiny_shop / "events", out, k=10, device="cpu", retrieval=retrieval)
        assert manifest["retrieval"] == retrieval
        runs[retrieval] = pl.read_parquet(out)
    # with a cache: the first run builds the index and keeps it, the next loads it and ranks the same
    for how in ("built", "loaded"):
        out = tmp_path / f"cached-{how}.parquet"
        args = (exported_model, tiny_shop / "items.parquet", tiny_shop / "events", out)
        manifest = score(*args, k=10, device="cpu", retrieval="ann", cache_dir=tmp_path / "cache")
        assert manifest["ann_index"]["how"] == how
        assert pl.read_parquet(out).equals(runs["ann"])
    ann, exact_run = runs["ann"], runs["exact"]
    assert ann.group_by(S.USER_ID).agg(pl.col(S.ITEM_ID).n_unique().alias("n"))["n"].min() == 10
    overlap = (
        ann.join(exact_run, on=[S.USER_ID, S.ITEM_ID], how="inner").height / exact_run.height
    )  # 120 items in ~44 lists, 32 probed: nearly exact
    assert overlap >= 0.9, overlap
    events = pl.read_parquet(tiny_shop / "events").filter(pl.col(S.EVENT).is_in([S.CLICK, S.PURCHASE]))
    assert ann.join(events.select(S.USER_ID, S.ITEM_ID).unique(), on=[S.USER_ID, S.ITEM_ID], how="inner").height == 0


def test_a_direction_every_item_shares_does_not_blind_the_index():
    """The product's item vectors share a large common direction that its user vectors point against
    (best items at negative cosine); u·(v + t) = u·v + u·t ranks every user's items as u·v does, so an
    index must find the same items after a shift of the whole catalog (centring makes it exact)."""
    from serving.ann import AnnIndex

    vectors = clustered(20_000, 32, 200, seed=0)
    users = clustered(300, 32, 200, seed=1)
    shift = 3.0 * clustered(1, 32, 1, seed=4)[0]
    everyone, none = np.ones(len(vectors), bool), np.zeros(0, np.int64)
    truth, _ = exact(users, vectors, 100, everyone, none, none)
    plain, _ = AnnIndex.build(vectors, nprobe=32).search(users, 100, everyone, none, none)
    shifted, sims = AnnIndex.build(vectors + shift, nprobe=32).search(users, 100, everyone, none, none)
    for found in (plain, shifted):
        assert np.mean([len(set(a) & set(b)) / 100 for a, b in zip(found, truth)]) >= 0.95
    assert np.mean([len(set(a) & set(b)) / 100 for a, b in zip(plain, shifted)]) >= 0.99
    np.testing.assert_allclose(sims, np.take_along_axis(users @ (vectors + shift).T, shifted, 1), rtol=1e-4, atol=1e-4)


def test_the_cached_index_follows_the_catalog_and_rebuilds_when_it_cannot(tmp_path):
    """A kept index is updated for removed, changed, added and reordered items (every answer is the
    item it names: its similarity is u·v of that item), reloaded unchanged, and rebuilt from scratch
    for an unreadable file, a vector outside its radius, or too much change since it was built."""
    from serving.ann import MAX_DRIFT
    from serving.cache import AnnIndexCache

    rng = np.random.default_rng(5)
    vectors = clustered(4_000, 16, 40, seed=0)
    users = clustered(50, 16, 40, seed=1)
    keys = [f"item-{i}" for i in range(len(vectors))]
    cache = AnnIndexCache(tmp_path, "enc")
    none = np.zeros(0, np.int64)

    def check(ann, vectors):
        everyone = np.ones(len(vectors), bool)
        top, sims = ann.search(users, 50, everyone, none, none)
        np.testing.assert_allclose(sims, np.take_along_axis(users @ vectors.T, top, 1), rtol=1e-4, atol=1e-4)
        truth, _ = exact(users, vectors, 50, everyone, none, none)
        assert np.mean([len(set(a) & set(b)) / 50 for a, b in zip(top, truth)]) >= 0.95

    ann, stats = cache.index(vectors, keys, nprobe=32)
    assert stats["how"] == "built"
    check(ann, vectors)
    # 1%: 20 removed, 10 changed (new text: a new key), 10 added; the rest reordered
    order = rng.permutation(len(vectors))[20:]
    new_vectors, new_keys = vectors[order].copy(), [keys[i] for i in order]
    changed = rng.choice(len(order), 10, replace=False)
    new_vectors[changed] = clustered(10, 16, 40, seed=2)
    for i in changed:
        new_keys[i] += "-edited"
    new_vectors = np.vstack([new_vectors, clustered(10, 16, 40, seed=3)])
    new_keys += [f"new-{i}" for i in range(10)]
    ann, stats = cache.index(new_vectors, new_keys, nprobe=32)
    assert (stats["how"], stats["added"], stats["removed"]) == ("updated", 20, 30)
    assert sorted(ann.item_of_slot[ann.item_of_slot >= 0].tolist()) == list(range(len(new_vectors)))
    check(ann, new_vectors)
    ann, stats = cache.index(new_vectors, new_keys, nprobe=32)
    assert stats["how"] == "loaded"
    check(ann, new_vectors)
    # a vector beyond the radius cannot be lifted: rebuilt (−m/‖m‖ lies farther from m than any unit vector)
    far = new_vectors.copy()
    far[0] = -ann.mean / np.linalg.norm(ann.mean)
    ann, stats = cache.index(far, ["far", *new_keys[1:]], nprobe=32)
    assert stats["how"] == "built"
    check(ann, far)
    # more than MAX_DRIFT of the catalog new since the build: rebuilt
    replaced = int(MAX_DRIFT * len(vectors)) + 1
    fresh_keys = [f"other-{i}" for i in range(replaced)] + keys[replaced:]
    assert cache.index(vectors, fresh_keys, nprobe=32)[1]["how"] == "built"
    # an unreadable file: rebuilt, with a warning naming it
    (cache.path / "index.faiss").write_bytes(b"not an index")
    ann, stats = cache.index(vectors, keys, nprobe=32)
    assert stats["how"] == "built" and str(cache.path) in stats["warnings"][0]
    check(ann, vectors)
