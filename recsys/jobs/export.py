"""`recsys export`: MODEL_DIR → EXPORT_DIR (ONNX graphs, tokenizer, ranker, manifest), parity-checked;
or, with `--format triton`, a Triton model repository (from a MODEL_DIR or an EXPORT_DIR)."""

from __future__ import annotations

import tempfile
from pathlib import Path

from export.onnx_export import export_model
from recsys.contracts.errors import UsageError
from recsys.contracts.files import MANIFEST, read_json
from recsys.contracts.layout import EXPORT_KIND
from recsys.jobs.common import noop
from recsys.jobs.paths import Output, check_paths

FORMATS = ("onnx", "triton")


def export(model_dir: str | Path, out_dir: str | Path, *, precision: str = "fp32", format: str = "onnx", log=noop) -> dict:
    """Export `model_dir` to `out_dir` (replaced atomically); returns the written folder's manifest."""
    if format not in FORMATS:
        raise UsageError(f"--format must be one of {', '.join(FORMATS)}, found '{format}'")
    check_paths({"--model": model_dir}, [Output("--out", out_dir, "dir")])
    if format == "onnx":
        return export_model(model_dir, out_dir, precision=precision, log=log)
    from export.triton import export_triton

    manifest = Path(model_dir) / MANIFEST
    if manifest.is_file() and read_json(manifest).get("kind") == EXPORT_KIND:  # an EXPORT_DIR: its own precision
        return export_triton(model_dir, out_dir, log=log)
    with tempfile.TemporaryDirectory() as scratch:
        export_model(model_dir, Path(scratch) / "export", precision=precision, log=log)
        return export_triton(Path(scratch) / "export", out_dir, log=log)
