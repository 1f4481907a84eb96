"""The evaluation protocol: recommend as of a cutoff, judge on the next period (the evaluate job,
`recsys.jobs.evaluate`, trains, exports and writes the report around it).

Protocol (docs/ARCHITECTURE.md, "Evaluation"). The cutoff splits the log; both stages train on the events before it only (the
text model on the oldest part, the ranker on the window just before the cutoff). Each user with a click or
purchase in [cutoff, end) on an item they had not clicked or bought before the cutoff is a query; relevance
is 2 for a purchase and 1 for a click. Every system ranks the catalog as it stood at the cutoff, minus the
user's already clicked or bought items, with nothing but pre-cutoff data; the oracle (generated data only)
ranks the same items by the generator's true probabilities.

Systems, all on the same queries and metrics, the learned ones on the same candidates:
* text model + ranker — the shipped system, through `serving.score.recommend` (what `recsys score` runs);
* text model alone — the candidates ranked by the text model's p_click, no ranker;
* ranker without text — a LambdaRank ranker trained on the same ranker frame without the text model's
  columns (p_click, p_purchase, similarity, the text-retrieval rank and the source count);
* co-visitation — items co-clicked with the user's recent clicks (summed weights), popularity fills the rest;
* popularity — the most clicked items of the last `candidates.popularity_days` days;
* perfect item factors (generated data only) — a ceiling for any item model: the true item factors,
  quality and price, each user's interest fitted to their own pre-cutoff exposures (`fit_interest`).

Slices are defined from pre-cutoff data only: cold-start items (at most COLD_ITEM_MAX clicks + purchases
before the cutoff, items created after it included), new users (at most NEW_USER_MAX), each domain and
category. An item slice keeps every system's full top-K and counts only hits on the slice's items; a user
slice keeps the queries of those users.

`evaluate_export` is the one function that turns an EXPORT_DIR into test metrics: the demo, `recsys
evaluate` and the retrain gate all call it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from recsys.contracts import schema as S
from recsys.contracts.config import Config
from recsys.contracts.errors import RecsysError
from recsys.contracts.timeline import just_after, parse_moment, time_bounds
from recsys.data import Dataset
from recsys.interactions import exposures, has_impressions
from recsys.metrics import auc, catalog_coverage, per_user_ndcg, ranking_metrics
from serving.artifacts import load_export
from serving.candidates import MODEL_COLUMNS, SOURCE_TYPES, TEXT_SOURCES, build_snapshot, generate_candidates, user_vectors
from serving.catalog import Catalog, make_catalog
from serving.ranking import RANKER_FEATURES, LambdaRanker, relevance_labels, top_k, with_features
from serving.score import recommend
from serving.text import item_texts

KS = (10, 20)
K = max(KS)
COLD_ITEM_MAX = 5  # clicks + purchases before the cutoff for an item to count as cold
NEW_USER_MAX = 2  # clicks + purchases before the cutoff for a user to count as new
CALIBRATION_BINS = 10

FULL = "text model + ranker"
TEXT_ALONE = "text model alone"
NO_TEXT = "ranker without text"
NO_TEXT_ANYWHERE = "without text anywhere"
COVISIT = "co-visitation"
POPULARITY = "popularity"
ORACLE = "oracle"
# a model trained without a domain, run on it with the domain's events in its histories and features
TRANSFER = f"{FULL} (transfer: not retrained, the domain's events in its features)"
PERFECT_ITEMS = "perfect item factors"  # the truth's items, each user's interest fitted to their history
CEILINGS = (ORACLE, PERFECT_ITEMS)  # systems that read the ground truth: references, not baselines
TEXT_COLUMNS = (*MODEL_COLUMNS, *TEXT_SOURCES, "cand_sources")  # what the "ranker without text" may not see
EV_K = 10  # expected value@10: the generator's expected gain of a top-10 list
FRESH_DAYS = 7.0  # "fresh_share@10": the share of top-10 slots given to items created in the week before the cutoff
BOOTSTRAP_RESAMPLES = 2000

ALL_USERS = "all users"
COLD_ITEMS = "cold-start items"
NEW_USERS = "new users"


# --------------------------------------------------------------------------------------------- protocol


def parse_cutoff(value: str | int | float | dt.datetime | None) -> dt.datetime | None:
    """A cutoff from the command line: ISO date/time (naive = UTC) or epoch seconds."""
    if value is None:
        return None
    try:
        return parse_moment(value, what="--cutoff")
    except ValueError as exc:
        raise RecsysError(str(exc)) from None


def split_test_period(
    events: pl.LazyFrame, *, test_days: float | None = 3, cutoff: dt.datetime | None = None, source="events"
) -> tuple[dt.datetime, dt.datetime]:
    """[cutoff, end) of the test period: the last `test_days` days, or from `cutoff` (for `test_days` if given)."""
    first, last = time_bounds(events)
    log_end = just_after(last)
    if cutoff is None:
        cutoff = log_end - dt.timedelta(days=3 if test_days is None else test_days)
        end = log_end
    else:
        end = log_end if test_days is None else min(log_end, cutoff + dt.timedelta(days=test_days))
    if test_days is not None and test_days <= 0:
        raise RecsysError(f"--test-days must be positive, found {test_days}")
    if not first < cutoff < end:
        raise RecsysError(f"{source}: the cutoff {cutoff} leaves no training or no test period (events span {first} – {last})")
    return cutoff, end


def heldout_relevance(events: pl.DataFrame, *, cutoff: dt.datetime, end: dt.datetime) -> pl.DataFrame:
    """Graded relevance of the test period, minus items each user had engaged with before the cutoff."""
    labels = relevance_labels(events, start=cutoff, end=end)
    return labels.join(_engaged_pairs(events, cutoff), on=[S.USER_ID, S.ITEM_ID], how="anti")


def _engaged_pairs(events: pl.DataFrame | pl.LazyFrame, cutoff: dt.datetime) -> pl.DataFrame:
    past = (
        events.filter((pl.col(S.TIMESTAMP) < cutoff) & pl.col(S.EVENT).is_in([S.CLICK, S.PURCHASE])).select(S.USER_ID, S.ITEM_ID).unique()
    )
    return past.collect() if isinstance(past, pl.LazyFrame) else past


@contextlib.contextmanager
def timed(timings: dict, key: str):
    started = time.perf_counter()
    try:
        yield
    finally:
        timings[key] = round(time.perf_counter() - started, 2)


# --------------------------------------------------------------------------------------------- baselines


def popularity_baseline(
    events: pl.LazyFrame, users: pl.Series, *, cutoff: dt.datetime, k: int, days: float = 7, items: pl.Series | None = None
) -> pl.DataFrame:
    """Most clicked items of the last `days` before the cutoff (among `items` if given), minus what each user engaged with."""
    past = events.filter(pl.col(S.TIMESTAMP) < cutoff)
    last = past.filter(pl.col(S.TIMESTAMP) >= cutoff - dt.timedelta(days=days), pl.col(S.EVENT).is_in([S.CLICK, S.PURCHASE]))
    if items is not None:
        last = last.filter(pl.col(S.ITEM_ID).is_in(items.implode()))
    popular = last.group_by(S.ITEM_ID).agg(pl.len().alias(S.SCORE)).sort([S.SCORE, S.ITEM_ID], descending=[True, False]).collect()
    seen = _engaged_pairs(past, cutoff)
    top = popular.head(k + int(seen.group_by(S.USER_ID).len()["len"].max() or 0))
    pairs = pl.DataFrame({S.USER_ID: users}).join(top, how="cross").join(seen, on=[S.USER_ID, S.ITEM_ID], how="anti")
    pairs = pairs.sort([S.USER_ID, S.SCORE, S.ITEM_ID], descending=[False, True, False])
    return pairs.with_columns(pl.int_range(1, pl.len() + 1).over(S.USER_ID).alias(S.RANK)).filter(pl.col(S.RANK) <= k)


def rank_candidates(frame: pl.DataFrame, by: list[str], *, descending: list[bool], k: int) -> pl.DataFrame:
    """Top-k of a candidate frame by the columns `by` (nulls last), ties to the smaller item index."""
    ranked = frame.sort([S.USER_ID, *by, "item_index"], descending=[False, *descending, False], nulls_last=True)
    ranked = ranked.with_columns(pl.int_range(1, pl.len() + 1, dtype=pl.Int32).over(S.USER_ID).alias(S.RANK)).filter(pl.col(S.RANK) <= k)
    return ranked.with_columns(pl.col(by[0]).cast(pl.Float64).alias(S.SCORE)).select(S.USER_ID, S.RANK, S.ITEM_ID, S.SCORE)


def covisitation_baseline(frame: pl.DataFrame, popular: pl.DataFrame, *, k: int) -> pl.DataFrame:
    """Co-visited candidates by summed weight, then the popularity list for the slots they leave empty."""
    covisited = rank_candidates(frame.filter(pl.col("cand_covisit_weight").is_not_null()), ["cand_covisit_weight"], descending=[True], k=k)
    fill = popular.join(covisited.select(S.USER_ID, S.ITEM_ID), on=[S.USER_ID, S.ITEM_ID], how="anti").select(
        S.USER_ID, S.ITEM_ID, pl.col(S.RANK).alias("_fill")
    )
    both = pl.concat(
        [
            covisited.select(S.USER_ID, S.ITEM_ID, pl.col(S.RANK).cast(pl.Int64).alias("_fill"), pl.lit(0).alias("_tier")),
            fill.with_columns(pl.col("_fill").cast(pl.Int64), pl.lit(1).alias("_tier")),
        ]
    )
    both = both.sort([S.USER_ID, "_tier", "_fill"]).with_columns(
        pl.int_range(1, pl.len() + 1, dtype=pl.Int32).over(S.USER_ID).alias(S.RANK)
    )
    return both.filter(pl.col(S.RANK) <= k).select(S.USER_ID, S.RANK, S.ITEM_ID, (-pl.col(S.RANK).cast(pl.Float64)).alias(S.SCORE))


def true_gain(truth_dir: Path, user_ids, item_ids, *, cutoff: dt.datetime, end: dt.datetime) -> np.ndarray:
    """E[2^rel - 1] = p_click + 2·p_purchase by the generator's probabilities at the middle of the test
    period; `user_ids` and `item_ids` broadcast as in `recsys.generate.true_probabilities`."""
    from recsys.generate import true_probabilities

    p_click, p_purchase = true_probabilities(truth_dir, user_ids, item_ids, cutoff + (end - cutoff) / 2)
    return p_click + 2.0 * p_purchase


def oracle_recommendations(
    truth_dir: Path,
    catalog: Catalog,
    events: pl.DataFrame,
    users: pl.Series,
    *,
    cutoff: dt.datetime,
    end: dt.datetime,
    k: int,
    allowed: np.ndarray | None = None,
) -> pl.DataFrame:
    """The best ranking the generator's ground truth allows: expected gain E[2^rel - 1] = p_click + 2 p_purchase.

    Same items as every system (the catalog at the cutoff minus what the user engaged with), probabilities
    at the middle of the test period.
    """

    def gain(begin: int, block: np.ndarray, item_ids: np.ndarray) -> np.ndarray:
        return true_gain(truth_dir, block[:, None].astype(np.int64), item_ids.astype(np.int64), cutoff=cutoff, end=end)

    return _top_k_by_gain(gain, catalog, events, users, cutoff=cutoff, k=k, allowed=allowed)


def perfect_item_recommendations(
    truth_dir: Path, catalog: Catalog, events: pl.DataFrame, users: pl.Series, *, cutoff: dt.datetime, k: int, items=None
) -> pl.DataFrame:
    """A ceiling for any item model: the true item factors, quality and price, and each user's interest
    fitted to what they did before the cutoff (`fit_interest`), ranked by the generator's formula.

    The oracle also knows every user's true interest at test time; the gap between the two is what no
    item-side model (text or ID) can close with the histories there are, the gap below this one is what a
    better item model could still win. `items` (a `recsys.generate.ItemTruth` row-aligned with the
    catalog) replaces the truth's items, e.g. by factors read from text (benchmarks/ceilings.py)."""
    from recsys.generate import true_items

    items = items if items is not None else true_items(truth_dir, catalog.ids.to_numpy())
    interest = fit_interest(items, catalog, events.filter(pl.col(S.TIMESTAMP) < cutoff), users)
    rows = np.flatnonzero(catalog.available_at(cutoff))

    def gain(begin: int, block: np.ndarray, item_ids: np.ndarray) -> np.ndarray:
        return items.gains(interest[begin : begin + len(block)], rows)

    return _top_k_by_gain(gain, catalog, events, users, cutoff=cutoff, k=k)


