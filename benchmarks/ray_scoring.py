"""Local vs Ray scoring side by side (issue 11): the same `recsys score` on the same inputs with the local
engine and with Ray on 1 and 2 workers (a Ray started in the job's process), users/s and peak memory
per process, and the rows compared.

    .venv/bin/python benchmarks/ray_scoring.py                  # 100k users × 50k items, int8 export
    .venv/bin/python benchmarks/ray_scoring.py --users 10000 --items 5000

Peak memory: the job's own process (benchmarks/peak_rss.py: ru_maxrss of the children) and, for Ray, the
largest actor process (sampled every 0.2 s with psutil). Results: benchmarks/out/ray_scoring.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import polars as pl  # noqa: E402
import psutil  # noqa: E402

from recsys.contracts.files import read_json  # noqa: E402

OUT = ROOT / "benchmarks" / "out"


def run(command: list[str]) -> tuple[float, dict]:
    """(peak RSS MiB of the largest Ray actor seen, peak_rss.py's report) of one job."""
    peak = {"actor": 0.0}
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            for process in psutil.process_iter(["cmdline", "memory_info"]):
                if "MapWorker" in " ".join(process.info["cmdline"] or []) and process.info["memory_info"]:
                    peak["actor"] = max(peak["actor"], process.info["memory_info"].rss / 2**20)
            time.sleep(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    done.set()
    if result.returncode != 0:
        raise RuntimeError(result.stderr[-3000:])
    return peak["actor"], json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--export", default=str(OUT / "export-int8"))
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--items", type=int, default=50_000)
    args = parser.parse_args()
    from recsys.generate import generate_shop

    shop = OUT / f"score-{args.users}-{args.items}"
    if not (shop / "items.parquet").exists():
        generate_shop(shop, users=args.users, items=args.items, days=3, seed=4, new_items_per_day=0)
    users = shop / "users-with-history.parquet"  # the users who cost the most: each has a past
    pl.scan_parquet(shop / "events").select("user_id").unique().sort("user_id").collect().write_parquet(users)
    base = [sys.executable, str(ROOT / "benchmarks" / "peak_rss.py"), "-m", "recsys.cli", "score", "--model", args.export]
    base += [
        "--items",
        str(shop / "items.parquet"),
        "--events",
        str(shop / "events"),
        "--users",
        str(users),
        "--k",
        "20",
        "--device",
        "cpu",
    ]
    base += ["--cache-dir", str(OUT / "score-cache")]
    results = {"users_with_history": pl.read_parquet(users).height, "items": args.items, "runs": {}}
    outputs = {}
    for label, extra in (
        ("local", []),
        ("ray-1", ["--engine", "ray", "workers=1"]),
        ("ray-2", ["--engine", "ray", "workers=2"]),
    ):
        out = OUT / f"ray-bench-{label}" / ("recs.parquet" if label == "local" else "recs")
        command = [*base, "--out", str(out)]
        if extra:
            config = out.parent / "engine.toml"
            out.parent.mkdir(parents=True, exist_ok=True)
            config.write_text(f"[engine]\n{extra[2]}\ncpus_per_worker = 1\nobject_store_mb = 2048\n")
            command += ["--engine", "ray", "--config", str(config)]
        actor_rss, report = run(command)
        manifest = read_json(out.with_name(out.name.removesuffix(".parquet") + ".manifest.json"))
        t = manifest["timings_s"]
        results["runs"][label] = {
            "users_per_s_excl_encode": manifest["users_per_second"],
            "rank_s": t["rank_s"],
            "total_s": t["total_s"],
            "job_peak_rss_mib": report["peak_rss_mib"],
            "largest_actor_rss_mib": round(actor_rss, 1) if extra else None,
        }
        outputs[label] = pl.read_parquet(out).sort("user_id", "rank")
        print(label, json.dumps(results["runs"][label]), flush=True)
    results["same_rows_as_local"] = {label: outputs[label].equals(outputs["local"]) for label in outputs if label != "local"}
    (OUT / "ray_scoring.json").write_text(json.dumps(results, indent=1))
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
