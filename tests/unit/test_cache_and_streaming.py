"""Item-vector cache correctness, chunked scoring equal to one chunk, and resume after SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl

from recsys.contracts import schema as S
from serving.cache import ItemVectorCache
from serving.onnx_model import OnnxInterestModel


class CountingModel:
    """The real ONNX model, counting the texts it is asked to encode."""

    def __init__(self, folder):
        self.inner = OnnxInterestModel(folder)
        self.dim = self.inner.dim
        self.encoded: list[str] = []

    def encode_items(self, texts, progress=None):
        self.encoded += texts
        return self.inner.encode_items(texts)


def test_cache_encodes_only_new_or_changed_text(exported_model, tmp_path):
    model = CountingModel(exported_model)
    cache = ItemVectorCache(tmp_path, "key")
    texts = ["red running shoes", "blue wool hat", "green tea, 50 bags"]
    first, stats = cache.vectors(model, texts)
    assert stats.encoded == 3 and stats.hits == 0
    model.encoded.clear()
    changed = ["red running shoes", "blue wool hat, large", "green tea, 50 bags", "a new lamp"]
    second, stats = cache.vectors(model, changed)
    assert sorted(model.encoded) == ["a new lamp", "blue wool hat, large"]
    assert stats.hits == 2 and stats.encoded == 2 and stats.dropped == 1  # the old hat text is gone
    assert np.array_equal(second[0], first[0]) and np.array_equal(second[2], first[2])
    assert np.allclose(second, model.inner.encode_items(changed), atol=1e-5)


def test_a_corrupted_cache_is_rebuilt(exported_model, tmp_path):
    model = CountingModel(exported_model)
    cache = ItemVectorCache(tmp_path, "key")
    cache.vectors(model, ["one", "two"])
    cache.path.write_bytes(cache.path.read_bytes()[:40])  # truncated by a crash of something else
    vectors, stats = cache.vectors(model, ["one", "two"])
    assert stats.rebuilt and stats.encoded == 2 and stats.warnings
    again, stats = cache.vectors(model, ["one", "two"])
    assert stats.encoded == 0 and np.array_equal(vectors, again)


def test_vectors_do_not_depend_on_batch_neighbours(trained_model, exported_model, tmp_path):
    """An item's vector is a function of its text alone: what caching and identical reruns rely on."""
    from export.onnx_export import export_model

    export_model(trained_model, tmp_path / "int8", precision="int8")
    texts = ["short", "a much longer title about waterproof hiking boots for the mountains", "lamp", "kettle 1.7 l"]
    for folder, precision, tolerance in ((tmp_path / "int8", "int8", 0.0), (exported_model, "fp32", 1e-5)):
        model = OnnxInterestModel(folder, precision=precision)
        together = model.encode_items(texts)
        alone = np.stack([model.encode_items([t])[0] for t in texts])
        assert np.abs(together - alone).max() <= tolerance, precision


def test_chunked_scoring_equals_a_single_chunk(exported_model, tiny_shop, tmp_path):
    from recsys.jobs.score import score

    args = (exported_model, tiny_shop / "items.parquet", tiny_shop / "events")
    one = score(*args, tmp_path / "one.parquet", k=8, device="cpu", chunk_users=100_000)
    many = score(*args, tmp_path / "many.parquet", k=8, device="cpu", chunk_users=7)
    assert many["chunks"] > 10 and one["chunks"] == 1
    assert pl.read_parquet(tmp_path / "one.parquet").equals(pl.read_parquet(tmp_path / "many.parquet"))
    assert not list(tmp_path.glob(".*.parts"))


def test_sigkill_mid_run_leaves_no_partial_output_and_resume_matches(exported_model, tiny_shop, tmp_path):
    from recsys.jobs.score import score

    reference = tmp_path / "reference.parquet"
    score(exported_model, tiny_shop / "items.parquet", tiny_shop / "events", reference, k=8, device="cpu", chunk_users=3, cache_dir=None)
    out = tmp_path / "recs.parquet"
    command = [
        sys.executable,
        "-m",
        "recsys.cli",
        "score",
        "--model",
        str(exported_model),
        "--items",
        str(tiny_shop / "items.parquet"),
        "--events",
        str(tiny_shop / "events"),
        "--out",
        str(out),
        "--k",
        "8",
        "--device",
        "cpu",
        "--chunk-users",
        "3",
        "--no-cache",
    ]
    parts = tmp_path / ".recs.parquet.parts"
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=Path(__file__).resolve().parents[2])
    deadline = time.monotonic() + 300  # generous: a loaded CI machine starts the process slowly
    while time.monotonic() < deadline and process.poll() is None and len(list(parts.glob("part-*.parquet"))) < 3:
        time.sleep(0.005)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    finished = len(list(parts.glob("part-*.parquet")))
    assert finished >= 3, "the run ended before it could be killed"
    assert not out.exists(), "a partial output appeared under the final name"
    resumed = score(
        exported_model, tiny_shop / "items.parquet", tiny_shop / "events", out, k=8, device="cpu", chunk_users=3, cache_dir=None
    )
    assert resumed["resumed_chunks"] >= 3
    assert out.read_bytes() == reference.read_bytes()


def test_a_changed_input_discards_stale_parts(exported_model, tiny_shop, tmp_path):
    from recsys.jobs.score import score

    parts = tmp_path / ".recs.parquet.parts"
    parts.mkdir()
    (parts / "plan.json").write_text('{"plan": "from another run"}')
    pl.DataFrame({S.USER_ID: [1]}).write_parquet(parts / "part-00000.parquet")
    result = score(
        exported_model, tiny_shop / "items.parquet", tiny_shop / "events", tmp_path / "recs.parquet", k=4, device="cpu", chunk_users=50
    )
    assert result["resumed_chunks"] == 0
    assert pl.read_parquet(tmp_path / "recs.parquet")[S.RANK].max() == 4


def test_a_fully_cached_catalog_never_opens_the_transformer(exported_model, tmp_path):
    """The item encoder's session opens on first use, so a rerun with nothing new never loads it."""
    import pytest

    from recsys.contracts.errors import ArtifactError

    texts = ["red running shoes", "blue wool hat"]
    ItemVectorCache(tmp_path, "key").vectors(OnnxInterestModel(exported_model), texts)
    model = OnnxInterestModel(exported_model)
    vectors, stats = ItemVectorCache(tmp_path, "key").vectors(model, texts)
    assert stats.hits == 2 and "item_encoder" not in model.sessions
    model.close_item_encoder()
    with pytest.raises(ArtifactError, match="closed"):
        model.encode_items(["a lamp"])