def fit_interest(items, catalog: Catalog, events: pl.DataFrame, users: pl.Series, *, rounds: int = 2) -> np.ndarray:
    """(len(users), dim) posterior-mode interest vectors under the generator's own click and purchase
    formula, the items' factors, quality and price known (`items`, a `recsys.generate.ItemTruth`
    row-aligned with the catalog), from each user's exposures in `events`.

    A Gaussian prior N(μ, Σ) learned from the users themselves (empirical Bayes by EM with the Laplace
    approximation: μ and Σ from the vectors and their posterior covariances), starting from N(0, I/dim),
    i.e. unit-length vectors on average. Each user's mode by Fisher scoring (the click term's expected
    Hessian, always positive). One vector per user for the whole history: the truth drifts, and a
    ceiling that knew how would be the oracle. A user without exposures gets μ. Two EM rounds: on one
    shop (generator seed 0) the second raised the ceiling's EV@10 from 3.32 to 3.36 and later ones lowered
    it again (3.32 at 4, 3.22 at 8), as did fitting the prior on every user instead of the queries."""
    rows = pl.DataFrame({S.USER_ID: users}).with_row_index("row")
    exp = catalog.index_of(exposures(events).join(rows, on=S.USER_ID, how="inner"))
    index = exp["item_index"].to_numpy()
    p, v, quality, price = items.params, items.factors[index], items.quality[index], items.price[index]
    n, dim = users.len(), v.shape[1]
    row = exp["row"].to_numpy().astype(np.int64)
    clicked = exp["clicked"].fill_null(0.0).to_numpy() > 0
    bought = exp["purchased"].fill_null(0.0).to_numpy() > 0
    bias = np.where(exp[S.POSITION].is_null().to_numpy(), 1.0, exp[S.POSITION].fill_null(1).clip(1).to_numpy() ** -p["eta"])
    click_offset = quality + p["c"]
    buy_offset = -p["price_gamma"] * (np.log(price) - p["ln_price_ref"]) + p["c2"]
    outer = v[:, :, None] * v[:, None, :]  # (E, dim, dim)

    def step(u: np.ndarray, mean: np.ndarray, precision: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """One Fisher-scoring step for every user: (new u, the Hessians)."""
        dot = np.einsum("ed,ed->e", u[row], v)
        sig = 1.0 / (1.0 + np.exp(-(p["a"] * dot + click_offset)))
        q = np.clip(bias * sig, 1e-12, 1 - 1e-12)  # P(click | shown at its position)
        # d/dz of −log P(the observed click or not), and the expected second derivative (Fisher)
        g = np.where(clicked, -(1.0 - sig), bias * sig * (1.0 - sig) / (1.0 - q)) * p["a"]
        h = bias * sig * (1.0 - sig) ** 2 / (1.0 - q) * p["a"] ** 2
        t = 1.0 / (1.0 + np.exp(-(p["b"] * dot + buy_offset)))  # P(purchase | click), on the clicked exposures
        g = g + np.where(clicked, (t - bought) * p["b"], 0.0)
        h = h + np.where(clicked, t * (1.0 - t) * p["b"] ** 2, 0.0)
        grad = np.zeros((n, dim))
        np.add.at(grad, row, g[:, None] * v)
        hess = np.zeros((n, dim, dim))
        np.add.at(hess, row, h[:, None, None] * outer)
        grad += (u - mean) @ precision
        hess += precision
        return u - np.linalg.solve(hess, grad[:, :, None])[:, :, 0], hess

    mean, precision = np.zeros(dim), np.eye(dim) * dim
    u = np.tile(mean, (n, 1))
    seen = np.bincount(row, minlength=n) > 0
    for _ in range(rounds):
        for _ in range(15):
            u, hess = step(u, mean, precision)
        if seen.sum() > dim:
            fitted, spread = u[seen], np.linalg.inv(hess[seen])
            mean = fitted.mean(axis=0)
            cov = np.cov(fitted, rowvar=False, bias=True) + spread.mean(axis=0)
            precision = np.linalg.inv(cov + 1e-6 * np.eye(dim))
    u[~seen] = mean
    return u


def _top_k_by_gain(
    gain, catalog: Catalog, events: pl.DataFrame, users: pl.Series, *, cutoff: dt.datetime, k: int, allowed: np.ndarray | None = None
) -> pl.DataFrame:
    """Each user's top-k of the catalog at the cutoff (minus what they engaged with) by `gain(begin, block
    user ids, item ids) -> (block, items)`, computed 512 users at a time."""
    available = catalog.available_at(cutoff) & (np.ones(len(catalog), bool) if allowed is None else allowed)
    item_index = np.flatnonzero(available)
    item_ids = catalog.ids.to_numpy()[item_index]
    column = np.full(len(catalog), -1, dtype=np.int64)
    column[item_index] = np.arange(len(item_index))
    seen = catalog.index_of(_engaged_pairs(events, cutoff)).join(pl.DataFrame({S.USER_ID: users}).with_row_index("row"), on=S.USER_ID)
    seen = seen.with_columns(pl.Series("column", column[seen["item_index"].to_numpy()])).filter(pl.col("column") >= 0)
    user_ids = users.to_numpy()
    k = min(k, len(item_index))
    parts = []
    for begin in range(0, len(user_ids), 512):
        block = user_ids[begin : begin + 512]
        gain_block = np.array(gain(begin, block, item_ids), dtype=np.float64)  # (B, M)
        mask = seen.filter((pl.col("row") >= begin) & (pl.col("row") < begin + len(block)))
        gain_block[mask["row"].to_numpy() - begin, mask["column"].to_numpy()] = -np.inf
        top = np.argpartition(-gain_block, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(gain_block, top, 1), axis=1, kind="stable")
        top = np.take_along_axis(top, order, 1)
        scores = np.take_along_axis(gain_block, top, 1)
        parts.append(
            pl.DataFrame(
                {
                    S.USER_ID: np.repeat(block, k),
                    S.RANK: np.tile(np.arange(1, k + 1, dtype=np.int32), len(block)),
                    S.ITEM_ID: item_ids[top.ravel()],
                    S.SCORE: scores.ravel(),
                }
            ).filter(pl.col(S.SCORE).is_finite())
        )
    recs = pl.concat(parts)
    return recs.with_columns(pl.col(S.USER_ID).cast(users.dtype), pl.col(S.ITEM_ID).cast(catalog.ids.dtype))


def oracle_rerank(truth_dir: Path, frame: pl.DataFrame, *, cutoff: dt.datetime, end: dt.datetime, k: int = K) -> pl.DataFrame:
    """A candidate frame's top-k by the true expected gain: the best any ranker of these candidates can expect."""
    gain = true_gain(truth_dir, frame[S.USER_ID].to_numpy(), frame[S.ITEM_ID].to_numpy(), cutoff=cutoff, end=end)
    return rank_candidates(frame.with_columns(pl.Series("_gain", gain)), ["_gain"], descending=[True], k=k)


def oracle_exposure_aucs(truth_dir: Path, exp: pl.DataFrame | None, *, cutoff: dt.datetime, end: dt.datetime) -> dict[str, float]:
    """AUC of the true probabilities on the test impressions: how well any model of P(click | shown) can separate them."""
    from recsys.generate import true_probabilities

    if exp is None:
        return {"auc_p_click": float("nan"), "auc_p_purchase": float("nan")}
    p_click, p_purchase = true_probabilities(truth_dir, exp[S.USER_ID].to_numpy(), exp[S.ITEM_ID].to_numpy(), cutoff + (end - cutoff) / 2)
    return {"auc_p_click": auc(p_click, exp["clicked"].to_numpy()), "auc_p_purchase": auc(p_purchase, exp["purchased"].to_numpy())}


def truth_folder(data: Dataset) -> Path | None:
    """truth/ written by `recsys generate` beside items.parquet, if there is one."""
    if data.items_path is None:
        return None
    folder = Path(data.items_path).parent / "truth"
    return folder if (folder / "params.json").is_file() else None


# --------------------------------------------------------------------------------------------- slices


@dataclass(frozen=True)
class Slice:
    """A subset of the evaluation: by item (only hits on `ids` count) or by user (only `ids` are queries)."""

    kind: str  # "items" or "users"
    ids: pl.Series | None  # None: everything
    description: str


def define_slices(events: pl.LazyFrame, items: pl.LazyFrame, *, cutoff: dt.datetime, users: pl.Series) -> dict[str, Slice]:
    """Slices of the evaluation, from the catalog and from events strictly before the cutoff only."""
    catalog = items.select(S.ITEM_ID, S.CATEGORY, S.DOMAIN).collect()
    past = events.filter((pl.col(S.TIMESTAMP) < cutoff) & pl.col(S.EVENT).is_in([S.CLICK, S.PURCHASE]))
    item_counts = past.group_by(S.ITEM_ID).len().collect()
    user_counts = past.group_by(S.USER_ID).len().collect()
    cold = catalog.join(item_counts, on=S.ITEM_ID, how="left").filter(pl.col("len").fill_null(0) <= COLD_ITEM_MAX)[S.ITEM_ID]
    experienced = user_counts.filter(pl.col("len") > NEW_USER_MAX)[S.USER_ID]
    new = pl.Series(S.USER_ID, users).filter(~pl.Series(users).is_in(experienced.implode()))
    slices = {
        ALL_USERS: Slice("users", None, "every query"),
        COLD_ITEMS: Slice("items", cold, f"items with ≤ {COLD_ITEM_MAX} clicks + purchases before the cutoff (new items included)"),
        NEW_USERS: Slice("users", new, f"users with ≤ {NEW_USER_MAX} clicks + purchases before the cutoff"),
    }
    for column in (S.DOMAIN, S.CATEGORY):
        values = sorted(v for v in catalog[column].drop_nulls().unique().to_list())
        if len(values) < 2:
            continue
        for value in values:
            slices[f"{column}: {value}"] = Slice("items", catalog.filter(pl.col(column) == value)[S.ITEM_ID], f"items of {column} {value}")
    return slices


def slice_relevance(relevant: pl.DataFrame, part: Slice) -> pl.DataFrame:
    """The relevant pairs that count for a slice."""
    if part.ids is None:
        return relevant
    column = S.ITEM_ID if part.kind == "items" else S.USER_ID
    return relevant.filter(pl.col(column).is_in(part.ids.cast(relevant.schema[column]).implode()))


# --------------------------------------------------------------------------------------------- calibration


def reliability(probabilities: np.ndarray, labels: np.ndarray, *, bins: int = CALIBRATION_BINS) -> dict:
    """Predicted vs observed rate in equal-count bins (sorted by prediction) and their count-weighted gap (ECE).

    Equal-count bins, because click and purchase probabilities crowd near zero where equal-width bins
    would put almost everything in the first bin.
    """
    p = np.asarray(probabilities, dtype=np.float64)
    y = np.asarray(labels, dtype=np.float64)
    if len(p) == 0:
        return {"bins": [], "ece": float("nan"), "count": 0, "mean_predicted": float("nan"), "observed_rate": float("nan")}
    order = np.argsort(p, kind="stable")
    rows = []
    for chunk in np.array_split(order, min(bins, len(p))):
        if len(chunk):
            rows.append({"mean_predicted": float(p[chunk].mean()), "observed_rate": float(y[chunk].mean()), "count": int(len(chunk))})
    ece = sum(r["count"] * abs(r["mean_predicted"] - r["observed_rate"]) for r in rows) / len(p)
    return {"bins": rows, "ece": float(ece), "count": int(len(p)), "mean_predicted": float(p.mean()), "observed_rate": float(y.mean())}


def exposure_predictions(model, snapshot, events: pl.DataFrame, *, cutoff, end, history_length: int) -> pl.DataFrame | None:
    """The test period's impressions with the model's p_click and p_purchase (histories as of the cutoff)."""
    test = events.filter((pl.col(S.TIMESTAMP) >= cutoff) & (pl.col(S.TIMESTAMP) < end))
    if not has_impressions(test):
        return None
    exp = (
        snapshot.catalog.index_of(exposures(test))
        .join(snapshot.users, on=S.USER_ID, how="left")
        .with_columns(pl.col("user_index").fill_null(-1))
    )
    if exp.height == 0:
        return None
    users, _ = user_vectors(model, snapshot, exp["user_index"].to_numpy(), history_length)
    items = snapshot.item_vectors[exp["item_index"].to_numpy()][:, None, :]
    p_click, p_purchase, _ = model.score(users, items)
    return exp.with_columns(
        pl.Series(S.P_CLICK, p_click[:, 0].astype(np.float64)), pl.Series(S.P_PURCHASE, p_purchase[:, 0].astype(np.float64))
    )


def exposure_aucs(model, snapshot, events: pl.DataFrame, *, cutoff, end, history_length: int) -> dict[str, float]:
    """AUC of p_click and p_purchase on the test period's impressions, users' histories as of the cutoff."""
    return _aucs(exposure_predictions(model, snapshot, events, cutoff=cutoff, end=end, history_length=history_length))


def _aucs(exp: pl.DataFrame | None) -> dict:
    if exp is None:
        return {"auc_p_click": float("nan"), "auc_p_purchase": float("nan"), "exposures": 0}
    return {
        "auc_p_click": auc(exp[S.P_CLICK].to_numpy(), exp["clicked"].to_numpy()),
        "auc_p_purchase": auc(exp[S.P_PURCHASE].to_numpy(), exp["purchased"].to_numpy()),
        "exposures": exp.height,
    }


def calibration(exp: pl.DataFrame | None) -> dict | None:
    """Reliability of p_click and p_purchase on test exposures: at the top slot (what they promise) and at any slot."""
    if exp is None:
        return None
    top = exp.filter(pl.col(S.POSITION).is_null() | (pl.col(S.POSITION) <= 1))
    out = {}
    for name, frame in (("top position", top), ("all positions", exp)):
        out[name] = {
            S.P_CLICK: reliability(frame[S.P_CLICK].to_numpy(), frame["clicked"].to_numpy()),
            S.P_PURCHASE: reliability(frame[S.P_PURCHASE].to_numpy(), frame["purchased"].to_numpy()),
        }
    return out


# --------------------------------------------------------------------------------------------- one export


def evaluate_export(
    export_dir: str | Path, data, *, cutoff: dt.datetime, end: dt.datetime, config: Config, device: str = "auto", progress=None
) -> dict:
    """Recommend with an exported model as of `cutoff` and judge it on [cutoff, end).

    The one place that turns an EXPORT_DIR into test metrics: `recsys evaluate`, the demo and the
    retrain gate all call it. Returns `metrics` (ranking metrics, coverage, exposure AUCs) and the
    intermediate frames and objects the comparison with baselines reuses.
    """
    events = data.events.collect()
    relevant = heldout_relevance(events, cutoff=cutoff, end=end)
    users = relevant.select(S.USER_ID).unique().sort(S.USER_ID)[S.USER_ID]
    if users.len() == 0:
        raise RecsysError(f"no user clicks a new item between {cutoff} and {end}; nothing to evaluate")
    _, serving_config, model, ranker = load_export(export_dir, device=device)
    catalog = make_catalog(data.items)
    vectors = model.encode_items(item_texts(catalog.items), progress=progress)
    timings: dict = {}
    snapshot = build_snapshot(catalog, vectors, data.events, data.items, cutoff=cutoff, config=config.candidates)
    recs = recommend(
        model,
        ranker,
        data.items,
        data.events,
        cutoff=cutoff,
        user_ids=users,
        k=K,
        candidates=config.candidates,
        history_length=serving_config["history_length"],
        snapshot=snapshot,
        progress=progress,
        timings=timings,
    )
    available = int(snapshot.available.sum())
    metrics = ranking_metrics(recs, relevant, ks=KS)
    metrics["coverage@20"] = catalog_coverage(recs, available, k=20)
    exp = exposure_predictions(model, snapshot, events, cutoff=cutoff, end=end, history_length=serving_config["history_length"])
    aucs = _aucs(exp)
    metrics.update({k: v for k, v in aucs.items() if k.startswith("auc")})
    return {
        "metrics": metrics,
        "aucs": aucs,
        "recommendations": recs,
        "relevant": relevant,
        "users": users,
        "events": events,
        "model": model,
        "ranker": ranker,
        "serving_config": serving_config,
        "snapshot": snapshot,
        "catalog": catalog,
        "catalog_size": available,
        "exposures": exp,
        "timings": timings,
    }


def _popularity_auc(events: pl.DataFrame, *, cutoff, end, days) -> dict[str, float]:
    test = events.filter((pl.col(S.TIMESTAMP) >= cutoff) & (pl.col(S.TIMESTAMP) < end))
    if not has_impressions(test):
        return {"auc_p_click": float("nan"), "auc_p_purchase": float("nan")}
    recent = events.filter(
        (pl.col(S.TIMESTAMP) < cutoff)
        & (pl.col(S.TIMESTAMP) >= cutoff - dt.timedelta(days=days))
        & pl.col(S.EVENT).is_in([S.CLICK, S.PURCHASE])
    )
    popularity = recent.group_by(S.ITEM_ID).agg(pl.len().cast(pl.Float64).alias("pop"))
    exp = exposures(test).join(popularity, on=S.ITEM_ID, how="left").with_columns(pl.col("pop").fill_null(0.0))
    return {
        "auc_p_click": auc(exp["pop"].to_numpy(), exp["clicked"].to_numpy()),
        "auc_p_purchase": auc(exp["pop"].to_numpy(), exp["purchased"].to_numpy()),
    }


# --------------------------------------------------------------------------------------------- the comparison


def compare_systems(
    evaluation: dict,
    ranker_frame: pl.DataFrame | None,
    data: Dataset,
    config: Config,
    *,
    cutoff,
    end,
    truth_dir: Path | None,
    log=lambda message: None,
) -> tuple[dict[str, pl.DataFrame], dict, dict]:
    """Every system's top-K for the same queries: (recommendations by system, diagnostics, timings)."""
    timings: dict = {}
    users, snapshot, model = evaluation["users"], evaluation["snapshot"], evaluation["model"]
    systems = {FULL: evaluation["recommendations"]}
    with timed(timings, "candidates_s"):
        cand = generate_candidates(model, snapshot, users, config.candidates, evaluation["serving_config"]["history_length"])
        frame = with_features(cand, snapshot)
    diagnostics = {"candidates_per_user": round(frame.height / max(users.len(), 1), 1)}
    relevant = evaluation["relevant"]
    found = relevant.join(frame.select(S.USER_ID, S.ITEM_ID), on=[S.USER_ID, S.ITEM_ID], how="semi").height
    diagnostics["candidate_recall"] = found / max(relevant.height, 1)
    diagnostics["source_recall"] = source_recall(frame, relevant)
    ids = evaluation["catalog"].ids
    available_ids = ids.filter(pl.Series(snapshot.available))
    diagnostics["reachable_share"] = relevant.filter(pl.col(S.ITEM_ID).is_in(available_ids.implode())).height / max(relevant.height, 1)
    with timed(timings, "baselines_s"):
        systems[TEXT_ALONE] = rank_candidates(frame, [S.P_CLICK], descending=[True], k=K)
        if ranker_frame is not None:
            features = [f for f in RANKER_FEATURES if f not in TEXT_COLUMNS]
            no_text = LambdaRanker(config.ranker, features).fit(ranker_frame)
            scored = frame.with_columns(pl.Series("_no_text", no_text.predict(frame)))
            systems[NO_TEXT] = rank_candidates(scored, ["_no_text"], descending=[True], k=K)
            diagnostics["ranker_without_text_valid_ndcg@10"] = no_text.metrics_["valid_ndcg@10"]
            # without text anywhere: the candidates no text source found are gone too, in training and at test
            untexted = without_text_source(frame)
            blind = LambdaRanker(config.ranker, features).fit(without_text_source(ranker_frame))
            scored = untexted.with_columns(pl.Series("_blind", blind.predict(untexted)))
            systems[NO_TEXT_ANYWHERE] = rank_candidates(scored, ["_blind"], descending=[True], k=K)
            diagnostics["candidates_without_text_per_user"] = round(untexted.height / max(users.len(), 1), 1)
        popular = popularity_baseline(data.events, users, cutoff=cutoff, k=K, days=config.candidates.popularity_days)
        systems[COVISIT] = covisitation_baseline(frame, popular, k=K)
        systems[POPULARITY] = popular
    if truth_dir is not None:
        with timed(timings, "oracle_s"):
            try:
                systems[ORACLE] = oracle_recommendations(
                    truth_dir, evaluation["catalog"], evaluation["events"], users, cutoff=cutoff, end=end, k=K
                )
                systems[PERFECT_ITEMS] = perfect_item_recommendations(
                    truth_dir, evaluation["catalog"], evaluation["events"], users, cutoff=cutoff, k=K
                )
                # the same oracle limited to the candidates: how much of the gap is retrieval, how much ranking
                reranked = oracle_rerank(truth_dir, frame, cutoff=cutoff, end=end)
                diagnostics["oracle_on_candidates_ndcg@10"] = ranking_metrics(reranked, relevant, ks=KS)["ndcg@10"]
                diagnostics["oracle_on_candidates_ev@10"] = float(
                    expected_value_per_user(truth_dir, reranked, users, cutoff=cutoff, end=end).mean()
                )
                diagnostics["oracle_aucs"] = oracle_exposure_aucs(truth_dir, evaluation["exposures"], cutoff=cutoff, end=end)
            except (KeyError, ValueError, TypeError) as exc:  # ids the ground truth does not know: not this generator's data
                log(f"oracle skipped: {exc}")
    return systems, diagnostics, timings


def source_recall(frame: pl.DataFrame, relevant: pl.DataFrame) -> dict[str, dict[str, float]]:
    """Per candidate source: the share of the test's relevant (user, item) pairs it lists (`recall`) and the
    share only it lists (`only`), so a source that finds nothing the others miss shows as such."""
    hits = relevant.select(S.USER_ID, S.ITEM_ID).join(frame, on=[S.USER_ID, S.ITEM_ID], how="inner")
    listed = hits.select(pl.col(column).is_not_null() for column in SOURCE_TYPES)
    total = max(relevant.height, 1)
    out = {}
    for column in SOURCE_TYPES:
        alone = listed[column] & ~listed.select(pl.any_horizontal(c for c in SOURCE_TYPES if c != column)).to_series()
        out[column] = {"recall": int(listed[column].sum()) / total, "only": int(alone.sum()) / total}
    return out


def without_text_source(frame: pl.DataFrame) -> pl.DataFrame:
    """The candidates some source other than the text model's found (covisitation, popular, newest)."""
    others = [pl.col(c).is_not_null() for c in SOURCE_TYPES if c not in TEXT_SOURCES]
    return frame.filter(pl.any_horizontal(others))


def expected_value_per_user(
    truth_dir: Path, recs: pl.DataFrame, users: pl.Series, *, cutoff: dt.datetime, end: dt.datetime, k: int = EV_K
) -> pl.Series:
    """Σ_rank≤k (p_click + 2·p_purchase) / log2(rank + 1) by the generator's probabilities at the middle of
    the test period, per user of `users` (in that order; 0 for a user without recommendations).

    An expectation, not one draw of clicks: it scores every list against what the user would do on average,
    so it has far less noise than NDCG on the logged clicks of a few days."""
    top = recs.filter(pl.col(S.RANK) <= k)
    gain = true_gain(truth_dir, top[S.USER_ID].to_numpy(), top[S.ITEM_ID].to_numpy(), cutoff=cutoff, end=end)
    discount = 1.0 / np.log2(top[S.RANK].to_numpy().astype(np.float64) + 1.0)
    per = top.select(S.USER_ID).with_columns(pl.Series("ev", gain * discount)).group_by(S.USER_ID).agg(pl.col("ev").sum())
    return _by_user(users, per, "ev")


def _by_user(users: pl.Series, frame: pl.DataFrame, column: str) -> pl.Series:
    """`frame[column]` aligned to `users` (in their order), 0 for a user `frame` does not list."""
    joined = pl.DataFrame({S.USER_ID: users}).join(frame.select(S.USER_ID, column), on=S.USER_ID, how="left", maintain_order="left")
    return joined[column].fill_null(0.0)


def per_user_table(systems: dict[str, pl.DataFrame], evaluation: dict, *, truth_dir: Path | None, cutoff, end) -> pl.DataFrame:
    """One row per query user, a column per (metric, system): `ndcg@10|<system>` and, on generated data,
    `ev@10|<system>`. The same users for every system, so differences can be paired."""
    users = evaluation["users"]
    columns: dict[str, pl.Series] = {S.USER_ID: users}
    for name, recs in systems.items():
        columns[f"ndcg@10|{name}"] = _by_user(users, per_user_ndcg(recs, evaluation["relevant"], k=10, users=users), "ndcg")
        if truth_dir is not None:
            columns[f"ev@10|{name}"] = expected_value_per_user(truth_dir, recs, users, cutoff=cutoff, end=end)
    return pl.DataFrame(columns)


def paired_difference(a: np.ndarray, b: np.ndarray, *, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0) -> dict:
    """mean(a − b) over paired units with its standard error and a 95% percentile bootstrap interval."""
    d = np.asarray(a, np.float64) - np.asarray(b, np.float64)
    n = len(d)
    if n == 0:
        return {"mean": float("nan"), "se": float("nan"), "ci95": [float("nan"), float("nan")], "n": 0}
    rng = np.random.default_rng(seed)
    means = d[rng.integers(0, n, size=(resamples, n))].mean(axis=1)
    return {
        "mean": float(d.mean()),
        "se": float(d.std(ddof=1) / np.sqrt(n)) if n > 1 else float("nan"),
        "ci95": [float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))],
        "n": int(n),
    }


