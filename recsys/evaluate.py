"""`recsys evaluate`: train on everything before a cutoff, recommend as of it, judge on the next days.

Each user who clicks in the test period is a query; relevant items are what they clicked (1) or bought
(2) then, minus items they had already clicked or bought before the cutoff (those are never recommended).
"""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path

import numpy as np
import polars as pl

from recsys import schema as S
from recsys.config import Config
from recsys.data import load_dataset
from recsys.errors import RecsysError
from recsys.interactions import exposures, has_impressions
from recsys.io import write_json
from recsys.metrics import auc, catalog_coverage, ranking_metrics
from recsys.pipeline import _noop, time_bounds, train_pipeline
from recsys.ranker import RELEVANCE, relevance_labels
from serving.candidates import build_snapshot, user_vectors
from serving.catalog import make_catalog
from serving.score import load_export, recommend
from serving.text import item_texts

KS = (10, 20)


def popularity_baseline(events: pl.LazyFrame, users: pl.Series, *, cutoff: dt.datetime, k: int, days: float = 7) -> pl.DataFrame:
    """Most clicked items of the last `days` before the cutoff, minus what each user already engaged with."""
    past = events.filter(pl.col(S.TIMESTAMP) < cutoff)
    last = past.filter(pl.col(S.TIMESTAMP) >= cutoff - dt.timedelta(days=days), pl.col(S.EVENT).is_in([S.CLICK, S.PURCHASE]))
    popular = last.group_by(S.ITEM_ID).agg(pl.len().alias(S.SCORE)).sort([S.SCORE, S.ITEM_ID], descending=[True, False]).collect()
    seen = past.filter(pl.col(S.EVENT).is_in([S.CLICK, S.PURCHASE])).select(S.USER_ID, S.ITEM_ID).unique().collect()
    top = popular.head(k + int(seen.group_by(S.USER_ID).len()["len"].max() or 0))
    pairs = pl.DataFrame({S.USER_ID: users}).join(top, how="cross").join(seen, on=[S.USER_ID, S.ITEM_ID], how="anti")
    pairs = pairs.sort([S.USER_ID, S.SCORE, S.ITEM_ID], descending=[False, True, False])
    return pairs.with_columns(pl.int_range(1, pl.len() + 1).over(S.USER_ID).alias(S.RANK)).filter(pl.col(S.RANK) <= k)


def exposure_aucs(model, snapshot, events: pl.DataFrame, *, cutoff, end, history_length: int) -> dict[str, float]:
    """AUC of p_click and p_purchase on the test period's impressions, users' histories as of the cutoff."""
    test = events.filter((pl.col(S.TIMESTAMP) >= cutoff) & (pl.col(S.TIMESTAMP) < end))
    if not has_impressions(test):
        return {"auc_p_click": float("nan"), "auc_p_purchase": float("nan"), "exposures": 0}
    exp = snapshot.catalog.index_of(exposures(test)).join(snapshot.users, on=S.USER_ID, how="left").with_columns(pl.col("user_index").fill_null(-1))
    users, _ = user_vectors(model, snapshot, exp["user_index"].to_numpy(), history_length)
    items = snapshot.item_vectors[exp["item_index"].to_numpy()][:, None, :]
    p_click, p_purchase, _ = model.score(users, items)
    return {
        "auc_p_click": auc(p_click[:, 0], exp["clicked"].to_numpy()),
        "auc_p_purchase": auc(p_purchase[:, 0], exp["purchased"].to_numpy()),
        "exposures": exp.height,
    }


def evaluate_pipeline(items_path, events_path, out_dir, config: Config, *, test_days: float = 3, cutoff: dt.datetime | None = None, precision: str = "fp32", device: str = "auto", progress=None, log=_noop) -> dict:
    """Train → export → recommend as of the cutoff → metrics for the model and a popularity baseline."""
    from export.onnx_export import export_model

    out_dir = Path(out_dir)
    data = load_dataset(items_path, events_path)
    first, last = time_bounds(data.events)
    end = last + dt.timedelta(microseconds=1)
    cutoff = cutoff or end - dt.timedelta(days=test_days)
    if not first < cutoff < end:
        raise RecsysError(f"{events_path}: the cutoff {cutoff} leaves no training or no test period (events span {first} – {last})")
    timings: dict[str, float] = {}
    artifacts = out_dir / "artifacts"

    tic = time.perf_counter()
    log(f"train on events before {cutoff:%Y-%m-%d %H:%M}")
    train_manifest = train_pipeline(items_path, events_path, artifacts / "model", config, data=data, until=cutoff, progress=progress, log=log)
    timings["train_s"] = round(time.perf_counter() - tic, 2)
    tic = time.perf_counter()
    export_manifest = export_model(artifacts / "model", artifacts / "export", precision=precision, log=log)
    timings["export_s"] = round(time.perf_counter() - tic, 2)

    tic = time.perf_counter()
    evaluation = evaluate_export(artifacts / "export", data, cutoff=cutoff, end=end, config=config, device=device, progress=progress)
    timings["score_s"] = round(time.perf_counter() - tic, 2)
    evaluation["recommendations"].write_parquet(artifacts / "test_recommendations.parquet")
    users = evaluation["users"]
    model = evaluation["model"]
    results = {"text model + ranker": evaluation["metrics"]}
    popular = popularity_baseline(data.events, users, cutoff=cutoff, k=max(KS), days=config.candidates.popularity_days)
    results["popularity"] = ranking_metrics(popular, evaluation["relevant"], ks=KS) | {"coverage@20": catalog_coverage(popular, evaluation["catalog_size"], k=20)}
    results["popularity"].update(_popularity_auc(evaluation["events"], cutoff=cutoff, end=end, days=config.candidates.popularity_days))
    stage_times = evaluation["timings"]
    aucs = evaluation["aucs"]
    report = {
        "cutoff": cutoff.isoformat(),
        "test_days": round((end - cutoff).total_seconds() / 86400, 3),
        "queries": int(users.len()),
        "test_exposures": aucs["exposures"],
        "model_version": train_manifest["model_version"],
        "precision": precision,
        "providers": model.providers,
        "systems": results,
        "parity": export_manifest["parity"],
        "timings_s": {**timings, **{f"score.{k}": v for k, v in stage_times.items()}},
    }
    write_json(out_dir / "metrics.json", report)
    (out_dir / "report.md").write_text(render_markdown(report), encoding="utf-8")
    return report


