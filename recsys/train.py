"""Fine-tune the multi-task text model on exposures (building, saving and loading it: `recsys.model_io`).

Each step encodes a batch of distinct items once, with gradients, and scores every sampled exposure of
those items. Users' histories read item vectors from a memory bank of pooled encoder outputs, refreshed
every epoch (the projection on top of it trains at every step), so the heavy encoder runs once per item
per batch and never per (user, item) pair.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import polars as pl

from recsys.contracts import schema as S
from recsys.contracts.config import Config
from recsys.contracts.errors import RecsysError
from recsys.contracts.layout import TOKENIZER_FILE
from recsys.interactions import click_log, epoch_seconds, exposures, has_impressions, user_index_of
from recsys.model_io import build_model, deterministic
from recsys.model_io import torch_module as _torch
from serving.catalog import Catalog
from serving.text import ItemTokenizer, item_texts

if TYPE_CHECKING:  # torch is imported lazily, where it is used
    import torch

Progress = Callable[[str, int, int], None]  # (stage, done, total)

POSITION_BIAS_LR = 0.03


def configure_threads(threads: int) -> None:
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # spin-waiting makes 2-core runs many times slower when shared
    torch = _torch()
    torch.set_num_threads(threads or max(1, os.cpu_count() or 1))


@dataclass
class TrainingData:
    """Everything the training loop indexes by integer: exposures, their histories and labels."""

    item_tokens: list[np.ndarray]
    exposure_item: np.ndarray  # (E,)
    history: np.ndarray  # (E, L) item indices, -1 padded
    clicked: np.ndarray  # (E,)
    purchased: np.ndarray  # (E,)
    times: np.ndarray  # (E,) seconds
    position: np.ndarray  # (E,) slate position, 0 = unknown
    sample_negatives: bool
    summary: dict = field(default_factory=dict)


def build_training_data(events: pl.DataFrame, catalog: Catalog, tokenizer: ItemTokenizer, config: Config) -> TrainingData:
    """Exposures with labels and histories (as of each exposure's own time) from canonical events."""
    users = user_index_of(events)
    log = click_log(events, catalog, users)
    exp = catalog.index_of(exposures(events)).join(users, on=S.USER_ID, how="inner").sort([S.TIMESTAMP, S.USER_ID, S.ITEM_ID])
    times = exp.select(epoch_seconds()).to_series().to_numpy()
    history = log.histories(exp["user_index"].to_numpy(), times, config.model.history_length)
    sample_negatives = not has_impressions(events)
    data = TrainingData(
        item_tokens=tokenizer.encode(item_texts(catalog.items)),
        exposure_item=exp["item_index"].to_numpy().astype(np.int64),
        history=history,
        clicked=exp["clicked"].to_numpy().astype(np.float32),
        purchased=exp["purchased"].to_numpy().astype(np.float32),
        times=times,
        position=exp[S.POSITION].fill_null(0).clip(0, None).to_numpy().astype(np.int64),
        sample_negatives=sample_negatives,
    )
    data.summary = {
        "exposures": int(len(times)),
        "clicks": int(data.clicked.sum()),
        "purchases": int(data.purchased.sum()),
        "users": int(users.height),
        "items_exposed": int(len(np.unique(data.exposure_item))),
        "negatives": "sampled in batch" if sample_negatives else "impressions",
    }
    return data


def encode_pooled(model, tokenizer: ItemTokenizer, tokens: list[np.ndarray], batch_size: int = 128) -> torch.Tensor:
    """Pooled encoder output of every item (no gradient), in input order."""
    torch = _torch()
    out = torch.zeros(len(tokens), model.items.pooled_width)
    was_training = model.training
    model.eval()
    with torch.inference_mode():
        for batch in tokenizer.batches(tokens, batch_size):
            pooled = model.items.pooled(torch.from_numpy(batch.input_ids), torch.from_numpy(batch.attention_mask))
            out[torch.from_numpy(batch.order)] = pooled
    model.train(was_training)
    return out


def _epoch_batches(
    data: TrainingData, config: Config, rng: np.random.Generator, train_rows: np.ndarray
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Groups of (distinct items, exposure rows of those items), the exposures of each item capped.

    The cap applies to a log with impressions, where sampling an item's exposures keeps its click rate; in
    a log of clicks alone every exposure is a click, and capping them would give an item clicked 500 times
    the positives of one clicked 24 times, hiding popularity from both heads (MovieLens-100k leave-one-out,
    3 seeds: NDCG@10 0.030 capped, 0.038 not; benchmarks/RESULTS.md).
    """
    items = data.exposure_item[train_rows]
    order = np.argsort(items, kind="stable")
    sorted_items = items[order]
    unique, starts, counts = np.unique(sorted_items, return_index=True, return_counts=True)
    cap = None if data.sample_negatives else config.train.exposures_per_item
    chosen_rows: list[np.ndarray] = []
    for start, count in zip(starts, counts):
        rows = train_rows[order[start : start + count]]
        if cap is not None and count > cap:
            rows = rng.choice(rows, cap, replace=False)
        chosen_rows.append(rows)
    perm = rng.permutation(len(unique))
    size = config.train.items_per_batch
    batches = []
    for begin in range(0, len(perm), size):
        group = perm[begin : begin + size]
        batches.append((unique[group], np.concatenate([chosen_rows[g] for g in group])))
    return batches


def train_text_model(
    events: pl.DataFrame,
    catalog: Catalog,
    config: Config,
    *,
    encoder_folder: Path,
    model=None,
    progress: Progress | None = None,
    log: Callable[[str], None] = lambda message: None,
    replica: tuple[int, int] = (0, 1),
):
    """Fine-tune (or, with `model`, warm-start) the text model; returns (model, tokenizer, history dict).

    Bit-reproducible on CPU for the same inputs, config and `train.seed` (`recsys.model_io.deterministic`).
    `replica` = (rank, world) for data-parallel training in an initialised `torch.distributed` group:
    every replica starts from the same weights (same seed), draws the same batches, takes its share of each
    (`_replica_share`) and applies the gradient averaged over all replicas, so all stay identical and take
    the steps one process would.
    """
    configure_threads(config.train.threads)
    with deterministic(config.train.seed):
        return _train_text_model(
            events, catalog, config, encoder_folder=encoder_folder, model=model, progress=progress, log=log, replica=replica
        )


def _average_gradients(params: list, world: int) -> None:
    """What DDP does to gradients, without its bucketing: one all-reduce of every gradient (zeros where a
    parameter had none this step, so every replica sends the same shapes), divided by the world size."""
    torch = _torch()
    import torch.distributed as dist

    flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in params])
    dist.all_reduce(flat)
    flat /= world
    offset = 0
    for p in params:
        n = p.numel()
        p.grad = flat[offset : offset + n].view_as(p).clone()
        offset += n


def _train_text_model(
    events: pl.DataFrame, catalog: Catalog, config: Config, *, encoder_folder: Path, model, progress, log, replica=(0, 1)
):
    torch = _torch()
    from recsys.model import multitask_loss

    tokenizer = ItemTokenizer(encoder_folder / TOKENIZER_FILE, config.model.max_length)
    if config.train.mlm_epochs > 0 and model is None:
        from recsys.pretrain import adapt_encoder

        encoder_folder = adapt_encoder(encoder_folder, item_texts(catalog.items), config, progress=progress)
    if config.train.contrastive_epochs > 0 and model is None:
        from recsys.pretrain import adapt_encoder_contrastive

        encoder_folder = adapt_encoder_contrastive(
            encoder_folder, catalog.items, events, item_texts(catalog.items), config, progress=progress
        )
    if model is None:
        model = build_model(config, encoder_folder)
    data = build_training_data(events, catalog, tokenizer, config)
    if len(data.clicked) == 0 or data.clicked.sum() == 0:
        raise RecsysError("the training window holds no clicks: nothing to learn from (widen the window or check the events)")
    log(f"training data: {data.summary}")

    # the newest 10% of exposures (by time) check generalisation after every epoch
    n = len(data.times)
    split = int(n * 0.9)
    train_rows, valid_rows = np.arange(split), np.arange(split, n)
    rng = np.random.default_rng(config.train.seed)
    rank, world = replica
    # every replica draws the same stream as a single process: the same batches, the same negatives
    # (`_replica_share` then gives each its part of every batch)

    encoder_params = [p for p in model.items.encoder.parameters() if p.requires_grad]
    other_params = [
        p for name, p in model.named_parameters() if p.requires_grad and not name.startswith(("items.encoder.", "position_bias."))
    ]
    groups = [{"params": other_params, "lr": config.train.head_lr}]
    # a few dozen scalars that must travel ~1-2 in log-odds within a few hundred steps: Adam moves a
    # parameter about one learning rate per step, so they get their own, larger one
    groups.append({"params": list(model.position_bias.parameters()), "lr": POSITION_BIAS_LR, "weight_decay": 0.0})
    if encoder_params:
        groups.append({"params": encoder_params, "lr": config.train.encoder_lr})
    optimizer = torch.optim.AdamW(groups, weight_decay=config.train.weight_decay)
    total_epochs = config.train.head_epochs + config.train.epochs
    head_epochs = config.train.head_epochs if encoder_params else total_epochs
    steps_per_epoch = max(1, math.ceil(len(np.unique(data.exposure_item[train_rows])) / config.train.items_per_batch))
    total_steps = steps_per_epoch * total_epochs
    # one schedule per group (docs/ARCHITECTURE.md, "Training"): the heads warm up and decay over every
    # epoch; the encoder, idle while the heads learn, warms up and decays over the fine-tuning epochs
    # alone, so it trains at its configured rate (one schedule over all epochs left it at ~5% of it)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        [
            *[linear_schedule(0, total_steps, HEAD_WARMUP)] * (len(groups) - bool(encoder_params)),
            *([linear_schedule(head_epochs * steps_per_epoch, total_steps, ENCODER_WARMUP)] if encoder_params else []),
        ],
    )

    history_log: dict[str, list] = {
        "epoch": [],
        "phase": [],
        "train_loss": [],
        "valid_click_auc": [],
        "valid_purchase_auc": [],
        "seconds": [],
    }
    step = 0
    best = {"epoch": 0, "score": -math.inf, "state": None}
    bank = _encoded_bank(model, tokenizer, data, replica)
    for epoch in range(total_epochs):
        started = time.perf_counter()
        # LP-FT (Kumar et al., 2022): heads first on a frozen encoder (cheap: pooled outputs come from the
        # bank), then the whole model, so fine-tuning starts from sensible heads instead of random ones
        fine_tune = epoch >= head_epochs and bool(encoder_params)
        if fine_tune and epoch == head_epochs and best["state"] is not None and best["epoch"] != epoch:
            # fine-tune from the heads validation liked best: the last head epoch has often begun to overfit,
            # and fine-tuning from there never beat the best head epoch (RESULTS.md, 9 of 9 runs)
            model.load_state_dict(best["state"])  # the encoder has not moved yet: the memory bank still holds
        model.train()
        losses = []
        for batch_items, batch_rows in _epoch_batches(data, config, rng, train_rows):
            if fine_tune:
                pooled = _pooled_batch(model, tokenizer, data, batch_items, replica)
            else:
                pooled = bank[torch.from_numpy(batch_items)]
            item_vectors = model.items.project(pooled)  # (M, D)
            local = _lookup(batch_items, data.exposure_item[batch_rows])
            neg = None
            if data.sample_negatives and len(batch_items) > 1:
                k = config.train.negatives_per_positive
                neg = rng.integers(0, len(batch_items) - 1, size=(len(batch_rows), k))
                neg = neg + (neg >= local[:, None])  # skip the exposure's own item
            mine, scales = _replica_share(data, batch_rows, replica)
            rows, local = batch_rows[mine], local[mine]
            user_vectors = _user_vectors(model, bank, data.history[rows])  # (E, D)
            candidates = [local[:, None]]
            labels_click = [data.clicked[rows][:, None]]
            labels_buy = [data.purchased[rows][:, None]]
            if neg is not None:
                candidates.append(neg[mine])
                labels_click.append(np.zeros((len(rows), k), np.float32))
                labels_buy.append(np.zeros((len(rows), k), np.float32))
            cand = torch.from_numpy(np.concatenate(candidates, 1))  # (E, 1+k)
            out = model.scorer(user_vectors, item_vectors[cand])
            shift = torch.zeros(out.click_logit.shape)
            shift[:, 0] = model.position_bias(torch.from_numpy(data.position[rows]))
            out.click_logit = out.click_logit + shift  # the shown slot's position explains part of the click
            if config.train.retrieval_negatives == "catalog":
                # every item is a negative: the bank's items projected now, the batch's own from this step's pass
                retrieval_items = model.items.project(bank).index_copy(0, torch.from_numpy(batch_items), item_vectors)
                positive = torch.from_numpy(np.where(data.clicked[rows] > 0, data.exposure_item[rows], -1))
            else:
                retrieval_items = item_vectors
                positive = torch.from_numpy(np.where(data.clicked[rows] > 0, local, -1))
            loss = multitask_loss(
                model,
                out,
                torch.from_numpy(np.concatenate(labels_click, 1)),
                torch.from_numpy(np.concatenate(labels_buy, 1)),
                user_vectors,
                retrieval_items,
                positive,
                config,
                scales=scales,
            )
            if len(rows) == 0:  # a batch too small to give this replica an exposure: a zero gradient, in step with the others
                loss.total = item_vectors.sum() * 0.0
            optimizer.zero_grad(set_to_none=True)
            loss.total.backward()
            if world > 1:
                _average_gradients([p for g in groups for p in g["params"]], world)
            torch.nn.utils.clip_grad_norm_([p for g in groups for p in g["params"]], 1.0)
            optimizer.step()
            scheduler.step()
            losses.append(float(loss.total.detach()))
            step += 1
            if progress:
                progress("train", step, total_steps)
        if fine_tune:
            bank = _encoded_bank(model, tokenizer, data, replica)  # the encoder moved: refresh the memory bank
        valid = evaluate_exposures(model, tokenizer, data, valid_rows, bank=bank)
        history_log["epoch"].append(epoch + 1)
        history_log["phase"].append("fine-tune" if fine_tune else "heads")
        history_log["train_loss"].append(float(np.mean(losses)) if losses else float("nan"))
        history_log["valid_click_auc"].append(valid["click_auc"])
        history_log["valid_purchase_auc"].append(valid["purchase_auc"])
        history_log["seconds"].append(round(time.perf_counter() - started, 2))
        log(
            f"epoch {epoch + 1} ({history_log['phase'][-1]}): loss {history_log['train_loss'][-1]:.4f}, valid click AUC {valid['click_auc']:.4f}, purchase AUC {valid['purchase_auc']:.4f}"
        )
        score = validation_score(valid)
        if fine_tune and config.train.keep == "best-fine-tuned" and epoch == head_epochs:
            best = {"epoch": 0, "score": -math.inf, "state": None}  # only fine-tuned epochs compete from here
        if score > best["score"] or best["state"] is None:  # NaN (one class in validation): the last epoch
            best = {"epoch": epoch + 1, "score": score, "state": {k: v.detach().clone() for k, v in model.state_dict().items()}}
    if best["state"] is not None and best["epoch"] != total_epochs:
        model.load_state_dict(best["state"])  # the epoch validation liked best, not merely the last one
        log(f"kept epoch {best['epoch']} (best validation), not the last ({total_epochs})")
    history_log["best_epoch"] = best["epoch"]
    if head_epochs > 1 and best["epoch"] >= head_epochs:
        # the heads never peaked: on a log of clicks alone the default head epochs stop far short (RESULTS.md)
        log(f"validation still improved at the last head epoch ({head_epochs}): more train.head_epochs may help")
    model.eval()
    return model, tokenizer, {"data": data.summary, "curves": history_log}


HEAD_WARMUP = 0.06  # share of all steps
ENCODER_WARMUP = 0.1  # share of the fine-tuning steps


def linear_schedule(start: int, stop: int, warmup_share: float) -> Callable[[int], float]:
    """LR multiplier at step s: 0 before `start`, linear warm-up over `warmup_share` of [start, stop), then
    linear decay to 5% at `stop`."""
    span = max(1, stop - start)
    warmup = max(1, int(warmup_share * span))

    def factor(step: int) -> float:
        if step < start:
            return 0.0
        s = step - start
        return min(1.0, (s + 1) / warmup) * max(0.05, 1 - s / span)

    return factor


def validation_score(valid: dict[str, float]) -> float:
    """Which epoch to keep: the click AUC on the newest exposures, the purchase AUC breaking ties."""
    click, buy = valid["click_auc"], valid["purchase_auc"]
    if not math.isfinite(click):
        return -math.inf
    return click + 1e-3 * (buy if math.isfinite(buy) else 0.0)


def _replica_share(data: TrainingData, rows: np.ndarray, replica: tuple[int, int]) -> tuple[np.ndarray | slice, dict[str, float] | None]:
    """(this replica's part of a batch's exposure rows, its loss scales). Data parallelism splits each batch:
    replica r takes rows r, r + world, … and weighs each loss term by world × its share of the batch's
    terms (rows for click and purchase, clicks for retrieval), so that the gradient averaged over the
    replicas is the gradient of the whole batch's loss: the same steps, batches and negatives as one
    process, at one replica's share of the work. Only dropout masks and the order of sums differ. Taking
    whole batches per replica instead doubled the batch and halved the steps at the same learning rate
    (valid purchase AUC −0.031 with two workers: benchmarks/RESULTS.md)."""
    rank, world = replica
    if world == 1:
        return slice(None), None
    mine = np.arange(rank, len(rows), world)
    clicks = data.clicked[rows] > 0
    share = world * len(mine) / max(len(rows), 1)
    return mine, {"click": share, "purchase": share, "retrieval": world * clicks[mine].sum() / max(clicks.sum(), 1)}


def _pooled_batch(model, tokenizer: ItemTokenizer, data: TrainingData, batch_items: np.ndarray, replica: tuple[int, int]):
    """Pooled encoder outputs of a fine-tuning batch's items (M, H), with gradients. With several replicas
    each encodes items r, r + world, … (its slice padded to an equal length) and the slices are gathered
    with `torch.distributed.nn.functional.all_gather`, whose backward returns to each replica the gradient
    of every replica's loss through its own items: the encoder's work is divided, its gradient is whole."""
    torch = _torch()
    rank, world = replica

    def encode(items: np.ndarray):
        tokens = tokenizer.pad([data.item_tokens[i] for i in items])
        return model.items.pooled(torch.from_numpy(tokens.input_ids), torch.from_numpy(tokens.attention_mask))

    if world == 1:
        return encode(batch_items)
    from torch.distributed.nn.functional import all_gather

    width = -(-len(batch_items) // world)
    own = batch_items[rank::world]
    gathered = all_gather(encode(np.concatenate([own, np.repeat(batch_items[:1], width - len(own))])))  # world × (width, H)
    return torch.cat(gathered)[torch.from_numpy(_dealt_order(len(batch_items), world, width))]


def _encoded_bank(model, tokenizer: ItemTokenizer, data: TrainingData, replica: tuple[int, int]):
    """The memory bank: every item's pooled encoder output (no gradient). With several replicas each encodes
    items r, r + world, … and the slices are gathered, so refreshing the bank costs each 1/world of it."""
    rank, world = replica
    if world == 1:
        return encode_pooled(model, tokenizer, data.item_tokens)
    torch = _torch()
    n = len(data.item_tokens)
    width = -(-n // world)
    own = encode_pooled(model, tokenizer, data.item_tokens[rank::world])
    own = torch.cat([own, own.new_zeros(width - len(own), own.shape[1])])  # equal shapes for the gather
    gathered = [torch.empty_like(own) for _ in range(world)]
    torch.distributed.all_gather(gathered, own)
    return torch.cat(gathered)[torch.from_numpy(_dealt_order(n, world, width))]


def _dealt_order(n: int, world: int, width: int) -> np.ndarray:
    """Where item j of n, dealt round-robin to `world` slices of `width` rows, sits in the slices stacked."""
    j = np.arange(n)
    return (j % world) * width + j // world


def _lookup(batch_items: np.ndarray, items: np.ndarray) -> np.ndarray:
    order = np.argsort(batch_items)
    return order[np.searchsorted(batch_items[order], items)]


def _user_vectors(model, bank, history: np.ndarray):
    """User vectors from the bank's pooled outputs of history items, projected with gradients."""
    torch = _torch()
    unique, inverse = np.unique(np.where(history < 0, 0, history), return_inverse=True)
    projected = model.items.project(bank[torch.from_numpy(unique)])  # (U, D)
    vectors = projected[torch.from_numpy(inverse.reshape(history.shape))]  # (E, L, D)
    mask = torch.from_numpy(history >= 0)
    return model.users(vectors * mask.unsqueeze(-1), mask)


def evaluate_exposures(model, tokenizer: ItemTokenizer, data: TrainingData, rows: np.ndarray, bank=None) -> dict[str, float]:
    """AUC of p_click and p_purchase on held-out exposures (with sampled negatives when needed)."""
    torch = _torch()
    from recsys.metrics import auc

    if len(rows) == 0:
        return {"click_auc": float("nan"), "purchase_auc": float("nan")}
    model.eval()
    with torch.inference_mode():
        bank = encode_pooled(model, tokenizer, data.item_tokens) if bank is None else bank
        vectors = model.items.project(bank)  # (N, D)
        rng = np.random.default_rng(0)
        hist = data.history[rows]
        mask = torch.from_numpy(hist >= 0)
        users = model.users(vectors[torch.from_numpy(np.where(hist < 0, 0, hist))] * mask.unsqueeze(-1), mask)
        items = data.exposure_item[rows][:, None]
        click, buy = data.clicked[rows][:, None], data.purchased[rows][:, None]
        if data.sample_negatives:
            neg = rng.integers(0, len(vectors), size=(len(rows), 4))
            items = np.concatenate([items, neg], 1)
            click = np.concatenate([click, np.zeros_like(neg, dtype=np.float32)], 1)
            buy = np.concatenate([buy, np.zeros_like(neg, dtype=np.float32)], 1)
        out = model.scorer(users, vectors[torch.from_numpy(items)])
        p_click, p_buy = out.p_click.numpy().ravel(), out.p_purchase.numpy().ravel()
    model.train()
    return {"click_auc": auc(p_click, click.ravel()), "purchase_auc": auc(p_buy, buy.ravel())}