def paired_report(per_user: pl.DataFrame, reference: str = FULL) -> dict:
    """{metric: {system: paired_difference(reference − system)}} over the query users."""
    out: dict = {}
    for column in per_user.columns:
        if "|" not in column:
            continue
        metric, system = column.split("|", 1)
        if system == reference or f"{metric}|{reference}" not in per_user.columns:
            continue
        out.setdefault(metric, {})[system] = paired_difference(per_user[f"{metric}|{reference}"].to_numpy(), per_user[column].to_numpy())
    return out


def add_expected_values(results: dict, per_user: pl.DataFrame) -> None:
    """ev@10 (mean over the queries) and ev_share@10 (of the oracle's) into each system's metrics."""
    for name, metrics in results.items():
        column = f"ev@10|{name}"
        metrics["ev@10"] = float(per_user[column].mean()) if column in per_user.columns else float("nan")
    best = results.get(ORACLE, {}).get("ev@10", float("nan"))
    for metrics in results.values():
        metrics["ev_share@10"] = metrics["ev@10"] / best if np.isfinite(best) and best > 0 else float("nan")


def fresh_share(recs: pl.DataFrame, catalog: Catalog, *, cutoff: dt.datetime, k: int = 10, days: float = FRESH_DAYS) -> float:
    """Share of the top-`k` slots of `recs` that hold an item created in the `days` before `cutoff`."""
    created = catalog.items.select(S.ITEM_ID, S.CREATED_AT)
    top = recs.filter(pl.col(S.RANK) <= k).select(S.ITEM_ID).join(created, on=S.ITEM_ID, how="left")
    if top.height == 0:
        return float("nan")
    fresh = (pl.col(S.CREATED_AT) >= cutoff - dt.timedelta(days=days)) & (pl.col(S.CREATED_AT) < cutoff)
    return float(top.select(fresh.fill_null(False).mean()).item())


