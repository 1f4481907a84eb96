"""`recsys export --format triton`: every config.pbtxt parses as Triton's own protobuf ModelConfig and
matches its ONNX file, every ONNX file runs in ONNX Runtime and agrees with the export (the graphs) or
with LightGBM (the converted ranker) on real feature rows. No Triton server here: not run against one."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

from recsys.cli import app
from recsys.contracts import schema as S

model_config_pb2 = pytest.importorskip("tritonclient.grpc.model_config_pb2")
text_format = pytest.importorskip("google.protobuf.text_format")
NUMPY = {"TYPE_FP32": np.float32, "TYPE_FP16": np.float16, "TYPE_INT64": np.int64, "TYPE_INT32": np.int32}


@pytest.fixture(scope="module")
def repository(exported_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("triton") / "repo"
    result = CliRunner().invoke(app, ["export", "--model", str(exported_model), "--out", str(out), "--format", "triton"])
    assert result.exit_code == 0, result.output
    return out


def test_every_config_is_a_valid_triton_config_that_matches_its_model(repository):
    import onnxruntime as ort

    from export.triton import TRITON_KIND
    from recsys.contracts.files import verify_files

    manifest = verify_files(repository, kind=TRITON_KIND)
    assert manifest["models"] == ["item_encoder", "user_encoder", "scorer", "ranker"]
    for name in manifest["models"]:
        config = text_format.Parse(
            (repository / name / "config.pbtxt").read_text(), model_config_pb2.ModelConfig()
        )  # strict: unknown fields fail
        assert config.name == name and config.backend == "onnxruntime" and config.max_batch_size > 0
        assert config.HasField("dynamic_batching")
        session = ort.InferenceSession(str(repository / name / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
        for declared, actual in ((config.input, session.get_inputs()), (config.output, session.get_outputs())):
            assert [t.name for t in declared] == [t.name for t in actual]
            for tensor, value in zip(declared, actual):
                assert len(tensor.dims) == len(value.shape) - 1  # the batch dimension is Triton's
                assert np.dtype(NUMPY[model_config_pb2.DataType.Name(tensor.data_type)]) == np.dtype(
                    {"tensor(float)": np.float32, "tensor(int64)": np.int64, "tensor(float16)": np.float16}[value.type]
                )


def _inputs(config, rng) -> dict:
    feeds = {}
    for tensor in config.input:
        shape = [3] + [d if d > 0 else 5 for d in tensor.dims]
        dtype = NUMPY[model_config_pb2.DataType.Name(tensor.data_type)]
        if tensor.name == "input_ids":
            feeds[tensor.name] = rng.integers(100, 200, shape).astype(dtype)
        elif "mask" in tensor.name:
            feeds[tensor.name] = np.ones(shape, dtype=dtype)
        else:
            feeds[tensor.name] = rng.normal(size=shape).astype(dtype)
    return feeds


def test_every_graph_runs_from_its_config_and_equals_the_export(repository, exported_model):
    import onnxruntime as ort

    rng = np.random.default_rng(0)
    for name in ("item_encoder", "user_encoder", "scorer"):
        config = text_format.Parse((repository / name / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())
        feeds = _inputs(config, rng)
        repo = ort.InferenceSession(str(repository / name / "1" / "model.onnx"), providers=["CPUExecutionProvider"]).run(None, feeds)
        export = ort.InferenceSession(str(exported_model / f"{name}.onnx"), providers=["CPUExecutionProvider"]).run(None, feeds)
        assert all(np.array_equal(a, b) for a, b in zip(repo, export))
        assert all(o.shape[0] == 3 for o in repo)


def test_the_converted_ranker_scores_real_feature_rows_as_lightgbm_does(repository, exported_model, tiny_shop):
    import onnxruntime as ort

    import features
    from recsys.jobs.serve import load_recommender
    from serving.candidates import generate_candidates
    from serving.ranking import feature_matrix

    online = load_recommender(exported_model, tiny_shop / "items.parquet", tiny_shop / "events", device="cpu")
    users = pl.Series(S.USER_ID, online.snapshot.users[S.USER_ID].head(40).to_list() + [10**6])
    cand = generate_candidates(online.model, online.snapshot, users, online.candidates, online.history_length)
    frame = features.join_features(cand.lazy(), online.tables.restrict(users, cand[S.ITEM_ID])).collect()
    rows = feature_matrix(frame, online.ranker.feature_names)
    assert np.isnan(rows).any()  # missing values take the trees' default branches in both
    sent = rows.astype(np.float32)  # what a Triton client sends: the graph's input is float32
    got = (
        ort.InferenceSession(str(repository / "ranker" / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
        .run(None, {"features": sent})[0]
        .ravel()
    )
    expected = online.ranker.booster_.predict(sent.astype(np.float64))
    assert np.abs(got - expected).max() < 1e-4  # on the rows Triton receives, the converted trees are LightGBM's
    # against `recsys score`'s float64 rows, a value that rounding to float32 moves across a split threshold
    # takes the other branch: a few rows, and the only difference (1.7% of 2,336 rows in one clean-clone run)
    assert np.mean(np.abs(got - online.ranker.predict(frame)) > 1e-4) < 0.05
    # the ONNX ranker's top 10 of every user are LightGBM's top 10 up to ties: none scores below LightGBM's
    # tenth best by more than the tolerance (rows with equal scores may come in any order)
    by_user = frame.select(S.USER_ID).with_columns(pl.Series("lgb", expected), pl.Series("onnx", got))
    for _, group in by_user.group_by(S.USER_ID):
        tenth = group["lgb"].sort(descending=True).head(10).min()
        chosen = group.sort("onnx", descending=True, maintain_order=True).head(10)
        assert chosen["lgb"].min() >= tenth - 1e-4


def test_a_threshold_between_two_float32_values_splits_float32_inputs_as_lightgbm_does(tmp_path):
    """LightGBM puts a split between 1.0 and 1.0 + 2e-7 at 1.0 + 1e-7, which rounds *up* to the float32 1 + 2⁻²³:
    that input goes right in LightGBM (it is above the float64 threshold) and, with the threshold merely cast,
    left in the converted trees. Rounded down instead, the ONNX ranker decides as LightGBM does."""
    import lightgbm as lgb
    import onnxruntime as ort

    from export.triton import float32_thresholds, ranker_to_onnx

    x = np.repeat([1.0, 1.0 + 2e-7], 50)[:, None]
    params = {"objective": "regression", "min_data_in_leaf": 1, "min_data_in_bin": 1, "num_leaves": 2, "verbose": -1}
    booster = lgb.train(params, lgb.Dataset(x, label=(x[:, 0] > 1.0).astype(float)), num_boost_round=1)
    threshold = booster.dump_model()["tree_info"][0]["tree_structure"]["threshold"]
    between = np.float32(1.0) + np.finfo(np.float32).eps  # the float32 just above 1.0
    assert 1.0 < threshold < float(between) and float(np.float32(threshold)) == float(between)
    booster.save_model(str(tmp_path / "ranker.txt"))
    original, onnx_model = ranker_to_onnx(tmp_path / "ranker.txt", 1)
    rows = np.asarray([[1.0], [float(between)], [1.0 + 4e-7]], np.float32)
    got = ort.InferenceSession(onnx_model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"features": rows})[0].ravel()
    assert np.abs(got - original.predict(rows.astype(np.float64))).max() < 1e-6
    categorical = {"threshold": "0.30000000000000004 1.0000001", "decision_type": "1 2"}
    float32_thresholds(categorical)  # a categorical split's threshold is an index: kept; the numerical one rounded down
    assert categorical["threshold"].split() == ["0.30000000000000004", repr(float(np.float32(1.0)))]
