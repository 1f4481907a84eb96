"""`recsys score`: verified export → ONNX Runtime → candidates → ranker → top-K Parquet + manifest.

The job owns the files: it loads and validates the inputs, resolves `--model` (an export, a registry's
champion or a version), reads the item-vector cache, and writes each finished chunk of users as its own
Parquet part (atomically) beside the destination; `serving.score` ranks the chunks. A run killed at any
moment leaves the previous output untouched; a rerun with the same inputs, model and options reuses the
finished parts and produces the same file.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import hashlib
import json
import os
import shutil
import time
from pathlib import Path

import polars as pl

import features
from recsys import __version__
from recsys.contracts import schema as S
from recsys.contracts.config import RETRIEVALS, CandidateConfig, EngineConfig
from recsys.contracts.errors import Interrupted, SchemaError, UsageError, WriteError
from recsys.contracts.files import atomic_dir, atomic_path, describe_input, read_json, write_json, writing
from recsys.contracts.timeline import just_after
from recsys.data import LoadReport, read_table
from recsys.jobs.common import load_inputs, noop
from recsys.jobs.paths import Output, check_paths
from recsys.registry import resolve_export_dir
from serving.ann import AnnIndex
from serving.artifacts import open_export, read_export
from serving.cache import AnnIndexCache, CacheStats, ItemVectorCache, encoder_key, item_keys
from serving.candidates import Snapshot, uses_ann, with_item_vectors
from serving.catalog import make_catalog
from serving.onnx_model import OnnxInterestModel
from serving.ranking import LambdaRanker
from serving.score import CHUNK_USERS, prepare, rank_chunks
from serving.text import item_texts

ENGINES = ("local", "ray")
DEFAULT_CACHE = "default"  # --cache-dir not given: $RECSYS_CACHE_DIR, else ~/.cache/recsys


def default_cache_dir() -> Path:
    return Path(os.environ.get("RECSYS_CACHE_DIR") or Path.home() / ".cache" / "recsys")


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


@dataclasses.dataclass
class Opened:
    """An export opened for ranking at a cutoff: what `score` writes from and `serve` answers from."""

    export_dir: Path
    manifest: dict
    config: dict  # the export's serving config
    model: OnnxInterestModel
    ranker: LambdaRanker
    snapshot: Snapshot  # item vectors encoded, the event log summarised and let go of
    tables: features.FeatureTables
    candidates: CandidateConfig
    cutoff: dt.datetime
    inputs: dict  # size and hash of every input file
    report: LoadReport
    cache_stats: CacheStats | None
    timings: dict
    index_stats: dict | None = None  # the approximate index from the cache: how it came (loaded, updated, built)


def open_scoring(
    model: str | Path,
    items_path: str | Path,
    events_path: str | Path,
    *,
    users_path: str | Path | None = None,
    device: str = "auto",
    cache_dir: str | Path | None = None,
    threads: int = 0,
    retrieval: str | None = None,
    progress=None,
    log=noop,
) -> tuple[Opened, pl.Series]:
    """(the opened export at just after the last event, the users to score): the inputs are validated
    first, then the export's every hash, then its sessions open and the catalog is encoded (through the
    item-vector cache when `cache_dir` is given). Nothing is written but the cache."""
    timings: dict[str, float] = {}
    export_dir = resolve_export_dir(model, log=log)
    data = load_inputs(items_path, events_path)  # bad input fails first, before any model is loaded
    user_ids = _users_to_score(users_path, data.events)
    manifest, config = read_export(export_dir)  # a damaged export fails here, before any work is done
    for warning in data.report.warnings:  # one line per reason, with counts and examples
        log(f"warning: {warning}")
    last = data.events.select(pl.col(S.TIMESTAMP).max()).collect().item()
    cutoff = just_after(last)  # score as of just after the last event
    inputs = {
        "items": describe_input(items_path),
        "events": describe_input(events_path),
        **({"users": describe_input(users_path)} if users_path else {}),
    }
    candidates = CandidateConfig(**config["candidates"])
    if retrieval is not None:  # --retrieval overrides the export's
        if retrieval not in RETRIEVALS:
            raise UsageError(f"--retrieval must be one of {', '.join(RETRIEVALS)}, found '{retrieval}'")
        candidates = dataclasses.replace(candidates, retrieval=retrieval)
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

    model, ranker = open_export(export_dir, manifest, config, device=device, threads=threads)
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
    index, index_how, index_stats = None, "built", None
    if cache_dir is not None and uses_ann(candidates, len(vectors)):
        index, index_stats = AnnIndexCache(cache_dir, cache.key).index(
            vectors, item_keys(catalog.items[S.ITEM_ID].to_list(), texts), nprobe=candidates.ann_nprobe
        )
        for warning in index_stats["warnings"]:
            log(warning)
        index_how = f"{index_stats['how']} (+{index_stats['added']} / -{index_stats['removed']} items)"
    snapshot = with_item_vectors(snapshot, vectors, candidates, index=index)
    if isinstance(snapshot.index, AnnIndex):
        log(
            f"text retrieval: approximate (faiss IVF, {snapshot.index.index.nlist} lists, nprobe {snapshot.index.nprobe}) "
            f"over {len(vectors)} items, index {index_how}"
        )
    model.close_item_encoder()  # the Transformer's weights and buffers are not needed to rank
    timings["encode_items_s"] = round(time.perf_counter() - tic, 3)
    opened = Opened(
        export_dir=Path(export_dir),
        manifest=manifest,
        config=config,
        model=model,
        ranker=ranker,
        snapshot=snapshot,
        tables=tables,
        candidates=candidates,
        cutoff=cutoff,
        inputs=inputs,
        report=report,
        cache_stats=cache_stats,
        timings=timings,
        index_stats=None if index_stats is None else {k: v for k, v in index_stats.items() if k != "warnings"},
    )
    return opened, user_ids


def score(
    model: str | Path,
    items_path: str | Path,
    events_path: str | Path,
    out: str | Path,
    *,
    k: int = 20,
    users_path: str | Path | None = None,
    device: str = "auto",
    cache_dir: str | Path | None = None,
    chunk_users: int = CHUNK_USERS,
    explain: bool = False,
    retrieval: str | None = None,
    engine: str = "local",
    engine_config: EngineConfig | None = None,
    ray_address: str | None = None,
    progress=None,
    log=noop,
) -> dict:
    """Write `out` (recommendations Parquet) and `out`.manifest.json; returns the manifest.

    `engine="ray"`: the blocks are ranked on a Ray cluster (`engine_config`, `ray_address`) and `out` is a
    folder of Parquet parts (the same rows as the local file), its manifest `out`.manifest.json beside.

    `model`: an EXPORT_DIR, a registry (its champion) or one of its version folders. `cache_dir`: the
    item-vector cache folder, `DEFAULT_CACHE` for the default one, None for no cache. `explain`: add
    serving.explain's EXPLANATION_COLUMNS (why each item is there) to every row.
    """
    if k < 1:
        raise SchemaError(out, None, f"--k must be at least 1, found {k}")
    if engine not in ENGINES:
        raise UsageError(f"--engine must be one of {', '.join(ENGINES)}, found '{engine}'")
    started = time.perf_counter()
    timings: dict[str, float] = {}
    out = Path(out)
    cache_dir = default_cache_dir() if cache_dir == DEFAULT_CACHE else cache_dir
    inputs = {"--model": model, "--items": items_path, "--events": events_path, "--users": users_path}
    on_ray = engine == "ray"
    engine_config = engine_config or EngineConfig()
    if on_ray:
        chunk_users = engine_config.batch_users
    check_paths(
        inputs,
        [
            Output("--out", out, "dir" if on_ray else "file"),
            Output("--out", _manifest_path(out), "file"),
            Output("--cache-dir", cache_dir, "dir", store=True),
        ],
    )
    with _cluster(engine_config, ray_address, log) if on_ray else contextlib.nullcontext() as cluster:
        # a missing extra, an unreachable cluster or resources it lacks fail before any work
        opened, user_ids = open_scoring(
            model,
            items_path,
            events_path,
            users_path=users_path,
            device=device,
            cache_dir=cache_dir,
            retrieval=retrieval,
            progress=progress,
            log=log,
        )
        manifest, config, model, ranker, snapshot = opened.manifest, opened.config, opened.model, opened.ranker, opened.snapshot
        tables, candidates, cutoff, inputs, report = opened.tables, opened.candidates, opened.cutoff, opened.inputs, opened.report
        timings.update(opened.timings)

        # finished chunks of an interrupted run with the same inputs and options are reused
        plan = _fingerprint(
            manifest["files"],
            inputs,
            k,
            chunk_users,
            explain,
            cutoff.isoformat(),
            user_ids.len(),
            hashlib.sha256(user_ids.cast(pl.String).str.join("\n").item().encode()).hexdigest(),
        )
        parts_dir = out.with_name(f".{out.name}.parts")
        try:
            if (parts_dir / "plan.json").exists() and read_json(parts_dir / "plan.json").get("plan") != plan:
                shutil.rmtree(parts_dir)
            parts_dir.mkdir(parents=True, exist_ok=True)
            write_json(parts_dir / "plan.json", {"plan": plan})
            n_chunks = max(1, -(-user_ids.len() // chunk_users))
            done = {int(p.stem.split("-")[1]) for p in parts_dir.glob("part-*.parquet")}
            if done:
                log(f"resuming: {len(done)} of {n_chunks} chunks already done")

            tic = time.perf_counter()
            todo = [n for n in range(n_chunks) if n not in done]
            if cluster is not None:
                from recsys.jobs.ray_engine import rank_blocks

                rank_blocks(
                    cluster,
                    opened.export_dir,
                    snapshot,
                    tables,
                    user_ids,
                    todo,
                    parts_dir,
                    k=k,
                    candidates=candidates,
                    history_length=config["history_length"],
                    device=device,
                    explain=explain,
                    progress=progress,
                )
            # chunk numbers are stable across reruns; one generator for the run, so what every chunk shares (the
            # list of users without a past) is ranked once
            for number, frame in (
                ()
                if cluster is not None
                else rank_chunks(
                    model,
                    ranker,
                    snapshot,
                    tables,
                    user_ids,
                    k=k,
                    candidates=candidates,
                    history_length=config["history_length"],
                    chunk_users=chunk_users,
                    skip=frozenset(done),
                    explain=explain,
                )
            ):
                with atomic_path(parts_dir / f"part-{number:05d}.parquet") as tmp:
                    frame.write_parquet(tmp)
                if progress:
                    progress("score users", min((number + 1) * chunk_users, user_ids.len()), user_ids.len())
            timings["rank_s"] = round(time.perf_counter() - tic, 3)

            tic = time.perf_counter()
            # the recommendations and their manifest are both written in full before either is renamed into place
            parts = [parts_dir / f"part-{n:05d}.parquet" for n in range(n_chunks)]
            with atomic_dir(out) if cluster is not None else atomic_path(out) as staged:
                if cluster is not None:  # the folder of parts itself, renamed into place with its manifest
                    rows, users = _move_parts(parts, staged)
                else:
                    rows, users = _merge_parts(parts, staged)
                timings["write_s"] = round(time.perf_counter() - tic, 3)
                scored_seconds = timings["snapshot_s"] + timings["rank_s"] + timings["write_s"]
                result = {
                    "kind": "recsys-recommendations",
                    "model_version": manifest["model_version"],
                    "export_precision": manifest["precision"],
                    "artifact_hashes": {name: meta["sha256"] for name, meta in manifest["files"].items()},
                    "inputs": inputs,
                    "k": k,
                    "explain": explain,
                    "retrieval": "ann" if isinstance(snapshot.index, AnnIndex) else "exact",
                    "ann_index": opened.index_stats,
                    "engine": "local"
                    if cluster is None
                    else {"name": "ray", **dataclasses.asdict(cluster.engine), "address": cluster.address},
                    "rows": rows,
                    "users": users,
                    "users_requested": int(user_ids.len()),
                    "dropped_rows": report.dropped,
                    "repaired_rows": report.repaired,
                    "cutoff": cutoff.isoformat(),
                    "providers": model.providers,
                    "item_vector_cache": opened.cache_stats.as_dict() if opened.cache_stats else None,
                    "chunks": n_chunks,
                    "resumed_chunks": len(done),
                    "timings_s": {**timings, "total_s": round(time.perf_counter() - started, 3)},
                    "users_per_second": round(user_ids.len() / scored_seconds, 1) if scored_seconds > 0 else None,
                    "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                    "code_version": __version__,
                }
                write_json(_manifest_path(out), result)
            shutil.rmtree(parts_dir, ignore_errors=True)
            return result
        except (WriteError, Interrupted):
            # a clean stop or a write failure: nothing is left beside the destination (the finished parts go
            # too, which also frees the space); a crash or SIGKILL keeps them and the next run resumes from them
            shutil.rmtree(parts_dir, ignore_errors=True)
            raise


def _cluster(engine_config: EngineConfig, ray_address: str | None, log):
    from recsys.jobs.ray_engine import Cluster

    return Cluster(engine_config, ray_address, log=log)


def _manifest_path(out: Path) -> Path:
    """`<name>.manifest.json` beside `<name>.parquet`."""
    return out.with_name(out.name.removesuffix(".parquet") + ".manifest.json")


def _move_parts(parts: list[Path], folder: Path) -> tuple[int, int]:
    """Move the finished parts into `folder` (a staging folder beside the destination)."""
    for part in parts:
        os.replace(part, folder / part.name)
    return _rows_and_users(folder)


def _rows_and_users(path: Path) -> tuple[int, int]:
    counts = pl.scan_parquet(path).select(pl.len().alias("rows"), pl.col(S.USER_ID).n_unique().alias("users")).collect()
    return int(counts["rows"][0]), int(counts["users"][0])


def _merge_parts(parts: list[Path], out: Path) -> tuple[int, int]:
    """Concatenate the chunk parts into `out` with a streaming sink (memory bounded)."""
    scan = pl.concat([pl.scan_parquet(part) for part in parts])
    with writing(out):
        scan.sink_parquet(out)
    return _rows_and_users(out)
