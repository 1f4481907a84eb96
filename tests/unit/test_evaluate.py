"""`recsys evaluate` end to end on the tiny shop: report files, both systems, sane metric ranges."""

from __future__ import annotations

import json

import polars as pl

from recsys import schema as S
from recsys.evaluate import evaluate_pipeline, heldout_relevance, popularity_baseline


def test_evaluate_writes_report_and_metrics(tiny_shop, tiny_config, tmp_path):
    report = evaluate_pipeline(tiny_shop / "items.parquet", tiny_shop / "events", tmp_path / "report", tiny_config, test_days=2, device="cpu")
    on_disk = json.loads((tmp_path / "report" / "metrics.json").read_text())
    assert on_disk["queries"] == report["queries"] > 0
    for name in ("text model + ranker", "popularity"):
        metrics = on_disk["systems"][name]
        assert 0 <= metrics["ndcg@10"] <= 1 and 0 <= metrics["recall@20"] <= 1
    assert 0 <= on_disk["systems"]["text model + ranker"]["auc_p_click"] <= 1
    assert "| text model + ranker |" in (tmp_path / "report" / "report.md").read_text()


def test_heldout_relevance_drops_items_seen_before_the_cutoff():
    import datetime as dt

    t = dt.datetime(2026, 1, 10)
    events = pl.DataFrame({
        S.USER_ID: [1, 1, 1, 2],
        S.ITEM_ID: [5, 5, 6, 7],
        S.EVENT: ["click", "purchase", "click", "click"],
        S.TIMESTAMP: [t - dt.timedelta(days=1), t + dt.timedelta(hours=1), t + dt.timedelta(hours=2), t + dt.timedelta(hours=3)],
    })
    got = heldout_relevance(events, cutoff=t, end=t + dt.timedelta(days=2)).sort(S.USER_ID)
    assert got.rows() == [(1, 6, 1), (2, 7, 1)]


def test_popularity_baseline_excludes_seen_items():
    import datetime as dt

    t = dt.datetime(2026, 1, 10)
    events = pl.DataFrame({
        S.USER_ID: [1, 2, 3, 3], S.ITEM_ID: [5, 5, 6, 5],
        S.EVENT: ["click"] * 4, S.TIMESTAMP: [t - dt.timedelta(hours=h) for h in (1, 2, 3, 4)],
    }).lazy()
    recs = popularity_baseline(events, pl.Series(S.USER_ID, [1, 4]), cutoff=t, k=2)
    assert recs.filter(pl.col(S.USER_ID) == 1)[S.ITEM_ID].to_list() == [6]
    assert recs.filter(pl.col(S.USER_ID) == 4)[S.ITEM_ID].to_list() == [5, 6]
