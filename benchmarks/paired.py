"""Paired comparison over generator seeds × training seeds: is the full system better than each other
system by more than the noise of the data and of training?

Each run is `recsys evaluate` on a generated shop (the demo's size, generator seed S, the last 3 days held
out) with a model trained with seed T. Within a run every system answers the same query users, and each
user's list is scored twice: NDCG@10 on the logged test clicks and expected value@10 (EV) by the
generator's own probabilities (Σ discount·(p_click + 2·p_purchase), an expectation with no draw of
clicks). A run gives the mean paired difference full − system; the runs are independent draws of data and
training, so the table's mean ± standard error and 95% t-interval are across runs: they include both
sources of noise. Also the value share of the oracle per system.

Writes WORK/results.json and prints Markdown tables.

    .venv/bin/python benchmarks/paired.py [--shop-seeds 0 1 2] [--seeds 7 8 9] [--mode behaviour|language] [--config FILE] [--work DIR] [--reuse]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

from scipy.stats import t as student_t  # scipy comes with lightgbm

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from recsys.contracts.files import write_json  # noqa: E402
from recsys.evaluate import FULL, ORACLE  # noqa: E402
from recsys.generate import MODES, generate_shop  # noqa: E402
from recsys.jobs.evaluate import evaluate  # noqa: E402

METRICS = ("ev@10", "ndcg@10")


def across(values: list[float]) -> dict:
    """mean, standard error across runs, 95% t-interval, n."""
    n = len(values)
    mean = statistics.fmean(values)
    se = statistics.stdev(values) / n**0.5 if n > 1 else float("nan")
    half = float(student_t.ppf(0.975, n - 1)) * se if n > 1 else float("nan")
    return {"mean": mean, "se": se, "ci95": [mean - half, mean + half], "n": n, "runs": values}


def run_once(shop: Path, work: Path, seed: int, config, reuse: bool) -> dict:
    saved = work / "metrics.json"
    if reuse and saved.is_file():
        return json.loads(saved.read_text(encoding="utf-8"))
    return evaluate(shop / "items.parquet", shop / "events", work, config, test_days=3, device="cpu", seed=seed)


def grid_parser(description: str, *, seeds: list[int], mode: str, work: str) -> argparse.ArgumentParser:
    """The options of a run over generator seeds × training seeds (this script's and benchmarks/zero_shot.py's)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--shop-seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--seeds", type=int, nargs="+", default=seeds)
    parser.add_argument("--mode", choices=MODES, default=mode, help="the generator's mode (recsys.generate.MODES)")
    parser.add_argument("--config", type=Path, default=None, help="a config file for every run (default: the shipped defaults)")
    parser.add_argument("--work", type=Path, default=ROOT / "benchmarks" / "out" / work)
    parser.add_argument("--reuse", action="store_true", help="read the runs already done in --work instead of training again")
    return parser


def grid(args: argparse.Namespace):
    """(generator seed, training seed, shop folder, run folder) of every run, generating each shop once."""
    for shop_seed in args.shop_seeds:
        shop = args.work / f"shop-{shop_seed}"
        if not (shop / "items.parquet").is_file():
            generate_shop(shop, seed=shop_seed, mode=args.mode)
        for seed in args.seeds:
            yield shop_seed, seed, shop, args.work / f"shop-{shop_seed}-seed-{seed}"


def main() -> None:
    args = grid_parser(__doc__.splitlines()[0], seeds=[7, 8, 9], mode="behaviour", work="paired").parse_args()

    runs = []
    for shop_seed, seed, shop, work in grid(args):
        started = time.perf_counter()
        report = run_once(shop, work, seed, args.config, args.reuse)
        systems = report["systems"]
        # the run's mean per-user difference full − system, as the report computed it
        diffs = {metric: {name: cell["mean"] for name, cell in report["paired"][metric].items()} for metric in METRICS}
        runs.append(
            {
                "shop_seed": shop_seed,
                "seed": seed,
                "model_version": report["model_version"],
                "queries": report["queries"],
                "systems": {name: {m: systems[name].get(m) for m in (*METRICS, "ev_share@10", "fresh_share@10")} for name in systems},
                "full_minus": diffs,
                "seconds": round(time.perf_counter() - started, 1),
            }
        )
        print(
            f"shop {shop_seed} seed {seed}: {report['queries']} queries, full EV@10 {systems[FULL].get('ev@10'):.4f} "
            f"({systems[FULL].get('ev_share@10'):.0%} of the oracle), NDCG@10 {systems[FULL]['ndcg@10']:.4f} "
            f"({runs[-1]['seconds']} s)",
            flush=True,
        )

    names = list(runs[0]["systems"])
    levels = {
        name: {m: across([r["systems"][name][m] for r in runs]) for m in (*METRICS, "ev_share@10", "fresh_share@10")} for name in names
    }
    paired = {m: {name: across([r["full_minus"][m][name] for r in runs]) for name in names if name != FULL} for m in METRICS}
    results = {
        "shop_seeds": args.shop_seeds,
        "seeds": args.seeds,
        "mode": args.mode,
        "config": str(args.config),
        "runs": runs,
        "levels": levels,
        "paired": paired,
    }
    write_json(args.work / "results.json", results)

    def cell(c: dict, pct: bool = False) -> str:
        if pct:
            return f"{c['mean']:.1%} ± {c['se']:.1%}"
        return f"{c['mean']:+.4f} ± {c['se']:.4f} [{c['ci95'][0]:+.4f}, {c['ci95'][1]:+.4f}]"

    print(f"\n{len(runs)} runs (generator seeds {args.shop_seeds} × training seeds {args.seeds}); mean ± se across runs\n")
    print("| system | EV@10 | share of oracle EV@10 | NDCG@10 | top-10 slots of last week's items |\n|---|---:|---:|---:|---:|")
    for name in names:
        lv = levels[name]
        print(
            f"| {name} | {lv['ev@10']['mean']:.4f} ± {lv['ev@10']['se']:.4f} | {cell(lv['ev_share@10'], True)} | {lv['ndcg@10']['mean']:.4f} ± {lv['ndcg@10']['se']:.4f} | {cell(lv['fresh_share@10'], True)} |"
        )
    print("\n| full system − … | EV@10 (± se) [95% t] | relative EV | NDCG@10 (± se) [95% t] |\n|---|---:|---:|---:|")
    for name in names:
        if name == FULL or name == ORACLE:
            continue
        rel = levels[FULL]["ev@10"]["mean"] / levels[name]["ev@10"]["mean"] - 1
        print(f"| {name} | {cell(paired['ev@10'][name])} | {rel:+.1%} | {cell(paired['ndcg@10'][name])} |")
    print(f"\nresults: {args.work / 'results.json'}")


if __name__ == "__main__":
    main()