def system_metrics(
    systems: dict[str, pl.DataFrame],
    evaluation: dict,
    slices: dict[str, Slice],
    *,
    config: Config,
    cutoff,
    end,
    oracle_aucs: dict | None = None,
) -> tuple[dict, dict]:
    """(metrics by system, metrics by slice and system)."""
    oracle_aucs = oracle_aucs or {"auc_p_click": float("nan"), "auc_p_purchase": float("nan")}
    relevant = evaluation["relevant"]
    text_aucs = {k: v for k, v in evaluation["aucs"].items() if k.startswith("auc")}
    popularity_aucs = _popularity_auc(evaluation["events"], cutoff=cutoff, end=end, days=config.candidates.popularity_days)
    results: dict[str, dict] = {}
    by_slice: dict[str, dict] = {}
    for name, part in slices.items():
        rel = slice_relevance(relevant, part)
        queries = rel.select(S.USER_ID).n_unique()
        by_slice[name] = {
            "kind": part.kind,
            "description": part.description,
            "queries": queries,
            "relevant_pairs": rel.height,
            "systems": {},
        }
        for system, recs in systems.items():
            m = ranking_metrics(recs, rel, ks=KS) if queries else {}
            by_slice[name]["systems"][system] = {
                key: m.get(key, float("nan")) for key in ("ndcg@10", "ndcg@20", "recall@10", "recall@20", "mrr@10", "hit@10")
            }
    for system, recs in systems.items():
        metrics = evaluation["metrics"] if system == FULL else ranking_metrics(recs, relevant, ks=KS)
        metrics = dict(metrics)
        metrics["coverage@20"] = catalog_coverage(recs, evaluation["catalog_size"], k=20)
        metrics["fresh_share@10"] = fresh_share(recs, evaluation["catalog"], cutoff=cutoff)
        aucs = (
            text_aucs
            if system in (FULL, TEXT_ALONE)
            else popularity_aucs
            if system == POPULARITY
            else oracle_aucs
            if system == ORACLE
            else {"auc_p_click": float("nan"), "auc_p_purchase": float("nan")}
        )
        metrics.update(aucs)
        for name, key in ((COLD_ITEMS, "cold_items_ndcg@10"), (NEW_USERS, "new_users_ndcg@10")):
            if name in by_slice:
                metrics[key] = by_slice[name]["systems"][system]["ndcg@10"]
        results[system] = metrics
    if ORACLE in results:
        best = results[ORACLE]["ndcg@10"]
        for metrics in results.values():
            metrics["oracle_share@10"] = metrics["ndcg@10"] / best if best > 0 else float("nan")
    return results, by_slice


