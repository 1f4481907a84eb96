"""`recsys score`: verified export → ONNX Runtime → candidates → ranker → top-K Parquet + manifest."""

from __future__ import annotations

import datetime as dt
import json
import time
from pathlib import Path

import polars as pl

from recsys import __version__
from recsys import schema as S
from recsys.config import CandidateConfig
from recsys.data import load_dataset, read_table
from recsys.errors import SchemaError
from recsys.io import atomic_path, describe_input, write_json
from serving.artifacts import verify_files
from serving.candidates import build_snapshot, generate_candidates
from serving.catalog import make_catalog
from serving.onnx_model import OnnxInterestModel, choose_providers
from serving.ranking import RankerModel, top_k, with_features
from serving.text import item_texts


def load_export(export_dir: str | Path, *, device: str = "auto", threads: int = 0):
    """Verify every file's hash, then open the ONNX sessions and the ranker."""
    export_dir = Path(export_dir)
    manifest = verify_files(export_dir, kind="recsys-export")
    config = json.loads((export_dir / "serving_config.json").read_text(encoding="utf-8"))
    model = OnnxInterestModel(export_dir, providers=choose_providers(device), precision=manifest["precision"], threads=threads, max_length=config["max_length"])
    ranker = RankerModel(export_dir / "ranker.txt", config["ranker_features"], threads=threads)
    return manifest, config, model, ranker


def recommend(model, ranker: RankerModel, items: pl.LazyFrame, events: pl.LazyFrame, *, cutoff: dt.datetime, user_ids: pl.Series, k: int, candidates: CandidateConfig, history_length: int, item_vectors=None, progress=None, timings: dict | None = None) -> pl.DataFrame:
    """Top-k recommendations as of `cutoff`, with the ranker's score and the text model's probabilities."""
    timings = timings if timings is not None else {}
    started = time.perf_counter()
    catalog = make_catalog(items)
    if item_vectors is None:
        item_vectors = model.encode_items(item_texts(catalog.items), progress=progress)
    timings["encode_items_s"] = round(time.perf_counter() - started, 3)
    started = time.perf_counter()
    snapshot = build_snapshot(catalog, item_vectors, events, items, cutoff=cutoff, config=candidates)
    cand = generate_candidates(model, snapshot, user_ids, candidates, history_length, progress=progress)
    timings["candidates_s"] = round(time.perf_counter() - started, 3)
    started = time.perf_counter()
    frame = with_features(cand, snapshot)
    ranked = top_k(frame, ranker.predict(frame), k)
    timings["rank_s"] = round(time.perf_counter() - started, 3)
    return ranked.select(S.USER_ID, S.RANK, S.ITEM_ID, S.SCORE, S.P_CLICK, S.P_PURCHASE)


def _users_to_score(users_path: str | Path | None, events: pl.LazyFrame) -> pl.Series:
    if users_path is None:
        return events.select(S.USER_ID).unique().sort(S.USER_ID).collect()[S.USER_ID]
    frame = read_table(users_path)
    if S.USER_ID not in frame.columns:
        raise SchemaError(users_path, S.USER_ID, "required column is missing")
    ids = frame[S.USER_ID].drop_nulls().unique(maintain_order=True)
    event_dtype = events.collect_schema()[S.USER_ID]
    if ids.dtype != event_dtype:
        cast = ids.cast(event_dtype, strict=False)
        if cast.null_count() > 0:
            raise SchemaError(users_path, S.USER_ID, f"is {ids.dtype} but events.user_id is {event_dtype}")
        ids = cast
    return ids


def score(export_dir: str | Path, items_path: str | Path, events_path: str | Path, out: str | Path, *, k: int = 20, users_path: str | Path | None = None, device: str = "auto", progress=None, log=lambda message: None) -> dict:
    """Write `out` (recommendations Parquet) and `out`.manifest.json; returns the manifest."""
    if k < 1:
        raise SchemaError(out, None, f"--k must be at least 1, found {k}")
    started = time.perf_counter()
    data = load_dataset(items_path, events_path)  # bad input fails first, before any model is loaded
    user_ids = _users_to_score(users_path, data.events)
    manifest, config, model, ranker = load_export(export_dir, device=device)
    log(f"ONNX Runtime providers in use: {', '.join(model.providers)}")
    if data.report.dropped:
        log(f"dropped rows: {data.report.dropped}")
    # score as of just after the last event: everything in the log is history
    last = data.events.select(pl.col(S.TIMESTAMP).max()).collect().item()
    cutoff = last + dt.timedelta(microseconds=1)
    timings: dict = {}
    recs = recommend(
        model, ranker, data.items, data.events, cutoff=cutoff, user_ids=user_ids, k=k,
        candidates=CandidateConfig(**config["candidates"]), history_length=config["history_length"], progress=progress, timings=timings,
    )
    out = Path(out)
    with atomic_path(out) as tmp:
        recs.write_parquet(tmp)
    result = {
        "kind": "recsys-recommendations",
        "model_version": manifest["model_version"],
        "export_precision": manifest["precision"],
        "artifact_hashes": {name: meta["sha256"] for name, meta in manifest["files"].items()},
        "inputs": {"items": describe_input(items_path), "events": describe_input(events_path), **({"users": describe_input(users_path)} if users_path else {})},
        "k": k,
        "rows": recs.height,
        "users": int(recs[S.USER_ID].n_unique()),
        "users_requested": int(user_ids.len()),
        "dropped_rows": data.report.dropped,
        "cutoff": cutoff.isoformat(),
        "providers": model.providers,
        "timings_s": {**timings, "total_s": round(time.perf_counter() - started, 3)},
        "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "code_version": __version__,
    }
    write_json(out.with_name(out.name.removesuffix(".parquet") + ".manifest.json"), result)
    return result
