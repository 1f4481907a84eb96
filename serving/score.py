"""`recsys score`: verified export → ONNX Runtime → candidates → ranker → top-K Parquet + manifest.

Users are scored in chunks: candidates, features and ranking per chunk, each finished chunk written
as its own Parquet part (atomically) beside the destination. A run killed at any moment leaves the
previous output untouched; a rerun with the same inputs, model and options reuses the finished parts
and produces the same file. Peak memory follows the chunk size, not the number of users.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import polars as pl

import features
from recsys import __version__
from recsys import schema as S
from recsys.config import CandidateConfig
from recsys.data import load_dataset, read_table
from recsys.errors import SchemaError
from recsys.io import atomic_path, describe_input, read_json, write_json
from serving.artifacts import verify_files
from serving.cache import ItemVectorCache, encoder_key
from serving.candidates import Snapshot, build_snapshot, generate_candidates
from serving.catalog import make_catalog
from serving.onnx_model import OnnxInterestModel, choose_providers
from serving.ranking import RankerModel, top_k
from serving.text import item_texts

CHUNK_USERS = 2_000  # ~400k candidate rows × ~55 features per chunk: a few hundred MB


def default_cache_dir() -> Path:
    import os

    return Path(os.environ.get("RECSYS_CACHE_DIR") or Path.home() / ".cache" / "recsys")


def load_export(export_dir: str | Path, *, device: str = "auto", threads: int = 0):
    """Verify every file's hash, then open the ONNX sessions and the ranker."""
    manifest, config = read_export(export_dir)
    return manifest, config, *open_export(export_dir, manifest, config, device=device, threads=threads)


def read_export(export_dir: str | Path) -> tuple[dict, dict]:
    """(manifest, serving config) of an export whose every file matches its hash."""
    export_dir = Path(export_dir)
    manifest = verify_files(export_dir, kind="recsys-export")
    return manifest, json.loads((export_dir / "serving_config.json").read_text(encoding="utf-8"))


def open_export(export_dir: str | Path, manifest: dict, config: dict, *, device: str = "auto", threads: int = 0) -> tuple[OnnxInterestModel, RankerModel]:
    export_dir = Path(export_dir)
    model = OnnxInterestModel(export_dir, providers=choose_providers(device), precision=manifest["precision"], threads=threads, max_length=config["max_length"])
    return model, RankerModel(export_dir / "ranker.txt", config["ranker_features"], threads=threads)


def rank_chunks(model, ranker: RankerModel, snapshot: Snapshot, tables: features.FeatureTables, user_ids: pl.Series, *, k: int, candidates: CandidateConfig, history_length: int, chunk_users: int = CHUNK_USERS, share_cold: bool = True, skip: frozenset[int] = frozenset()) -> Iterator[tuple[int, pl.DataFrame]]:
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
            yield number, _rank_users(model, ranker, snapshot, tables, chunk, k, candidates, history_length)
            continue
        has_past = chunk.is_in(known)
        parts = [_rank_users(model, ranker, snapshot, tables, chunk.filter(has_past), k, candidates, history_length)]
        cold = chunk.filter(~has_past)
        if cold.len():
            if shared is None:
                shared = _rank_users(model, ranker, snapshot, tables, cold.head(1), k, candidates, history_length).drop(S.USER_ID)
            parts.append(cold.to_frame(S.USER_ID).join(shared, how="cross"))
        yield number, pl.concat(parts).sort(S.USER_ID, S.RANK)


def _rank_users(model, ranker: RankerModel, snapshot: Snapshot, tables: features.FeatureTables, users: pl.Series, k: int, candidates: CandidateConfig, history_length: int) -> pl.DataFrame:
    cand = generate_candidates(model, snapshot, users, candidates, history_length) if users.len() else pl.DataFrame()
    if cand.height == 0:
        return _empty_recommendations(users.dtype, snapshot.catalog.ids.dtype)
    # in memory already: polars' in-memory engine joins a chunk 2.5x faster than the streaming default
    frame = features.join_features(cand.lazy(), tables).collect(engine="in-memory")
    ranked = top_k(frame, ranker.predict(frame), k)
    return ranked.select(S.USER_ID, S.RANK, S.ITEM_ID, S.SCORE, S.P_CLICK, S.P_PURCHASE)


