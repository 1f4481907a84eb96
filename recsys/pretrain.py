"""Domain-adaptive pretraining: masked language modelling on the catalog's own text before fine-tuning.

Gururangan et al. (2020) show that continuing a pretrained encoder's MLM objective on in-domain text
helps downstream tasks; here the domain is the catalog's titles and descriptions.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from recsys.contracts.config import Config
from serving.text import ItemTokenizer


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
    out = out_folder or Path(tempfile.mkdtemp(prefix="recsys-dapt-"))
    mlm.base_model.save_pretrained(str(out), safe_serialization=True)
    (out / "tokenizer.json").write_bytes((encoder_folder / "tokenizer.json").read_bytes())
    return out
