"""`recsys serve` under load on loopback (issue 12): p50/p99 latency and requests/s at several
concurrencies, and what `explain` costs, measured side by side in one run.

    .venv/bin/python benchmarks/serve_latency.py                       # 20k users × 50k items, int8 export
    .venv/bin/python benchmarks/serve_latency.py --items 5000 --users 5000 --requests 100   # a quick check

The server is a real `recsys serve` process on 127.0.0.1, started and stopped here; the load comes from one
asyncio client process on the same machine (so on 2 cores the client takes some of the CPU the server
would have). Every load level is bounded in requests and in seconds. Each `--workers` count (default 1
and 2) gets its own server, one after the other. Results: benchmarks/out/serve.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import numpy as np  # noqa: E402
import polars as pl  # noqa: E402

OUT = ROOT / "benchmarks" / "out"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def load(url: str, bodies: list[dict], concurrency: int, max_seconds: float) -> dict:
    """Send `bodies` with `concurrency` requests in flight at most; stop early after `max_seconds`."""
    latencies: list[float] = []
    failures = 0
    queue = iter(bodies)
    deadline = time.monotonic() + max_seconds
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:

        async def worker() -> None:
            nonlocal failures
            for body in queue:
                if time.monotonic() > deadline:
                    return
                started = time.perf_counter()
                answer = await client.post("/recommend", json=body)
                latencies.append(time.perf_counter() - started)
                failures += answer.status_code != 200

        started, cpu = time.perf_counter(), time.process_time()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    ms = np.asarray(latencies) * 1000
    return {
        "concurrency": concurrency,
        "requests": len(latencies),
        "failed": failures,
        "p50_ms": round(float(np.percentile(ms, 50)), 2),
        "p90_ms": round(float(np.percentile(ms, 90)), 2),
        "p99_ms": round(float(np.percentile(ms, 99)), 2),
        "requests_per_s": round(len(latencies) / wall, 1),
        "client_cpu_share": round(cpu / wall, 2),  # of one core: what the load generator took from the server
    }


def batch_explain(export: str, shop: Path, users: int = 4000) -> dict:
    """`recsys score` with and without --explain on the same users with a past, side by side."""
    from recsys.jobs.score import score

    chosen = shop / "users-explain.parquet"
    pl.scan_parquet(shop / "events").select("user_id").unique().sort("user_id").head(users).collect().write_parquet(chosen)
    runs = {}
    for explain in (False, True):
        out = shop / f"recs-explain-{explain}.parquet"
        manifest = score(
            export,
            shop / "items.parquet",
            shop / "events",
            out,
            k=20,
            users_path=chosen,
            device="cpu",
            cache_dir=OUT / "score-cache",
            explain=explain,
        )
        runs[explain] = manifest["timings_s"]["rank_s"]
    return {"users": users, "rank_s": runs[False], "rank_s_explain": runs[True], "ratio": round(runs[True] / runs[False], 2)}


@contextlib.contextmanager
def running_server(args, shop: Path, workers: int):
    """A `recsys serve` process with `workers` worker processes on a free port; its URL, then stopped."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [
        *(sys.executable, "-m", "recsys.cli", "serve", "--model", args.export, "--items", str(shop / "items.parquet")),
        *("--events", str(shop / "events"), "--port", str(port), "--device", "cpu", "--threads", str(args.threads)),
        *("--cache-dir", str(OUT / "score-cache"), "--workers", str(workers)),
    ]
    started = time.perf_counter()
    server = subprocess.Popen(command, cwd=ROOT, stderr=subprocess.PIPE, text=True)
    try:
        while True:
            assert server.poll() is None, server.stderr.read()
            assert time.perf_counter() - started < 1800, "the server did not come up within 30 minutes"
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.5)
        yield url, time.perf_counter() - started
    finally:
        server.terminate()
        server.wait(timeout=60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--export", default=str(OUT / "export-int8"), help="EXPORT_DIR (benchmarks/run.py makes it)")
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--items", type=int, default=50_000)
    parser.add_argument("--requests", type=int, default=600, help="requests per load level (bounded by --seconds too)")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--concurrency", type=int, nargs="*", default=[1, 8, 32])
    parser.add_argument("--threads", type=int, default=1, help="recsys serve --threads")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="recsys serve --workers, one server each, in turn")
    parser.add_argument("--no-explain", action="store_true", help="the load levels only, without the explanation runs")
    args = parser.parse_args()

    from recsys.generate import generate_shop

    shop = OUT / f"serve-{args.users}-{args.items}"
    if not (shop / "items.parquet").exists():
        generate_shop(shop, users=args.users, items=args.items, days=3, seed=4, new_items_per_day=0)
    known = pl.scan_parquet(shop / "events").select("user_id").unique().sort("user_id").collect()["user_id"].to_numpy()
    rng = np.random.default_rng(0)

    def bodies(n: int, **extra) -> list[dict]:  # users with a past: the costly ones; 10% unknown users
        picked = rng.choice(known, n)
        unknown = rng.random(n) < 0.1
        return [
            {"user_id": int(u) if not cold else int(known.max()) + 1 + i, "k": 20, **extra}
            for i, (u, cold) in enumerate(zip(picked, unknown))
        ]

    results = {"users": args.users, "items": args.items, "levels": []}
    for workers in args.workers:
        with running_server(args, shop, workers) as (url, startup_s):
            meta = httpx.get(f"{url}/metadata").json()
            results |= {"export": meta["precision"], "load_timings_s": meta["load_timings_s"]}
            results.setdefault("startup_s", {})[workers] = round(startup_s, 1)
            asyncio.run(load(url, bodies(30 * workers), workers, 30))  # warm-up
            for concurrency in args.concurrency:
                before = httpx.get(f"{url}/metadata").json()["served"]
                level = asyncio.run(load(url, bodies(args.requests), concurrency, args.seconds))
                after = httpx.get(f"{url}/metadata").json()["served"]
                # the counters are one process's: with several, two reads may come from different workers
                served = (after["requests"] - before["requests"]) / max(after["batches"] - before["batches"], 1)
                level |= {"mean_batch": round(served, 2) if workers == 1 else None, "workers": workers}
                results["levels"].append(level)
                print(json.dumps(level), flush=True)
            if args.no_explain or workers != args.workers[0]:
                continue
            # explanations, side by side at concurrency 1
            plain = asyncio.run(load(url, bodies(min(args.requests, 300)), 1, args.seconds))
            explained = asyncio.run(load(url, bodies(min(args.requests, 300), explain=True), 1, args.seconds))
            results["explain"] = {"plain": plain, "explained": explained, "p50_ratio": round(explained["p50_ms"] / plain["p50_ms"], 2)}
            print(json.dumps(results["explain"]), flush=True)
    if not args.no_explain:
        results["batch_explain"] = batch_explain(args.export, shop)
        print(json.dumps(results["batch_explain"]), flush=True)
    (OUT / "serve.json").write_text(json.dumps(results, indent=1))
    print(f"wrote {OUT / 'serve.json'}")


if __name__ == "__main__":
    main()