# --------------------------------------------------------------------------------------------- ablations, cross-domain


def ablation_variants(config: Config) -> list[tuple[str, str, Config]]:
    """(name, what changes, config): each flips one of the design's options relative to `config`."""
    variants = []
    multitask = any(t.name == "purchase" for t in config.tasks)
    if multitask:
        variants.append(
            ("click only", "the purchase task removed: tasks = [click]", config.replace(tasks=[{"name": "click", "weight": 1.0}]))
        )
    else:
        variants.append(
            (
                "click + purchase",
                "the purchase task added (ESMM)",
                config.replace(tasks=[{"name": "click", "weight": 1.0}, {"name": "purchase", "weight": 1.0}]),
            )
        )
    if config.model.freeze_layers != -1:
        variants.append(
            (
                "frozen encoder",
                "model.freeze_layers = -1: only the projection, user attention and heads learn",
                config.replace(model={"freeze_layers": -1}),
            )
        )
    else:
        variants.append(("fine-tuned encoder", "model.freeze_layers = 0", config.replace(model={"freeze_layers": 0})))
    if config.train.mlm_epochs == 0:
        variants.append(
            (
                "with MLM pretraining",
                "train.mlm_epochs = 1: masked-LM on the catalog text before fine-tuning",
                config.replace(train={"mlm_epochs": 1}),
            )
        )
    else:
        variants.append(("without MLM pretraining", "train.mlm_epochs = 0", config.replace(train={"mlm_epochs": 0})))
    return variants


