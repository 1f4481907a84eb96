"""Training data without leakage, reproducible training, MODEL_DIR round trip."""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
import polars as pl
import pytest
import torch

from recsys.contracts import schema as S
from recsys.interactions import exposures
from recsys.model_io import load_text_model
from recsys.train import build_training_data, linear_schedule, train_text_model, validation_score
from serving.catalog import make_catalog
from serving.text import ItemTokenizer


def test_exposures_label_impressions_by_what_followed():
    t = dt.datetime(2026, 1, 1, 12)
    events = pl.DataFrame(
        {
            S.USER_ID: [1, 1, 1, 1, 2],
            S.ITEM_ID: [7, 7, 7, 8, 9],
            S.EVENT: ["impression", "click", "purchase", "impression", "click"],
            S.TIMESTAMP: [t, t + dt.timedelta(seconds=5), t + dt.timedelta(minutes=3), t, t],
        }
    )
    got = exposures(events).sort([S.USER_ID, S.ITEM_ID])
    assert got.select(S.USER_ID, S.ITEM_ID, "clicked", "purchased").rows() == [(1, 7, 1.0, 1.0), (1, 8, 0.0, 0.0), (2, 9, 1.0, 0.0)]


def test_training_histories_only_hold_earlier_clicks(tiny_shop, tiny_config, tiny_encoder):
    events = pl.read_parquet(tiny_shop / "events")
    catalog = make_catalog(pl.read_parquet(tiny_shop / "items.parquet"))
    tokenizer = ItemTokenizer(tiny_encoder / "tokenizer.json", 24)
    data = build_training_data(events, catalog, tokenizer, tiny_config)
    assert data.history.shape == (len(data.times), tiny_config.model.history_length)
    clicks = catalog.index_of(events.filter(pl.col(S.EVENT) == S.CLICK)).with_columns(pl.col(S.TIMESTAMP).dt.epoch("s").alias("t"))
    first_click = clicks.group_by("item_index").agg(pl.col("t").min())
    first = dict(zip(first_click["item_index"].to_list(), first_click["t"].to_list()))
    for row in np.random.default_rng(0).choice(len(data.times), 200, replace=False):
        for item in data.history[row][data.history[row] >= 0]:
            assert first[int(item)] < data.times[row]


def test_an_epoch_caps_each_items_impressions_but_keeps_every_click_of_a_log_without_them(tiny_shop, tiny_config, tiny_encoder):
    """Sampling an item's impressions keeps its click rate; sampling the clicks of a clicks-only log would not."""
    import dataclasses

    from recsys.train import _epoch_batches

    events = pl.read_parquet(tiny_shop / "events")
    catalog = make_catalog(pl.read_parquet(tiny_shop / "items.parquet"))
    tokenizer = ItemTokenizer(tiny_encoder / "tokenizer.json", 24)
    config = dataclasses.replace(tiny_config, train=dataclasses.replace(tiny_config.train, exposures_per_item=3))
    for log, capped in ((events, True), (events.filter(pl.col(S.EVENT) != S.IMPRESSION), False)):
        data = build_training_data(log, catalog, tokenizer, config)
        rows = np.arange(len(data.exposure_item))
        batches = _epoch_batches(data, config, np.random.default_rng(0), rows)
        taken = np.concatenate([r for _, r in batches])
        per_item = np.bincount(data.exposure_item[taken])
        assert len(np.unique(taken)) == len(taken)
        if capped:
            assert per_item.max() == 3 and len(taken) < len(rows)
        else:
            assert sorted(taken) == list(rows) and per_item.max() > 3


def test_training_is_reproducible(tiny_shop, tiny_config, tiny_encoder):
    events = pl.read_parquet(tiny_shop / "events")
    catalog = make_catalog(pl.read_parquet(tiny_shop / "items.parquet"))
    runs = [train_text_model(events, catalog, tiny_config, encoder_folder=tiny_encoder)[0] for _ in range(2)]
    for (name, a), (_, b) in zip(runs[0].state_dict().items(), runs[1].state_dict().items()):
        assert torch.equal(a, b), name


def test_training_says_when_the_heads_never_peaked(tiny_shop, tiny_config, tiny_encoder):
    events = pl.read_parquet(tiny_shop / "events")
    catalog = make_catalog(pl.read_parquet(tiny_shop / "items.parquet"))
    config = tiny_config.replace(train={"head_epochs": 3, "epochs": 1})
    lines: list[str] = []
    _, _, report = train_text_model(events, catalog, config, encoder_folder=tiny_encoder, log=lines.append)
    hinted = any("more train.head_epochs may help" in line for line in lines)
    assert hinted == (report["curves"]["best_epoch"] >= 3), (report["curves"], lines)


