"""After − before, paired by run: two `benchmarks/paired.py` work folders with the same shops and seeds.

For every run present in both (shop-S-seed-T), each query user's EV@10 and NDCG@10 of one system (the full
system by default) in AFTER minus the same user's in BEFORE; a run's value is the mean over its users.
The text model's test AUCs (p_click, p_purchase over the test exposures) are paired the same way, one value
per run from each run's metrics.json: this is how "multi-task ≥ click-only" and "fine-tuned ≥ frozen" get
their intervals.
The runs are independent draws of data and training, so the mean ± se and 95% t-interval are across runs.

    .venv/bin/python benchmarks/compare_runs.py BEFORE AFTER [--system NAME]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from paired import METRICS, across  # noqa: E402

from recsys.evaluate import FULL  # noqa: E402

AUCS = ("auc_p_click", "auc_p_purchase")


def _system(path: Path, system: str) -> dict:
    return json.loads(path.read_text())["systems"].get(system, {})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    parser.add_argument("--system", default=FULL)
    args = parser.parse_args()
    diffs: dict[str, list[float]] = {m: [] for m in (*METRICS, *AUCS)}
    runs = sorted(p.name for p in args.after.glob("shop-*-seed-*") if (args.before / p.name / "artifacts" / "per_user.parquet").is_file())
    runs = [r for r in runs if (args.after / r / "artifacts" / "per_user.parquet").is_file()]
    for run in runs:
        before = pl.read_parquet(args.before / run / "artifacts" / "per_user.parquet")
        after = pl.read_parquet(args.after / run / "artifacts" / "per_user.parquet")
        both = before.join(after, on="user_id", suffix="|after")
        if both.height != before.height or both.height != after.height:
            raise SystemExit(f"{run}: the two runs have different query users ({before.height} vs {after.height})")
        for metric in METRICS:
            column = f"{metric}|{args.system}"
            diffs[metric].append(float((both[f"{column}|after"] - both[column]).mean()))
        aucs = [_system(folder / run / "metrics.json", args.system) for folder in (args.before, args.after)]
        for metric in AUCS:
            if aucs[0].get(metric) is not None and aucs[1].get(metric) is not None:
                diffs[metric].append(float(aucs[1][metric]) - float(aucs[0][metric]))
    print(f"{len(runs)} runs: {', '.join(runs)}")
    for metric in (*METRICS, *AUCS):
        if len(diffs[metric]) != len(runs):
            continue
        cell = across(diffs[metric])
        print(
            f"{args.system} {metric}: after − before {cell['mean']:+.4f} ± {cell['se']:.4f} [{cell['ci95'][0]:+.4f}, {cell['ci95'][1]:+.4f}] (runs: {', '.join(f'{v:+.4f}' for v in cell['runs'])})"
        )


if __name__ == "__main__":
    main()