def describe_config(config: Config) -> str:
    tasks = " + ".join(t.name for t in config.tasks)
    encoder = (
        "frozen encoder"
        if config.model.freeze_layers == -1
        else f"fine-tuned encoder ({config.model.freeze_layers} lower layers frozen)"
        if config.model.freeze_layers
        else "fine-tuned encoder"
    )
    mlm = f"{config.train.mlm_epochs} MLM epoch(s)" if config.train.mlm_epochs else "no MLM pretraining"
    return f"{tasks}, {encoder}, {mlm}"


ABLATION_KEYS = ("ndcg@10", "recall@20", "mrr@10", "auc_p_click", "auc_p_purchase")


def pick_holdout_domain(items: pl.LazyFrame, relevant: pl.DataFrame, requested: str | None) -> str | None:
    """The domain to hold out: `requested`, or the one with the most test queries ("auto"); None for one domain."""
    catalog = items.select(S.ITEM_ID, S.DOMAIN).collect()
    domains = sorted(catalog[S.DOMAIN].drop_nulls().unique().to_list())
    if requested not in (None, "auto"):
        if requested not in domains:
            raise RecsysError(f"--holdout-domain: {requested!r} is not a domain of the items (found: {', '.join(domains) or 'none'})")
        return requested
    if len(domains) < 2:
        return None
    counts = (
        relevant.join(catalog, on=S.ITEM_ID)
        .group_by(S.DOMAIN)
        .agg(pl.col(S.USER_ID).n_unique().alias("queries"))
        .sort(["queries", S.DOMAIN], descending=[True, False])
    )
    return counts[S.DOMAIN][0] if counts.height else None


