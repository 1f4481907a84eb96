"""Torch → ONNX: three graphs (item encoder, user interest, scorer), optimised, optionally quantised,
checked against PyTorch, and described by a manifest with the sha256 of every file.

The item graph is the expensive one (the Transformer) and runs once per item; the user and scorer
graphs are small and run per user / per (user, candidate) pair.
"""

from __future__ import annotations

import datetime as dt
import shutil
import tempfile
import warnings
from pathlib import Path

import numpy as np

from recsys import __version__
from recsys.contracts import layout
from recsys.contracts.errors import ArtifactError, ParityError
from recsys.contracts.files import MANIFEST, atomic_dir, file_entries, read_json, verify_files, write_json
from recsys.contracts.layout import GRAPHS, ITEM_ENCODER, SCORER, USER_ENCODER, graph_file

PRECISIONS = ("fp32", "fp16", "int8")
OPSET = 17
FP32_TOLERANCE = 1e-4  # max abs difference, torch vs ORT fp32, on real inputs
MIN_COSINE = {"fp32": 0.9999, "fp16": 0.999, "int8": 0.98}  # mean cosine of item vectors vs torch fp32


def _wrappers(model):
    import torch
    from torch import nn

    class ItemGraph(nn.Module):
        def __init__(self):
            super().__init__()
            self.items = model.items

        def forward(self, input_ids, attention_mask):
            return self.items(input_ids, attention_mask)

    class UserGraph(nn.Module):
        def __init__(self):
            super().__init__()
            self.users = model.users

        def forward(self, history, history_mask):
            return self.users(history, history_mask > 0.5)

    class ScorerGraph(nn.Module):
        def __init__(self):
            super().__init__()
            self.scorer = model.scorer

        def forward(self, user_vector, item_vectors):
            out = self.scorer(user_vector, item_vectors)
            return out.p_click, out.p_purchase, out.similarity

    del torch
    return {ITEM_ENCODER: ItemGraph(), USER_ENCODER: UserGraph(), SCORER: ScorerGraph()}


def _sample_inputs(model, tokenizer, texts: list[str]):
    import torch

    batch = tokenizer.pad(tokenizer.encode(texts[:8]))
    dim, length = model.config.dim, model.config.history_length
    g = torch.Generator().manual_seed(0)
    history = torch.nn.functional.normalize(torch.randn(2, length, dim, generator=g), dim=-1)
    mask = torch.ones(2, length)
    mask[1, 3:] = 0
    users = torch.nn.functional.normalize(torch.randn(2, dim, generator=g), dim=-1)
    items = torch.nn.functional.normalize(torch.randn(2, 5, dim, generator=g), dim=-1)
    return {
        ITEM_ENCODER: (torch.from_numpy(batch.input_ids), torch.from_numpy(batch.attention_mask)),
        USER_ENCODER: (history, mask),
        SCORER: (users, items),
    }


def export_graphs(model, tokenizer, texts: list[str], folder: Path) -> None:
    """Export the three fp32 graphs (dynamic batch, token and candidate axes) and the tokenizer."""
    import torch

    shutil.copyfile(tokenizer.path, folder / layout.TOKENIZER_FILE)
    model.eval()
    inputs = _sample_inputs(model, tokenizer, texts)
    for name, module in _wrappers(model).items():
        spec = GRAPHS[name]
        dynamic = {
            k: {i: axis for i, axis in enumerate(v) if axis in ("batch", "tokens", "candidates")}
            for k, v in {**spec["inputs"], **spec["outputs"]}.items()
        }
        with warnings.catch_warnings(), torch.inference_mode():
            warnings.simplefilter("ignore")
            # the TorchScript-based exporter: its BERT graph is the one ORT's transformer optimizer fuses
            torch.onnx.export(
                module,
                inputs[name],
                str(folder / graph_file(name)),
                input_names=list(spec["inputs"]),
                output_names=list(spec["outputs"]),
                dynamic_axes=dynamic,
                opset_version=OPSET,
                dynamo=False,
                do_constant_folding=True,
            )


