"""Scoring with the exported model: K distinct unseen items per user, torch never imported."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from recsys.contracts import schema as S

ROOT = Path(__file__).resolve().parents[2]


def test_serving_never_imports_torch():
    modules = sorted(p.stem for p in (ROOT / "serving").glob("*.py") if p.stem != "__init__")
    code = (
        "import sys\n"
        + "".join(f"import serving.{m}\n" for m in modules)
        + "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert result.stdout.strip() == "[]", result.stdout
    assert len(modules) >= 8


@pytest.fixture(scope="module")
def scored(exported_model, tiny_shop, tmp_path_factory):
    from recsys.jobs.score import score

    out = tmp_path_factory.mktemp("scores") / "recommendations.parquet"
    manifest = score(exported_model, tiny_shop / "items.parquet", tiny_shop / "events", out, k=10, device="cpu")
    return out, manifest


def test_every_user_gets_k_distinct_unseen_items(scored, tiny_shop):
    out, manifest = scored
    recs = pl.read_parquet(out)
    assert recs.columns == list(S.RECOMMENDATION_COLUMNS)
    events = pl.read_parquet(tiny_shop / "events")
    users = events[S.USER_ID].unique()
    assert set(recs[S.USER_ID].unique()) == set(users)
    per_user = recs.group_by(S.USER_ID).agg(
        pl.len().alias("n"), pl.col(S.ITEM_ID).n_unique().alias("distinct"), pl.col(S.RANK).sort().alias("ranks")
    )
    assert (per_user["n"] == 10).all() and (per_user["distinct"] == 10).all()
    assert all(r.to_list() == list(range(1, 11)) for r in per_user["ranks"])
    seen = events.filter(pl.col(S.EVENT).is_in([S.CLICK, S.PURCHASE])).select(S.USER_ID, S.ITEM_ID).unique()
    assert recs.join(seen, on=[S.USER_ID, S.ITEM_ID], how="semi").height == 0
    assert (recs[S.P_PURCHASE] <= recs[S.P_CLICK]).all()
    assert ((recs[S.P_CLICK] > 0) & (recs[S.P_CLICK] < 1)).all()
    # scores fall with rank
    assert (
        recs.sort([S.USER_ID, S.RANK])
        .group_by(S.USER_ID, maintain_order=True)
        .agg((pl.col(S.SCORE).diff().drop_nulls() <= 0).all())[S.SCORE]
        .all()
    )


def test_manifest_describes_the_run(scored):
    out, manifest = scored
    on_disk = json.loads(out.with_name("recommendations.manifest.json").read_text())
    assert on_disk["rows"] == pl.read_parquet(out).height
    assert on_disk["providers"] == ["CPUExecutionProvider"]
    assert on_disk["inputs"]["events"]["files"] >= 9 and len(on_disk["inputs"]["items"]["sha256"]) == 64
    assert {"model_version", "artifact_hashes", "k", "users", "dropped_rows", "created_at", "code_version"} <= set(on_disk)


def test_only_listed_users_and_a_user_with_no_history(exported_model, tiny_shop, tmp_path):
    from recsys.jobs.score import score

    events = pl.read_parquet(tiny_shop / "events")
    known = events[S.USER_ID].unique().sort()[0]
    pl.DataFrame({S.USER_ID: [known, 10_000_000]}).write_csv(tmp_path / "users.csv")
    out = tmp_path / "recs.parquet"
    score(exported_model, tiny_shop / "items.parquet", tiny_shop / "events", out, k=5, users_path=tmp_path / "users.csv", device="cpu")
    recs = pl.read_parquet(out)
    assert sorted(recs[S.USER_ID].unique().to_list()) == [known, 10_000_000]
    assert recs.filter(pl.col(S.USER_ID) == 10_000_000).height == 5  # a new user still gets a list


def test_scoring_refuses_a_modified_export(exported_model, tiny_shop, tmp_path):
    import shutil

    from recsys.contracts.errors import ArtifactError
    from recsys.jobs.score import score

    copy = tmp_path / "export"
    shutil.copytree(exported_model, copy)
    path = copy / "item_encoder.onnx"
    data = bytearray(path.read_bytes())
    data[-10] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="item_encoder.onnx"):
        score(copy, tiny_shop / "items.parquet", tiny_shop / "events", tmp_path / "out.parquet", device="cpu")
    assert not (tmp_path / "out.parquet").exists()


@pytest.mark.parametrize("n_items", [60, 5_000])  # 5,000 items: the sampled threshold of _top_k_rows
def test_text_retrieval_is_exact_top_k_by_blocks(monkeypatch, n_items):
    """Blocked retrieval equals a brute-force sort: unavailable and seen items never come back, equal
    similarities are ordered by item index (at the k-th value too), a user with fewer than k eligible
    items gets -inf slots; the same search over a subset (`among`) equals the full one restricted to it."""
    import serving.candidates as C

    monkeypatch.setattr(C, "ROW_BLOCK", 8)
    monkeypatch.setattr(C, "TOPK_ROWS", 3)
    rng = np.random.default_rng(0)
    n, k = n_items, 10
    items = np.round(rng.standard_normal((n, 4)), 1).astype(np.float32)  # coarse values: many ties
    users = np.round(rng.standard_normal((21, 4)), 1).astype(np.float32)
    available = rng.random(n) > 0.1
    seen_rows = np.sort(rng.integers(0, 21, 50))
    seen_cols = rng.integers(0, n, 50)
    keep = np.flatnonzero(available)[:3]  # user 19 may still see 3 items, user 20 none
    seen_rows = np.concatenate([seen_rows, np.full(n - 3, 19), np.full(n, 20)])
    seen_cols = np.concatenate([seen_cols, np.setdiff1d(np.arange(n), keep), np.arange(n)])
    order = np.lexsort((seen_cols, seen_rows))
    seen_rows, seen_cols = seen_rows[order], seen_cols[order]
    full = users @ items.T
    full[:, ~available] = -np.inf
    full[seen_rows, seen_cols] = -np.inf
    among = rng.permutation(n)[: n // 3]

    def brute(scores: np.ndarray, u: int, ids: np.ndarray) -> np.ndarray:
        want = ids[np.lexsort((np.arange(len(ids)), -scores[u, ids]))[:k]]
        return want[np.isfinite(scores[u, want])]

    columns = np.ascontiguousarray(items.T)
    top, sims = C._text_top_k(users, columns, available, seen_rows, seen_cols, k)
    sub_top, sub_sims = C._text_top_k(users, np.ascontiguousarray(items[among].T), available[among], seen_rows, seen_cols, k, among=among)
    for u in range(len(users)):
        for got, got_sims, ids in ((top, sims, np.arange(n)), (sub_top, sub_sims, among)):
            want = brute(full, u, ids)
            finite = np.isfinite(got_sims[u])
            np.testing.assert_array_equal(got[u, finite], want)  # the same items in the same order, ties included
            np.testing.assert_allclose(got_sims[u, finite], full[u, want], rtol=1e-6)
            assert finite.sum() == min(k, np.isfinite(full[u, ids]).sum())
    assert np.isfinite(sims[19]).sum() == 3 and not np.isfinite(sims[20]).any()


def test_top_k_rows_falls_back_where_the_sampled_threshold_is_too_high():
    """A row whose only large values are the sample's own points: the sampled threshold lets ~2 of them
    pass, fewer than k, and the exact k-th value takes over; the other row takes the sampled path."""
    from serving.candidates import _top_k_rows

    n, k = 4_000, 20
    stride = n // (8 * k)  # as _top_k_rows samples
    part = np.zeros((2, n), np.float32)
    part[0, ::stride] = np.arange(1, len(range(0, n, stride)) + 1)
    part[1] = np.arange(n)
    columns, values = _top_k_rows(part, k)
    np.testing.assert_array_equal(columns[0], np.arange(0, n, stride)[::-1][:k])
    np.testing.assert_array_equal(columns[1], np.arange(n - 1, n - 1 - k, -1))
    np.testing.assert_array_equal(values, np.take_along_axis(part, columns, 1))


def test_io_binding_runs_give_the_same_outputs(exported_model):
    """The IO-binding path (the default on CUDA) exercised on the CPU provider: same numbers as run()."""
    from serving.onnx_model import OnnxInterestModel

    plain = OnnxInterestModel(exported_model)
    bound = OnnxInterestModel(exported_model, io_binding=True)
    assert bound.io_binding and not plain.io_binding  # CPU default: plain runs
    texts = ["trail running shoes", "a ceramic table lamp with a linen shade", "kettle"]
    items = plain.encode_items(texts)
    np.testing.assert_array_equal(bound.encode_items(texts), items)
    history = np.stack([items[[0, 1]], items[[2, 0]]])
    mask = np.array([[1, 1], [1, 0]], dtype=np.float32)
    history = np.concatenate([history, np.zeros((2, plain.history_length - 2, plain.dim), np.float32)], 1)
    mask = np.concatenate([mask, np.zeros((2, plain.history_length - 2), np.float32)], 1)
    users = plain.user_vectors(history, mask)
    np.testing.assert_array_equal(bound.user_vectors(history, mask), users)
    for got, want in zip(bound.score(users, np.stack([items, items[::-1]])), plain.score(users, np.stack([items, items[::-1]]))):
        np.testing.assert_array_equal(got, want)


def test_user_and_scorer_graphs_give_each_user_the_same_bits_in_any_batch(exported_model):
    """Chunked scoring equals one chunk only if a user's numbers do not depend on who shares the batch."""
    from serving.onnx_model import OnnxInterestModel

    model = OnnxInterestModel(exported_model)
    rng = np.random.default_rng(0)
    n, length, dim = 60, model.history_length, model.dim
    history = rng.standard_normal((n, length, dim)).astype(np.float32)
    history /= np.linalg.norm(history, axis=-1, keepdims=True)
    mask = (rng.random((n, length)) < 0.5).astype(np.float32)
    mask[:5] = 0  # users with no history
    items = rng.standard_normal((n, 9, dim)).astype(np.float32)
    users = model.user_vectors(history, mask)
    scores = model.score(users, items)
    for size in (1, 2, 7, 25):
        for start in range(0, n, size):
            rows = slice(start, start + size)
            np.testing.assert_array_equal(model.user_vectors(history[rows], mask[rows]), users[rows])
            for got, want in zip(model.score(users[rows], items[rows, :4]), scores):
                np.testing.assert_array_equal(got, want[rows, :4])


