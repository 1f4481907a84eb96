"""The LightGBM LambdaRank ranker: one estimator for training and scoring, its labels, its feature
matrix, and the top-K of its scores.

`LambdaRanker` follows scikit-learn's estimator contract (`fit` returns the estimator, fitted state
ends in `_`), plus `save`/`load` through LightGBM's own text format (never pickle).
"""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import polars as pl

import features
from recsys.contracts import schema as S
from recsys.contracts.config import RankerConfig
from recsys.contracts.errors import ArtifactError, RecsysError
from recsys.contracts.schema import RELEVANCE
from serving.candidates import MODEL_COLUMNS, SOURCE_COLUMNS, Snapshot

ROW = "_row"  # a frame's row number, kept through `top_k` when the frame has it
QUERY = "query_cutoff"  # in a training frame of several cutoffs: which one a row belongs to (a query is cutoff × user)
RANKER_FEATURES: tuple[str, ...] = (*MODEL_COLUMNS, *SOURCE_COLUMNS, *features.FEATURE_COLUMNS)


def relevance_labels(events: pl.DataFrame, *, start, end) -> pl.DataFrame:
    """(user_id, item_id, relevance) from the window [start, end): purchase 2 > click 1."""
    window = events.filter((pl.col(S.TIMESTAMP) >= start) & (pl.col(S.TIMESTAMP) < end) & pl.col(S.EVENT).is_in([S.CLICK, S.PURCHASE]))
    return window.group_by(S.USER_ID, S.ITEM_ID).agg(
        pl.when(pl.col(S.EVENT) == S.PURCHASE).then(2).otherwise(1).max().cast(pl.Int32).alias(RELEVANCE)
    )


def with_features(candidates: pl.DataFrame, snapshot: Snapshot) -> pl.DataFrame:
    """Candidates plus every behavioral feature as of the snapshot's cutoff (row order kept)."""
    if candidates.height == 0:
        return candidates
    out = features.pair_features(
        candidates.lazy().with_row_index("_row"), snapshot.events, snapshot.items, cutoff=snapshot.cutoff
    ).collect()
    return out.sort("_row").drop("_row")


def feature_matrix(frame: pl.DataFrame, names: list[str] | tuple[str, ...]) -> np.ndarray:
    missing = [n for n in names if n not in frame.columns]
    if missing:
        raise ArtifactError(f"the ranker expects features this code does not compute: {missing[:5]}")
    return frame.select([pl.col(n).cast(pl.Float64) for n in names]).to_numpy()


