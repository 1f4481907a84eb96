"""An EXPORT_DIR as a Triton Inference Server model repository (docs/ARCHITECTURE.md, "Serving").

    DIR/item_encoder/config.pbtxt, 1/model.onnx      the export's graphs, byte for byte
    DIR/user_encoder/...   DIR/scorer/...
    DIR/ranker/config.pbtxt, 1/model.onnx            LightGBM converted with onnxmltools, parity-checked
    DIR/tokenizer.json, serving_config.json, manifest.json   for the client (Triton ignores plain files)

Every config is written from the ONNX graph's own inputs and outputs (names, element types, dims past
the batch dimension), with dynamic batching. The text encoder runs on the GPU when the export is fp16,
on the CPU when it is int8, and wherever Triton finds one (KIND_AUTO) when fp32; the ranker's tree
ensemble has no CUDA kernel in ONNX Runtime and runs on the CPU. Candidate generation and the feature
join are not graphs: between the user encoder and the ranker the client (or a Python backend) does what
`serving.candidates` and `features` do, so the repository documents a request flow, not an ensemble.
"""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import numpy as np

from recsys import __version__
from recsys.contracts import layout
from recsys.contracts.errors import ParityError, UsageError
from recsys.contracts.files import MANIFEST, atomic_dir, file_entries, write_json
from serving.artifacts import read_export
from serving.ranking import rewrite_trees

TRITON_KIND = "recsys-triton-repository"
RANKER = "ranker"
MAX_BATCH = {layout.ITEM_ENCODER: 256, layout.USER_ENCODER: 1024, layout.SCORER: 256, RANKER: 8192}
QUEUE_DELAY_US = {layout.ITEM_ENCODER: 2000, layout.USER_ENCODER: 500, layout.SCORER: 500, RANKER: 500}
RANKER_TOLERANCE = 1e-4  # LightGBM scores in float64 vs the converted trees in float32
TRITON_TYPES = {1: "TYPE_FP32", 10: "TYPE_FP16", 11: "TYPE_FP64", 7: "TYPE_INT64", 6: "TYPE_INT32", 9: "TYPE_BOOL"}
REQUEST_FLOW = [
    "tokenize title + description with tokenizer.json (max_length from serving_config.json)",
    "item_encoder: input_ids, attention_mask -> item_vector, once per catalog item (cache them)",
    "user_encoder: the item vectors of the user's latest clicks (history_length, newest first) -> user_vector",
    "candidates: nearest item vectors to user_vector, co-visitation, popular and new items (serving.candidates)",
    "scorer: user_vector, candidate item_vectors -> p_click, p_purchase, similarity",
    "features: join the behavioural features in serving_config.json's ranker_features order (features.join_features)",
    "ranker: features (float32, NaN for missing) -> score; the top k by score",
]


def instance_kind(graph: str, precision: str) -> str:
    if graph == RANKER or precision == "int8":
        return "KIND_CPU"
    return "KIND_GPU" if precision == "fp16" else "KIND_AUTO"


def model_config(name: str, model, *, precision: str) -> str:
    """config.pbtxt of an ONNX model (an `onnx.ModelProto`) whose first dimension is the batch."""

    def tensors(values) -> str:
        blocks = []
        for value in values:
            tensor = value.type.tensor_type
            dims = [d.dim_value if d.HasField("dim_value") else -1 for d in tensor.shape.dim][1:]
            blocks.append(
                f'  {{\n    name: "{value.name}"\n    data_type: {TRITON_TYPES[tensor.elem_type]}\n    dims: [ {", ".join(map(str, dims))} ]\n  }}'
            )
        return ",\n".join(blocks)

    initializers = {i.name for i in model.graph.initializer}
    inputs = [v for v in model.graph.input if v.name not in initializers]
    return (
        f'name: "{name}"\n'
        f'backend: "onnxruntime"\n'
        f"max_batch_size: {MAX_BATCH[name]}\n"
        f"input [\n{tensors(inputs)}\n]\n"
        f"output [\n{tensors(model.graph.output)}\n]\n"
        f"dynamic_batching {{\n  max_queue_delay_microseconds: {QUEUE_DELAY_US[name]}\n}}\n"
        f"instance_group [\n  {{\n    kind: {instance_kind(name, precision)}\n    count: 1\n  }}\n]\n"
    )


def ranker_to_onnx(ranker_file: Path, n_features: int):
    """The LightGBM ranker as an ONNX model: input `features` (N, F) float32, output (N, 1) scores."""
    try:
        import onnxmltools
        from onnxmltools.convert.common.data_types import FloatTensorType
    except ImportError as exc:
        raise UsageError(f"--format triton converts the ranker with onnxmltools: pip install 'recsys[triton]' ({exc})") from None
    import lightgbm as lgb

    booster = lgb.Booster(model_file=str(ranker_file))
    # the converted trees compare float32 with float32: each threshold rounded down to float32 sends every
    # float32 input the way LightGBM's float64 threshold does (no float32 lies between the two)
    as_float32 = rewrite_trees([booster.model_to_string()], float32_thresholds)
    # opset 15: the newest onnxmltools' LightGBM converter supports
    return booster, onnxmltools.convert_lightgbm(
        as_float32, initial_types=[("features", FloatTensorType([None, n_features]))], target_opset=15
    )


