"""Online answers: one user at a time equals the batch file, recent events, exclusions, explanations, and
the HTTP server as a real uvicorn process on 127.0.0.1 (started and stopped here, every loop bounded)."""

from __future__ import annotations

import shutil
import socket
import threading
import time

import numpy as np
import polars as pl
import pytest

from recsys.contracts import schema as S
from tests.unit._processes import CliProcess

httpx = pytest.importorskip("httpx")


@pytest.fixture(scope="module")
def online(exported_model, tiny_shop):
    from recsys.jobs.serve import load_recommender

    return load_recommender(exported_model, tiny_shop / "items.parquet", tiny_shop / "events", device="cpu")


@pytest.fixture(scope="module")
def batch(exported_model, tiny_shop, tmp_path_factory):
    """`recsys score` for every user with a past plus two it has never seen, k=10, with explanations."""
    from recsys.jobs.score import score

    folder = tmp_path_factory.mktemp("online-batch")
    users = pl.read_parquet(tiny_shop / "events").select(S.USER_ID).unique().sort(S.USER_ID)[S.USER_ID]
    unknown = pl.Series(S.USER_ID, [users.max() + 1, users.max() + 2], dtype=users.dtype)
    pl.DataFrame({S.USER_ID: pl.concat([users, unknown])}).write_parquet(folder / "users.parquet")
    out = folder / "recs.parquet"
    score(
        exported_model,
        tiny_shop / "items.parquet",
        tiny_shop / "events",
        out,
        k=10,
        users_path=folder / "users.parquet",
        device="cpu",
        explain=True,
    )
    return pl.read_parquet(out), unknown.to_list()


def _one(frame: pl.DataFrame, user) -> pl.DataFrame:
    return frame.filter(pl.col(S.USER_ID) == user).sort(S.RANK).select(S.RECOMMENDATION_COLUMNS)


