"""Where the oracle's expected value is lost: ceilings that know the generator's formula but not everything.

On each generated shop (the demo's size, the last 3 days held out, the same queries as `recsys evaluate`):
every list is scored by the generator's own expected value@10 (EV: Σ discount·(p_click + 2·p_purchase)),
and every system below ranks the catalog at the cutoff by the formula's expected gain with one part of the
truth replaced by what could be learnt:

* oracle — every user's true interest at the middle of the test period;
* true interest at the cutoff — what the drift of interests over the 3 test days costs;
* perfect item factors — the true item factors, quality and price; each user's interest fitted to their own
  pre-cutoff exposures (`recsys.evaluate.fit_interest`, the ceiling `recsys evaluate` reports);
* … quality unknown — the same with every item's quality set to the catalog mean (what knowing how good an
  item is, beyond what it is about, is worth);
* factors read from bag of words / the frozen encoder / the category — the item factors replaced by a ridge
  readout of each representation (cross-fitted: 5 folds, each item predicted by a readout that never saw it,
  λ by cross-validation; rows renormalised to unit length), quality and price kept true: how much of the
  ceiling each item representation keeps when the rest is perfect.

The readouts learn from the true factors, so they are diagnostics, not systems: an upper bound for what a
linear item tower on that representation could know. Mean ± standard error across generator seeds.

    .venv/bin/python benchmarks/ceilings.py [--shop-seeds 0 1 2] [--mode behaviour|language] [--work DIR]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from recsys.contracts import schema as S  # noqa: E402
from recsys.contracts.config import ModelConfig  # noqa: E402
from recsys.encoder import resolve_encoder, text_vectors  # noqa: E402
from recsys.evaluate import (  # noqa: E402
    _top_k_by_gain,
    expected_value_per_user,
    heldout_relevance,
    oracle_recommendations,
    perfect_item_recommendations,
    split_test_period,
)
from recsys.generate import MODES, _interest, _interest_weight, _lookup, _to_us, _truth, generate_shop, true_items  # noqa: E402
from serving.catalog import make_catalog  # noqa: E402
from serving.text import item_texts  # noqa: E402

LAMBDAS = (0.01, 0.1, 1.0, 10.0, 100.0)
FOLDS = 5


def cross_fitted_readout(x: np.ndarray, y: np.ndarray, seed: int) -> tuple[np.ndarray, float]:
    """(each row's prediction by a ridge fit on the other folds, renormalised; the held-out R²), λ by CV."""
    x = np.hstack([x, np.ones((len(x), 1))])
    fold = np.random.default_rng(seed).permutation(len(x)) % FOLDS

    def predict(lam: float) -> np.ndarray:
        out = np.zeros_like(y)
        for f in range(FOLDS):
            train, test = fold != f, fold == f
            coef = np.linalg.solve(x[train].T @ x[train] + lam * np.eye(x.shape[1]), x[train].T @ y[train])
            out[test] = x[test] @ coef
        return out

    best = min(LAMBDAS, key=lambda lam: float(((predict(lam) - y) ** 2).sum()))
    pred = predict(best)
    r2 = 1.0 - float(((pred - y) ** 2).sum()) / float(((y - y.mean(0)) ** 2).sum())
    return pred / np.maximum(np.linalg.norm(pred, axis=1, keepdims=True), 1e-9), r2


def run_shop(shop: Path, encoder: Path, seed: int) -> dict:
    items = pl.read_parquet(shop / "items.parquet")
    events = pl.read_parquet(shop / "events")
    catalog = make_catalog(items)
    cutoff, end = split_test_period(events.lazy(), test_days=3)
    users = pl.Series(S.USER_ID, heldout_relevance(events, cutoff=cutoff, end=end)[S.USER_ID].unique().sort())
    truth_dir = shop / "truth"
    truth = true_items(truth_dir, catalog.ids.to_numpy())
    ordered = catalog.items  # row-aligned with `truth`
    texts = item_texts(ordered)
    docs = [set(re.findall(r"[a-z0-9][a-z0-9'-]*", t.lower())) for t in texts]
    vocab = {w: k for k, w in enumerate(sorted(set().union(*docs)))}
    words = np.zeros((len(docs), len(vocab)))
    for i, doc in enumerate(docs):
        words[i, [vocab[w] for w in doc]] = 1.0
    categories = ordered[S.CATEGORY].to_numpy()
    representations = {
        "bag of words": words,
        "frozen encoder": text_vectors(texts, encoder).numpy().astype(np.float64),
        "category": (categories[:, None] == np.unique(categories)[None, :]).astype(np.float64),
    }

    def with_interest(u: np.ndarray) -> pl.DataFrame:
        rows = np.flatnonzero(catalog.available_at(cutoff))
        return _top_k_by_gain(lambda b, block, ids: truth.gains(u[b : b + len(block)], rows), catalog, events, users, cutoff=cutoff, k=10)

    t = _truth(truth_dir)
    at_cutoff = _interest(
        t.u_start[_lookup(users.to_numpy(), t.user_id, "user")],
        t.u_end[_lookup(users.to_numpy(), t.user_id, "user")],
        float(_interest_weight(np.array(_to_us(cutoff)), t.start_us, t.end_us)),
    )
    lists = {
        "oracle": oracle_recommendations(truth_dir, catalog, events, users, cutoff=cutoff, end=end, k=10),
        "true interest at the cutoff": with_interest(at_cutoff),
        "perfect item factors": perfect_item_recommendations(truth_dir, catalog, events, users, cutoff=cutoff, k=10),
        "… quality unknown": perfect_item_recommendations(
            truth_dir,
            catalog,
            events,
            users,
            cutoff=cutoff,
            k=10,
            items=dataclasses.replace(truth, quality=np.full_like(truth.quality, truth.quality.mean())),
        ),
    }
    r2 = {}
    for name, x in representations.items():
        factors, r2[name] = cross_fitted_readout(x, truth.factors, seed)
        lists[f"factors read from {name}"] = perfect_item_recommendations(
            truth_dir, catalog, events, users, cutoff=cutoff, k=10, items=dataclasses.replace(truth, factors=factors)
        )
    ev = {name: float(expected_value_per_user(truth_dir, recs, users, cutoff=cutoff, end=end).mean()) for name, recs in lists.items()}
    return {"queries": users.len(), "ev@10": ev, "readout_r2": r2}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shop-seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--mode", choices=MODES, default="behaviour")
    parser.add_argument("--work", type=Path, default=ROOT / "benchmarks" / "out" / "ceilings")
    args = parser.parse_args()
    encoder = resolve_encoder(ModelConfig())
    runs = []
    for seed in args.shop_seeds:
        shop = args.work / f"{args.mode}-{seed}"
        if not (shop / "items.parquet").is_file():
            generate_shop(shop, seed=seed, mode=args.mode)  # the demo's size, as benchmarks/paired.py
        started = time.perf_counter()
        runs.append(run_shop(shop, encoder, seed))
        print(f"shop {seed}: {runs[-1]} ({time.perf_counter() - started:.0f} s)", flush=True)
    args.work.mkdir(parents=True, exist_ok=True)
    (args.work / f"results-{args.mode}.json").write_text(
        json.dumps({"mode": args.mode, "seeds": args.shop_seeds, "runs": runs}, indent=2), encoding="utf-8"
    )
    n = len(runs)
    print(f"\n{args.mode} mode, generator seeds {args.shop_seeds}; mean ± se across shops\n")
    print("| system | EV@10 | share of the oracle's | share of the perfect-item ceiling | readout R² |\n|---|---:|---:|---:|---:|")
    for name in runs[0]["ev@10"]:
        ev = np.array([r["ev@10"][name] for r in runs])
        share = ev / np.array([r["ev@10"]["oracle"] for r in runs])
        of_ceiling = ev / np.array([r["ev@10"]["perfect item factors"] for r in runs])
        key = name.removeprefix("factors read from ")
        r2 = np.array([r["readout_r2"][key] for r in runs]) if key in runs[0]["readout_r2"] else None

        def cell(x: np.ndarray, pct: bool = False) -> str:
            se = x.std(ddof=1) / n**0.5 if n > 1 else float("nan")
            return f"{x.mean():.1%} ± {se:.1%}" if pct else f"{x.mean():.3f} ± {se:.3f}"

        print(f"| {name} | {cell(ev)} | {cell(share, True)} | {cell(of_ceiling, True)} | {cell(r2) if r2 is not None else '–'} |")


if __name__ == "__main__":
    main()
