"""The model registry: versions with manifests, champion, promote and rollback, tampering refused; and the
reproducibility of what the tool writes (identical reruns, no pickle anywhere)."""

from __future__ import annotations

import json
import re
import shutil
import threading
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from recsys.cli import app
from recsys.contracts import schema as S
from recsys.contracts.errors import ArtifactError, RecsysError
from recsys.registry import Registry, resolve_export_dir

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[2]


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def add_version(registry: Registry, model: Path, export: Path) -> str:
    with registry.stage() as staging:
        shutil.copytree(model, staging / "model")
        shutil.copytree(export, staging / "export")
        return registry.register(staging, created_by="test")


@pytest.fixture
def three_versions(tmp_path, trained_model, exported_model) -> Registry:
    registry = Registry.create(tmp_path / "registry")
    for _ in range(3):
        add_version(registry, trained_model, exported_model)
    registry.promote("v0001", reason="first")
    return registry


def _flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 1
    path.write_bytes(bytes(data))


def test_train_into_a_registry_then_score_its_champion(tmp_path, tiny_shop, tiny_config_file):
    registry = tmp_path / "models"
    result = run(
        "train",
        "--items",
        tiny_shop / "items.parquet",
        "--events",
        tiny_shop / "events",
        "--registry",
        registry,
        "--config",
        tiny_config_file,
    )
    assert result.exit_code == 0, result.output
    assert "v0001" in result.output
    state = json.loads((registry / "registry.json").read_text())
    assert state["champion"] == "v0001" and state["lineage"] == ["v0001"]
    assert [entry["action"] for entry in state["history"]] == ["register", "promote"]
    version = json.loads((registry / "versions" / "v0001" / "version.json").read_text())
    assert {
        "model_version",
        "created_at",
        "code_version",
        "data_window",
        "inputs",
        "dropped_rows",
        "repaired_rows",
        "metrics",
        "config",
        "files",
        "precision",
    } <= set(version)
    assert set(version["files"]) == {"model/manifest.json", "export/manifest.json"}
    assert version["config"]["model"]["dim"] == 16 and version["code_version"]["recsys"]
    assert not [p for p in (registry / "versions").iterdir() if p.name.startswith(".")], "no staging folder left"

    out = tmp_path / "recs.parquet"
    result = run(
        "score",
        "--model",
        registry,
        "--items",
        tiny_shop / "items.parquet",
        "--events",
        tiny_shop / "events",
        "--out",
        out,
        "--k",
        3,
        "--device",
        "cpu",
        "--no-cache",
    )
    assert result.exit_code == 0, result.output
    assert "registry champion v0001" in result.output
    manifest = json.loads((tmp_path / "recs.manifest.json").read_text())
    assert manifest["model_version"] == version["model_version"]
    assert resolve_export_dir(registry / "versions" / "v0001") == registry / "versions" / "v0001" / "export"


def test_list_promote_and_rollback(three_versions):
    registry = three_versions.root
    listed = run("models", "list", "--registry", registry, "--json")
    assert listed.exit_code == 0, listed.output
    assert [(row["version"], row["status"]) for row in json.loads(listed.output)] == [
        ("v0001", "champion"),
        ("v0002", "candidate"),
        ("v0003", "candidate"),
    ]

    assert run("models", "promote", "v0003", "--registry", registry).exit_code == 0
    assert run("models", "promote", "v0002", "--registry", registry).exit_code == 0
    assert three_versions.champion == "v0002"
    statuses = {row["version"]: row["status"] for row in three_versions.list()}
    assert statuses == {"v0001": "previous champion", "v0002": "champion", "v0003": "previous champion"}

    result = run("models", "rollback", "--registry", registry)
    assert result.exit_code == 0, result.output
    assert "v0003 is the champion again" in " ".join(result.output.split())
    assert three_versions.champion == "v0003"
    assert {row["version"]: row["status"] for row in three_versions.list()}["v0002"] == "rolled back"
    assert run("models", "rollback", "--registry", registry).exit_code == 0
    assert three_versions.champion == "v0001"
    result = run("models", "rollback", "--registry", registry)
    assert result.exit_code == 2 and "no previous champion" in result.output
    assert [e["action"] for e in three_versions.state()["history"]][-5:] == ["promote", "promote", "promote", "rollback", "rollback"]

    table = run("models", "list", "--registry", registry)
    assert table.exit_code == 0 and "v0003" in table.output


@pytest.mark.parametrize(
    "args, code, message",
    [
        (("promote", "v0009"), 2, "no version 'v0009'"),
        (("promote", "../v0001"), 2, "no version"),
        (("promote", "v0001"), 2, "already the champion"),
    ],
)
def test_promote_mistakes_are_one_line(three_versions, args, code, message):
    result = run("models", *args, "--registry", three_versions.root)
    assert result.exit_code == code and message in result.output
    assert len(result.output.strip().splitlines()) == 1 and "Traceback" not in result.output


