"""What MODEL_DIR and EXPORT_DIR hold, spelled once: written by training and export, read by export,
serving, the item-vector cache and the registry (docs/ARCHITECTURE.md, "Artifacts"). Every folder
also holds `manifest.json` (`recsys.contracts.files.MANIFEST`) listing the sha256 of its files."""

from __future__ import annotations

# --- MODEL_DIR (`recsys train`): the torch side ------------------------------------------------------
MODEL_KIND = "recsys-model"
TEXT_MODEL_FILE = "text_model.safetensors"
CONFIG_FILE = "config.toml"
ENCODER_DIR = "encoder"
ENCODER_CONFIG = f"{ENCODER_DIR}/config.json"
ENCODER_TOKENIZER = f"{ENCODER_DIR}/tokenizer.json"
TEXT_MODEL_FILES = (TEXT_MODEL_FILE, CONFIG_FILE, ENCODER_CONFIG, ENCODER_TOKENIZER)
RANKER_FILE = "ranker.txt"  # LightGBM text, in both folders
RANKER_FEATURES_FILE = "ranker_features.json"
PARITY_TEXTS_FILE = "parity_texts.json"
METRICS_FILE = "metrics.json"

# --- EXPORT_DIR (`recsys export`): what serving runs ---------------------------------------------------
EXPORT_KIND = "recsys-export"
ITEM_ENCODER, USER_ENCODER, SCORER = "item_encoder", "user_encoder", "scorer"
GRAPHS = {
    ITEM_ENCODER: {
        "inputs": {"input_ids": ["batch", "tokens"], "attention_mask": ["batch", "tokens"]},
        "outputs": {"item_vector": ["batch", "dim"]},
    },
    USER_ENCODER: {
        "inputs": {"history": ["batch", "history", "dim"], "history_mask": ["batch", "history"]},
        "outputs": {"user_vector": ["batch", "dim"]},
    },
    SCORER: {
        "inputs": {"user_vector": ["batch", "dim"], "item_vectors": ["batch", "candidates", "dim"]},
        "outputs": {"p_click": ["batch", "candidates"], "p_purchase": ["batch", "candidates"], "similarity": ["batch", "candidates"]},
    },
}
TOKENIZER_FILE = "tokenizer.json"
SERVING_CONFIG_FILE = "serving_config.json"

# --- a registry version folder -------------------------------------------------------------------------
VERSION_KIND = "recsys-model-version"
MODEL_SUBDIR, EXPORT_SUBDIR = "model", "export"


def graph_file(name: str) -> str:
    """The ONNX file of graph `name` in an EXPORT_DIR."""
    if name not in GRAPHS:
        raise KeyError(f"unknown graph {name!r}; the export has {', '.join(GRAPHS)}")
    return f"{name}.onnx"
