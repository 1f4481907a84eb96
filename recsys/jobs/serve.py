"""`recsys serve`: an export (or a registry's champion) answering over HTTP, exactly the lists `recsys
score` writes at the same cutoff (docs/ARCHITECTURE.md, "Serving"). Needs the `serve-http` extra.

Everything is loaded and checked before the port opens: bad input or a missing or modified export
refuses to start (exit 2 or 3), so a deployment never routes traffic to a server that cannot answer.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from recsys.contracts.errors import UsageError
from recsys.jobs.common import noop
from recsys.jobs.score import DEFAULT_CACHE, default_cache_dir, open_scoring
from recsys.registry import Registry
from serving.online import OnlineRecommender


def load_recommender(
    model: str | Path,
    items_path: str | Path,
    events_path: str | Path,
    *,
    device: str = "auto",
    cache_dir: str | Path | None = None,
    threads: int = 0,
    log=noop,
) -> OnlineRecommender:
    """The recommender of `model` over the inputs as of just after their last event (as `recsys score`)."""
    cache_dir = default_cache_dir() if cache_dir == DEFAULT_CACHE else cache_dir
    version = None
    if Registry.is_registry(model):  # pin the champion once, so the version reported is the one loaded
        registry = Registry(model)
        version = registry.champion
        model = registry.version_dir(version) if version else model
    opened, _ = open_scoring(model, items_path, events_path, device=device, cache_dir=cache_dir, threads=threads, log=log)
    manifest = opened.manifest
    metadata = {
        "model_version": manifest["model_version"],
        "registry_version": version,
        "precision": manifest["precision"],
        "providers": opened.model.providers,
        "export_dir": str(opened.export_dir),
        "artifact_hashes": {name: meta["sha256"] for name, meta in manifest["files"].items()},
        "cutoff": opened.cutoff.isoformat(),
        "inputs": opened.inputs,
        "item_vector_cache": opened.cache_stats.as_dict() if opened.cache_stats else None,
        "load_timings_s": opened.timings,
    }
    return OnlineRecommender(
        opened.model,
        opened.ranker,
        opened.snapshot,
        opened.tables,
        candidates=opened.candidates,
        history_length=opened.config["history_length"],
        metadata=metadata,
    )


def champion_of(model: str | Path):
    """What a registry's promotion changes (its champion), or None when `model` is not a registry."""
    if not Registry.is_registry(model):
        return None
    return lambda: Registry(model).champion


WORKER_SPEC = "RECSYS_SERVE_WORKER"  # how `serve` tells each worker process what to load


def serve(
    model: str | Path,
    items_path: str | Path,
    events_path: str | Path,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    device: str = "auto",
    cache_dir: str | Path | None = None,
    threads: int = 0,
    watch_seconds: float = 5.0,
    workers: int = 1,
    log=noop,
) -> None:
    """Load, then serve until stopped (SIGINT/SIGTERM: uvicorn finishes the requests in flight).

    With `workers` > 1, that many processes share the port (uvicorn's supervisor), each with its own
    recommender: the Python parts of a request hold one process's interpreter lock, so one process keeps
    one core busy at most. Everything is loaded and checked here first, so a bad export still refuses to
    start before the port opens, and the workers then read the item vectors from the cache.
    """
    try:
        import uvicorn

        import serving.http  # noqa: F401  (FastAPI: the rest of the extra)
    except ImportError as exc:
        raise UsageError(f"recsys serve needs the HTTP extra: pip install 'recsys[serve-http]' ({exc})") from None
    if workers < 1:
        raise UsageError(f"--workers must be at least 1, got {workers}")
    spec = {
        "model": str(model),
        "items_path": str(items_path),
        "events_path": str(events_path),
        "device": device,
        "cache_dir": None if cache_dir is None else str(cache_dir),
        "threads": threads,
        "watch_seconds": watch_seconds,
        "workers": workers,
    }
    options = {"host": host, "port": port, "log_level": "warning", "access_log": False}
    if workers == 1:
        app = _app(spec, log)
        _announce(app.state.holder.current, host, port, workers, log)
        uvicorn.Server(uvicorn.Config(app, **options)).run()
        return
    _announce(_loader(spec, log)(), host, port, workers, log)  # checked once here; each worker then loads its own
    os.environ[WORKER_SPEC] = json.dumps(spec)
    uvicorn.run("recsys.jobs.serve:worker_app", factory=True, workers=workers, **options)


def _announce(current: OnlineRecommender, host: str, port: int, workers: int, log) -> None:
    log(
        f"serving {current.metadata['model_version']} ({current.n_items} items, {current.n_users} users, cutoff {current.metadata['cutoff']}) "
        f"on http://{host}:{port}" + (f" with {workers} worker processes" if workers > 1 else "")
    )


def worker_app():
    """The app of one worker process of `serve(workers > 1)`: uvicorn imports and calls this factory."""
    return _app(json.loads(os.environ[WORKER_SPEC]), lambda message: print(f"[worker {os.getpid()}] {message}", file=sys.stderr))


def _loader(spec: dict, log):
    def load() -> OnlineRecommender:
        return load_recommender(
            spec["model"],
            spec["items_path"],
            spec["events_path"],
            device=spec["device"],
            cache_dir=spec["cache_dir"],
            threads=spec["threads"],
            log=log,
        )

    return load


def _app(spec: dict, log):
    from serving.http import create_app

    version = champion_of(spec["model"])
    watch = spec["watch_seconds"] if version else 0.0
    return create_app(_loader(spec, log), version=version, watch_seconds=watch, workers=spec["workers"], log=log)
