"""Train the LightGBM LambdaRank ranker on candidates labelled by what users did next."""

from __future__ import annotations

import numpy as np
import polars as pl

from recsys import schema as S
from recsys.config import RankerConfig
from recsys.errors import RecsysError
from serving.ranking import feature_matrix

RELEVANCE = "relevance"


def relevance_labels(events: pl.DataFrame, *, start, end) -> pl.DataFrame:
    """(user_id, item_id, relevance) from the window [start, end): purchase 2 > click 1."""
    window = events.filter((pl.col(S.TIMESTAMP) >= start) & (pl.col(S.TIMESTAMP) < end) & pl.col(S.EVENT).is_in([S.CLICK, S.PURCHASE]))
    return window.group_by(S.USER_ID, S.ITEM_ID).agg(
        pl.when(pl.col(S.EVENT) == S.PURCHASE).then(2).otherwise(1).max().cast(pl.Int32).alias(RELEVANCE)
    )


class LambdaRanker:
    """LightGBM's own lambdarank objective, grouped by user; trees chosen by NDCG@10 in user-level CV."""

    def __init__(self, config: RankerConfig, feature_names: list[str] | tuple[str, ...]):
        self.config = config
        self.feature_names = list(feature_names)

    def fit(self, frame: pl.DataFrame) -> "LambdaRanker":
        """`frame`: one row per (user, candidate) with the features and a `relevance` column."""
        import lightgbm as lgb

        # group by user_id: user_index is -1 for every user without a past, so it does not identify a query
        frame = frame.filter(pl.col(RELEVANCE).max().over(S.USER_ID) > 0).sort([S.USER_ID, "item_index"])
        users = frame[S.USER_ID].unique().sort().to_numpy()
        if len(users) < 2:
            raise RecsysError("the ranker window has fewer than two users with a click among their candidates: nothing to rank (widen windows.ranker_days)")
        # the number of trees is chosen by cross-validation over users, then one model is trained on all
        # of them: a single held-out split of a few dozen users picked anywhere from 5 to 30 trees
        rng = np.random.default_rng(self.config.seed)
        folds = min(self.config.cv_folds, len(users))
        fold_of_user = dict(zip(users.tolist(), (rng.permutation(len(users)) % folds).tolist()))
        fold = frame[S.USER_ID].replace_strict(fold_of_user, return_dtype=pl.Int64).to_numpy()

        def dataset(mask: np.ndarray, reference=None):
            part = frame.filter(pl.Series(mask))
            groups = part.group_by(S.USER_ID, maintain_order=True).len()["len"].to_numpy()
            return lgb.Dataset(feature_matrix(part, self.feature_names), label=part[RELEVANCE].to_numpy(), group=groups, feature_name=self.feature_names, reference=reference, free_raw_data=False)

        params = {
            "objective": "lambdarank",
            "metric": "ndcg",
            "eval_at": [10],
            "label_gain": [0, 1, 3],  # 2^rel - 1
            "num_leaves": self.config.num_leaves,
            "learning_rate": self.config.learning_rate,
            "min_data_in_leaf": self.config.min_data_in_leaf,
            "lambda_l2": self.config.lambda_l2,
            "feature_fraction": 0.9,
            "bagging_fraction": 0.9,
            "bagging_freq": 1,
            "seed": self.config.seed,
            "deterministic": True,
            "force_row_wise": True,
            "num_threads": 0,
            "verbose": -1,
        }
        curves = []
        for k in range(folds):
            train = dataset(fold != k)
            record: dict = {}
            lgb.train(params, train, num_boost_round=self.config.n_estimators, valid_sets=[dataset(fold == k, reference=train)], valid_names=["valid"], callbacks=[lgb.record_evaluation(record)])
            curves.append(record["valid"]["ndcg@10"])
        curve = np.mean(np.asarray(curves), axis=0)
        best = int(np.argmax(curve)) + 1
        self.booster_ = lgb.train(params, dataset(np.ones(frame.height, dtype=bool)), num_boost_round=best)
        self.metrics_ = {
            "users": int(len(users)),
            "cv_folds": folds,
            "rows": int(frame.height),
            "best_iteration": best,
            "valid_ndcg@10": float(curve[best - 1]),
            "valid_ndcg@10_curve": [float(x) for x in curve],
            "valid_ndcg@10_fold_std": float(np.std([c[best - 1] for c in curves])),
            "feature_importance_gain": dict(sorted(zip(self.feature_names, map(float, self.booster_.feature_importance("gain"))), key=lambda kv: -kv[1])[:15]),
        }
        return self

    def save(self, path) -> None:
        if not hasattr(self, "booster_"):
            raise RecsysError("LambdaRanker is not fitted; call fit() first")
        self.booster_.save_model(str(path))
