"""The text model's neighbours: build it, save and load MODEL_DIR's text model, and run it behind the
`InterestModel` interface (`TorchInterestModel`) that serving, evaluation and export call.

Export depends on this module and on `recsys.model`, never on training (docs/ARCHITECTURE.md).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from recsys.contracts.config import Config, dump_toml, load_config
from recsys.contracts.errors import ArtifactError
from recsys.contracts.layout import CONFIG_FILE, ENCODER_CONFIG, ENCODER_DIR, ENCODER_TOKENIZER, TEXT_MODEL_FILE, TEXT_MODEL_FILES
from serving.text import ItemTokenizer


def torch_module():
    """torch, imported where it is used: importing this module does not load it."""
    import torch

    return torch


def set_seed(seed: int) -> None:
    import random

    torch = torch_module()
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@contextlib.contextmanager
def deterministic(seed: int) -> Iterator[None]:
    """Seed Python, numpy and torch, and run torch's deterministic kernels inside the block.

    On CPU, two trainings on the same inputs gave different weights in the last bits (a parallel
    accumulation in backward sums in thread order), enough for LightGBM to choose 62 trees one run and 67
    the next; with deterministic kernels they are bit-identical and no slower here. The previous setting
    is restored on exit, so the flag never leaks into a caller's own torch code.
    """
    torch = torch_module()
    previous = torch.are_deterministic_algorithms_enabled()
    set_seed(seed)
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous)


def build_model(config: Config, encoder_folder: Path):
    """A fresh `TextRecModel` on the pretrained encoder in `encoder_folder`, lower layers frozen as configured."""
    from recsys.encoder import load_encoder
    from recsys.model import TextRecModel

    set_seed(config.train.seed)
    model = TextRecModel(config.model, load_encoder(encoder_folder), tuple(t.name for t in config.tasks))
    model.items.freeze_lower_layers(config.model.freeze_layers)
    return model


class TorchInterestModel:
    """The `InterestModel` interface (`encode_items`, `user_vectors`, `score`) over the torch model."""

    provider = "torch-cpu"

    def __init__(self, model, tokenizer: ItemTokenizer, batch_size: int = 128):
        self.model, self.tokenizer, self.batch_size = model.eval(), tokenizer, batch_size
        self.dim = model.config.dim
        self.history_length = model.config.history_length

    def encode_items(self, texts: list[str], progress=None) -> np.ndarray:
        torch = torch_module()
        tokens = self.tokenizer.encode(texts)
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        done = 0
        with torch.inference_mode():
            for batch in self.tokenizer.batches(tokens, self.batch_size):
                out[batch.order] = self.model.items(torch.from_numpy(batch.input_ids), torch.from_numpy(batch.attention_mask)).numpy()
                done += len(batch.order)
                if progress:
                    progress("encode items", done, len(texts))
        return out

    def user_vectors(self, history: np.ndarray, history_mask: np.ndarray) -> np.ndarray:
        torch = torch_module()
        with torch.inference_mode():
            return self.model.users(torch.from_numpy(history), torch.from_numpy(history_mask)).numpy()

    def score(self, users: np.ndarray, items: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        torch = torch_module()
        with torch.inference_mode():
            out = self.model.scorer(torch.from_numpy(users), torch.from_numpy(items))
            return out.p_click.numpy(), out.p_purchase.numpy(), out.similarity.numpy()


def save_text_model(model, tokenizer: ItemTokenizer, config: Config, folder: Path) -> list[str]:
    """Weights as safetensors, resolved config as TOML, encoder config and tokenizer; returns file names."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(folder / TEXT_MODEL_FILE), metadata={"format": "pt"})
    (folder / CONFIG_FILE).write_text(dump_toml(config), encoding="utf-8")
    (folder / ENCODER_DIR).mkdir(exist_ok=True)
    model.items.encoder.config.to_json_file(str(folder / ENCODER_CONFIG))
    (folder / ENCODER_TOKENIZER).write_bytes(tokenizer.path.read_bytes())
    return list(TEXT_MODEL_FILES)


def load_text_model(folder: Path):
    """(model, tokenizer, config) rebuilt from a MODEL_DIR, without the pretrained weights' source."""
    from safetensors.torch import load_file

    from recsys.encoder import encoder_from_config
    from recsys.model import TextRecModel

    folder = Path(folder)
    for name in TEXT_MODEL_FILES:
        if not (folder / name).is_file():
            raise ArtifactError(f"{folder}: not a model folder ({name} is missing); create one with `recsys train`")
    config = load_config(folder / CONFIG_FILE)
    model = TextRecModel(config.model, encoder_from_config(folder / ENCODER_CONFIG), tuple(t.name for t in config.tasks))
    try:
        state = load_file(str(folder / TEXT_MODEL_FILE))
        missing, unexpected = model.load_state_dict(state, strict=False)
    except Exception as exc:
        raise ArtifactError(f"{folder / TEXT_MODEL_FILE}: cannot be loaded ({exc})") from None
    if missing or unexpected:
        raise ArtifactError(
            f"{folder / TEXT_MODEL_FILE}: weights do not match the model (missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
    model.eval()
    tokenizer = ItemTokenizer(folder / ENCODER_TOKENIZER, config.model.max_length)
    return model, tokenizer, config
