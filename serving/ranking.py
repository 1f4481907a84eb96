"""The LightGBM ranker at scoring time: behavioral features joined to candidates, scores, top-K."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

import features
from recsys import schema as S
from recsys.errors import ArtifactError
from serving.candidates import MODEL_COLUMNS, SOURCE_COLUMNS, Snapshot

RANKER_FEATURES: tuple[str, ...] = (*MODEL_COLUMNS, *SOURCE_COLUMNS, *features.FEATURE_COLUMNS)


def with_features(candidates: pl.DataFrame, snapshot: Snapshot) -> pl.DataFrame:
    """Candidates plus every behavioral feature as of the snapshot's cutoff (row order kept)."""
    if candidates.height == 0:
        return candidates
    out = features.pair_features(candidates.lazy().with_row_index("_row"), snapshot.events, snapshot.items, cutoff=snapshot.cutoff).collect()
    return out.sort("_row").drop("_row")


def feature_matrix(frame: pl.DataFrame, names: list[str] | tuple[str, ...]) -> np.ndarray:
    missing = [n for n in names if n not in frame.columns]
    if missing:
        raise ArtifactError(f"the ranker expects features this code does not compute: {missing[:5]}")
    return frame.select([pl.col(n).cast(pl.Float64) for n in names]).to_numpy()


class RankerModel:
    """A LightGBM booster read from its text file (never pickle)."""

    def __init__(self, path: str | Path, feature_names: list[str], threads: int = 0):
        import lightgbm as lgb

        self.path = Path(path)
        try:
            self.booster = lgb.Booster(model_file=str(self.path))
        except Exception as exc:
            raise ArtifactError(f"{self.path}: not a LightGBM model ({str(exc).splitlines()[0]})") from None
        self.feature_names = list(feature_names)
        if self.booster.num_feature() != len(self.feature_names):
            raise ArtifactError(f"{self.path}: model has {self.booster.num_feature()} features, ranker_features lists {len(self.feature_names)}")
        self.threads = threads

    def predict(self, frame: pl.DataFrame) -> np.ndarray:
        if frame.height == 0:
            return np.zeros(0)
        params = {"num_threads": self.threads} if self.threads else {}
        return self.booster.predict(feature_matrix(frame, self.feature_names), **params)


def top_k(frame: pl.DataFrame, scores: np.ndarray, k: int) -> pl.DataFrame:
    """The best `k` candidates per user by ranker score; ties broken by p_click, then item index."""
    # only the columns of a recommendation are sorted, not the ~50 feature columns beside them
    keep = [c for c in frame.columns if c in (S.USER_ID, S.ITEM_ID, "item_index", S.P_CLICK, S.P_PURCHASE)]
    ranked = (
        frame.select(keep)
        .with_columns(pl.Series(S.SCORE, scores.astype(np.float64)))
        .sort([S.USER_ID, S.SCORE, S.P_CLICK, "item_index"], descending=[False, True, True, False])
        .with_columns(pl.int_range(1, pl.len() + 1, dtype=pl.Int32).over(S.USER_ID).alias(S.RANK))
        .filter(pl.col(S.RANK) <= k)
    )
    return ranked