def test_each_user_online_equals_the_batch_file(online, batch):
    frame, unknown = batch
    users = frame[S.USER_ID].unique().sort().to_list()
    for user in [*users[:: max(1, len(users) // 25)], *unknown]:
        assert online.recommend(user, 10).equals(_one(frame, user)), user
    # an unknown user gets the no-history list: the one every user without a past gets in the batch
    cold = online.recommend(unknown[0], 10).drop(S.USER_ID)
    assert cold.equals(_one(frame, unknown[1]).drop(S.USER_ID))


def test_exclude_removes_items_and_the_rest_move_up(online):
    user = online.snapshot.users[S.USER_ID][3]
    full = online.recommend(user, 10)
    dropped = full[S.ITEM_ID].gather([0, 4]).to_list()
    shorter = online.recommend(user, 8, exclude=[*dropped, 10**9])  # an unknown item is simply not there
    assert not set(dropped) & set(shorter[S.ITEM_ID].to_list())
    expected = full.filter(~pl.col(S.ITEM_ID).is_in(dropped))
    assert shorter[S.ITEM_ID].to_list() == expected[S.ITEM_ID].to_list()
    assert shorter[S.RANK].to_list() == list(range(1, 9))
    assert shorter[S.SCORE].to_list() == expected[S.SCORE].to_list()


def test_recent_events_enter_the_history_and_are_not_recommended_again(online):
    from serving.online import RecentEvent, RequestError

    unknown = int(online.snapshot.users[S.USER_ID].max()) + 10
    before = online.recommend(unknown, 10, explain=True)
    clicked = before[S.ITEM_ID].to_list()[:2]
    after = online.recommend(unknown, 10, recent_events=[RecentEvent(clicked[0]), RecentEvent(clicked[1], "purchase")], explain=True)
    assert not set(clicked) & set(after[S.ITEM_ID].to_list())
    assert before[S.ITEM_ID].to_list() != after[S.ITEM_ID].to_list()
    # the no-history user had no clicked item to compare with; now the click (not the purchase) is the history
    assert before["similar_clicked_item_id"].null_count() == before.height
    assert after["similar_clicked_item_id"].to_list() == [clicked[0]] * after.height
    # a known user's recent click joins their stored history (and is excluded like their past clicks)
    user = online.snapshot.users[S.USER_ID][0]
    top = online.recommend(user, 5)[S.ITEM_ID][0]
    assert top not in online.recommend(user, 5, recent_events=[RecentEvent(top)])[S.ITEM_ID].to_list()
    with pytest.raises(RequestError, match="recent_events.1.item_id"):
        online.recommend(user, 5, recent_events=[RecentEvent(top), RecentEvent(10**9)])
    with pytest.raises(RequestError, match="user_id"):
        online.recommend("not-a-number", 5)
    with pytest.raises(RequestError, match="^k:"):
        online.recommend(user, 0)


def test_explanations_sum_to_the_score_and_name_every_feature(online, batch, tiny_shop):
    from serving.explain import EXPLANATION_COLUMNS, REASONS, reason_matrix
    from serving.ranking import RANKER_FEATURES

    matrix = reason_matrix(list(RANKER_FEATURES))
    assert (matrix.sum(1) == 1).all() and (matrix.sum(0) >= 1).all()  # each feature in one reason, no empty reason
    frame, _ = batch
    assert set(EXPLANATION_COLUMNS) <= set(frame.columns)
    total = (
        frame["explain_base"] + frame["explain_other"] + frame["reasons"].list.eval(pl.element().struct.field("contribution")).list.sum()
    )
    np.testing.assert_allclose(total.to_numpy(), frame[S.SCORE].to_numpy(), rtol=1e-9, atol=1e-9)
    reasons = frame["reasons"].explode().struct.unnest()
    assert set(reasons["reason"].unique()) <= set(REASONS) and reasons["text"].str.len_chars().min() > 5
    assert frame["reasons"].list.len().unique().to_list() == [3]
    # largest first, as a reader sees them
    contributions = frame["reasons"].list.eval(pl.element().struct.field("contribution"))
    assert all(c == sorted(c, reverse=True) for c in contributions.to_list())
    # a user with a past: the closest clicked item is one they clicked
    row = frame.filter(pl.col("similar_clicked_item_id").is_not_null()).row(0, named=True)
    clicks = pl.read_parquet(tiny_shop / "events").filter((pl.col(S.USER_ID) == row[S.USER_ID]) & (pl.col(S.EVENT) == S.CLICK))
    assert row["similar_clicked_item_id"] in clicks[S.ITEM_ID].to_list()
    # explaining changes nothing about the list
    assert online.recommend(row[S.USER_ID], 10, explain=True).select(S.RECOMMENDATION_COLUMNS).equals(online.recommend(row[S.USER_ID], 10))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """`recsys serve` as a real process on 127.0.0.1, stopped (SIGTERM, then SIGKILL) on exit."""

    def __init__(self, model, shop, *extra):
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.cli = CliProcess(
            "serve",
            "--model",
            model,
            "--items",
            shop / "items.parquet",
            "--events",
            shop / "events",
            "--port",
            self.port,
            "--no-cache",
            "--device",
            "cpu",
            *extra,
        )

    def __enter__(self) -> Server:
        def up() -> bool:
            try:
                return httpx.get(f"{self.url}/health", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        self.cli.wait_until(up, "the server answers /health", timeout=120)
        return self

    def __exit__(self, *exc) -> None:
        self.cli.process.terminate()
        try:
            self.cli.process.wait(timeout=20)
        except Exception:
            self.cli.process.kill()
            self.cli.process.wait(timeout=20)


def test_http_answers_equal_the_batch_file_and_bad_requests_name_the_field(exported_model, tiny_shop, batch):
    frame, unknown = batch
    users = frame[S.USER_ID].unique().sort().to_list()
    with Server(exported_model, tiny_shop) as server, httpx.Client(base_url=server.url, timeout=30) as client:
        for user in [*users[::20], unknown[0]]:
            answer = client.post("/recommend", json={"user_id": user, "k": 10})
            assert answer.status_code == 200, answer.text
            got = pl.DataFrame(answer.json()["recommendations"]).select(S.RANK, S.ITEM_ID, S.SCORE, S.P_CLICK, S.P_PURCHASE)
            expected = _one(frame, user).drop(S.USER_ID).select(got.columns)
            assert got.cast(expected.schema).equals(expected), user
        assert client.post("/recommend", json={"user_id": unknown[0]}).json()["has_history"] is False

        explained = client.post("/recommend", json={"user_id": users[0], "k": 5, "explain": True}).json()["recommendations"]
        for row in explained:
            why = row["explanation"]
            assert abs(why["base"] + why["other"] + sum(r["contribution"] for r in why["reasons"]) - row["score"]) < 1e-9
            assert why["similar_clicked"]["item_id"] is not None

        bad = [
            (("k",), {"user_id": users[0], "k": 0}),
            (("user_id",), {"k": 5}),
            (("exclude", 0), {"user_id": users[0], "exclude": [[1]]}),
            (("user_id",), {"user_id": "somebody"}),
            (("recent_events", 0, "item_id"), {"user_id": users[0], "recent_events": [{"item_id": 10**9}]}),
            (("recent_events", 0, "event"), {"user_id": users[0], "recent_events": [{"item_id": 1, "event": "view"}]}),
            (("colour",), {"user_id": users[0], "colour": "red"}),
        ]
        for loc, body in bad:
            answer = client.post("/recommend", json=body)
            assert answer.status_code == 422, (body, answer.text)
            locations = [tuple(d["loc"][1:])[: len(loc)] for d in answer.json()["detail"]]
            assert loc in locations, (loc, answer.json())

        meta = client.get("/metadata").json()
        assert meta["providers"] == ["CPUExecutionProvider"] and meta["items"] > 0
        assert meta["cutoff"] and meta["artifact_hashes"] and meta["precision"] == "fp32"


def test_worker_processes_share_the_port_and_answer_as_one(exported_model, tiny_shop, batch):
    """--workers 2: two processes, each with its own recommender, both answering the batch file's lists."""
    frame, _ = batch
    users = frame[S.USER_ID].unique().sort().to_list()[::15]
    pids: set[int] = set()
    with Server(exported_model, tiny_shop, "--workers", "2") as server:
        deadline = time.monotonic() + 60
        for attempt in range(200):  # bounded: 200 requests or 60 s; a new connection each, so either may accept
            if len(pids) == 2 or time.monotonic() > deadline:
                break
            user = users[attempt % len(users)]
            answer = httpx.post(f"{server.url}/recommend", json={"user_id": user, "k": 10}, timeout=30)
            assert answer.status_code == 200, answer.text
            got = pl.DataFrame(answer.json()["recommendations"]).select(S.RANK, S.ITEM_ID, S.SCORE, S.P_CLICK, S.P_PURCHASE)
            expected = _one(frame, user).drop(S.USER_ID).select(got.columns)
            assert got.cast(expected.schema).equals(expected), user
            meta = httpx.get(f"{server.url}/metadata", timeout=30).json()
            assert meta["workers"] == 2
            pids.add(meta["worker_pid"])
        assert len(pids) == 2, f"one process answered every request: {pids}"
        refused = httpx.post(f"{server.url}/reload", timeout=30)
        assert refused.status_code == 409 and "registry" in refused.json()["detail"]
    assert server.cli.process.poll() is not None


def test_a_registry_champion_reloads_on_promotion_with_no_failed_request(tmp_path, trained_model, exported_model, tiny_shop):
    from recsys.registry import Registry

    registry = Registry.create(tmp_path / "registry")
    for _ in range(2):
        with registry.stage() as staging:
            shutil.copytree(trained_model, staging / "model")
            shutil.copytree(exported_model, staging / "export")
            registry.register(staging, created_by="test")
    registry.promote("v0001", reason="first")
    statuses: list[int] = []
    stop = threading.Event()
    with Server(registry.root, tiny_shop, "--watch-seconds", "0.5") as server:
        assert httpx.get(f"{server.url}/metadata").json()["registry_version"] == "v0001"

        def load() -> None:  # bounded: at most 400 requests or 90 s
            with httpx.Client(base_url=server.url, timeout=30) as client:
                deadline = time.monotonic() + 90
                while not stop.is_set() and len(statuses) < 400 and time.monotonic() < deadline:
                    statuses.append(client.post("/recommend", json={"user_id": 1, "k": 5}).status_code)

        worker = threading.Thread(target=load)
        worker.start()
        try:
            registry.promote("v0002", reason="test")
            deadline = time.monotonic() + 60
            while httpx.get(f"{server.url}/metadata").json()["registry_version"] != "v0002":
                assert time.monotonic() < deadline, "no reload within 60 s of the promotion"
                time.sleep(0.2)
            reloaded = httpx.post(f"{server.url}/reload", timeout=60)
            assert reloaded.status_code == 200 and reloaded.json()["reloads"] == 2
        finally:
            stop.set()
            worker.join(timeout=60)
    assert len(statuses) > 0 and set(statuses) == {200}, statuses[:20]


def test_a_modified_export_refuses_to_start(tmp_path, exported_model, tiny_shop):
    from recsys.contracts.layout import RANKER_FILE

    export = tmp_path / "export"
    shutil.copytree(exported_model, export)
    (export / RANKER_FILE).write_text((export / RANKER_FILE).read_text() + "\n")
    cli = CliProcess(
        "serve",
        "--model",
        export,
        "--items",
        tiny_shop / "items.parquet",
        "--events",
        tiny_shop / "events",
        "--port",
        _free_port(),
        "--no-cache",
    )
    assert cli.process.wait(timeout=120) == 3
    cli._reader.join(timeout=10)
    assert "modified or truncated" in cli.stderr and RANKER_FILE in cli.stderr


def test_requests_ranked_together_equal_each_alone(online):
    from serving.online import Batcher, RecentEvent

    users = online.snapshot.users[S.USER_ID].to_list()
    stranger = int(max(users)) + 5
    asks = [
        online.request(users[0], 10),
        online.request(users[1], 3, exclude=[online.recommend(users[1], 1)[S.ITEM_ID][0]]),
        online.request(users[0], 5, explain=True),
        online.request(stranger, 7),
        online.request(users[2], 4, recent_events=[RecentEvent(online.recommend(users[2], 1)[S.ITEM_ID][0])]),
        online.request(users[0], 10),  # the same user twice in one batch
    ]
    together = online.recommend_many(asks)
    alone = [online.recommend_many([ask])[0] for ask in asks]
    assert all(a.equals(b) for a, b in zip(together, alone))
    assert [len(a) for a in together] == [10, 3, 5, 7, 4, 10] and "reasons" in together[2].columns
    batcher = Batcher(max_batch=4)
    try:
        futures = [batcher.submit(online, ask) for ask in asks]
        assert all(f.result(timeout=60).equals(b) for f, b in zip(futures, alone))
    finally:
        batcher.close()
    assert batcher.requests == len(asks) and batcher.batches >= 2  # at most 4 a batch


def test_serve_without_the_http_extra_is_one_line(exported_model, tiny_shop):
    import subprocess
    import sys

    code = "import sys; sys.modules['fastapi'] = None; from recsys.cli import app; app()"
    args = ["serve", "--model", str(exported_model), "--items", str(tiny_shop / "items.parquet"), "--events", str(tiny_shop / "events")]
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "pip install 'recsys[serve-http]'" in done.stderr, done.stderr
