"""Domain-adaptive pretraining of the encoder on the catalog before fine-tuning: contrastive
(`train.contrastive_epochs`) or masked language modelling (`train.mlm_epochs`).

Gururangan et al. (2020) show that continuing a pretrained encoder's objective on in-domain text helps
downstream tasks. MLM broke the mean-pooled geometry that all-MiniLM-L6-v2's contrastive training gave
it (docs/ARCHITECTURE.md, "Training"), so the contrastive variant keeps that objective and changes only
the pairs: an item's title with its own description (two views of one item, as in SimCSE / CoCondenser)
and items one user clicked one after the other (behaviour the text should explain).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import polars as pl

from recsys.contracts import schema as S
from recsys.contracts.config import Config
from serving.text import ItemTokenizer, clean_text


def mask_tokens(
    input_ids: np.ndarray,
    attention_mask: np.ndarray,
    *,
    mask_id: int,
    vocab_size: int,
    special_ids: set[int],
    rng: np.random.Generator,
    probability: float = 0.15,
):
    """BERT's masking: 15% of real tokens are targets; of those 80% [MASK], 10% random, 10% unchanged."""
    labels = input_ids.copy()
    candidates = (attention_mask == 1) & ~np.isin(input_ids, list(special_ids))
    chosen = candidates & (rng.random(input_ids.shape) < probability)
    labels[~chosen] = -100
    masked = input_ids.copy()
    roll = rng.random(input_ids.shape)
    masked[chosen & (roll < 0.8)] = mask_id
    random_tokens = chosen & (roll >= 0.8) & (roll < 0.9)
    masked[random_tokens] = rng.integers(0, vocab_size, size=int(random_tokens.sum()))
    return masked, labels


