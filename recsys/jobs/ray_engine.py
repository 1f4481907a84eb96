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
        """Connect (or start a Ray here), then check that the cluster has what the engine asks for."""
        self._connect()
        try:
            self.check_resources()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _connect(self) -> None:
        ray = self.ray
        if ray.is_initialized():  # a caller (a test, a notebook) already holds a connection: use it
            return
        options = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False}
        if self.address:
            _check_reachable(self.address)  # ray.init retries an unreachable address for minutes
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


def _check_reachable(address: str, timeout: float = 5.0) -> None:
    """A TCP connection to `host:port` (also `ray://host:port`) within `timeout`, or a one-line error."""
    import socket

    if address == "auto" or address.startswith("local"):
        return
    hostport = address.removeprefix("ray://").split("/")[0]
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise UsageError(f"--engine ray: the Ray address must be host:port, ray://host:port or auto, found '{address}'")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as exc:
        raise UsageError(f"--engine ray: cannot reach the Ray cluster at {address} ({exc.strerror or exc}) within {timeout:g} s") from None


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


def train_text_model_on_ray(
    cluster: Cluster, events, catalog, config, *, encoder_folder: Path, warm_start: Path | None, scratch: Path, log=lambda message: None
):
    """The text model fine-tuned data-parallel by Ray Train's TorchTrainer (`engine.workers` replicas,
    gloo on CPU, NCCL on GPU): every replica runs `recsys.train.train_text_model` on its share of every
    batch with gradients averaged across replicas (the steps one process takes); replica 0 reports the weights as a safetensors
    checkpoint, which becomes the returned model. Returns (model, tokenizer, report) like the local one."""
    ray = cluster.ray
    from ray.train import Checkpoint, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    from recsys.model_io import build_model, load_text_model
    from recsys.train import train_text_model

    engine = cluster.engine
    shared = ray.put((events, catalog, config))
    use_gpu = engine.gpus_per_worker > 0

    def loop(settings: dict) -> None:
        import tempfile

        import ray.train
        import torch
        import torch.distributed as dist
        from safetensors.torch import save_file

        from recsys.model_io import load_text_model as load

        context = ray.train.get_context()
        rank, world = context.get_world_rank(), context.get_world_size()
        events, catalog, config = ray.get(settings["shared"][0])
        config = config.replace(train={"threads": settings["threads"]})
        base = load(Path(settings["warm_start"]))[0] if settings["warm_start"] else None
        model, _, report = train_text_model(
            events, catalog, config, encoder_folder=Path(settings["encoder"]), model=base, replica=(rank, world)
        )
        state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
        checksum = torch.tensor([float(sum(v.double().sum() for v in state.values()))])
        sums = [torch.zeros(1, dtype=checksum.dtype) for _ in range(world)]
        if world > 1:
            dist.all_gather(sums, checksum)
        else:
            sums = [checksum]
        metrics = {
            "replicas_identical": bool(all(float(s) == float(sums[0]) for s in sums)),
            "best_epoch": report["curves"]["best_epoch"],
            "valid_click_auc": report["curves"]["valid_click_auc"],
            "valid_purchase_auc": report["curves"]["valid_purchase_auc"],
            "world": world,
            "report": report,
        }
        if rank == 0:
            with tempfile.TemporaryDirectory() as folder:
                save_file(state, str(Path(folder) / "text_model.safetensors"))
                ray.train.report(metrics, checkpoint=Checkpoint.from_directory(folder))
        else:
            ray.train.report(metrics)

    trainer = TorchTrainer(
        loop,
        train_loop_config={
            "shared": [shared],
            "threads": engine.cpus_per_worker,
            "encoder": str(encoder_folder),
            "warm_start": str(warm_start) if warm_start else None,
        },
        torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
        scaling_config=ScalingConfig(num_workers=engine.workers, use_gpu=use_gpu, resources_per_worker={"CPU": engine.cpus_per_worker}),
        run_config=RunConfig(storage_path=str(scratch), name="text-model"),
    )
    result = trainer.fit()
    if result.error:
        raise result.error
    metrics = result.metrics
    if not metrics.get("replicas_identical"):
        raise RuntimeError("data-parallel replicas ended with different weights")
    log(f"text model trained on {metrics['world']} Ray workers (replicas identical); best epoch {metrics['best_epoch']}")
    from safetensors.torch import load_file

    with result.checkpoint.as_directory() as folder:
        state = load_file(str(Path(folder) / "text_model.safetensors"))
    model = load_text_model(warm_start)[0] if warm_start else build_model(config, encoder_folder)
    model.load_state_dict(state)
    model.eval()
    from recsys.contracts.layout import TOKENIZER_FILE
    from serving.text import ItemTokenizer

    tokenizer = ItemTokenizer(encoder_folder / TOKENIZER_FILE, config.model.max_length)
    report = metrics["report"]
    report["engine"] = {"name": "ray", "workers": metrics["world"]}
    return model, tokenizer, report


