"""`recsys evaluate`: train both stages on the events before a cutoff, export, recommend as of it, judge
every system on the next period with the protocol of `recsys.evaluate`, write REPORT_DIR."""

from __future__ import annotations

import dataclasses
import datetime as dt
import time
from pathlib import Path

from export.onnx_export import export_model
from recsys.contracts import layout
from recsys.contracts.config import Config
from recsys.contracts.files import atomic_path, read_json
from recsys.data import Dataset
from recsys.evaluate import (
    ABLATION_KEYS,
    FULL,
    ablation_variants,
    add_expected_values,
    calibration,
    compare_systems,
    define_slices,
    describe_config,
    domain_queries,
    evaluate_export,
    evaluate_zero_shot,
    headline_columns,
    headline_rows,
    paired_report,
    parse_cutoff,
    per_user_table,
    pick_holdout_domain,
    split_test_period,
    system_metrics,
    targets,
    timed,
    truth_folder,
)
from recsys.jobs.common import as_config, config_file, load_inputs, noop, train_model_dir
from recsys.jobs.paths import Output, check_paths
from recsys.report import write_report

__all__ = ["evaluate", "headline_columns", "headline_rows"]  # the CLI prints the headline table


def evaluate(
    items_path,
    events_path,
    out_dir,
    config: Config | str | Path | None = None,
    *,
    test_days: float | None = 3,
    cutoff: dt.datetime | str | None = None,
    precision: str = "fp32",
    device: str = "auto",
    ablations: bool = False,
    holdout_domain: str | None = None,
    seed: int | None = None,
    progress=None,
    log=noop,
) -> dict:
    """Train → export → recommend as of the cutoff → every system, slice, calibration; REPORT_DIR with plots.

    `ablations` adds one training run per design option (multi-task, fine-tuning, MLM pretraining) and the
    cross-domain run (a domain held out entirely); each costs about as much as the main training.
    """
    started = time.perf_counter()
    inputs = {"--items": items_path, "--events": events_path, "--config": config_file(config)}
    check_paths(inputs, [Output("--out", out_dir, "dir")])
    config = as_config(config, seed)
    out_dir = Path(out_dir)
    data = load_inputs(items_path, events_path, log)
    cutoff, end = split_test_period(data.events, test_days=test_days, cutoff=parse_cutoff(cutoff), source=events_path)
    timings: dict[str, float] = {}
    artifacts = out_dir / "artifacts"
    truth_dir = truth_folder(data)

    log(f"train on events before {cutoff:%Y-%m-%d %H:%M}, test on [{cutoff:%Y-%m-%d %H:%M}, {end:%Y-%m-%d %H:%M})")
    kept: dict = {}
    with timed(timings, "train_s"):
        train_manifest = train_model_dir(
            items_path, events_path, artifacts / "model", config, data=data, until=cutoff, progress=progress, log=log, keep=kept
        )
    with timed(timings, "export_s"):
        export_manifest = export_model(artifacts / "model", artifacts / "export", precision=precision, log=log)
    with timed(timings, "score_s"):
        evaluation = evaluate_export(artifacts / "export", data, cutoff=cutoff, end=end, config=config, device=device, progress=progress)
    with atomic_path(artifacts / "test_recommendations.parquet") as tmp:
        evaluation["recommendations"].write_parquet(tmp)
    systems, diagnostics, comparison_timings = compare_systems(
        evaluation, kept.get("ranker_frame"), data, config, cutoff=cutoff, end=end, truth_dir=truth_dir, log=log
    )
    timings.update(comparison_timings)
    with timed(timings, "slices_s"):
        slices = define_slices(data.events, data.items, cutoff=cutoff, users=evaluation["users"])
        results, by_slice = system_metrics(
            systems, evaluation, slices, config=config, cutoff=cutoff, end=end, oracle_aucs=diagnostics.pop("oracle_aucs", None)
        )
    with timed(timings, "paired_s"):  # per-user values of every system: paired differences, pooled across runs by benchmarks/
        per_user = per_user_table(systems, evaluation, truth_dir=truth_dir, cutoff=cutoff, end=end)
        add_expected_values(results, per_user)
        paired = paired_report(per_user)
    with atomic_path(artifacts / "per_user.parquet") as tmp:
        per_user.write_parquet(tmp)

    ablation_rows = cross = None
    if ablations:
        with timed(timings, "ablations_s"):
            ablation_rows = run_ablations(
                data,
                config,
                results[FULL],
                cutoff=cutoff,
                end=end,
                folder=artifacts / "ablations",
                precision=precision,
                device=device,
                progress=progress,
                log=log,
            )
        domain = pick_holdout_domain(data.items, evaluation["relevant"], holdout_domain)
        if domain is None:
            log("cross-domain skipped: the items have a single domain")
        else:
            with timed(timings, "cross_domain_s"):
                cross = cross_domain(
                    data,
                    config,
                    domain,
                    cutoff=cutoff,
                    end=end,
                    folder=artifacts / "cross-domain",
                    precision=precision,
                    device=device,
                    truth_dir=truth_dir,
                    progress=progress,
                    log=log,
                )

    model_metrics = read_json(artifacts / "model" / layout.METRICS_FILE)
    timings.update({f"train.{k}": v for k, v in train_manifest.get("timings_s", {}).items() if not isinstance(v, list)})
    timings.update({f"score.{k}": v for k, v in evaluation["timings"].items()})
    timings["total_s"] = round(time.perf_counter() - started, 2)
    aucs = evaluation["aucs"]
    report = {
        "kind": "recsys-evaluation",
        "cutoff": cutoff.isoformat(),
        "end": end.isoformat(),
        "test_days": round((end - cutoff).total_seconds() / 86400, 3),
        "queries": int(evaluation["users"].len()),
        "relevant_pairs": evaluation["relevant"].height,
        "catalog_items": len(evaluation["catalog"]),
        "items_at_cutoff": evaluation["catalog_size"],
        "test_exposures": aucs["exposures"],
        "ground_truth": str(truth_dir) if truth_dir else None,
        "model_version": train_manifest["model_version"],
        "config": describe_config(config),
        "precision": precision,
        "providers": evaluation["model"].providers,
        "diagnostics": {**diagnostics, "ranker_window_candidate_recall": model_metrics.get("candidate_recall")},
        "systems": results,
        "paired": paired,
        "slices": by_slice,
        "calibration": calibration(evaluation["exposures"]),
        "ablations": ablation_rows,
        "cross_domain": cross,
        "targets": targets(results, by_slice, ablation_rows, paired),
        "training": {
            "text_model": model_metrics.get("text_model", {}).get("curves"),
            "ranker": {k: v for k, v in model_metrics.get("ranker", {}).items() if k != "feature_importance_gain"},
            "ranker_feature_importance": model_metrics.get("ranker", {}).get("feature_importance_gain"),
        },
        "parity": export_manifest["parity"],
        "timings_s": timings,
    }
    write_report(out_dir, report)  # plots/, metrics.json, then report.md
    return report


