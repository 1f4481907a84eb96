"""What several jobs share: loading the inputs, and training both stages into a MODEL_DIR.

Time (docs/ARCHITECTURE.md, "Time"): the text model learns from events before `t1`; the ranker learns
how users behaved in [t1, end) from candidates, scores and features computed as of t1.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl

from recsys import __version__
from recsys.contracts import layout
from recsys.contracts import schema as S
from recsys.contracts.config import Config, load_config
from recsys.contracts.errors import RecsysError
from recsys.contracts.files import MANIFEST, atomic_dir, describe_input, file_entries, write_json
from recsys.contracts.schema import RELEVANCE
from recsys.contracts.timeline import just_after, time_bounds
from recsys.data import Dataset, load_dataset
from serving.candidates import build_snapshot, generate_candidates
from serving.catalog import Catalog, make_catalog
from serving.ranking import QUERY, RANKER_FEATURES, LambdaRanker, relevance_labels, with_features
from serving.text import item_texts

PARITY_TEXTS = 64


def noop(*args, **kwargs) -> None:
    """The default `log` and `progress` of a job: say nothing."""
    return None


def as_config(config: Config | str | Path | None, seed: int | None = None) -> Config:
    """A job's configuration: a `Config` as it is, else the TOML file it names (defaults for None);
    `seed`, when given, replaces every random seed in it."""
    return (config if isinstance(config, Config) else load_config(config)).with_seed(seed)


def config_file(config: Config | str | Path | None) -> Path | None:
    """The TOML file a job reads its config from (an input like any other), or None."""
    return Path(config) if isinstance(config, (str, Path)) else None


def load_inputs(items_path: str | Path, events_path: str | Path, log=noop) -> Dataset:
    """The validated inputs; every repair is announced once through `log` (a `warning:` line)."""
    data = load_dataset(items_path, events_path)
    for warning in data.report.warnings:  # one line per reason, with counts and examples
        log(f"warning: {warning}")
    return data


def ranker_frame(
    model,
    catalog: Catalog,
    events: pl.LazyFrame,
    items: pl.LazyFrame,
    *,
    start: dt.datetime,
    config: Config,
    item_vectors: np.ndarray,
    progress=None,
) -> tuple[pl.DataFrame, float]:
    """The ranker's training rows and the candidates' recall: for each cutoff of `config.windows`
    (`WindowConfig.cutoff_offsets` from `start`), candidates as of it for the users active in its label
    window, with features and relevance labels; several cutoffs are told apart by `QUERY`.

    Recall: the share of the label windows' (user, item) clicks of those users that the candidates hold."""
    collected = events.collect()
    frames, found, relevant = [], 0, 0
    offsets = config.windows.cutoff_offsets()
    for k, (offset, label_days) in enumerate(offsets):
        cutoff = start + dt.timedelta(days=offset)
        # the last label window ends exactly where the ranker window does
        stop = start + dt.timedelta(days=config.windows.ranker_days) if k == len(offsets) - 1 else cutoff + dt.timedelta(days=label_days)
        labels = relevance_labels(collected, start=cutoff, end=stop)
        users = labels.select(S.USER_ID).unique().sort(S.USER_ID)[S.USER_ID]
        snapshot = build_snapshot(catalog, item_vectors, events, items, cutoff=cutoff, config=config.candidates)
        cand = generate_candidates(model, snapshot, users, config.candidates, config.model.history_length, progress=progress)
        frame = with_features(cand, snapshot)
        if frame.height == 0:
            continue
        frame = frame.join(labels, on=[S.USER_ID, S.ITEM_ID], how="left").with_columns(pl.col(RELEVANCE).fill_null(0))
        relevant += labels.join(frame.select(S.USER_ID).unique(), on=S.USER_ID).height
        found += int((frame[RELEVANCE] > 0).sum())
        frames.append(frame.with_columns(pl.lit(k, dtype=pl.Int32).alias(QUERY)) if len(offsets) > 1 else frame)
    frame = pl.concat(frames) if frames else pl.DataFrame()
    return frame, (found / relevant if relevant else float("nan"))


