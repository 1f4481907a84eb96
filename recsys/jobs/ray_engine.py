"""`recsys score --engine ray`: the users' blocks ranked by a pool of Ray actors (README, "Running on a
cluster"). The only module that imports Ray (the `ray` extra).

What every block shares — the validated inputs' snapshot and feature tables, the encoded catalog — is
built once by the job, as for the local engine, and put in Ray's object store; numpy arrays in it are
read by every actor on a node without a copy. Ray Data runs the block numbers through `map_batches`
with an actor pool: each actor opens the export once (every hash checked), with `cpus_per_worker`
ONNX Runtime and LightGBM threads (Ray gives an actor 0 CPUs by default, and ONNX Runtime all cores, so
both are set), ranks a block exactly as the local engine does and writes it as its own Parquet part,
atomically, into the job's staging folder. Ray Data restarts a killed actor and retries its block; a
killed job leaves finished parts that the next run with the same plan reuses. So the rows are the local
engine's, whatever died on the way (tested).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from recsys.contracts.config import EngineConfig
from recsys.contracts.errors import DeviceError, UsageError


def _ray():
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as exc:
        raise UsageError(f"--engine ray needs Ray: pip install 'recsys[ray]' ({exc})") from None
    return ray


class Cluster:
    """A connection to the Ray cluster of `engine.address` (or $RAY_ADDRESS), or a Ray started in this
    process when neither is set; closed (or stopped) on exit."""

    def __init__(self, engine: EngineConfig, address: str | None = None, log=lambda message: None):
        self.ray = _ray()
        self.address = address or engine.address or os.environ.get("RAY_ADDRESS") or None
        self.engine = engine
        self.log = log
        self.started = False

    def __enter__(self) -> Cluster:
        ray = self.ray
        if ray.is_initialized():  # a caller (a test, a notebook) already holds a connection: use it
            return self
        options = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False}
        try:
            if self.address:
                ray.init(address=self.address, **options)
            else:
                memory = self.engine.object_store_mb * 2**20 if self.engine.object_store_mb else None
                ray.init(num_cpus=os.cpu_count(), object_store_memory=memory, **options)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            where = self.address or "a local Ray"
            raise UsageError(f"--engine ray: cannot reach the Ray cluster at {where}: {' '.join(str(exc).split())[:300]}") from None
        self.started = True
        return self

    def __exit__(self, *exc) -> None:
        if self.started:
            self.ray.shutdown()

    def check_resources(self) -> None:
        resources = self.ray.cluster_resources()
        engine = self.engine
        gpus = resources.get("GPU", 0.0)
        if engine.gpus_per_worker > 0 and gpus < engine.gpus_per_worker:
            raise DeviceError(
                f"--engine ray: {engine.gpus_per_worker:g} GPU per worker asked for, the cluster has {gpus:g} GPUs; "
                "set engine.gpus_per_worker = 0 for CPU nodes"
            )
        cpus = resources.get("CPU", 0.0)
        if cpus < engine.cpus_per_worker:
            raise UsageError(f"--engine ray: {engine.cpus_per_worker} CPUs per worker asked for, the cluster has {cpus:g}")
        self.log(f"Ray cluster: {cpus:g} CPUs, {gpus:g} GPUs, {len(self.ray.nodes())} node(s)")


class _RankBlocks:
    """One actor of the pool: the export's sessions, the shared state, a block in and its part out."""

    def __init__(self, export_dir: str, shared: list, options: dict):
        import ray

        from serving.artifacts import open_export, read_export

        manifest, config = read_export(export_dir)  # every hash, on every node
        self.model, self.ranker = open_export(export_dir, manifest, config, device=options["device"], threads=options["threads"])
        self.model.close_item_encoder()  # the catalog is encoded already
        self.snapshot, self.tables, self.user_ids = ray.get(shared[0])
        self.options = options

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from recsys.contracts.files import atomic_path
        from serving.score import rank_chunks

        o = self.options
        rows = []
        for number in batch["block"].tolist():
            users = self.user_ids.slice(number * o["batch_users"], o["batch_users"])
            frames = list(
                rank_chunks(
                    self.model,
                    self.ranker,
                    self.snapshot,
                    self.tables,
                    users,
                    k=o["k"],
                    candidates=o["candidates"],
                    history_length=o["history_length"],
                    chunk_users=o["batch_users"],
                    explain=o["explain"],
                )
            )
            frame = frames[0][1]
            with atomic_path(Path(o["parts_dir"]) / f"part-{number:05d}.parquet") as tmp:
                frame.write_parquet(tmp)
            rows.append(frame.height)
        return {"block": batch["block"], "rows": np.asarray(rows, dtype=np.int64)}


def rank_blocks(
    cluster: Cluster,
    export_dir: Path,
    snapshot,
    tables,
    user_ids,
    blocks: list[int],
    parts_dir: Path,
    *,
    k: int,
    candidates,
    history_length: int,
    device: str,
    explain: bool,
    progress=None,
) -> int:
    """Rank `blocks` (numbers of `engine.batch_users`-user blocks of `user_ids`) on the cluster, each into
    `parts_dir/part-NNNNN.parquet`; returns the rows written."""
    ray = cluster.ray
    engine = cluster.engine
    if not blocks:
        return 0
    shared = ray.put((snapshot, tables, user_ids))
    options = {
        "k": k,
        "candidates": candidates,
        "history_length": history_length,
        "batch_users": engine.batch_users,
        "explain": explain,
        "device": "cuda" if engine.gpus_per_worker > 0 else ("cpu" if device == "auto" else device),
        "threads": engine.cpus_per_worker,
        "parts_dir": str(parts_dir),
    }
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    dataset = ray.data.from_items([{"block": b} for b in blocks], override_num_blocks=min(len(blocks), 200))
    done = dataset.map_batches(
        _RankBlocks,
        fn_constructor_kwargs={"export_dir": str(export_dir), "shared": [shared], "options": options},
        batch_size=1,
        batch_format="numpy",
        concurrency=min(engine.workers, len(blocks)),
        num_cpus=engine.cpus_per_worker,
        num_gpus=engine.gpus_per_worker or None,
    )
    rows = 0
    for i, row in enumerate(done.iter_rows()):
        rows += int(row["rows"])
        if progress:
            progress("score users (ray)", i + 1, len(blocks))
    return rows