def domain_queries(data: Dataset, domain: str, *, cutoff, end) -> tuple[pl.Series, pl.DataFrame, pl.LazyFrame]:
    """(the domain's item ids, its test relevance, the events of every other domain) for a zero-shot run."""
    in_domain = data.items.filter(pl.col(S.DOMAIN) == domain).select(S.ITEM_ID).collect()[S.ITEM_ID]
    kept = data.events.filter(~pl.col(S.ITEM_ID).is_in(in_domain.implode()))
    relevant = heldout_relevance(data.events.collect(), cutoff=cutoff, end=end).filter(pl.col(S.ITEM_ID).is_in(in_domain.implode()))
    return in_domain, relevant, kept


def evaluate_zero_shot(
    export_dir: str | Path, data: Dataset, domain: str, *, cutoff, end, config: Config, device: str, truth_dir: Path | None, progress=None
) -> dict:
    """Zero-shot transfer, judged: a model trained without any event of `domain` ranks that domain's items
    for its test users, from their text.

    Popularity within the domain is computed from the domain's real pre-cutoff events: what a system that
    did see the domain gets with the simplest model. The transfer row is the product as a team would run it
    on a domain it adds: the same model, not retrained, with the domain's pre-cutoff events in the users'
    histories, the candidates and the behavioural features (popularity, CTR, co-visitation) — the ranker
    learnt on the other domains how much those are worth.
    """
    items = data.items.collect()
    events = data.events.collect()
    in_domain, relevant, kept = domain_queries(data, domain, cutoff=cutoff, end=end)
    users = relevant.select(S.USER_ID).unique().sort(S.USER_ID)[S.USER_ID]
    _, serving_config, model, ranker = load_export(export_dir, device=device)
    catalog = make_catalog(items)
    vectors = model.encode_items(item_texts(catalog.items), progress=progress)
    allowed = catalog.items[S.DOMAIN].eq(domain).fill_null(False).to_numpy()
    # the rule "never recommend what the user already clicked or bought" needs no learning: apply it with the full log
    engaged = _engaged_pairs(events, cutoff)

    def candidate_frame(known_events: pl.LazyFrame) -> pl.DataFrame:
        snapshot = build_snapshot(catalog, vectors, known_events, data.items, cutoff=cutoff, config=config.candidates)
        snapshot = dataclasses.replace(snapshot, available=snapshot.available & allowed)
        cand = generate_candidates(model, snapshot, users, config.candidates, serving_config["history_length"])
        return with_features(cand.join(engaged, on=[S.USER_ID, S.ITEM_ID], how="anti"), snapshot)

    frame, transfer = candidate_frame(kept), candidate_frame(data.events)
    systems = {
        f"{FULL} (zero-shot)": top_k(frame, ranker.predict(frame), K).select(S.USER_ID, S.RANK, S.ITEM_ID, S.SCORE),
        f"{TEXT_ALONE} (zero-shot)": rank_candidates(frame, [S.P_CLICK], descending=[True], k=K),
        TRANSFER: top_k(transfer, ranker.predict(transfer), K).select(S.USER_ID, S.RANK, S.ITEM_ID, S.SCORE),
        f"{POPULARITY} within the domain": popularity_baseline(
            data.events, users, cutoff=cutoff, k=K, days=config.candidates.popularity_days, items=in_domain
        ),
    }
    if truth_dir is not None:
        with contextlib.suppress(KeyError, ValueError, TypeError):
            systems[f"{ORACLE} within the domain"] = oracle_recommendations(
                truth_dir, catalog, events, users, cutoff=cutoff, end=end, k=K, allowed=allowed
            )
    results = {}
    per_user = {}
    for name, recs in systems.items():
        m = ranking_metrics(recs, relevant, ks=KS)
        results[name] = {k: m[k] for k in ("ndcg@10", "ndcg@20", "recall@10", "recall@20", "mrr@10", "hit@10")}
        per_user[f"ndcg@10|{name}"] = _by_user(users, per_user_ndcg(recs, relevant, k=10, users=users), "ndcg").to_numpy()
        if truth_dir is not None:
            ev = expected_value_per_user(truth_dir, recs, users, cutoff=cutoff, end=end).to_numpy()
            per_user[f"ev@10|{name}"] = ev
            results[name]["ev@10"] = float(ev.mean())
    oracle = results.get(f"{ORACLE} within the domain", {}).get("ev@10")
    for metrics in results.values():
        if oracle and "ev@10" in metrics:
            metrics["ev_share@10"] = metrics["ev@10"] / oracle
    # the target (zero-shot ≥ popularity within the domain) as paired differences over the same test users:
    # logged clicks in a domain favour what the shop's own recommender showed there (its popular items), so
    # the expected value by the generator's probabilities is the judge where it exists
    popular = f"{POPULARITY} within the domain"
    paired = {
        metric: {
            f"{name} − {popular}": paired_difference(per_user[f"{metric}|{name}"], per_user[f"{metric}|{popular}"])
            for name in (f"{FULL} (zero-shot)", f"{TEXT_ALONE} (zero-shot)", TRANSFER)
        }
        for metric in ("ev@10", "ndcg@10")
        if f"{metric}|{popular}" in per_user
    }
    return {"domain": domain, "queries": int(users.len()), "items": int(allowed.sum()), "systems": results, "paired": paired}