def train_model_dir(
    items_path: str | Path,
    events_path: str | Path,
    out_dir: str | Path,
    config: Config,
    *,
    warm_start: str | Path | None = None,
    data: Dataset | None = None,
    until: dt.datetime | None = None,
    progress=None,
    log=noop,
    keep: dict | None = None,
    cluster=None,
) -> dict:
    """Train the text model and the ranker; write MODEL_DIR atomically. Returns its manifest.

    `cluster` (a `recsys.jobs.ray_engine.Cluster`): the text model is fine-tuned data-parallel on it and
    the ranker's cross-validation folds run there as parallel tasks (the final fit runs here).

    `keep`, when given, receives the in-memory ranker frame (`"ranker_frame"`) so that evaluation can train
    its baseline rankers on exactly the rows the shipped ranker learned from.
    """
    from recsys.encoder import resolve_encoder
    from recsys.model_io import TorchInterestModel, deterministic, load_text_model, save_text_model
    from recsys.train import train_text_model

    started = time.perf_counter()
    if data is None:
        data = load_inputs(items_path, events_path, log)
    events = data.events if until is None else data.events.filter(pl.col(S.TIMESTAMP) < until)
    first, last = time_bounds(events)
    end = just_after(last)
    t1 = end - dt.timedelta(days=config.windows.ranker_days)
    if t1 <= first:
        raise RecsysError(
            f"{events_path}: the events span {(last - first).total_seconds() / 86400:.1f} days; at least windows.ranker_days = {config.windows.ranker_days} plus a text-model window are needed"
        )
    catalog = make_catalog(data.items)
    text_events = events.filter(pl.col(S.TIMESTAMP) < t1).collect()
    timings = {}

    base_model = None
    if warm_start is not None:
        base_model, _, _ = load_text_model(Path(warm_start))
        encoder_folder = Path(warm_start) / layout.ENCODER_DIR
        log(f"warm start from {warm_start}")
    else:
        encoder_folder = resolve_encoder(config.model)
        log(f"encoder: {encoder_folder}")
    tic = time.perf_counter()
    if cluster is None:
        model, tokenizer, text_report = train_text_model(
            text_events, catalog, config, encoder_folder=encoder_folder, model=base_model, progress=progress, log=log
        )
    else:
        from recsys.jobs.ray_engine import train_text_model_on_ray

        if config.train.mlm_epochs > 0 or config.train.contrastive_epochs > 0:
            raise RecsysError(
                "--engine ray: train.mlm_epochs or train.contrastive_epochs > 0 (domain-adaptive pretraining) runs only with --engine local"
            )
        with tempfile.TemporaryDirectory(prefix="recsys-ray-train-") as scratch:
            model, tokenizer, text_report = train_text_model_on_ray(
                cluster,
                text_events,
                catalog,
                config,
                encoder_folder=encoder_folder,
                warm_start=Path(warm_start) if warm_start else None,
                scratch=Path(scratch),
                log=log,
            )
    timings["text_model_s"] = round(time.perf_counter() - tic, 2)
    # run times describe the run, not the model: they go to the manifest, never into a hashed file
    timings["text_model_epochs_s"] = text_report["curves"].pop("seconds")

    tic = time.perf_counter()
    scorer = TorchInterestModel(model, tokenizer)
    with deterministic(config.train.seed):
        vectors = scorer.encode_items(item_texts(catalog.items), progress=progress)
        frame, candidate_recall = ranker_frame(
            scorer, catalog, events, data.items, start=t1, config=config, item_vectors=vectors, progress=progress
        )
    if keep is not None:
        keep["ranker_frame"] = frame
    if cluster is None:
        ranker = LambdaRanker(config.ranker, RANKER_FEATURES).fit(frame)
    else:
        from recsys.jobs.ray_engine import fold_mapper, ranker_fitter

        workers = config.engine.ranker_workers
        fit_final = ranker_fitter(cluster, workers) if workers >= 2 else None
        ranker = LambdaRanker(config.ranker, RANKER_FEATURES).fit(frame, map_folds=fold_mapper(cluster), fit_final=fit_final)
    timings["ranker_s"] = round(time.perf_counter() - tic, 2)
    log(
        f"ranker: {ranker.n_trees} trees, valid NDCG@10 {ranker.metrics_['valid_ndcg@10']:.4f}; candidates hold {candidate_recall:.1%} of next-window clicks"
    )

    rng = np.random.default_rng(config.train.seed)
    texts = item_texts(catalog.items)
    parity_texts = [texts[i] for i in sorted(rng.choice(len(texts), min(PARITY_TEXTS, len(texts)), replace=False))]
    with atomic_dir(out_dir) as tmp:
        files = save_text_model(model, tokenizer, config, tmp)
        ranker.save(tmp / layout.RANKER_FILE)
        write_json(tmp / layout.RANKER_FEATURES_FILE, list(RANKER_FEATURES))
        write_json(tmp / layout.PARITY_TEXTS_FILE, parity_texts)
        metrics = {"text_model": text_report, "ranker": ranker.metrics_, "candidate_recall": candidate_recall}
        write_json(tmp / layout.METRICS_FILE, metrics)
        files += [layout.RANKER_FILE, layout.RANKER_FEATURES_FILE, layout.PARITY_TEXTS_FILE, layout.METRICS_FILE]
        hashes = file_entries(tmp, files)
        version = hashlib.sha256((hashes[layout.TEXT_MODEL_FILE]["sha256"] + hashes[layout.RANKER_FILE]["sha256"]).encode()).hexdigest()[
            :16
        ]
        manifest = {
            "kind": layout.MODEL_KIND,
            "format_version": 1,
            "model_version": version,
            "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "code_version": __version__,
            "seed": {"train": config.train.seed, "ranker": config.ranker.seed},
            "warm_start": str(warm_start) if warm_start else None,
            "data_window": {"first_event": first.isoformat(), "text_model_until": t1.isoformat(), "ranker_until": end.isoformat()},
            "inputs": {"items": describe_input(items_path), "events": describe_input(events_path)},
            "dropped_rows": data.report.dropped,
            "repaired_rows": data.report.repaired,
            "metrics": {
                "ranker_valid_ndcg@10": ranker.metrics_["valid_ndcg@10"],
                "candidate_recall": candidate_recall,
                "text_valid_click_auc": text_report["curves"]["valid_click_auc"][-1],
            },
            "files": hashes,
            "timings_s": {**timings, "total_s": round(time.perf_counter() - started, 2)},
        }
        write_json(tmp / MANIFEST, manifest)
    return manifest
