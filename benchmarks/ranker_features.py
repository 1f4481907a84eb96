"""What the ranker alone changes, measured in minutes instead of retraining the text model: for each run that
benchmarks/paired.py left (its exported text model), rebuild the ranker's training rows and the test
candidates exactly as `recsys evaluate` does, refit the ranker in each variant (another seed, without the
text model's features, the mean of five seeds, an extra feature, smaller trees, or taught by impressions
instead of clicks on candidates: `impression_rows`), and score every top-10 list by the generator's
expected value@10 on the same query users.

The text model is the run's; only the ranker changes, so a difference is the ranker's alone. Runs are
independent draws (generator seed × training seed): mean ± se and a 95% t-interval across runs. Writes
WORK/ranker_features.json (or --out).

    .venv/bin/python benchmarks/ranker_features.py benchmarks/out/paired [--runs shop-0-seed-7 ...] [--variants seed8 no-text ...]
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from paired import across  # noqa: E402

from recsys.contracts import schema as S  # noqa: E402
from recsys.contracts.files import write_json  # noqa: E402
from recsys.contracts.timeline import just_after, time_bounds  # noqa: E402
from recsys.evaluate import K, expected_value_per_user, heldout_relevance, rank_candidates  # noqa: E402
from recsys.interactions import exposures  # noqa: E402
from recsys.jobs.common import as_config, load_inputs, ranker_frame  # noqa: E402
from serving.artifacts import load_export  # noqa: E402
from serving.candidates import (  # noqa: E402
    HISTORY_COLUMNS,
    MODEL_COLUMNS,
    SOURCE_TYPES,
    build_snapshot,
    generate_candidates,
    score_pairs,
    user_vectors,
    within_user,
)
from serving.catalog import make_catalog  # noqa: E402
from serving.history import to_seconds  # noqa: E402
from serving.ranking import RANKER_FEATURES, LambdaRanker, with_features  # noqa: E402
from serving.text import item_texts  # noqa: E402


def centroid_features(frame: pl.DataFrame, snapshot, vectors: np.ndarray) -> pl.DataFrame:
    """Cosines of each candidate to the user's whole clicked history (the normalised mean of every item
    they clicked or bought before the cutoff) and to their skipped impressions' mean."""
    seen = snapshot.seen
    n_users = snapshot.users.height
    dim = vectors.shape[1]
    users = seen["user_index"].to_numpy()
    clicked = np.zeros((n_users + 1, dim))
    np.add.at(clicked, users, vectors[seen["item_index"].to_numpy()])
    count = np.bincount(users, minlength=n_users + 1)
    norm = np.linalg.norm(clicked, axis=1, keepdims=True)
    clicked = np.where(norm > 0, clicked / np.maximum(norm, 1e-12), 0.0)
    u = frame["user_index"].to_numpy()
    i = frame["item_index"].to_numpy()
    known = (u >= 0) & (count[np.maximum(u, 0)] > 0)
    sim = np.einsum("ed,ed->e", clicked[np.maximum(u, 0)], vectors[i])
    out = frame.with_columns(
        pl.Series("sim_centroid", np.where(known, sim, np.nan), nan_to_null=True),
        pl.Series("clicked_items", count[np.maximum(u, 0)] * (u >= 0)),
    )
    return out


def impression_rows(model, snapshot, candidates: pl.DataFrame, window: pl.DataFrame, history_length: int) -> pl.DataFrame:
    """The ranker's training rows from what was *shown*: every (user, item) impressed in the label window
    `window` (events), labelled purchase 2 > click 1 > skipped 0, with the same features a candidate gets.

    Logged clicks on candidates confound P(shown) with P(click | shown): the shop's own recommender shows
    popular and recent items, so a ranker taught by them learns to favour what was shown. Impressions with
    their outcome are the exposure-conditional target that expected value measures. Pairs the candidate
    generator also found keep its source columns; the others get the text model's scores here and no source.
    Items the user engaged with before the cutoff are left out (no system may recommend them)."""
    shown = (
        exposures(window)
        .group_by(S.USER_ID, S.ITEM_ID)
        .agg(
            pl.when(pl.col("purchased") > 0)
            .then(2)
            .when(pl.col("clicked") > 0)
            .then(1)
            .otherwise(0)
            .max()
            .cast(pl.Int32)
            .alias("relevance")
        )
    )
    shown = snapshot.catalog.index_of(shown).join(snapshot.users, on=S.USER_ID, how="left").with_columns(pl.col("user_index").fill_null(-1))
    shown = shown.join(snapshot.seen, on=["user_index", "item_index"], how="anti").filter(pl.col("item_index") >= 0)
    extra = shown.join(candidates.select(S.USER_ID, S.ITEM_ID), on=[S.USER_ID, S.ITEM_ID], how="anti")
    users = extra.select(S.USER_ID, "user_index").unique().sort(S.USER_ID).with_row_index("row")
    extra = extra.join(users.select(S.USER_ID, "row"), on=S.USER_ID).sort("row", "item_index")
    u, history = user_vectors(model, snapshot, users["user_index"].to_numpy(), history_length)
    scores = score_pairs(model, u, snapshot.item_vectors, extra["row"].to_numpy(), extra["item_index"].to_numpy(), history)
    names = (S.P_CLICK, S.P_PURCHASE, "similarity", *HISTORY_COLUMNS)
    extra = extra.with_columns(
        *[pl.Series(n, v.astype(np.float64), nan_to_null=True) for n, v in zip(names, scores)],
        *[pl.lit(None, dtype=dtype).alias(name) for name, dtype in SOURCE_TYPES.items()],
        pl.lit(0, dtype=pl.Int8).alias("cand_sources"),
    )
    union = pl.concat([candidates.drop("p_click_rank", "p_click_z"), extra.select(candidates.drop("p_click_rank", "p_click_z").columns)])
    union = union.with_columns(within_user(by=S.USER_ID)).select(candidates.columns)  # over candidates and impressions together
    frame = with_features(union, snapshot)
    return frame.join(shown.select(S.USER_ID, S.ITEM_ID, "relevance"), on=[S.USER_ID, S.ITEM_ID], how="inner")