def test_model_dir_round_trip(trained_model, tiny_config):
    model, tokenizer, config = load_text_model(trained_model)
    assert config == tiny_config
    manifest = json.loads((trained_model / "manifest.json").read_text())
    assert manifest["kind"] == "recsys-model" and "text_model.safetensors" in manifest["files"]
    assert not list(trained_model.glob("*.pt")) and not list(trained_model.glob("*.pkl"))
    metrics = json.loads((trained_model / "metrics.json").read_text())
    assert len(metrics["text_model"]["curves"]["train_loss"]) == tiny_config.train.head_epochs + tiny_config.train.epochs
    curves = metrics["text_model"]["curves"]
    # the kept epoch is the one validation scored best
    scores = [
        validation_score({"click_auc": c, "purchase_auc": b}) for c, b in zip(curves["valid_click_auc"], curves["valid_purchase_auc"])
    ]
    assert curves["best_epoch"] == 1 + int(np.argmax(scores))
    window = manifest["data_window"]
    assert window["first_event"] < window["text_model_until"] < window["ranker_until"]


def test_keep_best_fine_tuned_keeps_a_fine_tuned_epoch(tiny_shop, tiny_config, tiny_encoder):
    """train.keep = "best-fine-tuned": the kept epoch is the best of the fine-tuning epochs, whatever the
    head epochs scored, and the encoder's weights are then not the pretrained ones."""
    events = pl.read_parquet(tiny_shop / "events")
    catalog = make_catalog(pl.read_parquet(tiny_shop / "items.parquet"))
    config = tiny_config.replace(train={"head_epochs": 2, "epochs": 2, "keep": "best-fine-tuned"})
    model, _, history = train_text_model(events, catalog, config, encoder_folder=tiny_encoder)
    curves = history["curves"]
    assert curves["phase"] == ["heads", "heads", "fine-tune", "fine-tune"]
    scores = [
        validation_score({"click_auc": c, "purchase_auc": b}) for c, b in zip(curves["valid_click_auc"], curves["valid_purchase_auc"])
    ]
    assert curves["best_epoch"] == 3 + int(np.argmax(scores[2:]))
    pretrained = load_text_model_encoder_weights(tiny_encoder)
    moved = [name for name, w in model.items.encoder.state_dict().items() if name in pretrained and not torch.equal(w, pretrained[name])]
    assert moved


def load_text_model_encoder_weights(folder) -> dict:
    from transformers import AutoModel

    return AutoModel.from_pretrained(folder).state_dict()


def test_encoder_schedule_starts_with_fine_tuning_and_reaches_the_configured_rate():
    heads = linear_schedule(0, 100, 0.06)
    encoder = linear_schedule(80, 100, 0.1)
    assert [encoder(s) for s in (0, 79)] == [0.0, 0.0]  # idle while the heads learn on the bank
    assert encoder(80) == 0.5 and encoder(81) == pytest.approx(0.95)  # 2 warm-up steps, then the full rate
    assert encoder(90) == 0.5 and encoder(99) == pytest.approx(0.05)  # linear decay to the floor
    assert heads(0) == pytest.approx(1 / 6) and heads(5) == pytest.approx(0.95) and heads(50) == 0.5
    assert validation_score({"click_auc": float("nan"), "purchase_auc": 0.7}) == float("-inf")


def test_rolling_cutoffs_give_the_ranker_one_query_per_user_and_cutoff(tiny_shop, tiny_config, tmp_path):
    """With windows.ranker_cutoffs = 3, each cutoff's rows exclude what the user clicked before it and are
    labelled by the clicks of its own day only."""
    from recsys.jobs.common import train_model_dir
    from serving.ranking import QUERY

    config = tiny_config.replace(windows={"ranker_days": 3.0, "ranker_cutoffs": 3})
    kept: dict = {}
    manifest = train_model_dir(tiny_shop / "items.parquet", tiny_shop / "events", tmp_path / "model", config, keep=kept)
    frame = kept["ranker_frame"]
    assert sorted(frame[QUERY].unique().to_list()) == [0, 1, 2]
    t1 = dt.datetime.fromisoformat(manifest["data_window"]["text_model_until"])
    events = pl.read_parquet(tiny_shop / "events").filter(pl.col(S.EVENT).is_in([S.CLICK, S.PURCHASE]))
    for k in range(3):
        cutoff = t1 + dt.timedelta(days=k)
        rows = frame.filter(pl.col(QUERY) == k).select(S.USER_ID, S.ITEM_ID, "relevance")
        before = events.filter(pl.col(S.TIMESTAMP) < cutoff).select(S.USER_ID, S.ITEM_ID).unique()
        assert rows.join(before, on=[S.USER_ID, S.ITEM_ID], how="semi").height == 0
        day = events.filter((pl.col(S.TIMESTAMP) >= cutoff) & (pl.col(S.TIMESTAMP) < cutoff + dt.timedelta(days=1)))
        clicked = rows.join(day.select(S.USER_ID, S.ITEM_ID).unique(), on=[S.USER_ID, S.ITEM_ID], how="semi")
        assert clicked.height > 0
        assert (clicked["relevance"] > 0).all()
        assert rows.filter(pl.col("relevance") > 0).height == clicked.height
    ranker = json.loads((tmp_path / "model" / "metrics.json").read_text())["ranker"]
    assert ranker["queries"] > ranker["users"]