def _export_at_end_of_log(exported_model, tiny_shop):
    """(data, serving config, model, ranker, catalog, cutoff just after the last event, candidate config, item vectors)."""
    import datetime as dt

    from recsys.contracts.config import CandidateConfig
    from recsys.data import load_dataset
    from serving.artifacts import load_export
    from serving.catalog import make_catalog
    from serving.text import item_texts

    data = load_dataset(tiny_shop / "items.parquet", tiny_shop / "events")
    _, config, model, ranker = load_export(exported_model, device="cpu")
    catalog = make_catalog(data.items)
    cutoff = data.events.select(pl.col(S.TIMESTAMP).max()).collect().item() + dt.timedelta(microseconds=1)
    vectors = model.encode_items(item_texts(catalog.items))
    return data, config, model, ranker, catalog, cutoff, CandidateConfig(**config["candidates"]), vectors


def test_users_without_a_past_share_one_ranking_equal_to_ranking_each(exported_model, tiny_shop):
    """Ranking the no-history list once and repeating it gives what ranking every such user gives."""
    from serving.score import prepare, rank_chunks

    data, config, model, ranker, catalog, cutoff, candidates, vectors = _export_at_end_of_log(exported_model, tiny_shop)
    snapshot, tables = prepare(catalog, vectors, data.events, data.items, cutoff=cutoff, candidates=candidates)
    known = snapshot.users[S.USER_ID].to_list()
    users = pl.Series(S.USER_ID, [10_000_001, *known[:9], 10_000_002, *known[9:13], 10_000_003])  # cold users in several chunks
    runs = {
        share: pl.concat(
            [
                frame
                for _, frame in rank_chunks(
                    model,
                    ranker,
                    snapshot,
                    tables,
                    users,
                    k=6,
                    candidates=candidates,
                    history_length=config["history_length"],
                    chunk_users=5,
                    share_cold=share,
                )
            ]
        )
        for share in (True, False)
    }
    assert runs[True].equals(runs[False])
    cold = runs[True].filter(pl.col(S.USER_ID) >= 10_000_000)
    assert cold[S.USER_ID].n_unique() == 3 and cold.group_by(S.RANK).agg(pl.col(S.ITEM_ID).n_unique())[S.ITEM_ID].max() == 1