def optimize_item_graph(path: Path, hidden_size: int, heads: int, precision: str) -> dict:
    """Fuse attention / layer norm / GELU with onnxruntime's transformer optimizer; fp16 keeps fp32 I/O.

    Residual + LayerNorm stays two operators in the CPU graphs (fp32, int8): onnxruntime's CPU
    SkipLayerNormalization kernel measured 65 us against 11 us for Add + LayerNormalization on a
    (1, 40, 384) tensor, a fifth of the whole int8 encoder's time. The sessions keep it that way
    (serving.onnx_model.CPU_DISABLED_OPTIMIZERS). fp16 is the CUDA graph, where the fused kernel is fast.
    """
    from onnxruntime.transformers import optimizer
    from onnxruntime.transformers.fusion_options import FusionOptions

    options = FusionOptions("bert")
    options.enable_skip_layer_norm = precision == "fp16"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        optimized = optimizer.optimize_model(
            str(path), model_type="bert", num_heads=heads, hidden_size=hidden_size, opt_level=1, optimization_options=options
        )
        fused = {k: v for k, v in optimized.get_fused_operator_statistics().items() if v}
        if precision == "fp16":
            optimized.convert_float_to_float16(keep_io_types=True)
        optimized.save_model_to_file(str(path))
    return fused