def heldout_relevance(events: pl.DataFrame, *, cutoff: dt.datetime, end: dt.datetime) -> pl.DataFrame:
    """Graded relevance of the test period, minus items each user had engaged with before the cutoff."""
    labels = relevance_labels(events, start=cutoff, end=end)
    seen = events.filter((pl.col(S.TIMESTAMP) < cutoff) & pl.col(S.EVENT).is_in([S.CLICK, S.PURCHASE])).select(S.USER_ID, S.ITEM_ID).unique()
    return labels.join(seen, on=[S.USER_ID, S.ITEM_ID], how="anti")


def evaluate_export(export_dir: str | Path, data, *, cutoff: dt.datetime, end: dt.datetime, config: Config, device: str = "auto", progress=None) -> dict:
    """Recommend with an exported model as of `cutoff` and judge it on [cutoff, end).

    The one place that turns an EXPORT_DIR into test metrics: `recsys evaluate`, the demo and the
    retrain gate all call it. Returns metrics (ranking metrics, coverage, exposure AUCs) and the
    intermediate frames.
    """
    events = data.events.collect()
    relevant = heldout_relevance(events, cutoff=cutoff, end=end)
    users = relevant.select(S.USER_ID).unique().sort(S.USER_ID)[S.USER_ID]
    if users.len() == 0:
        raise RecsysError(f"no user clicks a new item between {cutoff} and {end}; nothing to evaluate")
    _, serving_config, model, ranker = load_export(export_dir, device=device)
    catalog = make_catalog(data.items)
    vectors = model.encode_items(item_texts(catalog.items), progress=progress)
    timings: dict = {}
    recs = recommend(model, ranker, data.items, data.events, cutoff=cutoff, user_ids=users, k=max(KS), candidates=config.candidates, history_length=serving_config["history_length"], item_vectors=vectors, progress=progress, timings=timings)
    snapshot = build_snapshot(catalog, vectors, data.events, data.items, cutoff=cutoff, config=config.candidates)
    metrics = ranking_metrics(recs, relevant, ks=KS)
    metrics["coverage@20"] = catalog_coverage(recs, len(catalog), k=20)
    aucs = exposure_aucs(model, snapshot, events, cutoff=cutoff, end=end, history_length=serving_config["history_length"])
    metrics.update({k: v for k, v in aucs.items() if k.startswith("auc")})
    return {"metrics": metrics, "aucs": aucs, "recommendations": recs, "relevant": relevant, "users": users, "events": events, "model": model, "catalog_size": len(catalog), "timings": timings}


def _popularity_auc(events: pl.DataFrame, *, cutoff, end, days) -> dict[str, float]:
    test = events.filter((pl.col(S.TIMESTAMP) >= cutoff) & (pl.col(S.TIMESTAMP) < end))
    if not has_impressions(test):
        return {"auc_p_click": float("nan"), "auc_p_purchase": float("nan")}
    recent = events.filter((pl.col(S.TIMESTAMP) < cutoff) & (pl.col(S.TIMESTAMP) >= cutoff - dt.timedelta(days=days)) & pl.col(S.EVENT).is_in([S.CLICK, S.PURCHASE]))
    popularity = recent.group_by(S.ITEM_ID).agg(pl.len().cast(pl.Float64).alias("pop"))
    exp = exposures(test).join(popularity, on=S.ITEM_ID, how="left").with_columns(pl.col("pop").fill_null(0.0))
    return {"auc_p_click": auc(exp["pop"].to_numpy(), exp["clicked"].to_numpy()), "auc_p_purchase": auc(exp["pop"].to_numpy(), exp["purchased"].to_numpy())}


HEADLINE = (("ndcg@10", "NDCG@10"), ("recall@20", "Recall@20"), ("auc_p_click", "AUC p_click"), ("auc_p_purchase", "AUC p_purchase"))


def headline_rows(report: dict) -> list[list[str]]:
    rows = []
    for name, metrics in report["systems"].items():
        rows.append([name] + [_fmt(metrics.get(key)) for key, _ in HEADLINE])
    return rows


def _fmt(value) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "–"
    return f"{value:.4f}"


def render_markdown(report: dict) -> str:
    head = "| system | " + " | ".join(label for _, label in HEADLINE) + " |"
    lines = [
        "# recsys evaluation",
        "",
        f"Cutoff {report['cutoff']}, test period {report['test_days']} days, {report['queries']} query users, "
        f"{report['test_exposures']} test exposures; model {report['model_version']} ({report['precision']}, {', '.join(report['providers'])}).",
        "",
        head,
        "|" + "---|" * (len(HEADLINE) + 1),
    ]
    lines += ["| " + " | ".join(row) + " |" for row in headline_rows(report)]
    lines += ["", "All metrics: `metrics.json`.", ""]
    return "\n".join(lines)
