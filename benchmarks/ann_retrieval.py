"""Exact vs approximate text retrieval side by side (issue 13): the product's exact blocked product
(`serving.candidates._text_top_k`) against the faiss IVF index (`serving.ann.AnnIndex`), top-100 for the
same user vectors, at growing catalog sizes: build time, search time, recall@100 against exact.

    .venv/bin/python benchmarks/ann_retrieval.py --sizes 50000 1000000 5000000

The 50k catalog is the serving benchmark's shop, encoded by the int8 export (from the item-vector cache);
its users' interest vectors come from the export's user graph. Larger catalogs are synthetic neighbours
of those real vectors (a real vector plus Gaussian noise, renormalised), so they keep the real
vectors' cluster structure; that is an assumption, stated. Results: benchmarks/out/ann.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

OUT = ROOT / "benchmarks" / "out"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="*", default=[50_000, 1_000_000])
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--nprobe", type=int, nargs="*", default=[8, 32])
    parser.add_argument("--noise", type=float, default=0.15)
    args = parser.parse_args()

    from recsys.jobs.serve import load_recommender
    from serving.ann import AnnIndex
    from serving.candidates import _text_top_k, user_vectors

    shop = OUT / "serve-20000-50000"
    rec = load_recommender(OUT / "export-int8", shop / "items.parquet", shop / "events", device="cpu", cache_dir=OUT / "score-cache")
    real = rec.snapshot.item_vectors
    index = rec.snapshot.users["user_index"].to_numpy()[: args.users]
    users, _ = user_vectors(rec.model, rec.snapshot, index, rec.history_length)
    users = np.ascontiguousarray(users, dtype=np.float32)
    none = np.zeros(0, np.int64)
    rng = np.random.default_rng(0)
    results = {"users": len(users), "k": 100, "noise": args.noise, "sizes": {}}
    for n in args.sizes:
        if n <= len(real):
            vectors = real[:n]
        else:
            vectors = real[rng.integers(0, len(real), n)] + args.noise / np.sqrt(real.shape[1]) * rng.normal(
                size=(n, real.shape[1])
            ).astype(np.float32)
            vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
            vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        snapshot = type(rec.snapshot)(**{**rec.snapshot.__dict__, "item_vectors": vectors, "available": np.ones(n, bool), "index": None})
        tic = time.perf_counter()
        truth, _ = _text_top_k(users, np.ascontiguousarray(vectors.T), snapshot.available, none, none, 100)
        exact_s = time.perf_counter() - tic
        row = {"exact_s": round(exact_s, 3), "exact_users_per_s": round(len(users) / exact_s, 1), "ann": {}}
        tic = time.perf_counter()
        ann = AnnIndex.build(vectors)
        row["build_s"] = round(time.perf_counter() - tic, 2)
        row["nlist"] = ann.index.nlist
        for nprobe in args.nprobe:
            ann.nprobe = nprobe
            tic = time.perf_counter()
            top, _ = ann.search(users, 100, snapshot.available, none, none)
            seconds = time.perf_counter() - tic
            recall = float(np.mean([len(set(a) & set(b)) / 100 for a, b in zip(top, truth)]))
            row["ann"][str(nprobe)] = {
                "search_s": round(seconds, 3),
                "speedup": round(exact_s / seconds, 1),
                "recall@100": round(recall, 4),
            }
        results["sizes"][str(n)] = row
        print(n, json.dumps(row), flush=True)
        del vectors, snapshot, ann
    (OUT / "ann.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
