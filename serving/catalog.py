"""The catalog in a fixed order (row i is item index i) and the id → index map."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import numpy as np
import polars as pl

from recsys.contracts import schema as S


@dataclass
class Catalog:
    items: pl.DataFrame

    @property
    def ids(self) -> pl.Series:
        return self.items[S.ITEM_ID]

    def __len__(self) -> int:
        return self.items.height

    def index_of(self, frame: pl.DataFrame, column: str = S.ITEM_ID, name: str = "item_index") -> pl.DataFrame:
        """Add the catalog index of `column` (inner join: unknown items are dropped)."""
        lookup = self.items.select(pl.col(S.ITEM_ID).alias(column), pl.int_range(pl.len(), dtype=pl.Int64).alias(name))
        return frame.join(lookup, on=column, how="inner")

    def available_at(self, cutoff: datetime) -> np.ndarray:
        """Boolean mask of items that exist at `cutoff` (no created_at means always)."""
        created = self.items[S.CREATED_AT]
        return (created.is_null() | (created < cutoff)).to_numpy()


def make_catalog(items: pl.DataFrame | pl.LazyFrame) -> Catalog:
    frame = items.collect() if isinstance(items, pl.LazyFrame) else items
    return Catalog(frame.sort(S.ITEM_ID))