def run_ablations(
    data: Dataset, config: Config, base_metrics: dict, *, cutoff, end, folder: Path, precision: str, device: str, progress=None, log=noop
) -> dict:
    """Train, export and evaluate each variant of `ablation_variants` with the same protocol."""
    rows = {"as configured": {"changes": describe_config(config), **{k: base_metrics.get(k) for k in ABLATION_KEYS}}}
    for name, changes, variant in ablation_variants(config):
        log(f"ablation: {name}")
        slug = name.replace(" ", "-").replace("+", "plus")
        timings: dict = {}
        with timed(timings, "train_s"):
            train_model_dir(
                data.items_path, data.events_path, folder / slug / "model", variant, data=data, until=cutoff, progress=progress, log=log
            )
        with timed(timings, "export_s"):
            export_model(folder / slug / "model", folder / slug / "export", precision=precision, log=log)
        with timed(timings, "score_s"):
            result = evaluate_export(
                folder / slug / "export", data, cutoff=cutoff, end=end, config=variant, device=device, progress=progress
            )
        rows[name] = {"changes": changes, **{k: result["metrics"].get(k) for k in ABLATION_KEYS}, "timings_s": timings}
    return rows


def cross_domain(
    data: Dataset,
    config: Config,
    domain: str,
    *,
    cutoff,
    end,
    folder: Path,
    precision: str,
    device: str,
    truth_dir: Path | None,
    progress=None,
    log=noop,
) -> dict | None:
    """Zero-shot transfer: train without any event of `domain`, then `evaluate_zero_shot` on its test users."""
    timings: dict = {}
    _, relevant, kept = domain_queries(data, domain, cutoff=cutoff, end=end)
    if relevant.height == 0:
        log(f"cross-domain skipped: nobody engages with domain {domain!r} in the test period")
        return None
    log(f"cross-domain: training without any event of domain {domain!r}")
    with timed(timings, "train_s"):
        train_model_dir(
            data.items_path,
            data.events_path,
            folder / "model",
            config,
            data=dataclasses.replace(data, events=kept),
            until=cutoff,
            progress=progress,
            log=log,
        )
    with timed(timings, "export_s"):
        export_model(folder / "model", folder / "export", precision=precision, log=log)
    with timed(timings, "score_s"):
        result = evaluate_zero_shot(
            folder / "export", data, domain, cutoff=cutoff, end=end, config=config, device=device, truth_dir=truth_dir, progress=progress
        )
    return {**result, "timings_s": timings}
