"""Nightly rerun with 1% of items changed vs a cold run (issue 13), int8 and fp32 exports side by side,
at several catalog sizes; and whether the rerun's vectors equal those a cold run computes for the same
texts (a cached vector must not depend on which other items were encoded with it).

    .venv/bin/python benchmarks/rerun.py --items 5000 20000

Results: benchmarks/out/rerun.json. (benchmarks/run.py's `rerun` is the 5,000-item int8 case of this.)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import polars as pl  # noqa: E402

from recsys.contracts.files import read_json  # noqa: E402

OUT = ROOT / "benchmarks" / "out"


def measure(model, manifest: dict, texts: list[str], cache_dir: Path) -> dict:
    """A cold run into an empty cache, then tonight's rerun with 1% of the texts changed. Returns the
    timings with the vectors of both runs, the changed rows and tonight's texts; the cache is removed."""
    from serving.cache import ItemVectorCache, encoder_key

    n = len(texts)
    shutil.rmtree(cache_dir, ignore_errors=True)
    cache = ItemVectorCache(cache_dir, encoder_key(manifest, 48))
    tic = time.perf_counter()
    cold, _ = cache.vectors(model, texts)
    cold_s = time.perf_counter() - tic
    changed = sorted(np.random.default_rng(0).choice(n, n // 100, replace=False))
    nightly = list(texts)
    for i in changed:
        nightly[i] = nightly[i] + " (new edition)"
    tic = time.perf_counter()
    warm, stats = cache.vectors(model, nightly)
    rerun_s = time.perf_counter() - tic
    shutil.rmtree(cache_dir, ignore_errors=True)
    return {
        "cold_s": round(cold_s, 2),
        "rerun_s": round(rerun_s, 3),
        "speedup": round(cold_s / rerun_s, 1),
        "encoded": stats.encoded,
        "cold": cold,
        "warm": warm,
        "changed": changed,
        "nightly": nightly,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, nargs="*", default=[5000, 20000])
    args = parser.parse_args()
    from serving.onnx_model import OnnxInterestModel
    from serving.text import item_texts

    catalog = item_texts(pl.read_parquet(OUT / "serve-20000-50000" / "items.parquet"))
    results = {}
    for precision in ("int8", "fp32"):
        export = OUT / f"export-{precision}"
        manifest = read_json(export / "manifest.json")
        model = OnnxInterestModel(export, precision=precision)
        for n in args.items:
            row = measure(model, manifest, catalog[:n], OUT / f"rerun-cache-{precision}-{n}")
            fresh = model.encode_items(row.pop("nightly"))  # a cold run of tonight's texts, no cache
            warm = row.pop("warm")
            row.update(rerun_equals_cold=bool(np.array_equal(warm, fresh)), max_abs_diff_vs_cold=float(np.abs(warm - fresh).max()))
            row.pop("cold"), row.pop("changed")
            results[f"{precision}-{n}"] = row
            print(precision, n, json.dumps(row), flush=True)
    (OUT / "rerun.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