def test_the_torch_and_onnx_models_satisfy_one_interface(exported_model, trained_model):
    from recsys.contracts.interest import InterestModel
    from recsys.model_io import TorchInterestModel, load_text_model
    from serving.onnx_model import OnnxInterestModel

    model, tokenizer, _ = load_text_model(trained_model)
    torch_model, onnx_model = TorchInterestModel(model, tokenizer), OnnxInterestModel(exported_model)
    assert isinstance(torch_model, InterestModel) and isinstance(onnx_model, InterestModel)
    assert not isinstance(object(), InterestModel)
    texts = ["red shoe", "blue hat"]
    assert torch_model.encode_items(texts).shape == onnx_model.encode_items(texts).shape == (2, torch_model.dim)


def test_history_similarity_and_within_user_features_by_hand(exported_model, tiny_shop):
    """sim_last / sim_recent_max / sim_recent_mean are cosines to the latest clicks; p_click's rank and z within the user."""
    from serving.candidates import RECENT_CLICKS, build_snapshot, generate_candidates
    from serving.history import to_seconds

    data, config, model, _, catalog, cutoff, candidates, vectors = _export_at_end_of_log(exported_model, tiny_shop)
    snapshot = build_snapshot(catalog, vectors, data.events, data.items, cutoff=cutoff, config=candidates)
    clicks = (
        data.events.filter(pl.col(S.EVENT).is_in([S.CLICK, S.PURCHASE]) & (pl.col(S.TIMESTAMP) < cutoff)).collect().pipe(catalog.index_of)
    )
    users = pl.Series(S.USER_ID, [*clicks[S.USER_ID].unique().sort().head(6).to_list(), 10_000_001])
    cand = generate_candidates(model, snapshot, users, candidates, config["history_length"])
    checked = 0
    for user in users.head(6).to_list():
        mine = cand.filter(pl.col(S.USER_ID) == user)
        # the latest distinct click times first, as the click log orders them (ties: whichever it kept)
        recent = snapshot.log.histories(np.array([mine["user_index"][0]]), np.array([to_seconds(cutoff)]), RECENT_CLICKS)[0]
        recent = recent[recent >= 0]
        assert len(recent) and set(recent) <= set(clicks.filter(pl.col(S.USER_ID) == user)["item_index"].to_list())
        sims = vectors[mine["item_index"].to_numpy()] @ vectors[recent].T  # (C, R)
        np.testing.assert_allclose(mine["sim_last"].to_numpy(), sims[:, 0], atol=1e-5)
        np.testing.assert_allclose(mine["sim_recent_max"].to_numpy(), sims.max(1), atol=1e-5)
        np.testing.assert_allclose(mine["sim_recent_mean"].to_numpy(), sims.mean(1), atol=1e-5)
        p = mine[S.P_CLICK].to_numpy()
        assert mine["p_click_rank"].to_numpy()[np.argmax(p)] == 1 and sorted(mine["p_click_rank"].to_list()) == list(range(1, len(p) + 1))
        np.testing.assert_allclose(mine["p_click_z"].to_numpy(), (p - p.mean()) / p.std(ddof=1), atol=1e-6)
        checked += 1
    assert checked == 6
    cold = cand.filter(pl.col(S.USER_ID) == 10_000_001)
    assert cold.height and cold["sim_last"].null_count() == cold.height and cold["sim_recent_max"].null_count() == cold.height


