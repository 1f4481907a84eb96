"""The gated retrain: a worse challenger is rejected (champion kept, exit 10, nothing written), a fine one is
promoted; both compared with `evaluate_export` on the newest days that neither model learned from."""

from __future__ import annotations

import datetime as dt
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from _processes import ROOT, CliProcess
from typer.testing import CliRunner

from recsys.cli import app
from recsys.contracts import schema as S
from recsys.contracts.config import dump_toml
from recsys.contracts.errors import ChallengerRejected
from recsys.jobs.retrain import gate_decision
from recsys.registry import Registry

runner = CliRunner()
GATE = {"test_days": 2.0, "tolerance": 0.05}


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.mark.parametrize(
    "challenger, champion, tolerance, promoted",
    [
        (0.30, 0.30, 0.0, True),
        (0.31, 0.30, 0.0, True),
        (0.295, 0.30, 0.01, True),
        (0.29, 0.30, 0.01, True),  # exactly at the tolerance
        (0.289, 0.30, 0.01, False),
        (0.10, 0.30, 0.05, False),
        (float("nan"), 0.30, 0.05, False),
        (0.10, float("nan"), 0.0, True),
    ],
)
def test_gate_decision(challenger, champion, tolerance, promoted):
    decision, why = gate_decision(challenger, champion, tolerance)
    assert decision is promoted and "ndcg@10" in why


def hot_items_shop(folder: Path, *, users: int = 300, items: int = 30, days: int = 8, seed: int = 0) -> Path:
    """A shop whose behaviour is plain enough that a fit ranker must win: every day most users click one of
    the six "hot" items they have not clicked yet; the rest of their clicks are random. Popularity and the
    behavioral features find the hot items; a text model on random weights cannot."""
    rng = np.random.default_rng(seed)
    words = ["red", "blue", "green", "shoe", "hat", "scarf", "lamp", "mug", "book", "pen"]
    item_ids = np.arange(1, items + 1)
    hot = item_ids[-6:]  # the highest ids: tie-breaks by catalog order never favour them
    pl.DataFrame(
        {
            S.ITEM_ID: item_ids,
            S.TITLE: [f"{words[i % 10]} {words[(i * 7) % 10]} {i}" for i in item_ids],
            S.CATEGORY: [f"c{i % 3}" for i in item_ids],
        }
    ).write_parquet(folder / "items.parquet")
    (folder / "events").mkdir()
    start = dt.datetime(2026, 1, 1)
    clicked: dict[int, set] = {u: set() for u in range(users)}
    for day in range(days):
        rows = []
        for user in range(users):
            if rng.random() > 0.8:
                continue
            moment = start + dt.timedelta(days=day, seconds=int(rng.integers(0, 80_000)))
            fresh = [i for i in hot if i not in clicked[user]]
            picks = [int(rng.choice(fresh))] if fresh and rng.random() < 0.85 else []
            picks += [int(rng.choice(item_ids[:-6]))] if rng.random() < 0.3 else []
            shown = sorted(set(rng.choice(item_ids, 5, replace=False).tolist()) | set(picks))
            for position, item in enumerate(shown, 1):
                at = moment + dt.timedelta(seconds=position)
                rows.append((user, item, S.IMPRESSION, at, position))
                if item in picks:
                    rows.append((user, item, S.CLICK, at + dt.timedelta(seconds=30), position))
                    clicked[user].add(item)
        frame = pl.DataFrame(
            rows,
            schema={S.USER_ID: pl.Int64, S.ITEM_ID: pl.Int64, S.EVENT: pl.String, S.TIMESTAMP: pl.Datetime("us"), S.POSITION: pl.Int32},
            orient="row",
        )
        frame.write_parquet(folder / "events" / f"{start + dt.timedelta(days=day):%Y-%m-%d}.parquet")
    return folder


@pytest.fixture(scope="module")
def shop(tmp_path_factory) -> Path:
    return hot_items_shop(tmp_path_factory.mktemp("hot-shop"))


@pytest.fixture(scope="module")
def champion_registry(tmp_path_factory, shop, tiny_config) -> Path:
    """A registry whose champion learned from the days before the two held out (last night's model)."""
    folder = tmp_path_factory.mktemp("gate")
    early = folder / "events-early"
    early.mkdir()
    days = sorted((shop / "events").iterdir())
    for day in days[: len(days) - int(GATE["test_days"])]:
        shutil.copy(day, early / day.name)
    config = _configs(folder, tiny_config)
    result = run("train", "--items", shop / "items.parquet", "--events", early, "--registry", folder / "registry", "--config", config)
    assert result.exit_code == 0, result.output
    return folder / "registry"


def _configs(tmp_path: Path, tiny_config, **sections) -> Path:
    path = tmp_path / "challenger.toml"
    path.write_text(dump_toml(tiny_config.replace(retrain=GATE, **sections)), encoding="utf-8")
    return path