# the sequence models (recsys.model.SequenceRecommender) whose next-click scores become ranker features:
# prefix → (SequenceConfig changes); all fit on the clicks before the ranker window, as the text model is
SEQUENCE_MODELS = {
    "seq": {"use_text": True, "use_ids": True, "id_dropout": 0.1},  # text + ID
    "seqid": {"use_text": False, "use_ids": True},  # SASRec: IDs only
    "seqtext": {"use_text": True, "use_ids": False},  # text only
}


def fit_sequence(snapshot, vectors: np.ndarray, changes: dict, seed: int):
    """A sequence model on every user's clicks before the snapshot's cutoff (its `ClickLog`, the product's
    histories), items indexed by catalog index + 1, item text = the exported text model's item vectors.

    `recsys.sequential.fit_sequence_model` holds out each sequence's last two clicks; the last click is
    repeated so that it holds out only one: training stops one click short of each user's last, which is
    the validation target for early stopping (the repeated "test" target is never read). Items that do not
    exist at the cutoff are nobody's negative."""
    import torch

    from recsys.loo import LeaveOneOut
    from recsys.sequential import SequenceConfig, fit_sequence_model

    log = snapshot.log
    sequences = np.split(log.items + 1, np.flatnonzero(np.diff(log.users)) + 1) if len(log) else []
    sequences = [np.append(s, s[-1]) for s in sequences if len(s) >= 2]
    n = len(vectors)
    split = LeaveOneOut(
        user_ids=np.arange(len(sequences)),
        item_ids=np.arange(n + 1),
        sequences=sequences,
        tied=np.zeros(len(sequences), bool),
        cold=np.concatenate([[False], ~snapshot.available]),
    )
    text = torch.from_numpy(np.concatenate([np.zeros((1, vectors.shape[1]), np.float32), vectors]))
    config = SequenceConfig(max_len=50, max_epochs=100, patience=10, seed=seed, **changes)
    fitted = fit_sequence_model(split, config, text=text)
    return fitted


def sequence_features(frame: pl.DataFrame, snapshot, model, prefix: str) -> pl.DataFrame:
    """`{prefix}_score`: the sequence model's next-click score of each candidate after the user's clicks
    before the snapshot's cutoff (null for a user with none), and `{prefix}_z`: its z-score among the user's
    candidates."""
    import torch

    users = np.unique(frame["user_index"].to_numpy())
    users = users[users >= 0]
    times = np.full(len(users), to_seconds(snapshot.cutoff), np.int64)
    recent = snapshot.log.histories(users, times, model.max_len)  # most recent first, -1 padded
    sequences = np.ascontiguousarray(np.where(recent >= 0, recent + 1, 0)[:, ::-1])  # left-padded, in time order
    with torch.no_grad():
        model.eval()
        table = model.item_vectors()
        scores = (model.states(torch.from_numpy(sequences), table)[:, -1] @ table.T).numpy() if len(users) else np.zeros((0, 1))
    has = (recent >= 0).any(1)
    u, i = frame["user_index"].to_numpy(), frame["item_index"].to_numpy()
    row = np.searchsorted(users, u)
    known = (u >= 0) & (row < len(users))
    known[known] &= users[row[known]] == u[known]
    known[known] &= has[row[known]]
    value = np.full(len(u), np.nan)
    value[known] = scores[row[known], i[known] + 1]
    score = pl.col(f"{prefix}_score")
    return frame.with_columns(pl.Series(f"{prefix}_score", value, nan_to_null=True)).with_columns(
        ((score - score.mean().over(S.USER_ID)) / score.std().over(S.USER_ID)).fill_nan(0.0).alias(f"{prefix}_z")
    )