def test_fresh_arrivals_are_the_recent_items_nearest_to_the_user_by_hand(exported_model, tiny_shop):
    """cand_fresh_rank: the k items created in the last fresh_days, unseen, ranked by the user vector's
    dot product with their item vectors (not by date)."""
    import dataclasses

    from serving.candidates import build_snapshot, generate_candidates, user_vectors

    data, config, model, _, catalog, cutoff, candidates, vectors = _export_at_end_of_log(exported_model, tiny_shop)
    candidates = dataclasses.replace(candidates, fresh=4, fresh_days=5.0)
    snapshot = build_snapshot(catalog, vectors, data.events, data.items, cutoff=cutoff, config=candidates)
    created = catalog.items[S.CREATED_AT]
    recent = np.flatnonzero(((created >= cutoff - dt.timedelta(days=5)) & (created < cutoff)).fill_null(False).to_numpy())
    assert len(recent) > candidates.fresh  # the source must choose, not list them all
    assert sorted(snapshot.fresh.tolist()) == sorted(recent.tolist())
    users = pl.Series(S.USER_ID, [*snapshot.users[S.USER_ID].head(5).to_list(), 10_000_001])
    cand = generate_candidates(model, snapshot, users, candidates, config["history_length"])
    index = users.to_frame().join(snapshot.users, on=S.USER_ID, how="left")["user_index"].fill_null(-1).to_numpy()
    mine_vectors, _ = user_vectors(model, snapshot, index, config["history_length"])
    for row, user in enumerate(users.to_list()):
        seen = set(snapshot.seen.filter(pl.col("user_index") == index[row])["item_index"].to_list()) if index[row] >= 0 else set()
        allowed = [i for i in recent if i not in seen and snapshot.available[i]]
        expected = sorted(allowed, key=lambda i: (-float(vectors[i] @ mine_vectors[row]), i))[: candidates.fresh]
        got = cand.filter((pl.col(S.USER_ID) == user) & pl.col("cand_fresh_rank").is_not_null()).sort("cand_fresh_rank")
        assert got["item_index"].to_list() == expected, user