def test_a_worse_challenger_is_rejected_and_the_champion_kept(tmp_path, champion_registry, shop, tiny_config):
    registry = tmp_path / "registry"
    shutil.copytree(champion_registry, registry)
    # crippled candidate generation: only the text model's nearest items, no co-visitation, no popularity
    crippled = _configs(tmp_path, tiny_config, candidates={"text": 10, "covisit": 0, "popular": 0, "new": 0})
    out = tmp_path / "model"
    result = run(
        "retrain",
        "--registry",
        registry,
        "--items",
        shop / "items.parquet",
        "--events",
        shop / "events",
        "--out",
        out,
        "--config",
        crippled,
        "--device",
        "cpu",
    )
    assert result.exit_code == ChallengerRejected.exit_code == 10, result.output
    message = " ".join(line for line in result.output.splitlines() if line.startswith("recsys:"))
    assert "challenger rejected" in message and "below the champion's" in message and "champion v0001 kept" in message
    assert "Traceback" not in result.output
    assert not out.exists() and not list(tmp_path.glob(".model*")), "nothing written to --out"
    reg = Registry(registry)
    assert reg.champion == "v0001"
    assert {row["version"]: row["status"] for row in reg.list()} == {"v0001": "champion", "v0002": "rejected"}
    gate = reg.manifest("v0002")["gate"]
    assert gate["decision"] == "rejected" and gate["champion_version"] == "v0001" and gate["tolerance"] == 0.05
    assert gate["challenger"] < gate["champion"] and not gate["champion_saw_test_window"]
    assert reg.state()["history"][-1]["action"] == "reject"


def test_a_fine_challenger_is_promoted(tmp_path, champion_registry, shop, tiny_config):
    registry = tmp_path / "registry"
    shutil.copytree(champion_registry, registry)
    same = _configs(tmp_path, tiny_config)
    out = tmp_path / "model"
    result = run(
        "retrain",
        "--registry",
        registry,
        "--items",
        shop / "items.parquet",
        "--events",
        shop / "events",
        "--out",
        out,
        "--config",
        same,
        "--device",
        "cpu",
    )
    assert result.exit_code == 0, result.output
    reg = Registry(registry)
    assert reg.champion == "v0002" and reg.state()["lineage"] == ["v0001", "v0002"]
    version = reg.verify("v0002")
    assert version["parent"] == "v0001" and version["gate"]["decision"] == "promoted"
    assert version["gate"]["challenger"] >= version["gate"]["champion"] - 0.05 and not version["gate"]["champion_saw_test_window"]
    # --out holds the same MODEL_DIR, with the gate's report in its manifest
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["model_version"] == version["model_version"] and manifest["gate"]["decision"] == "promoted"
    # the challenger never saw the held-out days it was judged on
    assert manifest["data_window"]["ranker_until"] <= manifest["gate"]["cutoff"]
    assert run("models", "rollback", "--registry", registry).exit_code == 0 and reg.champion == "v0001"


