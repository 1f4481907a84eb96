"""What a bag of rankers (`ranker.bag`) costs at scoring time: the same export, snapshot and users ranked by
the run's shipped ranker and by bags of 3 and 5 refitted on the same ranker rows, side by side, repetitions
alternated. Users with a history only (the others share one list). Prints users/s and the ratio.

    .venv/bin/python benchmarks/ranker_bag_speed.py benchmarks/out/paired/shop-0-seed-7 [--reps 3]
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import sys
import time
from pathlib import Path

import polars as pl

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from recsys.contracts import schema as S  # noqa: E402
from recsys.contracts.timeline import just_after, time_bounds  # noqa: E402
from recsys.jobs.common import as_config, load_inputs, ranker_frame  # noqa: E402
from serving.artifacts import load_export  # noqa: E402
from serving.catalog import make_catalog  # noqa: E402
from serving.ranking import RANKER_FEATURES, LambdaRanker  # noqa: E402
from serving.score import prepare, rank_chunks  # noqa: E402
from serving.text import item_texts  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    report = json.loads((args.run / "metrics.json").read_text())
    cutoff = dt.datetime.fromisoformat(report["cutoff"])
    shop = args.run.parent / args.run.name.rsplit("-seed-", 1)[0]
    config = as_config(None, int(args.run.name.rsplit("-", 1)[1]))
    data = load_inputs(shop / "items.parquet", shop / "events")
    _, serving_config, model, shipped = load_export(args.run / "artifacts" / "export", device="cpu")
    catalog = make_catalog(data.items)
    vectors = model.encode_items(item_texts(catalog.items))
    before = data.events.filter(pl.col(S.TIMESTAMP) < cutoff)
    t1 = just_after(time_bounds(before)[1]) - dt.timedelta(days=config.windows.ranker_days)
    frame, _ = ranker_frame(model, catalog, before, data.items, start=t1, config=config, item_vectors=vectors)
    rankers = {"shipped": shipped}
    for bag in (3, 5):
        rankers[f"bag{bag}"] = LambdaRanker(dataclasses.replace(config.ranker, bag=bag), RANKER_FEATURES).fit(frame)
    snapshot, tables = prepare(catalog, vectors, data.events, data.items, cutoff=cutoff, candidates=config.candidates)
    users = snapshot.users[S.USER_ID]
    best = {name: float("inf") for name in rankers}
    for _ in range(args.reps):
        for name, ranker in rankers.items():
            started = time.perf_counter()
            for _, _ in rank_chunks(
                model, ranker, snapshot, tables, users, k=10, candidates=config.candidates, history_length=serving_config["history_length"]
            ):
                pass
            best[name] = min(best[name], time.perf_counter() - started)
    for name, seconds in best.items():
        print(
            f"{name}: {rankers[name].n_trees} trees, {users.len()} users with a history in {seconds:.2f} s = "
            f"{users.len() / seconds:.0f} users/s ({best['shipped'] / seconds:.2f}x the shipped ranker's throughput)"
        )


if __name__ == "__main__":
    main()
