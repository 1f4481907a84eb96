"""Side-by-side benchmarks for the nightly batch (issue 5), written to benchmarks/RESULTS.md.

    scripts/bootstrap.sh bench && .venv/bin/python benchmarks/run.py            # everything (~20-30 min on 2 cores)
    .venv/bin/python benchmarks/run.py --only encoding rerun --quick              # a subset, smaller sizes

Every comparison is measured in the same run, one variant after the other, and reported as a ratio
as well as absolute numbers; nothing here is part of the test suite.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
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


def machine() -> dict:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = ""
    try:
        kb = int(next(line for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal")).split()[1])
        memory = f"{kb / 2**20:.0f} GiB"
    except (OSError, StopIteration):
        pass
    import lightgbm
    import onnxruntime
    import torch

    return {
        "date": dt.date.today().isoformat(),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory": memory,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__,
        "polars": pl.__version__,
        "lightgbm": lightgbm.__version__,
    }


def setup(quick: bool) -> dict:
    """A real model (pretrained encoder, one epoch of heads) and its fp32 and int8 exports."""
    from export.onnx_export import export_model
    from recsys.contracts.config import Config
    from recsys.generate import generate_shop
    from recsys.jobs.common import train_model_dir

    shop = OUT / "shop"
    if not (OUT / "model" / "manifest.json").exists():
        generate_shop(shop, users=1500, items=1200, days=14, seed=1)
        cfg = Config().replace(train={"head_epochs": 1, "epochs": 0})
        train_model_dir(shop / "items.parquet", shop / "events", OUT / "model", cfg)
    for precision in ("fp32", "int8"):
        if not (OUT / f"export-{precision}" / "manifest.json").exists():
            export_model(OUT / "model", OUT / f"export-{precision}", precision=precision)
    return {"shop": shop, "model": OUT / "model", "fp32": OUT / "export-fp32", "int8": OUT / "export-int8"}


def catalog_texts(n: int, seed: int) -> list[str]:
    from recsys.generate import generate_shop
    from serving.text import item_texts

    folder = OUT / f"catalog-{n}-{seed}"
    if not (folder / "items.parquet").exists():
        generate_shop(folder, users=50, items=n, days=1, seed=seed, new_items_per_day=0)
    return item_texts(pl.read_parquet(folder / "items.parquet"))[:n]


def _rate(n: int, seconds: float) -> float:
    return n / seconds if seconds > 0 else float("inf")


def bench_encoding(art: dict, quick: bool) -> dict:
    """Naive PyTorch eager fp32 padded to 64 tokens vs ONNX Runtime fp32 and int8, length-bucketed."""
    import torch

    from recsys.model_io import load_text_model
    from serving.onnx_model import OnnxInterestModel

    texts = catalog_texts(512 if quick else 2048, seed=2)
    model, tokenizer, _ = load_text_model(art["model"])
    torch.set_num_threads(os.cpu_count() or 1)
    lengths = [len(t) for t in tokenizer.encode(texts)]
    from tokenizers import Tokenizer

    fixed = Tokenizer.from_file(str(tokenizer.path))  # the naive way: same truncation, every text padded to 64
    fixed.enable_truncation(max_length=tokenizer.max_length)
    fixed.enable_padding(length=64, pad_id=tokenizer.pad_id)

    def torch_naive() -> np.ndarray:
        out = []
        with torch.inference_mode():
            for start in range(0, len(texts), 64):
                enc = fixed.encode_batch(texts[start : start + 64])
                ids = torch.tensor([e.ids for e in enc])
                mask = torch.tensor([e.attention_mask for e in enc])
                out.append(model.items(ids, mask).numpy())
        return np.concatenate(out)

    results = {}
    tic = time.perf_counter()
    reference = torch_naive()
    results["pytorch_fp32_pad64"] = {"items_per_s": _rate(len(texts), time.perf_counter() - tic)}
    neighbours = np.argsort(-(reference @ reference.T), axis=1)[:, 1:11]
    for name, folder, precision in (("ort_fp32_bucketed", art["fp32"], "fp32"), ("ort_int8_bucketed", art["int8"], "int8")):
        onnx = OnnxInterestModel(folder, precision=precision)
        onnx.encode_items(texts[:32])  # warm-up
        tic = time.perf_counter()
        vectors = onnx.encode_items(texts)
        seconds = time.perf_counter() - tic
        cos = (vectors * reference).sum(1) / (np.linalg.norm(vectors, axis=1) * np.linalg.norm(reference, axis=1))
        got = np.argsort(-(vectors @ vectors.T), axis=1)[:, 1:11]
        overlap = float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(neighbours, got)]))
        results[name] = {
            "items_per_s": _rate(len(texts), seconds),
            "mean_cosine_vs_fp32": float(cos.mean()),
            "min_cosine_vs_fp32": float(cos.min()),
            "top10_overlap_vs_fp32": overlap,
        }
    base = results["pytorch_fp32_pad64"]["items_per_s"]
    for value in results.values():
        value["speedup_vs_naive"] = value["items_per_s"] / base
    return {
        "items": len(texts),
        "mean_tokens": float(np.mean(lengths)),
        "p99_tokens": float(np.percentile(lengths, 99)),
        "max_length": tokenizer.max_length,
        "variants": results,
    }


def bench_rerun(art: dict, quick: bool) -> dict:
    """Nightly rerun with 1% of items changed (item-vector cache) vs a cold run (no cache)."""
    from benchmarks.rerun import measure
    from serving.onnx_model import OnnxInterestModel

    n = 1000 if quick else 5000
    manifest = read_json(art["int8"] / "manifest.json")
    run = measure(OnnxInterestModel(art["int8"], precision="int8"), manifest, catalog_texts(n, seed=3), OUT / "rerun-cache")
    unchanged = np.setdiff1d(np.arange(n), run["changed"])
    return {
        "items": n,
        "changed": len(run["changed"]),
        "cold_s": run["cold_s"],
        "rerun_s": run["rerun_s"],
        "speedup": run["speedup"],
        "rerun_encoded": run["encoded"],
        "unchanged_vectors_identical": bool(np.array_equal(run["cold"][unchanged], run["warm"][unchanged])),
    }


def bench_scoring(art: dict, quick: bool) -> dict:
    """End-to-end `recsys score` (a fresh process per size): users/s with encoding excluded, peak RSS."""
    from recsys.generate import generate_shop

    sizes = [10_000, 100_000] if quick else [10_000, 100_000, 1_000_000]
    items = 5_000 if quick else 50_000
    cache_dir = OUT / "score-cache"
    results = {}
    for users in sizes:
        folder = OUT / f"score-{users}-{items}"
        if not (folder / "items.parquet").exists():
            generate_shop(folder, users=users, items=items, days=3, seed=4, new_items_per_day=0)
        everyone = folder / "users.parquet"  # every user of the shop, also those without events in the log
        pl.read_parquet(folder / "truth" / "users.parquet", columns=["user_id"]).write_parquet(everyone)
        active = folder / "users-with-history.parquet"  # the users who cost the most: each has a past
        pl.scan_parquet(folder / "events").select("user_id").unique().sort("user_id").collect().write_parquet(active)
        runs = {}
        for label, users_file in (("all", everyone), ("with_history", active)):
            out = folder / f"recommendations-{label}.parquet"
            command = [
                sys.executable,
                str(ROOT / "benchmarks" / "peak_rss.py"),
                "-m",
                "recsys.cli",
                "score",
                "--model",
                str(art["fp32"]),
                "--items",
                str(folder / "items.parquet"),
                "--events",
                str(folder / "events"),
                "--out",
                str(out),
                "--k",
                "20",
                "--device",
                "cpu",
                "--cache-dir",
                str(cache_dir),
                "--users",
                str(users_file),
            ]
            done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
            if done.returncode != 0:
                raise RuntimeError(done.stderr[-2000:])
            manifest = read_json(out.with_name(out.name.removesuffix(".parquet") + ".manifest.json"))
            runs[label] = (manifest, json.loads(done.stdout.strip().splitlines()[-1])["peak_rss_mib"])
        (manifest, rss), (active_manifest, _) = runs["all"], runs["with_history"]
        events = pl.scan_parquet(folder / "events").select(pl.len()).collect().item()
        t = manifest["timings_s"]
        results[str(users)] = {
            "users": manifest["users_requested"],
            "users_with_history": active_manifest["users_requested"],
            "items": items,
            "events": events,
            "users_per_s_excl_encode": manifest["users_per_second"],
            "users_with_history_per_s_excl_encode": active_manifest["users_per_second"],
            "encode_s": t["encode_items_s"],
            "snapshot_s": t["snapshot_s"],
            "rank_s": t["rank_s"],
            "write_s": t["write_s"],
            "total_s": t["total_s"],
            "peak_rss_mib": rss,
        }
    return {"k": 20, "sizes": results}


def bench_features(art: dict, quick: bool) -> dict:
    """The same per-user and per-item window counts with polars lazy and with a straightforward pandas version."""
    import pandas as pd

    import features

    n = 1_000_000 if quick else 10_000_000
    rng = np.random.default_rng(5)
    start = np.datetime64("2026-01-01T00:00:00", "us")
    events = pl.DataFrame(
        {
            "user_id": rng.integers(0, n // 100, n),
            "item_id": (rng.zipf(1.3, n) % 50_000).astype(np.int64),
            "event": rng.choice(["impression", "click", "purchase"], n, p=[0.88, 0.1, 0.02]),
            "timestamp": start + rng.integers(0, 30 * 86400 * 10**6, n).astype("timedelta64[us]"),
        }
    )
    cutoff = dt.datetime(2026, 1, 31)
    tic = time.perf_counter()
    got = (
        features.user_features(events.lazy(), cutoff=cutoff)
        .select("user_id", "user_clicks_1d", "user_clicks_7d", "user_clicks_30d", "user_impressions_7d", "user_purchases_30d")
        .collect()
    )
    polars_s = time.perf_counter() - tic

    tic = time.perf_counter()
    frame = events.to_pandas()
    frame = frame[frame["timestamp"] < pd.Timestamp(cutoff)]
    age = (pd.Timestamp(cutoff) - frame["timestamp"]).dt.total_seconds() / 86400
    out = pd.DataFrame({"user_id": frame["user_id"]})
    for name, kind, days in (
        ("user_clicks_1d", "click", 1),
        ("user_clicks_7d", "click", 7),
        ("user_clicks_30d", "click", 30),
        ("user_impressions_7d", "impression", 7),
        ("user_purchases_30d", "purchase", 30),
    ):
        out[name] = ((frame["event"] == kind) & (age <= days)).astype("int64")
    expected = out.groupby("user_id", as_index=False).sum().sort_values("user_id")
    pandas_s = time.perf_counter() - tic
    same = pl.from_pandas(expected.reset_index(drop=True)).equals(got.sort("user_id").with_columns(pl.all().cast(pl.Int64)))
    return {"events": n, "polars_lazy_s": polars_s, "pandas_s": pandas_s, "speedup": pandas_s / polars_s, "outputs_equal": bool(same)}


def bench_ranker(art: dict, quick: bool) -> dict:
    """LightGBM predict rows/s: the benchmark model's own ranker, and a 200-tree lambdarank of the same width."""
    import lightgbm as lgb

    from serving.ranking import LambdaRanker

    config = read_json(art["fp32"] / "serving_config.json")
    ranker = LambdaRanker.load(art["fp32"] / "ranker.txt", config["ranker_features"])
    rows = 200_000 if quick else 1_000_000
    rng = np.random.default_rng(6)
    frame = pl.DataFrame(rng.random((rows, len(ranker.feature_names))), schema=ranker.feature_names)
    ranker.predict(frame.head(1000))
    tic = time.perf_counter()
    ranker.predict(frame)
    shipped = rows / (time.perf_counter() - tic)
    train_x = rng.random((50_000, len(ranker.feature_names)))
    train_y = (train_x[:, 0] * 3).astype(int)
    big = lgb.train(
        {"objective": "lambdarank", "num_leaves": 15, "min_data_in_leaf": 20, "verbose": -1, "seed": 0},
        lgb.Dataset(train_x, train_y, group=[50] * 1000),
        num_boost_round=200,
    )
    matrix = frame.to_numpy()
    tic = time.perf_counter()
    big.predict(matrix)
    wide = rows / (time.perf_counter() - tic)
    return {
        "rows": rows,
        "features": len(ranker.feature_names),
        "trees": ranker.n_trees,
        "rows_per_s": shipped,
        "rows_per_s_200_trees": wide,
    }


