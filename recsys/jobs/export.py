"""`recsys export`: MODEL_DIR → EXPORT_DIR (ONNX graphs, tokenizer, ranker, manifest), parity-checked."""

from __future__ import annotations

from pathlib import Path

from export.onnx_export import export_model
from recsys.jobs.common import noop
from recsys.jobs.paths import Output, check_paths


def export(model_dir: str | Path, out_dir: str | Path, *, precision: str = "fp32", log=noop) -> dict:
    """Export `model_dir` to `out_dir` (replaced atomically); returns the export's manifest."""
    check_paths({"--model": model_dir}, [Output("--out", out_dir, "dir")])
    return export_model(model_dir, out_dir, precision=precision, log=log)
