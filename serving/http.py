"""`recsys serve`'s HTTP interface (FastAPI; the `serve-http` extra): one `OnlineRecommender` answers,
and a reload swaps in a new one without failing a request (docs/ARCHITECTURE.md, "Serving").

    POST /recommend {user_id, k?, exclude?, recent_events?, explain?}
    GET  /health      GET /metadata      POST /reload

Each request is checked on the event loop, then queued to one `Batcher` thread that ranks every request
waiting at that moment together, against the recommender the request started with; a reload builds the
next recommender beside it (the old one keeps answering) and replaces the reference in one assignment.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import threading
import time
from collections.abc import Callable
from contextlib import asynccontextmanager
from typing import Literal

from fastapi import FastAPI, HTTPException
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from recsys.contracts import schema as S
from serving.explain import EXPLANATION_COLUMNS
from serving.online import MAX_K, Batcher, OnlineRecommender, RecentEvent, RequestError

Id = int | str


class RecentEventIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    item_id: Id
    event: Literal["click", "purchase"] = S.CLICK
    timestamp: dt.datetime | None = None


class RecommendIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    user_id: Id
    k: int = Field(20, ge=1, le=MAX_K)
    exclude: list[Id] = Field(default_factory=list, max_length=10_000)
    recent_events: list[RecentEventIn] = Field(default_factory=list, max_length=1_000)
    explain: bool = False


class Holder:
    """The recommender that answers now, and the one reload at a time that may replace it."""

    def __init__(self, load: Callable[[], OnlineRecommender]):
        self._load = load
        self._reloading = threading.Lock()
        self.current = load()
        self.reloads = 0

    def reload(self) -> OnlineRecommender:
        with self._reloading:
            fresh = self._load()  # fails without touching the one that answers
            self.current = fresh  # one reference assignment: a request sees the old or the new, whole
            self.reloads += 1
            return fresh


def create_app(
    load: Callable[[], OnlineRecommender],
    *,
    version: Callable[[], object] | None = None,
    watch_seconds: float = 0.0,
    workers: int = 1,
    log=print,
) -> FastAPI:
    """The app over `load()`'s recommender. With `version` and `watch_seconds` > 0, a background thread
    polls `version()` (a registry's champion) and reloads when it changes. `workers`: how many processes
    serve the port, this one among them; a POST /reload reaches only one of them, so with more than one
    it is refused and the registry's watch reloads each."""
    holder = Holder(load)
    batcher = Batcher()
    stop = threading.Event()

    def watch() -> None:
        seen = version()
        while not stop.wait(watch_seconds):
            try:
                now = version()
                if now != seen:
                    log(f"model changed ({seen} -> {now}): reloading")
                    holder.reload()
                    seen = now
            except Exception as exc:  # a half-promoted or damaged registry: keep serving what is loaded
                log(f"reload failed, still serving {holder.current.metadata.get('model_version')}: {exc}")

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        watcher = None
        if version is not None and watch_seconds > 0:
            watcher = threading.Thread(target=watch, name="registry-watch", daemon=True)
            watcher.start()
        yield
        stop.set()
        if watcher is not None:
            watcher.join(timeout=5)
        batcher.close()

    app = FastAPI(title="recsys", lifespan=lifespan)
    app.state.holder = holder

    @app.exception_handler(RequestError)
    def request_error(request, exc: RequestError):  # the same shape as FastAPI's own validation errors
        loc = ["body", *(int(p) if p.isdigit() else p for p in exc.field.split("."))]
        return JSONResponse(status_code=422, content={"detail": [{"loc": loc, "msg": exc.problem, "type": "value_error"}]})

    @app.post("/recommend")
    async def recommend(body: RecommendIn) -> Response:
        recommender = holder.current
        started = time.perf_counter()
        recent = [RecentEvent(e.item_id, e.event, e.timestamp) for e in body.recent_events]
        request = recommender.request(body.user_id, body.k, exclude=body.exclude, recent_events=recent, explain=body.explain)
        ranked = await asyncio.wrap_future(batcher.submit(recommender, request))
        rows = _rows(ranked, (S.RANK, S.ITEM_ID, S.SCORE, S.P_CLICK, S.P_PURCHASE))
        if body.explain:
            for row, why in zip(rows, _rows(ranked, EXPLANATION_COLUMNS)):
                row["explanation"] = {
                    "reasons": why["reasons"],
                    "base": why["explain_base"],
                    "other": why["explain_other"],
                    "similar_clicked": None
                    if why["similar_clicked_item_id"] is None
                    else {"item_id": why["similar_clicked_item_id"], "similarity": why["similar_clicked_similarity"]},
                }
        answer = {
            "user_id": body.user_id,
            "has_history": recommender.knows(body.user_id) or bool(recent),  # a past before the cutoff, or events sent now
            "model_version": recommender.metadata.get("model_version"),
            "cutoff": recommender.metadata.get("cutoff"),
            "recommendations": rows,
            "took_ms": round((time.perf_counter() - started) * 1000, 3),
        }
        # plain JSON types already: FastAPI's generic encoder cost more than the ranking at 8 requests in flight
        return Response(json.dumps(answer), media_type="application/json")

    @app.get("/health")
    def health() -> dict:
        recommender = holder.current
        return {"status": "ok", "model_version": recommender.metadata.get("model_version"), "reloads": holder.reloads}

    @app.get("/metadata")
    def metadata() -> dict:
        recommender = holder.current
        served = {
            "batches": batcher.batches,
            "requests": batcher.requests,
            "mean_batch": round(batcher.requests / max(batcher.batches, 1), 2),
        }
        return {
            **recommender.metadata,
            "users": recommender.n_users,
            "items": recommender.n_items,
            "reloads": holder.reloads,
            "served": served,
            "workers": workers,
            "worker_pid": os.getpid(),
        }

    @app.post("/reload")
    def reload() -> dict:
        if workers > 1:
            raise HTTPException(
                status_code=409,
                detail=f"{workers} worker processes serve this port and a request reaches one: promote in the registry "
                "(each worker watches it) or restart the server",
            )
        try:
            fresh = holder.reload()
        except Exception as exc:
            raise HTTPException(status_code=409, detail=f"reload failed, still serving the previous model: {exc}") from None
        return {"model_version": fresh.metadata.get("model_version"), "reloads": holder.reloads}

    return app


def _rows(frame, columns) -> list[dict]:
    """`frame.select(columns).to_dicts()`, 9 instead of 79 µs for a 10-row answer (held under the
    interpreter lock on the event loop's thread, which the batcher needs too)."""
    values = [frame.get_column(c).to_list() for c in columns]
    return [dict(zip(columns, row)) for row in zip(*values)]
