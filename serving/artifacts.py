"""Reading an EXPORT_DIR (docs/ARCHITECTURE.md, "Artifacts"): every file is checked against its sha256
before anything is loaded; then the ONNX Runtime sessions and the ranker open."""

from __future__ import annotations

from pathlib import Path

from recsys.contracts.errors import DeviceError
from recsys.contracts.files import read_json_object, verify_files
from recsys.contracts.layout import EXPORT_KIND, RANKER_FILE, SERVING_CONFIG_FILE
from serving.onnx_model import CUDA, OnnxInterestModel, choose_providers
from serving.ranking import LambdaRanker


def read_export(export_dir: str | Path) -> tuple[dict, dict]:
    """(manifest, serving config) of an export whose every file matches its hash."""
    export_dir = Path(export_dir)
    manifest = verify_files(export_dir, kind=EXPORT_KIND)
    return manifest, read_json_object(export_dir / SERVING_CONFIG_FILE, "re-export the model")


def open_export(
    export_dir: str | Path, manifest: dict, config: dict, *, device: str = "auto", threads: int = 0
) -> tuple[OnnxInterestModel, LambdaRanker]:
    """The interest model's sessions and the ranker of an export already checked by `read_export`."""
    export_dir = Path(export_dir)
    model = OnnxInterestModel(
        export_dir, providers=choose_providers(device), precision=manifest["precision"], threads=threads, max_length=config["max_length"]
    )
    # ONNX Runtime falls back to the CPU silently when the CUDA libraries or the GPU are missing
    if device == "cuda" and model.provider != CUDA:
        raise DeviceError(
            f"--device cuda: ONNX Runtime runs on {model.provider}, not CUDA (no usable GPU or CUDA libraries); use --device auto or cpu"
        )
    return model, LambdaRanker.load(export_dir / RANKER_FILE, config["ranker_features"], threads=threads)


def load_export(export_dir: str | Path, *, device: str = "auto", threads: int = 0):
    """(manifest, serving config, interest model, ranker): verify every file's hash, then open the sessions."""
    manifest, config = read_export(export_dir)
    return manifest, config, *open_export(export_dir, manifest, config, device=device, threads=threads)