def fold_mapper(cluster: Cluster):
    """`LambdaRanker.fit(map_folds=...)` on the cluster: the ranker's cross-validation folds as parallel
    Ray tasks (one per fold, `engine.cpus_per_worker` CPUs each) over one copy of the frame in the object
    store. LightGBM is deterministic here, so the model is the one local training writes (tested)."""
    ray = cluster.ray

    def map_folds(run, shared: tuple, folds: int) -> list:
        reference = ray.put(shared)

        @ray.remote(num_cpus=cluster.engine.cpus_per_worker, max_retries=3)
        def one(shared: tuple, k: int):
            return run(*shared, k)

        return ray.get([one.remote(reference, k) for k in range(folds)])

    return map_folds


def ranker_fitter(cluster: Cluster, workers: int):
    """`LambdaRanker.fit(fit_final=...)` as LightGBM's own data-parallel training (`tree_learner = "data"`)
    on `workers` Ray workers through Ray Train's `LightGBMTrainer`, which sets up LightGBM's network between
    them (`get_network_params`). Rows are not shared out as they come (Ray Data's split would cut queries):
    each worker takes every `workers`-th query of the frame (`serving.ranking.query_shard`), so LambdaRank
    sees each user's candidates together, and LightGBM sums the workers' histograms at each split. Bin
    edges come from each worker's own sample, so the model is not the local one to the byte; same quality
    (tested). For frames too large for one machine: `engine.ranker_workers` (0: the final fit runs in the job)."""
    ray = cluster.ray
    from ray.train import RunConfig, ScalingConfig
    from ray.train.lightgbm import LightGBMTrainer

    engine = cluster.engine

    def fit_final(frame, feature_names, params, rounds):
        import tempfile

        import lightgbm as lgb

        shared = ray.put(frame)

        def loop(settings: dict) -> None:
            import ray.train
            from ray.train.lightgbm import get_network_params

            from serving.ranking import dataset, query_shard

            context = ray.train.get_context()
            rank, world = context.get_world_rank(), context.get_world_size()
            part = query_shard(ray.get(settings["frame"][0]), rank, world)
            network = {"tree_learner": "data", "pre_partition": True, "num_threads": settings["threads"], **get_network_params()}
            booster = lgb.train(settings["params"] | network, dataset(part, settings["features"]), num_boost_round=settings["rounds"])
            model = booster.model_to_string()
            booster.free_network()
            if rank == 0:
                with tempfile.TemporaryDirectory() as folder:
                    (Path(folder) / "ranker.txt").write_text(model, encoding="utf-8")
                    ray.train.report({"rows": part.height}, checkpoint=ray.train.Checkpoint.from_directory(folder))
            else:
                ray.train.report({"rows": part.height})

        with tempfile.TemporaryDirectory() as scratch:
            trainer = LightGBMTrainer(
                loop,
                train_loop_config={
                    "frame": [shared],
                    "features": list(feature_names),
                    "params": dict(params),
                    "rounds": rounds,
                    "threads": engine.cpus_per_worker,
                },
                scaling_config=ScalingConfig(num_workers=workers, resources_per_worker={"CPU": engine.cpus_per_worker}),
                run_config=RunConfig(storage_path=scratch, name="ranker"),
            )
            result = trainer.fit()
            if result.error:
                raise result.error
            with result.checkpoint.as_directory() as folder:
                return lgb.Booster(model_str=(Path(folder) / "ranker.txt").read_text(encoding="utf-8"))

    return fit_final
