"""The text model fine-tuned locally and data-parallel on Ray with 1 and 2 workers (issue 11), side by
side on the demo's shop with the real encoder and the default config: validation AUCs, the ranker's
validation NDCG@10, and wall time. A Ray started inside this process on the same 2 cores.

    .venv/bin/python benchmarks/ray_training.py          # ~15 min on 2 cores

Results: benchmarks/out/ray_training.json.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

OUT = ROOT / "benchmarks" / "out"


def main() -> None:
    from recsys.contracts.config import Config
    from recsys.contracts.files import read_json
    from recsys.generate import generate_shop
    from recsys.jobs.common import train_model_dir
    from recsys.jobs.ray_engine import Cluster

    shop = OUT / "demo-shop"
    if not (shop / "items.parquet").exists():
        generate_shop(shop, seed=0)
    results = {}
    for label, workers in (("local", 0), ("ray-1", 1), ("ray-2", 2)):
        config = Config().replace(engine={"workers": max(workers, 1), "cpus_per_worker": 2 // max(workers, 1)})
        folder = OUT / f"ray-train-{label}"
        started = time.perf_counter()
        if workers:
            with Cluster(config.engine) as cluster:
                train_model_dir(shop / "items.parquet", shop / "events", folder, config, cluster=cluster)
        else:
            train_model_dir(shop / "items.parquet", shop / "events", folder, config)
        metrics = read_json(folder / "metrics.json")
        curves = metrics["text_model"]["curves"]
        best = curves["best_epoch"] - 1
        results[label] = {
            "seconds": round(time.perf_counter() - started, 1),
            "best_epoch": curves["best_epoch"],
            "valid_click_auc": curves["valid_click_auc"][best],
            "valid_purchase_auc": curves["valid_purchase_auc"][best],
            "ranker_valid_ndcg@10": metrics["ranker"]["valid_ndcg@10"],
            "ranker_fold_std": metrics["ranker"]["valid_ndcg@10_fold_std"],
        }
        print(label, json.dumps(results[label]), flush=True)
    (OUT / "ray_training.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