def test_word_bag_trains_through_both_phases_and_exports_with_parity(tiny_shop, tiny_config, tmp_path):
    """model.word_bag: the token-embedding bag starts at zero (the plain encoder's vectors), learns in the
    head epochs from the memory bank and in fine-tuning from the tokens, and the ONNX item encoder, which
    reads the ids directly, gives the same vectors as the model that trained through the bank."""
    from export.onnx_export import FP32_TOLERANCE, export_model
    from recsys.jobs.common import train_model_dir
    from recsys.model import ItemEncoder
    from recsys.model_io import TorchInterestModel, load_text_model
    from serving.onnx_model import OnnxInterestModel

    config = tiny_config.replace(model={"word_bag": True}, train={"head_epochs": 1, "epochs": 1})
    folder = tmp_path / "model"
    train_model_dir(tiny_shop / "items.parquet", tiny_shop / "events", folder, config)
    model, tokenizer, _ = load_text_model(folder)
    assert model.items.word_bag_tokens == config.model.max_length
    assert model.items.words.weight.abs().sum() > 0  # it learnt (zero at the start)

    texts = ["a brand new item nobody has seen", "running shoes, blue", "x" * 5000]
    batch = tokenizer.pad(tokenizer.encode(texts))
    ref = TorchInterestModel(model, tokenizer).encode_items(texts)
    ids, mask = torch.from_numpy(batch.input_ids), torch.from_numpy(batch.attention_mask)
    with torch.inference_mode():  # the bank's route (pooled → project) and the export's (forward) agree
        assert torch.allclose(model.items.project(model.items.pooled(ids, mask)), model.items(ids, mask), atol=1e-6)
    plain = ItemEncoder(model.items.encoder, config.model.dim, config.model.max_length)
    plain.projection.load_state_dict(model.items.projection.state_dict())
    with torch.inference_mode():  # zero bag = the encoder alone
        probe = ids, mask
        alone = torch.nn.functional.normalize(plain.projection(plain._mean_pool(*probe)), dim=-1)
        assert torch.allclose(plain(*probe), alone, atol=1e-6)

    export = tmp_path / "export"
    export_model(folder, export, precision="fp32")
    assert np.abs(OnnxInterestModel(export).encode_items(texts) - ref).max() < max(FP32_TOLERANCE, 1e-4)


def test_catalog_retrieval_softmax_scores_every_item_with_the_clicked_one_as_target(tiny_shop, tiny_config, tiny_encoder, monkeypatch):
    """train.retrieval_negatives = "catalog": the retrieval softmax of every step (head and fine-tuning epochs)
    runs over all N items, each click's target being its own item's row; "batch" keeps the step's items."""
    import recsys.model

    events = pl.read_parquet(tiny_shop / "events")
    catalog = make_catalog(pl.read_parquet(tiny_shop / "items.parquet"))
    seen = []
    original = recsys.model.multitask_loss

    def spy(model, out, clicked, purchased, users, items, positive, config, **options):
        seen.append((items.shape[0], int(positive.max())))
        return original(model, out, clicked, purchased, users, items, positive, config, **options)

    monkeypatch.setattr(recsys.model, "multitask_loss", spy)
    for negatives in ("catalog", "batch"):
        seen.clear()
        config = tiny_config.replace(train={"retrieval_negatives": negatives})
        _, _, report = train_text_model(events, catalog, config, encoder_folder=tiny_encoder)
        assert np.isfinite(report["curves"]["train_loss"]).all()
        widths = {width for width, _ in seen}
        if negatives == "catalog":
            assert widths == {len(catalog)} and max(top for _, top in seen) >= tiny_config.train.items_per_batch
        else:
            assert max(widths) <= tiny_config.train.items_per_batch and all(top < width for width, top in seen)