def _empty_recommendations(user_dtype, item_dtype) -> pl.DataFrame:
    return pl.DataFrame(schema={S.USER_ID: user_dtype, S.RANK: pl.Int32, S.ITEM_ID: item_dtype, S.SCORE: pl.Float64, S.P_CLICK: pl.Float64, S.P_PURCHASE: pl.Float64})


def prepare(catalog, item_vectors, events: pl.LazyFrame, items: pl.LazyFrame, *, cutoff: dt.datetime, candidates: CandidateConfig, snapshot: Snapshot | None = None) -> tuple[Snapshot, features.FeatureTables]:
    """What every chunk of users shares, computed once per run: the snapshot and the feature tables."""
    snapshot = snapshot or build_snapshot(catalog, item_vectors, events, items, cutoff=cutoff, config=candidates)
    return snapshot, features.feature_tables(events, items, cutoff=cutoff).collect()


def recommend(model, ranker: RankerModel, items: pl.LazyFrame, events: pl.LazyFrame, *, cutoff: dt.datetime, user_ids: pl.Series, k: int, candidates: CandidateConfig, history_length: int, item_vectors=None, snapshot: Snapshot | None = None, progress=None, timings: dict | None = None, chunk_users: int = CHUNK_USERS) -> pl.DataFrame:
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
    parts = [frame for _, frame in rank_chunks(model, ranker, snapshot, tables, user_ids, k=k, candidates=candidates, history_length=history_length, chunk_users=chunk_users)]
    timings["rank_s"] = round(time.perf_counter() - started, 3)
    return pl.concat(parts) if parts else _empty_recommendations(user_ids.dtype, catalog.ids.dtype)


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