class LambdaRanker:
    """LightGBM's own lambdarank objective, grouped by user; trees chosen by NDCG@10 in user-level CV."""

    def __init__(self, config: RankerConfig | None = None, feature_names: list[str] | tuple[str, ...] = (), *, threads: int = 0):
        self.config = config or RankerConfig()
        self.feature_names = list(feature_names)
        self.threads = threads

    def fit(self, frame: pl.DataFrame, *, map_folds=None, fit_final=None) -> LambdaRanker:
        """`frame`: one row per (user, candidate) with the features and a `relevance` column.

        `map_folds(fold_curve, shared, folds)` runs the cross-validation folds — `fold_curve(*shared, k)` is
        fold k's validation NDCG@10 curve — and returns their curves in order; the default runs them here
        one after another, the Ray engine as parallel tasks. Each fold is deterministic: the same model.
        `fit_final(frame, feature_names, params, rounds)` trains the model on every user and returns the
        LightGBM booster; the default trains it here, the Ray engine can train it data-parallel.
        """
        import lightgbm as lgb

        if self.config.bag > 1:
            return self._fit_bag(frame, map_folds=map_folds, fit_final=fit_final)
        # a query is a user (at one cutoff): user_index is -1 for every user without a past, so it does not
        # identify one; folds are drawn by user, so no user is on both sides at different cutoffs
        keys = _query_keys(frame)
        frame = frame.filter(pl.col(RELEVANCE).max().over(keys) > 0).sort([*keys, "item_index"])
        users = frame[S.USER_ID].unique().sort().to_numpy()
        if len(users) < 2:
            raise RecsysError(
                "the ranker window has fewer than two users with a click among their candidates: nothing to rank (widen windows.ranker_days)"
            )
        # the number of trees is chosen by cross-validation over users, then one model is trained on all
        # of them: a single held-out split of a few dozen users picked anywhere from 5 to 30 trees
        rng = np.random.default_rng(self.config.seed)
        folds = min(self.config.cv_folds, len(users))
        fold_of_user = dict(zip(users.tolist(), (rng.permutation(len(users)) % folds).tolist()))
        fold = frame[S.USER_ID].replace_strict(fold_of_user, return_dtype=pl.Int64).to_numpy()
        params = self._params()
        shared = (frame, fold, self.feature_names, params, self.config.n_estimators)
        curves = (map_folds or _map_here)(fold_curve, shared, folds)
        curve = np.mean(np.asarray(curves), axis=0)
        best = int(np.argmax(curve)) + 1
        if fit_final is None:
            self.booster_ = lgb.train(params, dataset(frame, self.feature_names), num_boost_round=best)
        else:
            self.booster_ = fit_final(frame, self.feature_names, params, best)
        self.metrics_ = {
            "users": int(len(users)),
            "queries": int(frame.select(keys).n_unique()),
            "cv_folds": folds,
            "rows": int(frame.height),
            "best_iteration": best,
            "valid_ndcg@10": float(curve[best - 1]),
            "valid_ndcg@10_curve": [float(x) for x in curve],
            "valid_ndcg@10_fold_std": float(np.std([c[best - 1] for c in curves])),
            "feature_importance_gain": self._top_gain(),
        }
        return self

    def _fit_bag(self, frame: pl.DataFrame, *, map_folds, fit_final) -> LambdaRanker:
        """`ranker.bag` rankers with seeds seed, seed + 1, … (each with its own cross-validated tree count),
        merged into one LightGBM model whose score is their mean (`average_boosters`): everything that reads
        the ranker — scoring, explanations, the Triton export — reads one model as before."""
        members = [
            LambdaRanker(replace(self.config, seed=self.config.seed + i, bag=1), self.feature_names, threads=self.threads).fit(
                frame, map_folds=map_folds, fit_final=fit_final
            )
            for i in range(self.config.bag)
        ]
        self.booster_ = average_boosters([m.booster_ for m in members])
        self.metrics_ = members[0].metrics_ | {
            "bag": len(members),  # best_iteration and the curve stay the first member's, for the report's plot
            "bag_best_iterations": [m.metrics_["best_iteration"] for m in members],
            "trees": self.booster_.num_trees(),
            "valid_ndcg@10": float(np.mean([m.metrics_["valid_ndcg@10"] for m in members])),
            "feature_importance_gain": self._top_gain(),
        }
        return self

    def _top_gain(self, n: int = 15) -> dict[str, float]:
        """The model's `n` features of largest total split gain, largest first."""
        gains = zip(self.feature_names, map(float, self.booster_.feature_importance("gain")))
        return dict(sorted(gains, key=lambda kv: -kv[1])[:n])

    def _params(self) -> dict:
        return {
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

    @property
    def n_trees(self) -> int:
        return self._fitted().num_trees()

    def predict(self, frame: pl.DataFrame) -> np.ndarray:
        """Ranker scores of the rows of `frame` (higher is better), every tree of the model."""
        booster = self._fitted()
        if frame.height == 0:
            return np.zeros(0)
        params = {"num_threads": self.threads} if self.threads else {}
        return booster.predict(feature_matrix(frame, self.feature_names), **params)

    def contributions(self, matrix: np.ndarray) -> np.ndarray:
        """(rows, features + 1) TreeSHAP contributions of each feature to each row's score, the base value
        last; every row sums to its `predict` score (LightGBM's `pred_contrib`)."""
        params = {"num_threads": self.threads} if self.threads else {}
        return np.asarray(self._fitted().predict(matrix, pred_contrib=True, **params))

    def save(self, path: str | Path) -> None:
        self._fitted().save_model(str(path))

    @classmethod
    def load(cls, path: str | Path, feature_names: list[str] | tuple[str, ...], *, threads: int = 0) -> LambdaRanker:
        """A fitted ranker from LightGBM's text file and the feature names it was trained on."""
        import lightgbm as lgb

        path = Path(path)
        try:
            booster = lgb.Booster(model_file=str(path))
        except Exception as exc:
            raise ArtifactError(f"{path}: not a LightGBM model ({str(exc).splitlines()[0]})") from None
        if booster.num_feature() != len(feature_names):
            raise ArtifactError(f"{path}: model has {booster.num_feature()} features, ranker_features lists {len(feature_names)}")
        ranker = cls(feature_names=feature_names, threads=threads)
        ranker.booster_ = booster
        return ranker

    def _fitted(self):
        if not hasattr(self, "booster_"):
            raise RecsysError("LambdaRanker is not fitted; call fit() or load() first")
        return self.booster_


def average_boosters(boosters: list):
    """One LightGBM model that scores the mean of `boosters`' scores: their trees one after another, each
    leaf value (and internal value, which TreeSHAP's contributions read) divided by their number. Equal to
    the mean within ~1e-15 (tested)."""
    n = len(boosters)

    def divide(tree: dict[str, str]) -> None:
        for key in ("leaf_value", "internal_value"):
            if key in tree:
                tree[key] = " ".join(repr(float(v) / n) for v in tree[key].split())

    return rewrite_trees([b.model_to_string() for b in boosters], divide)


def rewrite_trees(texts: list[str], edit):
    """One LightGBM model from the model texts `texts`: their trees one after another, each tree's
    `key=value` lines handed to `edit` as a dict it may change in place, written back in LightGBM's own
    text format (trees renumbered, `tree_sizes` recomputed: the parser finds each tree by its byte size)."""
    import lightgbm as lgb

    head = texts[0].partition("\nTree=0\n")[0]
    blocks = []
    for text in texts:
        body = "Tree=0\n" + text.partition("\nTree=0\n")[2].partition("\nend of trees")[0]
        for tree in filter(None, (part.strip("\n") for part in body.split("\n\n\n"))):
            lines = tree.split("\n")[1:]  # the first is "Tree=<number>"
            keys = [line.partition("=")[0] if "=" in line else None for line in lines]
            fields = {key: line.partition("=")[2] for key, line in zip(keys, lines) if key is not None}
            edit(fields)
            lines = [line if key is None else f"{key}={fields[key]}" for key, line in zip(keys, lines)]
            blocks.append("\n".join([f"Tree={len(blocks)}", *lines]) + "\n\n\n")
    head = re.sub(r"(?m)^tree_sizes=.*$", "tree_sizes=" + " ".join(str(len(b.encode())) for b in blocks), head)
    return lgb.Booster(model_str=head + "\n" + "".join(blocks) + "end of trees\n")


def _query_keys(frame: pl.DataFrame) -> list[str]:
    return [QUERY, S.USER_ID] if QUERY in frame.columns else [S.USER_ID]


def _map_here(run, shared: tuple, folds: int) -> list:
    return [run(*shared, k) for k in range(folds)]


def query_shard(frame: pl.DataFrame, rank: int, world: int) -> pl.DataFrame:
    """Shard `rank` of `world` of a ranker frame sorted by query: every `world`-th query (cutoff × user), so
    a query's rows stay together (LambdaRank compares a query's rows with each other) and the shards hold
    similar numbers of queries."""
    keys = _query_keys(frame)
    number = frame.select(pl.struct(keys).rank("dense") - 1).to_series()
    return frame.filter(number % world == rank)


def dataset(frame: pl.DataFrame, feature_names: list[str]):
    """A LightGBM dataset of a whole ranker frame (sorted by query), grouped by query."""
    return _dataset(frame, np.ones(frame.height, dtype=bool), feature_names)


def _dataset(frame: pl.DataFrame, mask: np.ndarray, feature_names: list[str], reference=None):
    import lightgbm as lgb

    part = frame.filter(pl.Series(mask))
    groups = part.group_by(_query_keys(part), maintain_order=True).len()["len"].to_numpy()
    return lgb.Dataset(
        feature_matrix(part, feature_names),
        label=part[RELEVANCE].to_numpy(),
        group=groups,
        feature_name=feature_names,
        reference=reference,
        free_raw_data=False,
    )


def fold_curve(frame: pl.DataFrame, fold: np.ndarray, feature_names: list[str], params: dict, rounds: int, k: int) -> list[float]:
    """Validation NDCG@10 after each boosting round of a model trained without fold `k`, scored on it."""
    import lightgbm as lgb

    train = _dataset(frame, fold != k, feature_names)
    record: dict = {}
    lgb.train(
        params,
        train,
        num_boost_round=rounds,
        valid_sets=[_dataset(frame, fold == k, feature_names, reference=train)],
        valid_names=["valid"],
        callbacks=[lgb.record_evaluation(record)],
    )
    return record["valid"]["ndcg@10"]


def top_k(frame: pl.DataFrame, scores: np.ndarray, k: int) -> pl.DataFrame:
    """The best `k` candidates per user by ranker score; ties broken by p_click, then item index."""
    # only the columns of a recommendation are sorted, not the ~50 feature columns beside them
    keep = [c for c in frame.columns if c in (S.USER_ID, S.ITEM_ID, "item_index", S.P_CLICK, S.P_PURCHASE, ROW)]
    ranked = (
        frame.select(keep)
        .with_columns(pl.Series(S.SCORE, scores.astype(np.float64)))
        .sort([S.USER_ID, S.SCORE, S.P_CLICK, "item_index"], descending=[False, True, True, False])
        .with_columns(pl.int_range(1, pl.len() + 1, dtype=pl.Int32).over(S.USER_ID).alias(S.RANK))
        .filter(pl.col(S.RANK) <= k)
    )
    return ranked
