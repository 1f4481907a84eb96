"""Run-to-run spread: the default model trained with several seeds on the same data, evaluated by the
same protocol (`recsys evaluate` on the demo shop, the last 3 days held out).

Training is bit-reproducible for one seed (README, "Reproducibility"), so the seed is the only thing
that changes between runs. The spread across seeds is the yardstick for any claimed improvement: a
difference smaller than it is within noise. Writes benchmarks/out/seed_spread/results.json and prints a
Markdown table: per system the mean, standard deviation, min and max of each metric, and the full
system's difference to each other system, paired by seed.

    .venv/bin/python benchmarks/seed_spread.py [--seeds 7 8 9] [--work DIR]
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from recsys.contracts.files import write_json  # noqa: E402
from recsys.evaluate import FULL  # noqa: E402
from recsys.generate import generate_shop  # noqa: E402
from recsys.jobs.evaluate import evaluate  # noqa: E402

METRICS = ("ndcg@10", "recall@20", "mrr@10", "cold_items_ndcg@10", "auc_p_click", "auc_p_purchase")


def spread(values: list[float]) -> dict:
    values = [v for v in values if v is not None and math.isfinite(v)]
    if not values:
        return {"mean": None, "sd": None, "min": None, "max": None, "n": 0}
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return {"mean": statistics.fmean(values), "sd": sd, "min": min(values), "max": max(values), "n": len(values)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[7, 8, 9])
    parser.add_argument("--work", type=Path, default=ROOT / "benchmarks" / "out" / "seed_spread")
    parser.add_argument(
        "--reuse", action="store_true", help="read the report of a seed already evaluated in --work instead of training again"
    )
    args = parser.parse_args()
    shop = args.work / "shop"
    generate_shop(shop, seed=0)
    runs = {}
    for seed in args.seeds:
        started = time.perf_counter()
        saved = args.work / f"seed-{seed}" / "metrics.json"
        if args.reuse and saved.is_file():
            report = json.loads(saved.read_text(encoding="utf-8"))
        else:
            report = evaluate(
                shop / "items.parquet", shop / "events", args.work / f"seed-{seed}", None, test_days=3, device="cpu", seed=seed
            )
        runs[seed] = {
            "systems": report["systems"],
            "queries": report["queries"],
            "model_version": report["model_version"],
            "seconds": round(time.perf_counter() - started, 1),
        }
        print(
            f"seed {seed}: model {report['model_version']}, full NDCG@10 {report['systems'][FULL]['ndcg@10']:.4f} ({runs[seed]['seconds']} s)",
            flush=True,
        )

    systems = list(next(iter(runs.values()))["systems"])
    table = {name: {m: spread([runs[s]["systems"][name].get(m) for s in args.seeds]) for m in METRICS} for name in systems}
    paired = {
        name: spread([runs[s]["systems"][FULL]["ndcg@10"] - runs[s]["systems"][name]["ndcg@10"] for s in args.seeds])
        for name in systems
        if name != FULL
    }
    results = {
        "seeds": args.seeds,
        "queries": next(iter(runs.values()))["queries"],
        "runs": runs,
        "spread": table,
        "full_minus_system_ndcg@10": paired,
    }
    write_json(args.work / "results.json", results)

    def fmt(cell: dict) -> str:
        return "–" if cell["mean"] is None else f"{cell['mean']:.4f} ± {cell['sd']:.4f} ({cell['min']:.4f}–{cell['max']:.4f})"

    print(f"\n{len(args.seeds)} seeds {args.seeds}, {results['queries']} query users; mean ± sd (min–max) across seeds\n")
    print("| system | " + " | ".join(METRICS) + " |")
    print("|---|" + "---:|" * len(METRICS))
    for name in systems:
        print(f"| {name} | " + " | ".join(fmt(table[name][m]) for m in METRICS) + " |")
    print("\n| full system − … (NDCG@10, paired by seed) | mean ± sd (min–max) |\n|---|---:|")
    for name, cell in paired.items():
        print(f"| {name} | {fmt(cell)} |")
    print(f"\nresults: {args.work / 'results.json'}")


if __name__ == "__main__":
    main()