def quantize_int8(path: Path) -> None:
    """Dynamic int8 quantisation of weights, per channel (per-tensor loses too much quality here), of
    the fused attention's QKV projection as well as the other MatMuls (QAttention: +28% items/s at the
    same cosine, measured; leaving Attention out kept a quarter of the weights in fp32)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    tmp = path.with_suffix(".int8.onnx")
    import onnx

    # the fused graph holds com.microsoft operators that ONNX shape inference cannot type
    quantize_dynamic(
        str(path),
        str(tmp),
        per_channel=True,
        weight_type=QuantType.QInt8,
        op_types_to_quantize=["MatMul", "Attention"],
        extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
    )
    tmp.replace(path)
    for extra in path.parent.glob(f"{path.stem}*-opt.onnx"):
        extra.unlink()


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1) + 1e-12)


def check_parity(model, tokenizer, texts: list[str], folder: Path, precision: str) -> dict:
    """Compare every graph with PyTorch on real catalog text; raises ParityError when it does not hold."""
    import onnxruntime as ort

    from recsys.model_io import TorchInterestModel
    from serving.onnx_model import OnnxInterestModel

    torch_model = TorchInterestModel(model, tokenizer)
    onnx_model = OnnxInterestModel(folder, providers=["CPUExecutionProvider"], precision=precision, max_length=tokenizer.max_length)
    ref_items = torch_model.encode_items(texts)
    got_items = onnx_model.encode_items(texts)
    rng = np.random.default_rng(0)
    n = len(texts)
    length = model.config.history_length
    hist_idx = rng.integers(0, n, size=(32, length))
    mask = (rng.random((32, length)) < 0.7).astype(np.float32)
    mask[0] = 0  # a user with no history
    ref_users = torch_model.user_vectors(ref_items[hist_idx] * mask[..., None], mask > 0.5)
    got_users = onnx_model.user_vectors(ref_items[hist_idx] * mask[..., None], mask)
    cand = rng.integers(0, n, size=(32, min(n, 20)))
    ref_scores = torch_model.score(ref_users, ref_items[cand])
    got_scores = onnx_model.score(ref_users, ref_items[cand])
    # top-K agreement: does the ORT graph retrieve the same nearest items as torch?
    k = min(10, n - 1) if n > 1 else 1
    ref_top = np.argsort(-(ref_items @ ref_items.T), axis=1)[:, :k]
    got_top = np.argsort(-(got_items @ got_items.T), axis=1)[:, :k]
    overlap = float(np.mean([len(set(a) & set(b)) / k for a, b in zip(ref_top, got_top)]))
    report = {
        "precision": precision,
        "items_checked": n,
        "item_vector_max_abs_diff": float(np.abs(ref_items - got_items).max()),
        "item_vector_mean_cosine": float(_cosine(ref_items, got_items).mean()),
        "item_vector_min_cosine": float(_cosine(ref_items, got_items).min()),
        "item_neighbour_top10_overlap": overlap,
        "user_vector_max_abs_diff": float(np.abs(ref_users - got_users).max()),
        "p_click_max_abs_diff": float(np.abs(ref_scores[0] - got_scores[0]).max()),
        "p_purchase_max_abs_diff": float(np.abs(ref_scores[1] - got_scores[1]).max()),
        "providers": onnx_model.providers,
        "onnxruntime": ort.__version__,
    }
    if precision == "fp32":
        worst = max(
            report["item_vector_max_abs_diff"],
            report["user_vector_max_abs_diff"],
            report["p_click_max_abs_diff"],
            report["p_purchase_max_abs_diff"],
        )
        report["max_abs_diff"] = worst
        if worst > FP32_TOLERANCE:
            raise ParityError(f"ONNX fp32 graphs differ from PyTorch by {worst:.2e} (> {FP32_TOLERANCE:.0e}); the export was not written")
    if report["item_vector_mean_cosine"] < MIN_COSINE[precision]:
        raise ParityError(
            f"ONNX {precision} item vectors reach mean cosine {report['item_vector_mean_cosine']:.4f} against PyTorch (< {MIN_COSINE[precision]}); the export was not written"
        )
    return report


def export_model(model_dir: str | Path, out_dir: str | Path, *, precision: str = "fp32", log=lambda message: None) -> dict:
    """Export MODEL_DIR to EXPORT_DIR (atomically: a failed export leaves no EXPORT_DIR behind)."""
    from recsys.model_io import deterministic, load_text_model

    if precision not in PRECISIONS:
        raise ArtifactError(f"precision must be one of {', '.join(PRECISIONS)}, found '{precision}'")
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    model_manifest = verify_model_dir(model_dir)
    model, tokenizer, config = load_text_model(model_dir)
    texts = read_json(model_dir / layout.PARITY_TEXTS_FILE)
    # torch's deterministic kernels for the parity reference too: the same MODEL_DIR exports byte-identically
    with deterministic(0), atomic_dir(out_dir) as tmp:
        export_graphs(model, tokenizer, texts, tmp)
        encoder_cfg = model.items.encoder.config
        item_graph = graph_file(ITEM_ENCODER)
        fused = optimize_item_graph(
            tmp / item_graph, encoder_cfg.hidden_size, encoder_cfg.num_attention_heads, precision if precision == "fp16" else "fp32"
        )
        parity = {"fp32": check_parity(model, tokenizer, texts, tmp, "fp32")} if precision == "fp32" else {}
        if precision != "fp32":
            # fp32 parity first, on a copy, so a broken graph is caught before quantisation hides it
            with tempfile.TemporaryDirectory() as ref:
                export_graphs(model, tokenizer, texts, Path(ref))
                optimize_item_graph(Path(ref) / item_graph, encoder_cfg.hidden_size, encoder_cfg.num_attention_heads, "fp32")
                parity["fp32"] = check_parity(model, tokenizer, texts, Path(ref), "fp32")
        if precision == "int8":
            quantize_int8(tmp / item_graph)
        if precision != "fp32":
            parity[precision] = check_parity(model, tokenizer, texts, tmp, precision)
        log(
            f"parity: {parity[precision]['item_vector_mean_cosine']:.6f} mean cosine, fp32 max abs diff {parity['fp32']['max_abs_diff']:.2e}"
        )
        shutil.copyfile(model_dir / layout.RANKER_FILE, tmp / layout.RANKER_FILE)
        serving_config = {
            "max_length": config.model.max_length,
            "history_length": config.model.history_length,
            "dim": config.model.dim,
            "candidates": config.to_dict()["candidates"],
            "ranker_features": read_json(model_dir / layout.RANKER_FEATURES_FILE),
        }
        write_json(tmp / layout.SERVING_CONFIG_FILE, serving_config)
        files = sorted(p.name for p in tmp.iterdir() if p.is_file())
        manifest = {
            "kind": layout.EXPORT_KIND,
            "format_version": 1,
            "model_version": model_manifest["model_version"],
            "precision": precision,
            "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "code_version": __version__,
            "opset": OPSET,
            "graphs": GRAPHS,
            "fused_operators": fused,
            "parity": parity,
            "files": file_entries(tmp, files),
        }
        write_json(tmp / MANIFEST, manifest)
    return manifest


def verify_model_dir(model_dir: Path) -> dict:
    """Check a MODEL_DIR's files against its manifest before anything is loaded from it."""
    return verify_files(Path(model_dir), kind=layout.MODEL_KIND)
