"""Body of benchmarks/gpu_check.sh: runs on a GPU machine with the wheels of .whl/ on PYTHONPATH."""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import polars as pl  # noqa: E402


def main() -> None:
    from export.onnx_export import export_model
    from recsys.contracts.config import Config
    from recsys.generate import generate_shop
    from recsys.jobs.common import train_model_dir
    from recsys.jobs.score import score
    from serving.onnx_model import CUDA, OnnxInterestModel
    from serving.text import item_texts

    work = Path(tempfile.mkdtemp(prefix="recsys-gpu-"))
    tic = time.perf_counter()
    generate_shop(work / "shop", users=20_000, items=20_000, days=10, seed=0, new_items_per_day=0)
    train_model_dir(
        work / "shop" / "items.parquet", work / "shop" / "events", work / "model", Config().replace(train={"head_epochs": 1, "epochs": 0})
    )
    print(f"setup (generate + train on CPU): {time.perf_counter() - tic:.0f} s", flush=True)
    fp16 = export_model(work / "model", work / "fp16", precision="fp16")
    export_model(work / "model", work / "fp32", precision="fp32")
    print(
        "fp16 parity:",
        json.dumps(
            {k: fp16["parity"]["fp16"][k] for k in ("item_vector_mean_cosine", "item_vector_min_cosine", "item_neighbour_top10_overlap")}
        ),
        flush=True,
    )

    texts = item_texts(pl.read_parquet(work / "shop" / "items.parquet"))
    gpu = OnnxInterestModel(work / "fp16", providers=[CUDA, "CPUExecutionProvider"], precision="fp16", batch_size=256)
    assert gpu.providers[0] == CUDA, f"CUDA provider not running: {gpu.providers}"
    assert gpu.io_binding, "IO binding is the CUDA default"
    gpu.encode_items(texts[:512])
    tic = time.perf_counter()
    vectors = gpu.encode_items(texts)
    seconds = time.perf_counter() - tic
    reference = OnnxInterestModel(work / "fp32", precision="fp32").encode_items(texts[:2000])
    cosine = float(((vectors[:2000] * reference).sum(1)).mean())
    print(f"item encoding on {gpu.providers[0]}: {len(texts) / seconds:,.0f} items/s (fp16; cosine vs CPU fp32 {cosine:.5f})", flush=True)

    result = score(
        work / "fp16", work / "shop" / "items.parquet", work / "shop" / "events", work / "recs.parquet", k=20, device="cuda", cache_dir=None
    )
    assert result["providers"][0] == CUDA, result["providers"]
    print(
        f"recsys score on {result['providers'][0]}: {result['users_requested']:,} users, {result['users_per_second']:,.0f} users/s (encode excluded), timings {result['timings_s']}",
        flush=True,
    )
    assert np.isfinite(pl.read_parquet(work / "recs.parquet")["score"].to_numpy()).all()
    print("GPU CHECK PASSED")


if __name__ == "__main__":
    main()
