"""Training and scoring of the sequence model (`recsys.model.SequenceRecommender`) on a leave-one-out split.

Early stopping on validation NDCG@10, measured every epoch over every user with a full ranking (the same
evaluation as the test, recsys/loo.py); the best epoch's weights are kept. Item text enters as frozen
vectors of the pretrained encoder (`recsys.encoder.text_vectors`), so the encoder runs once per item, not per step.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field

import numpy as np
import polars as pl
import torch

from recsys.contracts import schema as S
from recsys.loo import EarlyStopping, LeaveOneOut, evaluate_scorer
from recsys.model import SequenceRecommender
from serving.text import item_texts as serving_item_texts


@dataclass
class SequenceConfig:
    dim: int = 64
    layers: int = 2
    heads: int = 2
    max_len: int = 100
    dropout: float = 0.2
    use_ids: bool = True
    use_text: bool = False
    id_dropout: float = 0.0
    lr: float = 1e-3
    weight_decay: float = 0.0
    batch_size: int = 128
    max_epochs: int = 200
    patience: int = 15
    seed: int = 0


@dataclass
class Fitted:
    model: SequenceRecommender
    config: SequenceConfig
    best_epoch: int
    best_valid_ndcg: float
    curve: list[float] = field(default_factory=list)
    seconds: float = 0.0


def left_pad(sequences: list[np.ndarray], length: int) -> torch.Tensor:
    """The last `length` items of each sequence, right-aligned, padded with 0 on the left."""
    out = np.zeros((len(sequences), length), np.int64)
    for row, seq in enumerate(sequences):
        tail = seq[-length:]
        if len(tail):
            out[row, length - len(tail) :] = tail
    return torch.from_numpy(out)


def item_texts(items: pl.DataFrame, split: LeaveOneOut) -> list[str]:
    """The product's text of each item index of the split (`serving.text.item_texts`); index 0: empty."""
    ordered = pl.DataFrame({S.ITEM_ID: split.item_ids[1:]}).join(items, on=S.ITEM_ID, how="left", maintain_order="left")
    return ["", *serving_item_texts(ordered)]


def _training_pairs(split: LeaveOneOut, length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs and next-click targets over each user's training sequence: position t predicts click t + 1."""
    trains = [split.train(u) for u in range(len(split.sequences))]
    return left_pad([s[:-1] for s in trains], length), left_pad([s[1:] for s in trains], length)


def scorer(model: SequenceRecommender, split: LeaveOneOut):
    """score(users, part) for recsys.loo.evaluate_scorer."""

    def score(users: np.ndarray, part: str) -> np.ndarray:
        model.eval()
        return model.score_next(left_pad([split.history(u, part) for u in users], model.max_len)).numpy()

    return score


def fit_sequence_model(split: LeaveOneOut, config: SequenceConfig, *, text: torch.Tensor | None = None, log=None) -> Fitted:
    """Train on the training sequences; keep the epoch with the best validation NDCG@10 (patience epochs)."""
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    model = SequenceRecommender(
        split.n_items,
        dim=config.dim,
        layers=config.layers,
        heads=config.heads,
        max_len=config.max_len,
        dropout=config.dropout,
        text=text if config.use_text else None,
        use_ids=config.use_ids,
        id_dropout=config.id_dropout,
    )
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    inputs, targets = _training_pairs(split, config.max_len)
    absent = torch.from_numpy(split.cold) if split.cold is not None else None
    started = time.perf_counter()
    stopping = EarlyStopping(config.patience)
    for epoch in range(config.max_epochs):
        model.train()
        order = rng.permutation(len(inputs))
        for start in range(0, len(order), config.batch_size):
            rows = torch.from_numpy(order[start : start + config.batch_size])
            loss = model.next_item_loss(inputs[rows], targets[rows], absent)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        valid = float(evaluate_scorer(scorer(model, split), split, "valid")["ndcg@10"].mean())
        if log is not None:
            log(f"epoch {epoch + 1}: loss {loss.item():.3f}, valid NDCG@10 {valid:.4f}")
        if stopping.step(epoch, valid, lambda: copy.deepcopy(model.state_dict())):
            break
    model.load_state_dict(stopping.state)
    model.eval()
    return Fitted(model, config, stopping.best_epoch + 1, stopping.best, stopping.curve, time.perf_counter() - started)


def product_scorer(split: LeaveOneOut, events: pl.DataFrame, items: pl.DataFrame, config, *, encoder_folder, log=None):
    """The product's own text model (`recsys.train.train_text_model`, as `recsys train` fits it) on the split's
    training clicks, as a leave-one-out scorer: every item ranked by p_click for the user vector of the
    clicks before the target (at most `model.history_length`, most recent first).

    The model learns from the events of the (user, item) pairs of each training sequence (their clicks and
    purchases, with timestamps: its histories are as of each exposure), never from a validation or test click.
    Returns ({"p_click": score, "similarity": score}, the training report): each `score(users, part)` ranks
    every item by that output of the model (p_click, or the user·item similarity the retrieval softmax trains)."""
    from recsys.model_io import TorchInterestModel
    from recsys.train import train_text_model
    from serving.catalog import make_catalog

    trains = [split.train(u) for u in range(len(split.sequences))]
    pairs = pl.DataFrame(
        {S.USER_ID: np.repeat(split.user_ids, [len(t) for t in trains]), S.ITEM_ID: split.item_ids[np.concatenate(trains)]}
    ).with_columns(pl.col(S.USER_ID).cast(events[S.USER_ID].dtype), pl.col(S.ITEM_ID).cast(events[S.ITEM_ID].dtype))
    train_events = events.join(pairs, on=[S.USER_ID, S.ITEM_ID], how="semi")
    catalog = make_catalog(items)
    model, tokenizer, report = train_text_model(train_events, catalog, config, encoder_folder=encoder_folder, log=log or (lambda m: None))
    interest = TorchInterestModel(model, tokenizer)
    vectors = interest.encode_items(item_texts(items, split))  # (N + 1, D) in split order; row 0 unused
    length = config.model.history_length

    def score(users: np.ndarray, part: str, output: int) -> np.ndarray:
        out = np.empty((len(users), split.n_items + 1), np.float32)
        for start in range(0, len(users), 32):
            block = users[start : start + 32]
            recent = np.full((len(block), length), -1, np.int64)
            for row, u in enumerate(block):
                seen = split.history(u, part)[::-1][:length]  # most recent first
                recent[row, : len(seen)] = seen
            mask = recent >= 0
            history = vectors[np.where(mask, recent, 0)] * mask[..., None]
            user = interest.user_vectors(history.astype(np.float32), mask.astype(np.float32))
            out[start : start + len(block)] = interest.score(user, np.broadcast_to(vectors, (len(block), *vectors.shape)).copy())[output]
        return out

    return {"p_click": lambda users, part: score(users, part, 0), "similarity": lambda users, part: score(users, part, 2)}, report
