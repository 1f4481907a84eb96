"""ONNX export: parity with PyTorch, a manifest that lists every file, refusal of modified files."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from export.onnx_export import FP32_TOLERANCE, export_model
from recsys.contracts.errors import ArtifactError
from recsys.contracts.files import verify_files


def test_fp32_export_reproduces_pytorch(exported_model):
    manifest = json.loads((exported_model / "manifest.json").read_text())
    parity = manifest["parity"]["fp32"]
    assert parity["max_abs_diff"] <= FP32_TOLERANCE
    assert parity["item_vector_mean_cosine"] > 0.9999
    assert parity["items_checked"] > 10  # real catalog text, not a single dummy input
    assert set(manifest["files"]) >= {
        "item_encoder.onnx",
        "user_encoder.onnx",
        "scorer.onnx",
        "tokenizer.json",
        "ranker.txt",
        "serving_config.json",
    }


def test_onnx_and_torch_give_the_same_vectors_on_new_text(exported_model, trained_model):
    from recsys.model_io import TorchInterestModel, load_text_model
    from serving.onnx_model import OnnxInterestModel

    model, tokenizer, _ = load_text_model(trained_model)
    texts = ["a brand new item nobody has seen", "running shoes, blue", "x" * 5000, "emoji 🎉 and עברית text"]
    ref = TorchInterestModel(model, tokenizer).encode_items(texts)
    got = OnnxInterestModel(exported_model).encode_items(texts)
    assert np.abs(ref - got).max() < 1e-4


def test_verification_refuses_a_modified_file(exported_model, tmp_path):
    copy = tmp_path / "export"
    shutil.copytree(exported_model, copy)
    verify_files(copy, kind="recsys-export")
    graph = copy / "scorer.onnx"
    data = bytearray(graph.read_bytes())
    data[len(data) // 2] ^= 0xFF
    graph.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="scorer.onnx.*modified or truncated"):
        verify_files(copy, kind="recsys-export")


def test_verification_refuses_a_truncated_or_missing_file(exported_model, tmp_path):
    copy = tmp_path / "export"
    shutil.copytree(exported_model, copy)
    (copy / "ranker.txt").write_text((copy / "ranker.txt").read_text()[:100])
    with pytest.raises(ArtifactError, match="ranker.txt"):
        verify_files(copy, kind="recsys-export")
    (copy / "ranker.txt").unlink()
    with pytest.raises(ArtifactError, match="missing"):
        verify_files(copy, kind="recsys-export")


def test_int8_export_records_its_parity(trained_model, tmp_path):
    manifest = export_model(trained_model, tmp_path / "int8", precision="int8")
    assert manifest["precision"] == "int8"
    assert manifest["parity"]["fp32"]["max_abs_diff"] <= FP32_TOLERANCE
    assert 0.98 <= manifest["parity"]["int8"]["item_vector_mean_cosine"] <= 1.0
    import onnx

    ops = {node.op_type for node in onnx.load(tmp_path / "int8" / "item_encoder.onnx").graph.node}
    # the attention's QKV projection is quantised too; the slow CPU SkipLayerNormalization is not used
    assert "QAttention" in ops and "Attention" not in ops and "SkipLayerNormalization" not in ops


def test_unknown_precision_writes_nothing(trained_model, tmp_path):
    with pytest.raises(ArtifactError, match="precision"):
        export_model(trained_model, tmp_path / "bad", precision="int4")
    assert not (tmp_path / "bad").exists()