def _fingerprint(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def score(
    export_dir: str | Path,
    items_path: str | Path,
    events_path: str | Path,
    out: str | Path,
    *,
    k: int = 20,
    users_path: str | Path | None = None,
    device: str = "auto",
    cache_dir: str | Path | None = None,
    chunk_users: int = CHUNK_USERS,
    progress=None,
    log=lambda message: None,
) -> dict:
    """Write `out` (recommendations Parquet) and `out`.manifest.json; returns the manifest."""
    if k < 1:
        raise SchemaError(out, None, f"--k must be at least 1, found {k}")
    started = time.perf_counter()
    timings: dict[str, float] = {}
    out = Path(out)
    data = load_dataset(items_path, events_path)  # bad input fails first, before any model is loaded
    user_ids = _users_to_score(users_path, data.events)
    manifest, config = read_export(export_dir)  # a damaged export fails here, before any work is done
    for warning in data.report.warnings:  # one line per reason, with counts and examples
        log(f"warning: {warning}")
    last = data.events.select(pl.col(S.TIMESTAMP).max()).collect().item()
    cutoff = last + dt.timedelta(microseconds=1)  # score as of just after the last event
    inputs = {"items": describe_input(items_path), "events": describe_input(events_path), **({"users": describe_input(users_path)} if users_path else {})}
    candidates = CandidateConfig(**config["candidates"])
    catalog = make_catalog(data.items)

    # What every chunk shares comes from the event log (histories, seen items, co-visitation, feature
    # tables). It is summarised before the ONNX sessions open and the catalog is encoded, and the raw
    # log is let go of: at 5.3M events the log and the sessions together had set the run's peak memory.
    tic = time.perf_counter()
    snapshot, tables = prepare(catalog, None, data.events, data.items, cutoff=cutoff, candidates=candidates)
    snapshot = dataclasses.replace(snapshot, events=None, items=None)
    report = data.report
    del data
    timings["snapshot_s"] = round(time.perf_counter() - tic, 3)

    model, ranker = open_export(export_dir, manifest, config, device=device)
    log(f"ONNX Runtime providers in use: {', '.join(model.providers)}")
    tic = time.perf_counter()
    texts = item_texts(catalog.items)
    cache_stats = None
    if cache_dir is not None:
        cache = ItemVectorCache(cache_dir, encoder_key(manifest, config["max_length"]))
        vectors, cache_stats = cache.vectors(model, texts, progress=progress)
        for warning in cache_stats.warnings:
            log(warning)
        log(f"item vectors: {cache_stats.hits} from cache, {cache_stats.encoded} encoded, {cache_stats.dropped} stale dropped")
    else:
        vectors = model.encode_items(texts, progress=progress)
    snapshot = dataclasses.replace(snapshot, item_vectors=np.ascontiguousarray(vectors, dtype=np.float32))
    model.close_item_encoder()  # the Transformer's weights and buffers are not needed to rank
    timings["encode_items_s"] = round(time.perf_counter() - tic, 3)

    # finished chunks of an interrupted run with the same inputs and options are reused
    plan = _fingerprint(manifest["files"], inputs, k, chunk_users, cutoff.isoformat(), user_ids.len(), hashlib.sha256(user_ids.cast(pl.String).str.join("\n").item().encode()).hexdigest())
    parts_dir = out.with_name(f".{out.name}.parts")
    if (parts_dir / "plan.json").exists() and read_json(parts_dir / "plan.json").get("plan") != plan:
        shutil.rmtree(parts_dir)
    parts_dir.mkdir(parents=True, exist_ok=True)
    write_json(parts_dir / "plan.json", {"plan": plan})
    n_chunks = max(1, -(-user_ids.len() // chunk_users))
    done = {int(p.stem.split("-")[1]) for p in parts_dir.glob("part-*.parquet")}
    if done:
        log(f"resuming: {len(done)} of {n_chunks} chunks already done")

    tic = time.perf_counter()
    # chunk numbers are stable across reruns; one generator for the run, so what every chunk shares (the
    # list of users without a past) is ranked once
    for number, frame in rank_chunks(model, ranker, snapshot, tables, user_ids, k=k, candidates=candidates, history_length=config["history_length"], chunk_users=chunk_users, skip=frozenset(done)):
        with atomic_path(parts_dir / f"part-{number:05d}.parquet") as tmp:
            frame.write_parquet(tmp)
        if progress:
            progress("score users", min((number + 1) * chunk_users, user_ids.len()), user_ids.len())
    timings["rank_s"] = round(time.perf_counter() - tic, 3)

    tic = time.perf_counter()
    rows, users = _merge_parts([parts_dir / f"part-{n:05d}.parquet" for n in range(n_chunks)], out)
    timings["write_s"] = round(time.perf_counter() - tic, 3)
    scored_seconds = timings["snapshot_s"] + timings["rank_s"] + timings["write_s"]
    result = {
        "kind": "recsys-recommendations",
        "model_version": manifest["model_version"],
        "export_precision": manifest["precision"],
        "artifact_hashes": {name: meta["sha256"] for name, meta in manifest["files"].items()},
        "inputs": inputs,
        "k": k,
        "rows": rows,
        "users": users,
        "users_requested": int(user_ids.len()),
        "dropped_rows": report.dropped,
        "repaired_rows": report.repaired,
        "cutoff": cutoff.isoformat(),
        "providers": model.providers,
        "item_vector_cache": cache_stats.as_dict() if cache_stats else None,
        "chunks": n_chunks,
        "resumed_chunks": len(done),
        "timings_s": {**timings, "total_s": round(time.perf_counter() - started, 3)},
        "users_per_second": round(user_ids.len() / scored_seconds, 1) if scored_seconds > 0 else None,
        "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "code_version": __version__,
    }
    write_json(out.with_name(out.name.removesuffix(".parquet") + ".manifest.json"), result)
    shutil.rmtree(parts_dir, ignore_errors=True)
    return result


def _merge_parts(parts: list[Path], out: Path) -> tuple[int, int]:
    """Concatenate the chunk parts into `out` with a streaming sink (memory bounded), atomically."""
    scan = pl.concat([pl.scan_parquet(part) for part in parts])
    with atomic_path(out) as tmp:
        scan.sink_parquet(tmp)
    counts = pl.scan_parquet(out).select(pl.len().alias("rows"), pl.col(S.USER_ID).n_unique().alias("users")).collect()
    return int(counts["rows"][0]), int(counts["users"][0])