def _fit_predict(config, names, train, test, seeds=(None,)):
    """Mean of the rankers' scores over `seeds` (None: the config's own)."""
    scores = []
    for seed in seeds:
        cfg = config if seed is None else dataclasses.replace(config, seed=seed)
        scores.append(LambdaRanker(cfg, names).fit(train).predict(test))
    return np.mean(scores, axis=0)


BASE = list(RANKER_FEATURES)
NO_TEXT = [name for name in BASE if name not in MODEL_COLUMNS]  # "ranker without text features"
BAG = (7, 8, 9, 10, 11)
VARIANTS = {  # name: (feature names, ranker config changes, ranker seeds averaged)
    "seed8": (BASE, {"seed": 8}, (None,)),
    "seed9": (BASE, {"seed": 9}, (None,)),
    "no-text": (NO_TEXT, {}, (None,)),
    "bag5": (BASE, {}, BAG),
    "bag5-no-text": (NO_TEXT, {}, BAG),
    "centroid": ([*BASE, "sim_centroid"], {}, (None,)),
    "small-trees": (BASE, {"num_leaves": 7, "min_data_in_leaf": 100}, (None,)),
    "slow": (BASE, {"learning_rate": 0.02, "n_estimators": 500}, (None,)),  # one model, smaller steps: what bagging buys?
    "bag3": (BASE, {}, BAG[:3]),
    "bag3-no-text": (NO_TEXT, {}, BAG[:3]),
    # taught by what was shown and what became of it (`impression_rows`), not by clicks on candidates
    "impressions": (BASE, {}, (None,), "impressions"),
    "impressions-no-text": (NO_TEXT, {}, (None,), "impressions"),
    "impressions-bag5": (BASE, {}, BAG, "impressions"),
    # the sequence models' next-click scores as ranker features (SEQUENCE_MODELS)
    **{
        f"{prefix}{bag}": ([*BASE, f"{prefix}_score", f"{prefix}_z"], {}, seeds)
        for prefix in SEQUENCE_MODELS
        for bag, seeds in (("", (None,)), ("-bag5", BAG))
    },
}
# paired contrasts reported beside every variant − base: what the text model's features are worth to one
# ranker, and to the mean of five (ranker seeds 7-11: the ranker's own training noise averaged away)
CONTRASTS = (
    ("base", "no-text"),
    ("bag5", "bag5-no-text"),
    ("impressions", "impressions-no-text"),
    ("bag3", "bag3-no-text"),
    ("seq-bag5", "bag5"),  # what a text + ID sequence model adds to the shipped ranker
    ("seq-bag5", "seqid-bag5"),  # what text adds inside the sequence model
    ("seqtext-bag5", "bag5"),
)


@dataclasses.dataclass
class Run:
    """What a paired.py run left, opened: its test window, config, inputs, export (text model and shipped
    ranker), encoded catalog and the ranker's training rows rebuilt exactly as `recsys evaluate` built them."""

    cutoff: dt.datetime
    end: dt.datetime
    seed: int
    config: object
    data: object
    serving_config: dict
    model: object
    ranker: LambdaRanker
    catalog: object
    vectors: np.ndarray
    before: pl.LazyFrame
    t1: dt.datetime
    train: pl.DataFrame


def open_run(run: Path) -> Run:
    """`run` is WORK/shop-S-seed-T; its shop is WORK/shop-S."""
    shop = run.parent / run.name.rsplit("-seed-", 1)[0]
    report = json.loads((run / "metrics.json").read_text())
    cutoff, end = dt.datetime.fromisoformat(report["cutoff"]), dt.datetime.fromisoformat(report["end"])
    seed = int(run.name.rsplit("-", 1)[1])
    config = as_config(None, seed)
    data = load_inputs(shop / "items.parquet", shop / "events")
    _, serving_config, model, ranker = load_export(run / "artifacts" / "export", device="cpu")
    catalog = make_catalog(data.items)
    vectors = model.encode_items(item_texts(catalog.items))
    before = data.events.filter(pl.col(S.TIMESTAMP) < cutoff)
    t1 = just_after(time_bounds(before)[1]) - dt.timedelta(days=config.windows.ranker_days)
    train, _ = ranker_frame(model, catalog, before, data.items, start=t1, config=config, item_vectors=vectors)
    return Run(cutoff, end, seed, config, data, serving_config, model, ranker, catalog, vectors, before, t1, train)


