"""What a bag of rankers (`ranker.bag`) costs at scoring time: the same export, snapshot and users ranked by
the run's shipped ranker and by bags of 3 and 5 refitted on the same ranker rows, side by side, repetitions
alternated. Users with a history only (the others share one list). Prints users/s and the ratio.

    .venv/bin/python benchmarks/ranker_bag_speed.py benchmarks/out/paired/shop-0-seed-7 [--reps 3]
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from ranker_features import open_run  # noqa: E402

from recsys.contracts import schema as S  # noqa: E402
from serving.ranking import RANKER_FEATURES, LambdaRanker  # noqa: E402
from serving.score import prepare, rank_chunks  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    r = open_run(args.run)
    config, model, catalog, vectors, data = r.config, r.model, r.catalog, r.vectors, r.data
    frame, shipped, cutoff, serving_config = r.train, r.ranker, r.cutoff, r.serving_config
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