def float32_thresholds(tree: dict[str, str]) -> None:
    """A tree's numerical thresholds (`serving.ranking.rewrite_trees`' dict of its lines) replaced by the
    largest float32 at or below each. For a float32 input x, x <= t and x <= that float32 agree, so the
    trees decide as before; the converter's cast to the nearest float32 can round a threshold up onto an
    input and send it left where LightGBM sends it right (a score 0.08 off on a real feature row).
    Categorical splits (decision_type bit 0) hold an index there and are left alone."""
    if "threshold" not in tree:  # a tree of one leaf
        return
    kinds = [int(v) for v in tree["decision_type"].split()]
    values = tree["threshold"].split()
    for j, value in enumerate(values):
        if kinds[j] & 1:
            continue
        down = np.float32(float(value))
        if float(down) > float(value):
            down = np.nextafter(down, np.float32(-np.inf))
        values[j] = repr(float(down))
    tree["threshold"] = " ".join(values)


def ranker_parity(booster, onnx_model, n_features: int, rows: int = 4096, seed: int = 0) -> dict:
    """LightGBM against ONNX Runtime on rows drawn around the trees' own split thresholds, a tenth missing."""
    import onnxruntime as ort

    rng = np.random.default_rng(seed)
    dump = booster.dump_model()["tree_info"]
    thresholds: dict[int, list[float]] = {}

    def walk(node) -> None:
        if "split_feature" in node:
            thresholds.setdefault(node["split_feature"], []).append(float(node["threshold"]))
            walk(node["left_child"])
            walk(node["right_child"])

    for tree in dump:
        walk(tree["tree_structure"])
    x = rng.normal(size=(rows, n_features))
    for feature, values in thresholds.items():
        values = np.asarray(values)
        x[:, feature] = rng.choice(values, rows) + rng.normal(scale=np.maximum(np.abs(values).mean(), 1e-3) * 0.05, size=rows)
    x[rng.random(x.shape) < 0.1] = np.nan
    x = np.clip(x, -1e38, 1e38).astype(np.float32).astype(np.float64)  # what Triton receives is float32
    expected = booster.predict(x)
    session = ort.InferenceSession(onnx_model.SerializeToString(), providers=["CPUExecutionProvider"])
    got = session.run(None, {"features": x.astype(np.float32)})[0].ravel()
    diff = float(np.abs(got - expected).max())
    groups = expected[: rows // 200 * 200].reshape(-1, 200), got[: rows // 200 * 200].reshape(-1, 200)
    top = [len(set(np.argsort(-a)[:10]) & set(np.argsort(-b)[:10])) / 10 for a, b in zip(*groups)]
    if diff > RANKER_TOLERANCE:
        raise ParityError(f"the ranker in ONNX differs from LightGBM by {diff:.2e} (tolerance {RANKER_TOLERANCE:.0e})")
    return {"rows": rows, "max_abs_diff": diff, "top10_overlap_in_groups_of_200": float(np.mean(top))}


def export_triton(export_dir: str | Path, out_dir: str | Path, *, log=lambda message: None) -> dict:
    """Write the Triton repository of a hash-checked EXPORT_DIR to `out_dir` (atomically)."""
    import onnx

    export_dir, out_dir = Path(export_dir), Path(out_dir)
    manifest, config = read_export(export_dir)
    precision = manifest["precision"]
    n_features = len(config["ranker_features"])
    booster, ranker = ranker_to_onnx(export_dir / layout.RANKER_FILE, n_features)
    parity = ranker_parity(booster, ranker, n_features)
    log(f"ranker in ONNX: max abs diff {parity['max_abs_diff']:.2e} vs LightGBM on {parity['rows']} rows")
    with atomic_dir(out_dir) as tmp:
        for graph in (layout.ITEM_ENCODER, layout.USER_ENCODER, layout.SCORER):
            (tmp / graph / "1").mkdir(parents=True)
            shutil.copyfile(export_dir / layout.graph_file(graph), tmp / graph / "1" / "model.onnx")
            model = onnx.load(str(tmp / graph / "1" / "model.onnx"), load_external_data=False)
            (tmp / graph / "config.pbtxt").write_text(model_config(graph, model, precision=precision))
        (tmp / RANKER / "1").mkdir(parents=True)
        onnx.save(ranker, str(tmp / RANKER / "1" / "model.onnx"))
        (tmp / RANKER / "config.pbtxt").write_text(model_config(RANKER, ranker, precision=precision))
        for name in (layout.TOKENIZER_FILE, layout.SERVING_CONFIG_FILE):
            shutil.copyfile(export_dir / name, tmp / name)
        files = sorted(str(p.relative_to(tmp)) for p in tmp.rglob("*") if p.is_file())
        repository = {
            "kind": TRITON_KIND,
            "format_version": 1,
            "model_version": manifest["model_version"],
            "precision": precision,
            "from_export": {name: meta["sha256"] for name, meta in manifest["files"].items()},
            "models": [layout.ITEM_ENCODER, layout.USER_ENCODER, layout.SCORER, RANKER],
            "ranker_parity": parity,
            "request_flow": REQUEST_FLOW,
            "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "code_version": __version__,
            "files": file_entries(tmp, files),
        }
        write_json(tmp / MANIFEST, repository)
    return repository