def one_run(run: Path, shop: Path, chosen: list[str]) -> dict:
    r = open_run(run)
    cutoff, end, seed, config, data, serving_config = r.cutoff, r.end, r.seed, r.config, r.data, r.serving_config
    model, catalog, vectors, before, t1, train = r.model, r.catalog, r.vectors, r.before, r.t1, r.train
    events = data.events.collect()
    users = heldout_relevance(events, cutoff=cutoff, end=end).select(S.USER_ID).unique().sort(S.USER_ID)[S.USER_ID]
    snapshot = build_snapshot(catalog, vectors, data.events, data.items, cutoff=cutoff, config=config.candidates)
    test = with_features(generate_candidates(model, snapshot, users, config.candidates, serving_config["history_length"]), snapshot)
    # the training rows' own snapshots are rebuilt for the extra features (one cutoff: the window's start)
    train_snapshot = build_snapshot(catalog, vectors, before, data.items, cutoff=t1, config=config.candidates)
    train = centroid_features(train, train_snapshot, vectors)
    test = centroid_features(test, snapshot, vectors)
    for prefix, changes in SEQUENCE_MODELS.items():
        if any(name.startswith(f"{prefix}-") or name == prefix for name in chosen):
            fitted = fit_sequence(train_snapshot, vectors, changes, seed)
            print(
                f"{run.name}: {prefix} best epoch {fitted.best_epoch}, valid NDCG@10 {fitted.best_valid_ndcg:.4f}, {fitted.seconds:.0f} s",
                flush=True,
            )
            train = sequence_features(train, train_snapshot, fitted.model, prefix)
            test = sequence_features(test, snapshot, fitted.model, prefix)
    frames = {"candidates": train}
    variants = {"base": (BASE, {}, (None,))} | {name: VARIANTS[name] for name in chosen}
    if any(v[3:] == ("impressions",) for v in variants.values()):
        window = before.filter(pl.col(S.TIMESTAMP) >= t1).collect()
        shown_users = window.filter(pl.col(S.EVENT) == S.IMPRESSION).select(S.USER_ID).unique().sort(S.USER_ID)[S.USER_ID]
        candidates = generate_candidates(model, train_snapshot, shown_users, config.candidates, serving_config["history_length"])
        shown = impression_rows(model, train_snapshot, candidates, window, serving_config["history_length"])
        frames["impressions"] = centroid_features(shown, train_snapshot, vectors)
        print(
            f"{run.name}: ranker rows from candidates {train.height} ({int((train['relevance'] > 0).sum())} positive), "
            f"from impressions {shown.height} ({int((shown['relevance'] > 0).sum())} positive)",
            flush=True,
        )
    truth = shop / "truth"
    out = {}
    for name, (names, changes, seeds, *rows) in variants.items():
        fit_on = frames[rows[0] if rows else "candidates"]
        scores = _fit_predict(dataclasses.replace(config.ranker, **changes), names, fit_on, test, seeds)
        recs = rank_candidates(test.with_columns(pl.Series("_s", scores)), ["_s"], descending=[True], k=K)
        out[name] = expected_value_per_user(truth, recs, users, cutoff=cutoff, end=end).to_numpy()
    pairs = [(name, "base") for name in out if name != "base"] + [(a, b) for a, b in CONTRASTS if b != "base" and a in out and b in out]
    return {name: float(v.mean()) for name, v in out.items()} | {f"{a} − {b}": float((out[a] - out[b]).mean()) for a, b in pairs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("work", type=Path)
    parser.add_argument("--runs", nargs="*", default=None)
    parser.add_argument("--variants", nargs="*", choices=list(VARIANTS), default=list(VARIANTS), help="besides base (default: all)")
    parser.add_argument("--out", default="ranker_features.json", help="file name of the results, in WORK")
    args = parser.parse_args()
    runs = args.runs or sorted(p.name for p in args.work.glob("shop-*-seed-*") if (p / "metrics.json").is_file())
    results = {}
    for name in runs:
        started = time.perf_counter()
        shop = args.work / name.rsplit("-seed-", 1)[0]
        results[name] = one_run(args.work / name, shop, args.variants)
        print(name, {k: round(v, 4) for k, v in results[name].items()}, f"{time.perf_counter() - started:.0f} s", flush=True)
    summary = {}
    for key in results[runs[0]]:
        if " − " in key:
            c = summary[key] = across([r[key] for r in results.values()])
            print(f"{key}: EV@10 {c['mean']:+.4f} ± {c['se']:.4f} [{c['ci95'][0]:+.4f}, {c['ci95'][1]:+.4f}] over {c['n']} runs")
    write_json(args.work / args.out, {"runs": results, "paired": summary})


if __name__ == "__main__":
    main()
