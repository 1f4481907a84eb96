"""How much of the generator's truth can text recover, per generator mode?

For each mode and generator seed: ridge regressions from item features to the true item factors (the 16-d
directions the click probability is a dot product with), fitted on 80% of the items and scored by R² on
the other 20%: the frozen pretrained encoder's vector of the product's item text, the category one-hot, and
a bag of the text's words. Also the R² of each item's category direction alone (what a model that knows only
the category could reach). λ is chosen on a split of the training items.

    .venv/bin/python benchmarks/generator_text.py [--seeds 0 1 2] [--work DIR]
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import numpy as np
import polars as pl

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from recsys.contracts import schema as S  # noqa: E402
from recsys.contracts.config import ModelConfig  # noqa: E402
from recsys.encoder import resolve_encoder, text_vectors  # noqa: E402
from recsys.generate import MODES, generate_shop  # noqa: E402
from serving.text import item_texts  # noqa: E402

LAMBDAS = (0.01, 0.1, 1.0, 10.0, 100.0)


def ridge_r2(x: np.ndarray, y: np.ndarray, rng: np.random.Generator) -> float:
    """Held-out R² (pooled over the factor dimensions) of a ridge fit, λ chosen on an inner split."""
    x = np.hstack([x, np.ones((len(x), 1))])
    order = rng.permutation(len(x))
    test, train = order[: len(x) // 5], order[len(x) // 5 :]
    inner, valid = train[len(train) // 5 :], train[: len(train) // 5]

    def fit(rows, lam):
        return np.linalg.solve(x[rows].T @ x[rows] + lam * np.eye(x.shape[1]), x[rows].T @ y[rows])

    def r2(coef, rows, ref_rows):
        residual = ((x[rows] @ coef - y[rows]) ** 2).sum()
        return 1 - residual / ((y[rows] - y[ref_rows].mean(0)) ** 2).sum()

    lam = max(LAMBDAS, key=lambda lam: r2(fit(inner, lam), valid, inner))
    return float(r2(fit(train, lam), test, train))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--work", type=Path, default=ROOT / "benchmarks" / "out" / "generator-text")
    args = parser.parse_args()
    encoder = resolve_encoder(ModelConfig())
    results = {}
    for mode in MODES:
        for seed in args.seeds:
            shop = args.work / f"{mode}-{seed}"
            if not (shop / "items.parquet").is_file():
                generate_shop(shop, users=5, days=1, new_items_per_day=0, seed=seed, mode=mode)
            items = pl.read_parquet(shop / "items.parquet")
            factors = np.stack(pl.read_parquet(shop / "truth" / "items.parquet")["factors"].to_list())
            encoded = text_vectors(item_texts(items), encoder).numpy().astype(np.float64)
            categories = items[S.CATEGORY].to_numpy()
            onehot = (categories[:, None] == np.unique(categories)[None, :]).astype(np.float64)
            docs = [set(re.findall(r"[a-z0-9][a-z0-9'-]*", t.lower())) for t in item_texts(items)]
            vocab = {w: k for k, w in enumerate(sorted(set().union(*docs)))}
            words = np.zeros((len(docs), len(vocab)))
            for i, doc in enumerate(docs):
                words[i, [vocab[w] for w in doc]] = 1.0
            rng = np.random.default_rng(seed)
            row = {name: ridge_r2(x, factors, np.random.default_rng(rng.integers(1 << 31))) for name, x in
                   (("frozen encoder", encoded), ("category one-hot", onehot), ("bag of words", words))}  # fmt: skip
            results[f"{mode}-{seed}"] = row
            print(mode, seed, {k: round(v, 3) for k, v in row.items()}, flush=True)
    args.work.mkdir(parents=True, exist_ok=True)
    (args.work / "results.json").write_text(json.dumps(results, indent=2), encoding="utf-8")
    print("\n| mode | frozen encoder R² | category one-hot R² | bag of words R² |\n|---|---:|---:|---:|")
    for mode in MODES:
        rows = [results[f"{mode}-{s}"] for s in args.seeds]
        cells = [f"{np.mean([r[k] for r in rows]):.3f} ± {np.std([r[k] for r in rows], ddof=1) / len(rows) ** 0.5:.3f}" for k in rows[0]]
        print(f"| {mode} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
