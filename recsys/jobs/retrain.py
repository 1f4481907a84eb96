"""`recsys retrain`: the gated retrain that replaces a champion only if the challenger is no worse.

With a registry the gate is a compare-and-swap: the challenger is promoted only over the champion it was
compared with (`Registry.register(promote_over=...)`); if a concurrent retrain, `models promote` or
`rollback` changed the champion meanwhile, nothing is registered and the job exits 11.

The gate (`recsys retrain`): hold out the newest `retrain.test_days` days of the fresh log; train the
challenger on everything before them, warm-started from the champion; export it; score both models on the
held-out days with `recsys.evaluate.evaluate_export` (the code `recsys evaluate` runs); promote the challenger
unless its NDCG@10 is more than `retrain.tolerance` below the champion's. The model promoted is exactly the
one measured, so it has not learned from the held-out days; the next retrain will.
"""

from __future__ import annotations

import datetime as dt
import math
import tempfile
from pathlib import Path

from export.onnx_export import export_model, verify_model_dir
from recsys.contracts.config import Config, load_config
from recsys.contracts.errors import ChallengerRejected, ConfigError, RecsysError
from recsys.contracts.files import MANIFEST, copy_dir, install_dir, read_json, staging_dir, write_json
from recsys.contracts.layout import CONFIG_FILE
from recsys.contracts.timeline import just_after, time_bounds
from recsys.evaluate import evaluate_export
from recsys.jobs.common import load_inputs, noop, train_model_dir
from recsys.jobs.paths import Output, check_paths
from recsys.jobs.train import train_and_register
from recsys.registry import EXPORT, MODEL, Registry

GATE_METRIC = "ndcg@10"


def retrain(
    items_path: str | Path,
    events_path: str | Path,
    *,
    model_dir: str | Path | None = None,
    out_dir: str | Path | None = None,
    registry: str | Path | None = None,
    config_path: str | Path | None = None,
    tolerance: float | None = None,
    test_days: float | None = None,
    seed: int | None = None,
    device: str = "auto",
    progress=None,
    log=noop,
) -> dict:
    """`recsys retrain`: the settings from `config_path` (default: the champion's own config) with
    `tolerance`, `test_days` and `seed` overriding it, then `gated_retrain`."""
    inputs = {"--items": items_path, "--events": events_path, "--model": model_dir, "--config": config_path}
    # --out equal to --model is the contract's retrain in place: the model is replaced atomically if promoted
    check_paths(
        inputs, [Output("--out", out_dir, "dir"), Output("--registry", registry, "dir", store=True)], may_replace=(("--out", "--model"),)
    )
    config = None
    if config_path is not None or tolerance is not None or test_days is not None or seed is not None:
        config = load_config(config_path or _champion_config(model_dir, registry)).with_seed(seed)
        overrides = {k: v for k, v in (("tolerance", tolerance), ("test_days", test_days)) if v is not None}
        config = config.replace(retrain=overrides) if overrides else config
    return gated_retrain(
        items_path,
        events_path,
        model_dir=model_dir,
        out_dir=out_dir,
        registry=registry,
        config=config,
        device=device,
        progress=progress,
        log=log,
    )


def _champion_config(model_dir: str | Path | None, registry: str | Path | None) -> Path:
    if model_dir is not None:
        return Path(model_dir) / CONFIG_FILE
    if registry is not None:
        reg = Registry(registry)
        if reg.champion is not None:
            return reg.model_dir(reg.champion) / CONFIG_FILE
    raise ConfigError("--model: give --model, or a --registry that has a champion")


def gate_decision(challenger: float, champion: float, tolerance: float) -> tuple[bool, str]:
    """(promote?, why): promote unless the challenger is more than `tolerance` below the champion."""
    if not math.isfinite(challenger):
        return False, f"the challenger's {GATE_METRIC} is not a number"
    if not math.isfinite(champion):
        return True, f"the champion's {GATE_METRIC} is not a number"
    delta = challenger - champion
    if delta >= -tolerance - 1e-12:
        return True, f"{GATE_METRIC} {challenger:.4f} vs champion {champion:.4f} ({delta:+.4f}, tolerance {tolerance:.4f})"
    return False, f"{GATE_METRIC} {challenger:.4f} is {-delta:.4f} below the champion's {champion:.4f} (tolerance {tolerance:.4f})"


