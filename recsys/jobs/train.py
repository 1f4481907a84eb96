"""`recsys train`: both stages on the whole log into MODEL_DIR, and with a registry also exported and
added as a new version."""

from __future__ import annotations

import contextlib
from pathlib import Path

from export.onnx_export import export_model
from recsys.contracts.config import Config
from recsys.contracts.errors import ConfigError, UsageError
from recsys.contracts.files import copy_dir
from recsys.jobs.common import as_config, config_file, load_inputs, noop, train_model_dir
from recsys.jobs.paths import Output, check_paths
from recsys.registry import EXPORT, MODEL, Registry


def train(
    items_path: str | Path,
    events_path: str | Path,
    *,
    out_dir: str | Path | None = None,
    registry: str | Path | None = None,
    config: Config | str | Path | None = None,
    seed: int | None = None,
    engine: str = "local",
    ray_address: str | None = None,
    progress=None,
    log=noop,
) -> dict:
    """Train into `out_dir`, or into `registry` (and `out_dir` if given too); `seed` replaces the config's seeds.
    `engine="ray"`: the text model is fine-tuned data-parallel on a Ray cluster (the config's [engine]).

    Returns {"manifest", "version", "champion"}; the last two are None without a registry.
    """
    inputs = {"--items": items_path, "--events": events_path, "--config": config_file(config)}
    check_paths(inputs, [Output("--out", out_dir, "dir"), Output("--registry", registry, "dir", store=True)])
    config = as_config(config, seed)
    if engine not in ("local", "ray"):
        raise UsageError(f"--engine must be local or ray, found '{engine}'")
    if registry is None and out_dir is None:
        raise ConfigError("--out: give --out MODEL_DIR, --registry DIR, or both")
    with contextlib.ExitStack() as stack:
        cluster = None
        if engine == "ray":
            from recsys.jobs.ray_engine import Cluster

            cluster = stack.enter_context(Cluster(config.engine, ray_address, log=log))
        if registry is not None:
            return train_and_register(
                items_path, events_path, config, registry=registry, out_dir=out_dir, progress=progress, log=log, cluster=cluster
            )
        manifest = train_model_dir(items_path, events_path, out_dir, config, progress=progress, log=log, cluster=cluster)
        return {"manifest": manifest, "version": None, "champion": None}


def train_and_register(
    items_path: str | Path,
    events_path: str | Path,
    config: Config,
    *,
    registry: str | Path,
    out_dir: str | Path | None = None,
    progress=None,
    log=noop,
    cluster=None,
) -> dict:
    """Train on the whole log, export, and add the result to `registry` as a new version.

    The first version of a registry becomes its champion; later ones wait for `recsys models promote` (or
    come in through the gate of `recsys retrain`). With `out_dir`, the MODEL_DIR is also written there.
    Returns {"version", "champion", "manifest"}.
    """
    data = load_inputs(items_path, events_path, log)
    reg = Registry.create(registry)
    with reg.stage() as staging:
        manifest = train_model_dir(items_path, events_path, staging / MODEL, config, data=data, progress=progress, log=log, cluster=cluster)
        export_model(staging / MODEL, staging / EXPORT, precision=config.retrain.precision, log=log)
        if out_dir is not None:
            copy_dir(staging / MODEL, out_dir)
        # the first version of a registry becomes its champion, in the same locked step as its registration
        # (two first trainings racing: one champion, the other a candidate)
        version = reg.register(staging, created_by="train", promote_over=None, required=False, reason="first version of the registry")
    champion = reg.champion
    log(f"registered {version} in {reg.root}" + (" as its champion (first version)" if champion == version else ""))
    return {"version": version, "champion": champion, "manifest": manifest}