def bench_topk_agreement(art: dict, quick: bool) -> dict:
    """Do int8 and fp32 exports recommend the same items? Mean overlap of each user's top-20."""
    from recsys.jobs.score import score

    shop = art["shop"]
    frames = {}
    for precision in ("fp32", "int8"):
        out = OUT / f"topk-{precision}.parquet"
        score(art[precision], shop / "items.parquet", shop / "events", out, k=20, device="cpu", cache_dir=None)
        frames[precision] = pl.read_parquet(out).group_by("user_id").agg(pl.col("item_id"))
    joined = frames["fp32"].join(frames["int8"], on="user_id", suffix="_int8")
    overlap = [len(set(a) & set(b)) / max(1, len(a)) for a, b in zip(joined["item_id"].to_list(), joined["item_id_int8"].to_list())]
    return {
        "users": joined.height,
        "k": 20,
        "mean_top20_overlap": float(np.mean(overlap)),
        "identical_lists": float(np.mean([o == 1.0 for o in overlap])),
    }


def bench_kernels(art: dict, quick: bool) -> dict:
    """Why the CPU item graph keeps residual + LayerNorm unfused: onnxruntime's CPU SkipLayerNormalization
    kernel against the Add + LayerNormalization it replaces, one (1, 40, 384) tensor, one thread."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    hidden, tokens, runs = 384, 40, 300 if quick else 2000
    init = [numpy_helper.from_array(np.ones(hidden, np.float32), "gamma"), numpy_helper.from_array(np.zeros(hidden, np.float32), "beta")]
    graphs = {
        "SkipLayerNormalization": [
            helper.make_node("SkipLayerNormalization", ["x", "skip", "gamma", "beta"], ["y"], domain="com.microsoft", epsilon=1e-12)
        ],
        "Add + LayerNormalization": [
            helper.make_node("Add", ["x", "skip"], ["s"]),
            helper.make_node("LayerNormalization", ["s", "gamma", "beta"], ["y"], epsilon=1e-12, axis=-1),
        ],
    }
    x = np.random.default_rng(0).standard_normal((1, tokens, hidden)).astype(np.float32)
    out = {}
    for name, nodes in graphs.items():
        io = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, "t", hidden]) for n in ("x", "skip")]
        model = helper.make_model(
            helper.make_graph(nodes, name, io, [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, "t", hidden])], initializer=init),
            opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)],
        )
        model.ir_version = 9
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        session = ort.InferenceSession(
            model.SerializeToString(), options, providers=["CPUExecutionProvider"], disabled_optimizers=["SkipLayerNormFusion"]
        )
        session.run(None, {"x": x, "skip": x})
        tic = time.perf_counter()
        for _ in range(runs):
            session.run(None, {"x": x, "skip": x})
        out[name] = (time.perf_counter() - tic) / runs * 1e6
    del onnx
    return {"shape": [1, tokens, hidden], "us_per_call": out, "ratio": out["SkipLayerNormalization"] / out["Add + LayerNormalization"]}


BENCHES = {
    "encoding": bench_encoding,
    "topk": bench_topk_agreement,
    "rerun": bench_rerun,
    "scoring": bench_scoring,
    "features": bench_features,
    "ranker": bench_ranker,
    "kernels": bench_kernels,
}


def render(results: dict) -> str:
    m = results["machine"]
    lines = [
        "# Benchmarks",
        "",
        f"Measured {m['date']} on {m['cpu']}, {m['cores']} cores, {m['memory']}; Python {m['python']}, torch {m['torch']}, "
        f"onnxruntime {m['onnxruntime']}, polars {m['polars']}, lightgbm {m['lightgbm']}. Command: `.venv/bin/python benchmarks/run.py`.",
        "",
    ]
    if "encoding" in results:
        e = results["encoding"]
        lines += [
            f"## Item encoding ({e['items']} generated product texts, {e['mean_tokens']:.1f} tokens on average, p99 {e['p99_tokens']:.0f})",
            "",
            "| variant | items/s | × naive | mean cosine vs fp32 | top-10 overlap |",
            "|---|---:|---:|---:|---:|",
        ]
        for name, v in e["variants"].items():
            lines.append(
                f"| {name} | {v['items_per_s']:.0f} | {v['speedup_vs_naive']:.2f} | {v.get('mean_cosine_vs_fp32', 1.0):.4f} | {v.get('top10_overlap_vs_fp32', 1.0):.3f} |"
            )
        lines.append("")
    if "topk" in results:
        t = results["topk"]
        lines += [
            "## int8 vs fp32: the final recommendations",
            "",
            f"{t['users']:,} users, top-{t['k']}: mean overlap {t['mean_top20_overlap']:.3f}, identical sets for {t['identical_lists']:.1%} of users.",
            "",
        ]
    if "rerun" in results:
        r = results["rerun"]
        lines += [
            "## Nightly rerun, 1% of items changed (int8, item-vector cache)",
            "",
            f"{r['items']} items, {r['changed']} changed: cold {r['cold_s']:.1f} s, rerun {r['rerun_s']:.2f} s (encoded {r['rerun_encoded']}) → **{r['speedup']:.0f}×**; unchanged vectors identical: {r['unchanged_vectors_identical']}.",
            "",
        ]
    if "scoring" in results:
        s = results["scoring"]
        lines += [
            f"## End-to-end `recsys score`, K={s['k']} (fp32 export, CPU)",
            "",
            "Every user of the shop scored (`--users`), and separately only the users with events in the log: users without a past all get one list, ranked once per run, so the second column is the cost of a user who has a history.",
            "",
            "| users | with history | items | events | users/s, all (encode excluded) | users/s, only those with history | encode s | snapshot s | rank s | write s | peak RSS MiB (all) |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for v in s["sizes"].values():
            lines.append(
                f"| {v['users']:,} | {v.get('users_with_history', 0):,} | {v['items']:,} | {v['events']:,} | {v['users_per_s_excl_encode']:.0f} | {v.get('users_with_history_per_s_excl_encode', float('nan')):.0f} | {v['encode_s']:.1f} | {v['snapshot_s']:.1f} | {v['rank_s']:.1f} | {v['write_s']:.1f} | {v['peak_rss_mib']:.0f} |"
            )
        lines.append("")
    if "features" in results:
        f = results["features"]
        lines += [
            "## Feature computation",
            "",
            f"{f['events']:,} events, per-user window counts: polars lazy {f['polars_lazy_s']:.2f} s, pandas {f['pandas_s']:.2f} s → **{f['speedup']:.1f}×**; outputs equal: {f['outputs_equal']}.",
            "",
        ]
    if "ranker" in results:
        r = results["ranker"]
        lines += [
            "## Ranker",
            "",
            f"LightGBM predict, {r['rows']:,} rows × {r['features']} features: the benchmark model's ranker ({r['trees']} trees) {r['rows_per_s']:,.0f} rows/s; a 200-tree lambdarank of the same width {r.get('rows_per_s_200_trees', float('nan')):,.0f} rows/s.",
            "",
        ]
    if "kernels" in results:
        k = results["kernels"]
        us = k["us_per_call"]
        lines += [
            "## One onnxruntime CPU kernel",
            "",
            f"SkipLayerNormalization {us['SkipLayerNormalization']:.1f} µs vs Add + LayerNormalization {us['Add + LayerNormalization']:.1f} µs per call on a {tuple(k['shape'])} tensor, one thread: the fused kernel is **{k['ratio']:.1f}× slower**, so the CPU item graphs keep the two unfused (12 such calls per item).",
            "",
        ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="*", choices=sorted(BENCHES), help="run only these benchmarks")
    parser.add_argument("--quick", action="store_true", help="smaller sizes, for a check that everything runs")
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    results_file = OUT / "results.json"
    results = read_json(results_file) if results_file.exists() and args.only else {}
    results["machine"] = machine()
    art = setup(args.quick)
    for name in args.only or BENCHES:
        print(f"== {name}", flush=True)
        results[name] = BENCHES[name](art, args.quick)
        print(json.dumps(results[name], indent=1, default=str), flush=True)
        results_file.write_text(json.dumps(results, indent=1, default=str))
    (ROOT / "benchmarks" / "RESULTS.md").write_text(render(results))
    print(f"wrote {ROOT / 'benchmarks' / 'RESULTS.md'}")


if __name__ == "__main__":
    main()