def gated_retrain(
    items_path: str | Path,
    events_path: str | Path,
    *,
    model_dir: str | Path | None = None,
    out_dir: str | Path | None = None,
    registry: str | Path | None = None,
    config: Config | None = None,
    device: str = "auto",
    progress=None,
    log=noop,
) -> dict:
    """Train a challenger on fresh logs and promote it only if it is no worse than the champion.

    The champion is the registry's (with `registry`) or `model_dir`. The challenger warm-starts from
    `model_dir` if given, else from the champion. Promotion writes `out_dir` (MODEL_DIR, replaced
    atomically) and, with a registry, makes the challenger its champion; a rejected challenger is still
    registered (status "rejected") for inspection, `out_dir` is left untouched and `ChallengerRejected`
    (exit code 10) is raised after everything is recorded. Returns the gate report.
    """
    first_night = registry is not None and (not Registry.is_registry(registry) or Registry(registry).champion is None)
    if first_night and model_dir is None:
        # an empty registry and nothing to start from: the first model is trained and becomes the champion
        log(f"{registry} has no champion yet: training the first model (nothing to compare it with)")
        result = train_and_register(
            items_path, events_path, config or load_config(None), registry=registry, out_dir=out_dir, progress=progress, log=log
        )
        return {"decision": "promoted", "reason": "first model of an empty registry, nothing to compare with", "version": result["version"]}
    # nothing is created before the input is validated: a registry that does not exist yet is made later
    reg = Registry(registry) if registry is not None and Registry.is_registry(registry) else None
    champion_version = reg.champion if reg is not None else None
    if champion_version is not None:
        reg.verify(champion_version)
        champion_model = reg.model_dir(champion_version)
    elif model_dir is not None:
        champion_model = Path(model_dir)
        verify_model_dir(champion_model)
    else:
        raise RecsysError("no --model was given: nothing to retrain from or compare with; train one with `recsys train`")
    if out_dir is None and registry is None:
        raise RecsysError("retrain needs --out (a MODEL_DIR) or --registry to put the challenger in")
    warm_start = Path(model_dir) if model_dir is not None else champion_model
    verify_model_dir(warm_start)
    champion_config = load_config(champion_model / CONFIG_FILE)
    config = config or load_config(warm_start / CONFIG_FILE)
    settings = config.retrain

    data = load_inputs(items_path, events_path, log)
    first, last = time_bounds(data.events)
    end = just_after(last)
    cutoff = end - dt.timedelta(days=settings.test_days)
    if cutoff <= first:
        raise RecsysError(
            f"{events_path}: the events span {(last - first).total_seconds() / 86400:.1f} days, fewer than retrain.test_days = {settings.test_days} plus a training period"
        )
    # The held-out days must be new to the champion too. When its training data reaches a little into them
    # (logs rarely end at the same minute each night), they start where its data ends instead, as long as
    # at least half of them remain; otherwise the comparison favours the champion, and says so.
    champion_until = (read_json(champion_model / MANIFEST).get("data_window") or {}).get("ranker_until")
    seen_until = dt.datetime.fromisoformat(champion_until) if champion_until else None
    if seen_until is not None and cutoff < seen_until <= end - dt.timedelta(days=settings.test_days / 2):
        cutoff = seen_until
    champion_saw_window = seen_until is not None and seen_until > cutoff
    if champion_saw_window:
        log(
            f"warning: the champion was trained on events until {champion_until}, inside the held-out days from {cutoff:%Y-%m-%d %H:%M}; the comparison favours it (set retrain.test_days to the time between retrains)"
        )

    if registry is not None and reg is None:
        reg = Registry.create(registry)
    if first_night:
        # the first night of the nightly recipe: --model becomes the registry's first champion before the
        # challenger is gated against it, so the registry has a champion to score whatever the gate decides
        champion_version = _register_first_champion(reg, champion_model, precision=settings.precision, log=log)
        champion_model = reg.model_dir(champion_version)
    staging_context = reg.stage() if reg is not None else staging_dir(Path(out_dir).parent, prefix=f".{Path(out_dir).name}.retrain-")
    with staging_context as staging, tempfile.TemporaryDirectory(prefix="recsys-champion-") as scratch:
        log(f"challenger: training on events before {cutoff:%Y-%m-%d %H:%M}, warm start from {warm_start}")
        train_model_dir(
            items_path, events_path, staging / MODEL, config, warm_start=warm_start, data=data, until=cutoff, progress=progress, log=log
        )
        export_model(staging / MODEL, staging / EXPORT, precision=settings.precision, log=log)
        if champion_version is not None:
            champion_export = reg.export_dir(champion_version)
        else:
            champion_export = Path(scratch) / EXPORT
            export_model(champion_model, champion_export, precision=settings.precision, log=log)

        log(f"gate: scoring champion and challenger on [{cutoff:%Y-%m-%d %H:%M}, {end:%Y-%m-%d %H:%M})")
        champion_metrics = evaluate_export(
            champion_export, data, cutoff=cutoff, end=end, config=champion_config, device=device, progress=progress
        )
        challenger_metrics = evaluate_export(
            staging / EXPORT, data, cutoff=cutoff, end=end, config=config, device=device, progress=progress
        )
        promote, why = gate_decision(
            challenger_metrics["metrics"][GATE_METRIC], champion_metrics["metrics"][GATE_METRIC], settings.tolerance
        )
        gate = {
            "decision": "promoted" if promote else "rejected",
            "reason": why,
            "metric": GATE_METRIC,
            "challenger": _number(challenger_metrics["metrics"][GATE_METRIC]),
            "champion": _number(champion_metrics["metrics"][GATE_METRIC]),
            "tolerance": settings.tolerance,
            "champion_version": champion_version,
            "champion_model_version": read_json(champion_model / MANIFEST)["model_version"],
            "champion_saw_test_window": champion_saw_window,
            "cutoff": cutoff.isoformat(),
            "end": end.isoformat(),
            "test_days": round((end - cutoff).total_seconds() / 86400, 4),
            "queries": int(challenger_metrics["users"].len()),
            "metrics": {"challenger": _plain(challenger_metrics["metrics"]), "champion": _plain(champion_metrics["metrics"])},
            "at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        }
        _record_gate(staging / MODEL, gate)
        log(f"gate: {gate['decision']}: {why}")

        version = None
        if reg is not None and promote:
            # compare-and-swap: registered and promoted in one locked step, only over the champion it was
            # compared with; if another job changed the champion meanwhile, ChampionChanged (exit 11) and
            # the registry is left as it was
            version = reg.register(
                staging,
                created_by="retrain",
                parent=champion_version,
                gate=gate,
                promote_over=champion_version,
                reason=f"retrain gate: {why}",
            )
        elif reg is not None:
            version = reg.register(staging, created_by="retrain", parent=champion_version, gate=gate)
            reg.record("reject", version, reason=why, champion=champion_version)
        if promote and out_dir is not None:
            if reg is not None:
                copy_dir(reg.model_dir(version), out_dir)
            else:
                install_dir(staging / MODEL, out_dir)
    gate["version"] = version
    if not promote:
        kept = f"champion {champion_version}" if champion_version else f"champion {champion_model}"
        where = f"; registered as {version} (rejected)" if version else ""
        raise ChallengerRejected(
            f"challenger rejected: {why} on {gate['queries']} users of the last {gate['test_days']:g} day(s); {kept} kept{where}", gate
        )
    return gate


def _register_first_champion(reg: Registry, model_dir: Path, *, precision: str, log) -> str:
    """Export `model_dir` and register it as the champion of an empty registry; returns its version."""
    with reg.stage() as staging:
        copy_dir(model_dir, staging / MODEL)
        export_model(staging / MODEL, staging / EXPORT, precision=precision, log=log)
        version = reg.register(
            staging, created_by="retrain", promote_over=None, reason=f"first champion of the registry: --model {model_dir}"
        )
    log(f"{version} ({model_dir}) is the first champion of {reg.root}")
    return version


def _record_gate(model_dir: Path, gate: dict) -> None:
    """Add the gate's report to a staged MODEL_DIR's manifest (its hashed files do not change)."""
    manifest = read_json(model_dir / MANIFEST)
    manifest["gate"] = gate
    write_json(model_dir / MANIFEST, manifest)


def _number(value: float) -> float | None:
    """JSON has no NaN: a metric without a value is null."""
    return None if isinstance(value, float) and math.isnan(value) else value


def _plain(metrics: dict) -> dict:
    return {key: _number(value) for key, value in metrics.items() if isinstance(value, (int, float))}