def test_not_a_registry(tmp_path):
    result = run("models", "list", "--registry", tmp_path)
    assert result.exit_code == 3 and "not a model registry" in result.output


@pytest.mark.parametrize("damage", ["flip export", "truncate model", "edit export manifest", "delete export file"])
def test_a_modified_or_truncated_version_is_refused(three_versions, damage):
    folder = three_versions.root / "versions" / "v0002"
    if damage == "flip export":
        target = folder / "export" / "item_encoder.onnx"
        _flip_byte(target)
    elif damage == "truncate model":
        target = folder / "model" / "text_model.safetensors"
        target.write_bytes(target.read_bytes()[:1000])
    elif damage == "edit export manifest":  # no longer the one version.json recorded
        target = folder / "export" / "manifest.json"
        manifest = json.loads(target.read_text())
        manifest["precision"] = "int8"
        target.write_text(json.dumps(manifest))
    else:
        target = folder / "export" / "ranker.txt"
        target.unlink()
    result = run("models", "promote", "v0002", "--registry", three_versions.root)
    assert result.exit_code == 3, result.output
    assert str(target) in " ".join(result.output.split()) and "Traceback" not in result.output
    assert three_versions.champion == "v0001"


def test_scoring_a_tampered_champion_is_refused(three_versions, tiny_shop, tmp_path):
    _flip_byte(three_versions.root / "versions" / "v0001" / "export" / "scorer.onnx")
    out = tmp_path / "recs.parquet"
    result = run(
        "score",
        "--model",
        three_versions.root,
        "--items",
        tiny_shop / "items.parquet",
        "--events",
        tiny_shop / "events",
        "--out",
        out,
        "--device",
        "cpu",
        "--no-cache",
    )
    assert result.exit_code == 3 and "scorer.onnx" in result.output and "modified or truncated" in result.output
    assert not out.exists()


def test_an_empty_registry_has_nothing_to_score(tmp_path, tiny_shop):
    Registry.create(tmp_path / "registry")
    with pytest.raises(ArtifactError, match="no champion"):
        resolve_export_dir(tmp_path / "registry")


def test_concurrent_registrations_get_distinct_versions(tmp_path, trained_model, exported_model):
    registry = Registry.create(tmp_path / "registry")
    versions, errors = [], []

    def register():
        try:
            versions.append(add_version(Registry(registry.root), trained_model, exported_model))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=register) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert sorted(versions) == ["v0001", "v0002", "v0003", "v0004"]
    assert [e["version"] for e in registry.state()["history"]] == sorted(versions)


def test_the_registry_index_is_checked(tmp_path):
    registry = Registry.create(tmp_path / "registry")
    (registry.root / "registry.json").write_text("{ half written")
    with pytest.raises(ArtifactError, match="registry.json: unreadable"):
        _ = registry.champion
    with pytest.raises(RecsysError):
        Registry(tmp_path / "elsewhere")


# --- reproducible, self-describing, pickle-free outputs ----------------------------------------------------


def test_two_score_runs_write_identical_recommendations(tmp_path, exported_model, tiny_shop):
    outputs = []
    for run_number, cache in enumerate(("--no-cache", tmp_path / "cache", tmp_path / "cache")):
        out = tmp_path / f"run{run_number}" / "recommendations.parquet"
        cache_args = ["--no-cache"] if cache == "--no-cache" else ["--cache-dir", cache]
        result = run(
            "score",
            "--model",
            exported_model,
            "--items",
            tiny_shop / "items.parquet",
            "--events",
            tiny_shop / "events",
            "--out",
            out,
            "--k",
            10,
            "--device",
            "cpu",
            *cache_args,
        )
        assert result.exit_code == 0, result.output
        outputs.append(out.read_bytes())
        assert sorted(p.name for p in out.parent.iterdir()) == ["recommendations.manifest.json", "recommendations.parquet"], (
            "no temp files left"
        )
    assert outputs[0] == outputs[1] == outputs[2]
    recs = pl.read_parquet(tmp_path / "run0" / "recommendations.parquet")
    assert recs.height > 0 and recs.columns == list(S.RECOMMENDATION_COLUMNS)


def test_nothing_is_deserialized_with_pickle():
    pattern = re.compile(r"\bimport pickle\b|\bpickle\.loads?\(|\bjoblib\b|torch\.load\(|allow_pickle\s*=\s*True|\bdill\b|cloudpickle")
    sources = [p for folder in ("recsys", "serving", "export", "features") for p in (ROOT / folder).rglob("*.py")]
    assert len(sources) > 20
    offenders = [
        f"{p.relative_to(ROOT)}:{n}" for p in sources for n, line in enumerate(p.read_text().splitlines(), 1) if pattern.search(line)
    ]
    assert offenders == []


def test_resolving_a_registry_imports_no_torch():
    import subprocess
    import sys

    code = "import sys\nimport recsys.registry\nprint(sorted(m for m in ('torch', 'transformers') if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert result.stdout.strip() == "[]"