def test_contrastive_pairs_are_own_descriptions_and_consecutive_clicks_within_a_session():
    from recsys.pretrain import PAIRS_PER_ITEM, contrastive_pairs

    items = pl.DataFrame(
        {
            S.ITEM_ID: ["a", "b", "c", "d"],
            S.TITLE: ["Red mug", "Blue cup", "Tea pot", "Lamp"],
            S.DESCRIPTION: ["ceramic", "", "iron", "brass"],
        }
    )
    t0 = dt.datetime(2026, 1, 1)
    at = [t0, t0 + dt.timedelta(minutes=5), t0 + dt.timedelta(hours=3), t0 + dt.timedelta(minutes=1)]
    events = pl.DataFrame(
        {
            S.USER_ID: [1, 1, 1, 2],
            S.ITEM_ID: ["a", "c", "d", "b"],  # user 1: a → c (5 min), c → d (3 h: another session); user 2: b alone
            S.EVENT: [S.CLICK] * 4,
            S.TIMESTAMP: at,
        }
    )
    texts = ["Red mug. ceramic", "Blue cup", "Tea pot. iron", "Lamp. brass"]
    left, right, ids = contrastive_pairs(items, events, texts, np.random.default_rng(0))
    assert left[:3] == ["Red mug", "Tea pot", "Lamp"] and right[:3] == ["ceramic", "iron", "brass"]  # b has no description
    assert ids.tolist() == [[0, 0], [2, 2], [3, 3], [0, 2]] and (left[3], right[3]) == (texts[0], texts[2])
    # a popular item takes part in at most PAIRS_PER_ITEM co-click pairs
    many = pl.DataFrame(
        {
            S.USER_ID: np.repeat(np.arange(30), 2),
            S.ITEM_ID: ["a", "b", "a", "c", "a", "d"] * 10,
            S.EVENT: [S.CLICK] * 60,
            S.TIMESTAMP: [t0, t0 + dt.timedelta(minutes=1)] * 30,
        }
    )
    _, _, ids = contrastive_pairs(items, many, texts, np.random.default_rng(0))
    assert len(ids) == 3 + 3 and (ids[3:] == 0).sum() <= PAIRS_PER_ITEM  # three distinct pairs, each once


def test_contrastive_pretraining_pulls_an_items_title_and_description_together(tiny_shop, tiny_config, tiny_encoder, monkeypatch):
    """Title ↔ description pairs of the tiny shop: after pretraining, an item's two texts are closer than
    before, measured as the margin of the own pair's cosine over the other items' descriptions. (The tiny
    encoder is random: it needs a larger rate than a pretrained one to move in a few steps.)"""
    monkeypatch.setattr("recsys.pretrain.CONTRASTIVE_LR", 1e-3)
    from transformers import AutoModel

    from recsys.model import mean_pool
    from recsys.pretrain import adapt_encoder_contrastive
    from serving.text import item_texts

    items = pl.read_parquet(tiny_shop / "items.parquet")
    events = pl.read_parquet(tiny_shop / "events")
    tokenizer = ItemTokenizer(tiny_encoder / "tokenizer.json", tiny_config.model.max_length)
    titles, descriptions = items[S.TITLE].to_list()[:64], items[S.DESCRIPTION].to_list()[:64]

    def margin(folder) -> float:
        encoder = AutoModel.from_pretrained(str(folder)).eval()
        with torch.no_grad():
            sides = []
            for texts in (titles, descriptions):
                batch = tokenizer.pad(tokenizer.encode(texts))
                mask = torch.from_numpy(batch.attention_mask)
                hidden = encoder(input_ids=torch.from_numpy(batch.input_ids), attention_mask=mask).last_hidden_state
                sides.append(torch.nn.functional.normalize(mean_pool(hidden, mask), dim=-1))
        cos = sides[0] @ sides[1].T
        return float(cos.diagonal().mean() - cos.mean())

    config = tiny_config.replace(train={"contrastive_epochs": 3})
    adapted = adapt_encoder_contrastive(tiny_encoder, items, events, item_texts(items), config)
    before, after = margin(tiny_encoder), margin(adapted)
    assert after > before + 0.05, (before, after)  # 0.024 → 0.457 measured
    # and the text model trains from the adapted encoder
    _, _, report = train_text_model(events, make_catalog(items), config, encoder_folder=tiny_encoder)
    assert np.isfinite(report["curves"]["train_loss"]).all()