def test_without_a_registry_a_rejected_challenger_leaves_model_dir_alone(tmp_path, champion_registry, shop, tiny_config):
    model = tmp_path / "model"
    shutil.copytree(Registry(champion_registry).model_dir("v0001"), model)
    before = {p.name: p.read_bytes() for p in model.iterdir() if p.is_file()}
    crippled = _configs(tmp_path, tiny_config, candidates={"text": 10, "covisit": 0, "popular": 0, "new": 0})
    # the contract's form: retrain in place
    result = run(
        "retrain",
        "--model",
        model,
        "--items",
        shop / "items.parquet",
        "--events",
        shop / "events",
        "--out",
        model,
        "--config",
        crippled,
        "--device",
        "cpu",
    )
    assert result.exit_code == 10, result.output
    assert {p.name: p.read_bytes() for p in model.iterdir() if p.is_file()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["challenger.toml", "model"], "no staging folder left"


def test_the_first_night_on_an_empty_registry_trains_the_first_champion(tmp_path, shop, tiny_config_file):
    registry = tmp_path / "registry"
    result = run(
        "retrain", "--registry", registry, "--items", shop / "items.parquet", "--events", shop / "events", "--config", tiny_config_file
    )
    assert result.exit_code == 0, result.output
    reg = Registry(registry)
    assert reg.champion == "v0001" and reg.state()["history"][-1]["reason"] == "first version of the registry"
    assert run("retrain", "--out", tmp_path / "m", "--items", shop / "items.parquet", "--events", shop / "events").exit_code == 2


def test_a_first_night_with_model_registers_it_before_the_gate(tmp_path, champion_registry, shop, tiny_config):
    """--model on an empty registry: the model becomes the first champion, so even a losing challenger leaves
    a registry that `score` can use."""
    model = tmp_path / "last-night"
    shutil.copytree(Registry(champion_registry).model_dir("v0001"), model)
    crippled = _configs(tmp_path, tiny_config, candidates={"text": 10, "covisit": 0, "popular": 0, "new": 0})
    registry = tmp_path / "new-registry"
    args = ["--items", shop / "items.parquet", "--events", shop / "events"]
    result = run("retrain", "--registry", registry, "--model", model, *args, "--config", crippled, "--device", "cpu")
    assert result.exit_code == 10, result.output
    reg = Registry(registry)
    assert reg.champion == "v0001" and reg.status("v0002") == "rejected"
    assert reg.manifest("v0001")["model_version"] == json.loads((model / "manifest.json").read_text())["model_version"]
    assert reg.manifest("v0002")["gate"]["champion_version"] == "v0001"
    scored = run("score", "--model", registry, *args, "--out", tmp_path / "recs.parquet", "--device", "cpu", "--no-cache")
    assert scored.exit_code == 0, scored.output


# --- the gate is a compare-and-swap: real processes racing on one registry --------------------------------

RACE_TIMEOUT_S = 300  # per process; a tiny retrain takes seconds


def _retrain_process(registry: Path, shop: Path, config: Path) -> CliProcess:
    return CliProcess(
        "retrain",
        "--registry",
        registry,
        "--items",
        shop / "items.parquet",
        "--events",
        shop / "events",
        "--config",
        config,
        "--device",
        "cpu",
    )


def _errors(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("recsys:")]


def _assert_gated_promotions_replaced_what_they_were_compared_with(reg: Registry) -> None:
    promotions = [entry for entry in reg.state()["history"] if entry["action"] == "promote"]
    assert promotions
    for entry in promotions:
        if entry["reason"].startswith("retrain gate"):
            assert entry["gated_against"] is not None or entry["previous"] is None
            assert entry["previous"] == entry["gated_against"], entry
            assert entry["comparison"]["metric"] == "ndcg@10" and entry["comparison"]["challenger"] is not None


@pytest.mark.parametrize("round_", range(2))  # a bounded number of rounds, each two processes
def test_two_retrains_started_together_promote_at_most_one_challenger(tmp_path, champion_registry, shop, tiny_config, round_):
    registry = tmp_path / "registry"
    shutil.copytree(champion_registry, registry)
    config = _configs(tmp_path, tiny_config)
    processes = [_retrain_process(registry, shop, config) for _ in range(2)]
    results = [p.finish(timeout=RACE_TIMEOUT_S) for p in processes]
    codes = sorted(code for code, _ in results)
    # both challengers pass the gate against v0001; the first to finish promotes, the other finds the champion moved
    assert codes == [0, 11], results
    loser = next(stderr for code, stderr in results if code == 11)
    assert len(_errors(loser)) == 1 and "not v0001 that this challenger was compared with" in _errors(loser)[0], loser
    assert "Traceback" not in loser
    reg = Registry(registry)
    assert reg.version_names() == ["v0001", "v0002"], "the loser registered nothing"
    assert reg.champion == "v0002" and reg.manifest("v0002")["gate"]["champion_version"] == "v0001"
    assert not list((registry / "versions").glob(".staging-*")), "no staging folder left"
    _assert_gated_promotions_replaced_what_they_were_compared_with(reg)


def test_a_promote_during_a_retrain_makes_the_retrain_give_way(tmp_path, champion_registry, shop, tiny_config_file, tiny_config):
    registry = tmp_path / "registry"
    shutil.copytree(champion_registry, registry)
    early = tmp_path / "events-early"
    early.mkdir()
    for day in sorted((shop / "events").iterdir())[:-2]:
        shutil.copy(day, early / day.name)
    assert (
        run("train", "--items", shop / "items.parquet", "--events", early, "--registry", registry, "--config", tiny_config_file).exit_code
        == 0
    )
    assert Registry(registry).status("v0002") == "candidate"

    retrain = _retrain_process(registry, shop, _configs(tmp_path, tiny_config))
    retrain.wait_for_line("challenger: training on events before", timeout=RACE_TIMEOUT_S)  # it has read the champion
    promoted = subprocess.run(
        [sys.executable, "-m", "recsys.cli", "models", "promote", "v0002", "--registry", str(registry)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert promoted.returncode == 0, promoted.stderr
    code, stderr = retrain.finish(timeout=RACE_TIMEOUT_S)
    assert code == 11, stderr
    assert "the champion is now v0002, not v0001" in stderr and "Traceback" not in stderr
    reg = Registry(registry)
    assert reg.champion == "v0002" and reg.version_names() == ["v0001", "v0002"]
    history = reg.state()["history"]
    assert history[-1]["action"] == "promote" and history[-1]["version"] == "v0002" and history[-1]["previous"] == "v0001"
    _assert_gated_promotions_replaced_what_they_were_compared_with(reg)
