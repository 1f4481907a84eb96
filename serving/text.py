"""Item text and tokenization with `tokenizers`, shared by training and serving so both see the same ids.

Batches are formed by sorting items by token length and padding per batch: product titles are ~17 tokens,
so padding everything to a fixed length wastes most of the encoder's work.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from recsys.contracts import schema as S

_CONTROL = re.compile(r"[\u0000-\u0008\u000b-\u001f\u007f-\u009f\u200b-\u200f\u2028-\u202e\u2066-\u2069]")
_SPACE = re.compile(r"\s+")
MAX_CHARS = 4_000  # far beyond any max_length in tokens; keeps a 100k-character description cheap


def clean_text(text: str | None) -> str:
    """Normalise unicode, drop control and bidi-override characters, collapse whitespace."""
    if not text:
        return ""
    text = unicodedata.normalize("NFC", text[: MAX_CHARS * 2])
    text = _CONTROL.sub(" ", text)
    return _SPACE.sub(" ", text).strip()[:MAX_CHARS]


def item_texts(items: pl.DataFrame) -> list[str]:
    """The text the model reads for each item: title, then description (truncated by the tokenizer)."""
    titles = items[S.TITLE].to_list()
    descriptions = items[S.DESCRIPTION].to_list() if S.DESCRIPTION in items.columns else [""] * len(titles)
    texts = []
    for title, description in zip(titles, descriptions):
        title, description = clean_text(title), clean_text(description)
        texts.append(f"{title}. {description}" if description else title)
    return texts


@dataclass
class TokenBatch:
    """One padded batch: `order` are the positions of its rows in the input list."""

    order: np.ndarray  # (B,)
    input_ids: np.ndarray  # (B, T) int64
    attention_mask: np.ndarray  # (B, T) int64


class ItemTokenizer:
    """A `tokenizers.Tokenizer` set to truncate at `max_length` and never pad (we pad per batch)."""

    def __init__(self, tokenizer_file: str | Path, max_length: int):
        from tokenizers import Tokenizer

        self.path = Path(tokenizer_file)
        self.max_length = max_length
        self._tokenizer = Tokenizer.from_file(str(self.path))
        self._tokenizer.no_padding()
        self._tokenizer.enable_truncation(max_length=max_length)
        self.pad_id = self._tokenizer.token_to_id("[PAD]") or 0

    def encode(self, texts: list[str]) -> list[np.ndarray]:
        """Token ids of each text (with special tokens), unpadded."""
        return [np.asarray(e.ids, dtype=np.int64) for e in self._tokenizer.encode_batch(texts)]

    def batches(self, token_ids: list[np.ndarray], batch_size: int, *, sort: bool = True) -> Iterator[TokenBatch]:
        """Padded batches; with `sort`, items of similar length share a batch (stable, deterministic)."""
        lengths = np.fromiter((len(t) for t in token_ids), dtype=np.int64, count=len(token_ids))
        order = np.argsort(lengths, kind="stable") if sort else np.arange(len(token_ids))
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            yield self.pad([token_ids[i] for i in rows], rows)

    def fixed_batches(self, token_ids: list[np.ndarray], batch_size: int) -> Iterator[TokenBatch]:
        """Batches of exactly `batch_size` rows of one token length each (no padding); a length's last
        batch is filled with copies of its first item, which `TokenBatch.order` leaves out. Every run of
        a length then has the same shape, so an item's vector cannot depend on the items beside it: ONNX
        Runtime's fp32 GEMM picks its kernel by row count (64 items together and one at a time differed
        by 1.2e-7; two runs of 32 and one of 64 agreed)."""
        lengths = np.fromiter((len(t) for t in token_ids), dtype=np.int64, count=len(token_ids))
        order = np.argsort(lengths, kind="stable")
        bounds = np.flatnonzero(np.diff(lengths[order])) + 1
        for group in np.split(order, bounds):
            for start in range(0, len(group), batch_size):
                rows = group[start : start + batch_size]
                filled = np.concatenate([rows, np.repeat(rows[:1], batch_size - len(rows))])
                batch = self.pad([token_ids[i] for i in filled])
                yield TokenBatch(rows, batch.input_ids, batch.attention_mask)

    def pad(self, token_ids: list[np.ndarray], rows: np.ndarray | None = None) -> TokenBatch:
        width = max(len(t) for t in token_ids)
        input_ids = np.full((len(token_ids), width), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(token_ids), width), dtype=np.int64)
        for i, ids in enumerate(token_ids):
            input_ids[i, : len(ids)] = ids
            mask[i, : len(ids)] = 1
        return TokenBatch(np.arange(len(token_ids)) if rows is None else rows, input_ids, mask)