# --------------------------------------------------------------------------------------------- targets


def targets(results: dict, by_slice: dict, ablation_rows: dict | None, paired: dict | None = None) -> list[dict]:
    """The issue's targets, measured: what was asked, what was seen, met or not."""
    out = []
    full = results[FULL]
    baselines = [name for name in results if name != FULL and name not in CEILINGS]

    def add(name, value, threshold, met):
        out.append({"target": name, "value": value, "threshold": threshold, "met": bool(met)})

    if ORACLE in results:
        add("full system NDCG@10 ≥ 80% of the oracle's", full.get("oracle_share@10"), 0.8, full.get("oracle_share@10", 0) >= 0.8)
    if np.isfinite(full.get("ev_share@10", float("nan"))):
        add("expected value@10 ≥ 0.60 of the oracle's", full["ev_share@10"], 0.6, full["ev_share@10"] >= 0.6)
        if NO_TEXT_ANYWHERE in results:
            ratio = _ratio(full["ev@10"], results[NO_TEXT_ANYWHERE]["ev@10"])
            add("expected value@10 ≥ 1.10× without text anywhere", ratio, 1.1, ratio >= 1.1)
        cell = (paired or {}).get("ev@10", {}).get(NO_TEXT)
        if cell:
            add("expected value@10 − ranker without text: 95% interval above 0", cell["ci95"][0], 0.0, cell["ci95"][0] > 0)
    if ORACLE in results and results[ORACLE].get("fresh_share@10", 0) > 0:
        ratio = full["fresh_share@10"] / results[ORACLE]["fresh_share@10"]
        add(f"items of the last {FRESH_DAYS:g} days recommended at ≥ 0.7× the oracle's rate", ratio, 0.7, ratio >= 0.7)
    best = max(baselines, key=lambda n: results[n]["ndcg@10"]) if baselines else None
    if best:
        add(
            f"full system beats every baseline on NDCG@10 (best baseline: {best})",
            _ratio(full["ndcg@10"], results[best]["ndcg@10"]),
            1.0,
            full["ndcg@10"] > results[best]["ndcg@10"],
        )
    cold = by_slice.get(COLD_ITEMS, {}).get("systems", {})
    if cold.get(FULL) and by_slice[COLD_ITEMS]["queries"]:
        for name in (COVISIT, POPULARITY):
            if name in cold:
                ratio = _ratio(cold[FULL]["ndcg@10"], cold[name]["ndcg@10"])
                add(f"cold-start items: NDCG@10 ≥ 2× {name}'s", ratio, 2.0, ratio >= 2.0)
    for name in (POPULARITY, COVISIT):
        if name in results:
            ratio = _ratio(full["ndcg@10"], results[name]["ndcg@10"])
            add(f"NDCG@10 ≥ 1.2× {name}'s (the MovieLens target)", ratio, 1.2, ratio >= 1.2)
    if ablation_rows:
        base = ablation_rows["as configured"]
        if "click only" in ablation_rows:
            add(
                "multi-task p_purchase AUC ≥ click-only's",
                base["auc_p_purchase"] - ablation_rows["click only"]["auc_p_purchase"],
                0.0,
                base["auc_p_purchase"] >= ablation_rows["click only"]["auc_p_purchase"],
            )
        if "frozen encoder" in ablation_rows:
            add(
                "fine-tuned NDCG@10 ≥ frozen encoder's",
                base["ndcg@10"] - ablation_rows["frozen encoder"]["ndcg@10"],
                0.0,
                base["ndcg@10"] >= ablation_rows["frozen encoder"]["ndcg@10"],
            )
    return out


def _ratio(value: float, reference: float) -> float:
    """value / reference; +inf when only the reference is 0, 0 when both are (0 is not twice 0)."""
    if reference > 0:
        return value / reference
    return float("inf") if value > 0 else 0.0


# --------------------------------------------------------------------------------------------- console table

HEADLINE = (
    ("ndcg@10", "NDCG@10"),
    ("recall@20", "Recall@20"),
    ("mrr@10", "MRR@10"),
    ("cold_items_ndcg@10", "cold NDCG@10"),
    ("auc_p_click", "AUC click"),
    ("auc_p_purchase", "AUC buy"),
    ("oracle_share@10", "% oracle"),
    ("ev_share@10", "% oracle EV"),
)


def headline_rows(report: dict) -> list[list[str]]:
    """One row per system: the HEADLINE metrics, '–' where a metric does not apply."""
    keys = [key for key, _ in headline_columns(report)]
    return [
        [name] + [_fmt(metrics.get(key), percent=key in ("oracle_share@10", "ev_share@10")) for key in keys]
        for name, metrics in report["systems"].items()
    ]


def headline_columns(report: dict) -> list[tuple[str, str]]:
    """HEADLINE minus the columns no system has a value for (no oracle on real data, no AUC without impressions)."""

    def present(key):
        return any(_fmt(m.get(key)) != "–" for m in report["systems"].values())

    return [(key, label) for key, label in HEADLINE if present(key)]


def _fmt(value, percent: bool = False) -> str:
    if value is None or (isinstance(value, float) and (np.isnan(value) or np.isinf(value))):
        return "–"
    return f"{value:.0%}" if percent else f"{value:.4f}"