def adapt_encoder(encoder_folder: Path, texts: list[str], config: Config, *, progress=None, out_folder: Path | None = None) -> Path:
    """Run `config.train.mlm_epochs` of MLM on `texts`; returns a folder holding the adapted encoder."""
    import torch
    from transformers import AutoModelForMaskedLM
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    torch.manual_seed(config.train.seed)
    rng = np.random.default_rng(config.train.seed)
    mlm = AutoModelForMaskedLM.from_pretrained(str(encoder_folder), attn_implementation="eager")  # the MLM head starts fresh
    tokenizer = ItemTokenizer(encoder_folder / "tokenizer.json", config.model.max_length)
    raw = tokenizer._tokenizer
    special = {raw.token_to_id(t) for t in ("[CLS]", "[SEP]", "[PAD]") if raw.token_to_id(t) is not None}
    mask_id = raw.token_to_id("[MASK]")
    tokens = tokenizer.encode(texts)
    optimizer = torch.optim.AdamW(mlm.parameters(), lr=5e-5, weight_decay=0.01)
    batch_size = 32
    steps = config.train.mlm_epochs * ((len(tokens) + batch_size - 1) // batch_size)
    step = 0
    mlm.train()
    for _ in range(config.train.mlm_epochs):
        order = rng.permutation(len(tokens))
        for start in range(0, len(order), batch_size):
            batch = tokenizer.pad([tokens[i] for i in order[start : start + batch_size]])
            masked, labels = mask_tokens(
                batch.input_ids, batch.attention_mask, mask_id=mask_id, vocab_size=mlm.config.vocab_size, special_ids=special, rng=rng
            )
            if (labels != -100).sum() == 0:
                continue
            loss = mlm(
                input_ids=torch.from_numpy(masked), attention_mask=torch.from_numpy(batch.attention_mask), labels=torch.from_numpy(labels)
            ).loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            if progress:
                progress("pretrain (MLM)", step, steps)
    return _save_encoder(mlm.base_model, encoder_folder, out_folder)


def _save_encoder(encoder, encoder_folder: Path, out_folder: Path | None) -> Path:
    """The adapted encoder and the original tokenizer in `out_folder` (a new temporary folder if None)."""
    out = out_folder or Path(tempfile.mkdtemp(prefix="recsys-dapt-"))
    encoder.save_pretrained(str(out), safe_serialization=True)
    (out / "tokenizer.json").write_bytes((encoder_folder / "tokenizer.json").read_bytes())
    return out


CONTRASTIVE_TEMPERATURE = 0.05  # SimCSE's
CONTRASTIVE_LR = 2e-5
CONTRASTIVE_BATCH = 32  # pairs per step: 31 in-batch negatives for each side
SESSION_GAP_S = 3_600  # consecutive clicks of one user at most this far apart form a pair
PAIRS_PER_ITEM = 8  # co-click pairs an item takes part in, at most (popular items would fill every batch)


def contrastive_pairs(
    items: pl.DataFrame, events: pl.DataFrame, texts: list[str], rng: np.random.Generator
) -> tuple[list, list, np.ndarray]:
    """(left texts, right texts, (P, 2) item indices of each pair): every item's title with its own
    description, and its full text with that of the item its user clicked next within SESSION_GAP_S, each
    item in at most PAIRS_PER_ITEM of those; `texts` are the items' full texts (`serving.text.item_texts`)."""
    titles = [clean_text(t) for t in items[S.TITLE].to_list()]
    descriptions = [clean_text(d) for d in items[S.DESCRIPTION].to_list()] if S.DESCRIPTION in items.columns else [""] * len(titles)
    own = [i for i, d in enumerate(descriptions) if d and titles[i]]
    left, right = [titles[i] for i in own], [descriptions[i] for i in own]
    index = items.select(S.ITEM_ID).with_row_index("item_index")
    clicks = (
        events.filter(pl.col(S.EVENT) == S.CLICK)
        .select(S.USER_ID, S.ITEM_ID, S.TIMESTAMP)
        .join(index, on=S.ITEM_ID, how="inner")
        .sort(S.USER_ID, S.TIMESTAMP, "item_index")
    )
    follows = clicks.with_columns(
        pl.col("item_index").shift(-1).over(S.USER_ID).alias("next_index"),
        (pl.col(S.TIMESTAMP).shift(-1).over(S.USER_ID) - pl.col(S.TIMESTAMP)).dt.total_seconds().alias("gap"),
    ).filter(pl.col("next_index").is_not_null() & (pl.col("gap") <= SESSION_GAP_S) & (pl.col("item_index") != pl.col("next_index")))
    pairs = follows.select("item_index", pl.col("next_index").cast(pl.UInt32)).unique(maintain_order=True).to_numpy().astype(np.int64)
    pairs = pairs[rng.permutation(len(pairs))]
    taken = np.zeros(len(items), np.int64)
    kept = []
    for a, b in pairs:
        if taken[a] < PAIRS_PER_ITEM and taken[b] < PAIRS_PER_ITEM:
            taken[a] += 1
            taken[b] += 1
            kept.append((a, b))
    left += [texts[a] for a, _ in kept]
    right += [texts[b] for _, b in kept]
    ids = np.array([(i, i) for i in own] + kept, dtype=np.int64).reshape(-1, 2)
    return left, right, ids


def adapt_encoder_contrastive(
    encoder_folder: Path,
    items: pl.DataFrame,
    events: pl.DataFrame,
    texts: list[str],
    config: Config,
    *,
    progress=None,
    out_folder: Path | None = None,
) -> Path:
    """`config.train.contrastive_epochs` of a symmetric in-batch InfoNCE loss (temperature 0.05) between the
    mean-pooled, normalised encodings of `contrastive_pairs`; a pair's other rows that involve the same item
    are masked, not negatives. Returns a folder holding the adapted encoder."""
    import torch
    import torch.nn.functional as F
    from transformers import AutoModel
    from transformers.utils import logging as hf_logging

    from recsys.model import mean_pool

    hf_logging.set_verbosity_error()
    torch.manual_seed(config.train.seed)
    rng = np.random.default_rng(config.train.seed)
    encoder = AutoModel.from_pretrained(str(encoder_folder), attn_implementation="eager")
    tokenizer = ItemTokenizer(encoder_folder / "tokenizer.json", config.model.max_length)
    left, right, ids = contrastive_pairs(items, events, texts, rng)
    left_tokens, right_tokens = tokenizer.encode(left), tokenizer.encode(right)
    optimizer = torch.optim.AdamW(encoder.parameters(), lr=CONTRASTIVE_LR, weight_decay=0.01)
    steps = config.train.contrastive_epochs * -(-len(left) // CONTRASTIVE_BATCH)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / max(1, steps // 10)) * max(0.0, 1 - s / steps))

    def encode(tokens: list) -> torch.Tensor:
        batch = tokenizer.pad(tokens)
        mask = torch.from_numpy(batch.attention_mask)
        hidden = encoder(input_ids=torch.from_numpy(batch.input_ids), attention_mask=mask).last_hidden_state
        return F.normalize(mean_pool(hidden, mask), dim=-1)

    step = 0
    encoder.train()
    for _ in range(config.train.contrastive_epochs):
        order = rng.permutation(len(left))
        for start in range(0, len(order), CONTRASTIVE_BATCH):
            rows = order[start : start + CONTRASTIVE_BATCH]
            if len(rows) < 2:
                continue
            a, b = encode([left_tokens[i] for i in rows]), encode([right_tokens[i] for i in rows])
            logits = a @ b.T / CONTRASTIVE_TEMPERATURE  # (B, B): row i's positive is column i
            pair = torch.from_numpy(ids[rows])
            shared = (pair[:, None, :, None] == pair[None, :, None, :]).flatten(2).any(-1)  # rows i, j share an item
            logits = logits.masked_fill(shared & ~torch.eye(len(rows), dtype=torch.bool), float("-inf"))
            target = torch.arange(len(rows))
            loss = (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            step += 1
            if progress:
                progress("pretrain (contrastive)", step, steps)
    return _save_encoder(encoder, encoder_folder, out_folder)
