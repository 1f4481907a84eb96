"""Zero-shot transfer to a held-out domain, over generator seeds × training seeds: does a model that never saw
one event of a domain rank its items at least as well as popularity computed from the domain's own events?

Each run is the cross-domain part of `recsys evaluate --ablations` alone (`recsys.jobs.evaluate.cross_domain`):
a generated shop (the demo's size, generator seed S, the last 3 days held out), the domain with the most test
queries held out of training entirely, a model trained with seed T on the other domains, and the domain's
test users ranked among its items only. Within a run every system answers the same users; each list is
scored by expected value@10 under the generator's probabilities and by NDCG@10 on the logged clicks. A run
gives the mean per-user difference zero-shot − popularity within the domain; the runs are independent
draws, so the mean ± se and 95% t-interval are across runs.

    .venv/bin/python benchmarks/zero_shot.py [--mode language] [--shop-seeds 0 1 2] [--seeds 7 8] [--work DIR]
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from paired import across, grid, grid_parser  # noqa: E402

from recsys.contracts.files import write_json  # noqa: E402
from recsys.evaluate import heldout_relevance, pick_holdout_domain, split_test_period, truth_folder  # noqa: E402
from recsys.jobs.common import as_config, load_inputs  # noqa: E402
from recsys.jobs.evaluate import cross_domain  # noqa: E402

METRICS = ("ev@10", "ndcg@10")


def run_once(shop: Path, work: Path, seed: int, config_path: Path | None, reuse: bool) -> dict:
    saved = work / "cross_domain.json"
    if reuse and saved.is_file():
        return json.loads(saved.read_text(encoding="utf-8"))
    config = as_config(config_path, seed)
    data = load_inputs(shop / "items.parquet", shop / "events")
    cutoff, end = split_test_period(data.events, test_days=3)
    relevant = heldout_relevance(data.events.collect(), cutoff=cutoff, end=end)
    domain = pick_holdout_domain(data.items, relevant, None)
    result = cross_domain(
        data, config, domain, cutoff=cutoff, end=end, folder=work, precision="fp32", device="cpu", truth_dir=truth_folder(data)
    )
    write_json(saved, result)
    return result


def main() -> None:
    args = grid_parser(__doc__.splitlines()[0], seeds=[7, 8], mode="language", work="zero_shot").parse_args()

    runs = []
    for shop_seed, seed, shop, work in grid(args):
        started = time.perf_counter()
        result = run_once(shop, work, seed, args.config, args.reuse)
        runs.append({"shop_seed": shop_seed, "seed": seed, **result, "seconds": round(time.perf_counter() - started, 1)})
        levels = ", ".join(f"{name} EV {m.get('ev@10', float('nan')):.3f}" for name, m in result["systems"].items())
        print(
            f"shop {shop_seed} seed {seed}: domain {result['domain']}, {result['queries']} users; {levels} ({runs[-1]['seconds']} s)",
            flush=True,
        )

    names = list(runs[0]["systems"])
    levels = {name: {m: across([r["systems"][name][m] for r in runs]) for m in (*METRICS, "ev_share@10")} for name in names}
    contrasts = list(runs[0]["paired"]["ev@10"])
    paired = {m: {c: across([r["paired"][m][c]["mean"] for r in runs]) for c in contrasts} for m in METRICS}
    write_json(
        args.work / "results.json",
        {"mode": args.mode, "shop_seeds": args.shop_seeds, "seeds": args.seeds, "runs": runs, "levels": levels, "paired": paired},
    )

    print(f"\n{len(runs)} runs ({args.mode} shops {args.shop_seeds} × training seeds {args.seeds}); mean ± se across runs\n")
    print("| system | EV@10 | share of the oracle's EV within the domain | NDCG@10 |\n|---|---:|---:|---:|")
    for name in names:
        lv = levels[name]
        print(
            f"| {name} | {lv['ev@10']['mean']:.4f} ± {lv['ev@10']['se']:.4f} | {lv['ev_share@10']['mean']:.1%} | {lv['ndcg@10']['mean']:.4f} ± {lv['ndcg@10']['se']:.4f} |"
        )
    print("\n| paired, per run | EV@10 (± se) [95% t] | NDCG@10 (± se) [95% t] |\n|---|---:|---:|")
    for c in contrasts:
        cells = [paired[m][c] for m in METRICS]
        print(
            "| "
            + c
            + " | "
            + " | ".join(f"{x['mean']:+.4f} ± {x['se']:.4f} [{x['ci95'][0]:+.4f}, {x['ci95'][1]:+.4f}]" for x in cells)
            + " |"
        )
    print(f"\nresults: {args.work / 'results.json'}")


if __name__ == "__main__":
    main()
