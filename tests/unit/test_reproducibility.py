"""Same inputs, config and seed: byte-identical MODEL_DIR and EXPORT_DIR on CPU and the same model version;
another seed: another model. Manifests may differ only in what describes the run (when, how long)."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
import torch
from typer.testing import CliRunner

from export.onnx_export import export_model
from recsys.cli import app
from recsys.jobs.common import train_model_dir
from recsys.model_io import deterministic
from recsys.train import train_text_model
from serving.catalog import make_catalog

RUN_FIELDS = {"created_at", "timings_s"}  # the manifest's record of the run, not of the model


def files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def manifest_without_run_fields(folder: Path) -> dict:
    return {k: v for k, v in json.loads((folder / "manifest.json").read_text()).items() if k not in RUN_FIELDS}


@pytest.fixture(scope="module")
def three_models(tmp_path_factory, tiny_shop, tiny_config):
    """Two trainings with one seed, one with another, each exported."""
    root = tmp_path_factory.mktemp("repro")
    for name, seed in (("a", 11), ("b", 11), ("c", 12)):
        train_model_dir(tiny_shop / "items.parquet", tiny_shop / "events", root / f"model-{name}", tiny_config.with_seed(seed))
        export_model(root / f"model-{name}", root / f"export-{name}")
    return root


@pytest.mark.parametrize("kind", ["model", "export"])
def test_one_seed_gives_byte_identical_folders(three_models, kind):
    a, b = files(three_models / f"{kind}-a"), files(three_models / f"{kind}-b")
    assert a.keys() == b.keys()
    assert [name for name in a if a[name] != b[name]] == ["manifest.json"], "only the manifest records the run"
    ma, mb = manifest_without_run_fields(three_models / f"{kind}-a"), manifest_without_run_fields(three_models / f"{kind}-b")
    assert ma == mb, {key: (ma.get(key), mb.get(key)) for key in ma.keys() | mb.keys() if ma.get(key) != mb.get(key)}


def test_the_model_version_is_a_content_hash_and_the_seed_is_recorded(three_models):
    manifests = {name: json.loads((three_models / f"model-{name}" / "manifest.json").read_text()) for name in "abc"}
    assert manifests["a"]["model_version"] == manifests["b"]["model_version"] != manifests["c"]["model_version"]
    assert manifests["a"]["seed"] == {"train": 11, "ranker": 11} and manifests["c"]["seed"] == {"train": 12, "ranker": 12}
    weights = {name: (three_models / f"model-{name}" / "text_model.safetensors").read_bytes() for name in "abc"}
    assert weights["a"] == weights["b"] != weights["c"]


def test_training_runs_on_deterministic_kernels_and_restores_the_setting(tiny_shop, tiny_config, tiny_encoder):
    events = pl.read_parquet(tiny_shop / "events")
    catalog = make_catalog(pl.read_parquet(tiny_shop / "items.parquet"))
    during: list[bool] = []
    assert not torch.are_deterministic_algorithms_enabled()
    train_text_model(
        events,
        catalog,
        tiny_config,
        encoder_folder=tiny_encoder,
        progress=lambda *_: during.append(torch.are_deterministic_algorithms_enabled()),
    )
    assert during and all(during)
    assert not torch.are_deterministic_algorithms_enabled(), "the flag does not leak out of training"
    with pytest.raises(RuntimeError), deterministic(0):
        raise RuntimeError("an error inside the block")
    assert not torch.are_deterministic_algorithms_enabled()


def test_seed_on_the_command_line(tmp_path, tiny_shop, tiny_config_file):
    runner = CliRunner()
    common = [
        "train",
        "--items",
        str(tiny_shop / "items.parquet"),
        "--events",
        str(tiny_shop / "events"),
        "--config",
        str(tiny_config_file),
    ]
    for name, seed in (("x", "3"), ("y", "3")):
        result = runner.invoke(app, [*common, "--out", str(tmp_path / name), "--seed", seed])
        assert result.exit_code == 0, result.output
    x, y = (json.loads((tmp_path / n / "manifest.json").read_text()) for n in "xy")
    assert x["model_version"] == y["model_version"] and x["seed"] == {"train": 3, "ranker": 3}
    assert "--seed" in runner.invoke(app, ["retrain", "--help"]).output and "--seed" in runner.invoke(app, ["evaluate", "--help"]).output
