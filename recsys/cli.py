"""The `recsys` command line: one thin function per command, each calling exactly one job
(`recsys.jobs`, docs/ARCHITECTURE.md).

Errors of the user's input (`RecsysError`) become one line on stderr and a non-zero exit; anything
else is a bug and keeps its traceback.
"""

from __future__ import annotations

import functools
import os
import signal
import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # spin-waiting threads make shared 2-core machines many times slower

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Personalized recommendations that understand item text.",
)
out = Console()
err = Console(stderr=True)


def guarded(func):
    """Turn RecsysError into `recsys: <message>` and its exit code; SIGTERM and SIGINT into `Interrupted`
    raised where the job is, so every staging context on the way out removes what it made (exit 143/130)."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        from recsys.contracts.errors import Interrupted, RecsysError, clear_signals, note_signal

        def stop(signum, frame):
            for name in (signal.SIGTERM, signal.SIGINT):  # the clean-up itself is not interrupted again
                signal.signal(name, signal.SIG_IGN)
            note_signal(signum)  # if this raise is swallowed, the next rename into a destination raises it
            raise Interrupted(signum)

        def unraisable(info):
            # the handler's raise landed in a finaliser (a `__del__`, a weakref callback), where Python prints
            # it as "Exception ignored … Traceback" and runs on: the signal is noted and the next rename into a
            # destination raises it (`raise_if_interrupted`), so it is not printed; anything else is
            if not isinstance(info.exc_value, Interrupted):
                previous_hook(info)

        previous = {name: signal.signal(name, stop) for name in (signal.SIGTERM, signal.SIGINT)}
        previous_hook, sys.unraisablehook = sys.unraisablehook, unraisable
        try:
            return func(*args, **kwargs)
        except RecsysError as exc:
            message = " ".join(str(exc).split())
            # escaped: a message may hold brackets that are not markup ("pip install 'recsys[ray]'")
            err.print(f"[bold red]recsys:[/bold red] {escape(message)}", highlight=False, soft_wrap=True)
            raise typer.Exit(exc.exit_code) from None
        finally:
            clear_signals()
            sys.unraisablehook = previous_hook
            for name, handler in previous.items():
                signal.signal(name, handler)

    return wrapper


def _log(message: str) -> None:
    err.print(f"[dim]·[/dim] {escape(message)}", highlight=False, soft_wrap=True)


ItemsOpt = typer.Option(
    ..., "--items", help="Items file (Parquet or CSV): item_id, title[, description, category, domain, price, created_at]."
)
EventsOpt = typer.Option(..., "--events", help="Events file or directory of daily files: user_id, item_id, event, timestamp.")
ConfigOpt = typer.Option(None, "--config", help="TOML config; defaults are used for what it does not set.")
RegistryOpt = typer.Option(None, "--registry", help="Model registry folder (versions/, registry.json); created if missing.")
SeedOpt = typer.Option(
    None,
    "--seed",
    help="Seed of every random choice in training (text model and ranker); default: the config's. Same inputs, config and seed give byte-identical models on CPU.",
)


@app.command()
@guarded
def generate(
    out_dir: Path = typer.Option(..., "--out", help="Folder for items.parquet, events/ (one file a day) and truth/."),
    users: int = typer.Option(1500, help="Number of users."),
    items: int = typer.Option(1200, help="Items in the catalog at the start (more arrive every day)."),
    days: int = typer.Option(28, help="Days of interaction logs."),
    seed: int = typer.Option(0, help="Random seed: the same seed gives byte-identical files."),
    mode: str = typer.Option(
        "behaviour",
        help="behaviour: random word directions (behaviour dominates); language: directions from what the words mean "
        "(synonyms and new domains recoverable from text; reads the pretrained encoder).",
    ),
):
    """Generate a synthetic shop: catalog with text, daily impression/click/purchase logs, ground truth."""
    from recsys.jobs.generate import generate as run_generate

    summary = run_generate(out_dir, users=users, items=items, days=days, seed=seed, mode=mode)
    out.print(f"generated {out_dir}: {summary}")


@app.command()
@guarded
def train(
    items: Path = ItemsOpt,
    events: Path = EventsOpt,
    out_dir: Path | None = typer.Option(None, "--out", help="MODEL_DIR to write (replaced atomically); optional with --registry."),
    config: Path | None = ConfigOpt,
    registry: Path | None = RegistryOpt,
    seed: int | None = SeedOpt,
    engine: str = typer.Option(
        "local", "--engine", help="local, or ray: the text model fine-tuned data-parallel on Ray (the config's [engine])."
    ),
    ray_address: str | None = typer.Option(
        None, "--ray-address", help="Ray cluster address (default: [engine] address, $RAY_ADDRESS, else a local Ray)."
    ),
):
    """Fine-tune the multi-task text model, then the LightGBM ranker on the window after it.

    With --registry, the model is also exported and added as a new version (the champion if it is the first).
    """
    from recsys.jobs.train import train as run_train
    from recsys.progress import progress_bars

    with progress_bars() as bar:
        result = run_train(
            items,
            events,
            out_dir=out_dir,
            registry=registry,
            config=config,
            seed=seed,
            engine=engine,
            ray_address=ray_address,
            progress=bar,
            log=_log,
        )
    manifest = result["manifest"]
    ndcg = manifest["metrics"]["ranker_valid_ndcg@10"]
    if result["version"] is not None:
        out.print(
            f"model {manifest['model_version']} registered as {result['version']} in {registry} (champion: {result['champion']}; ranker valid NDCG@10 {ndcg:.4f})"
        )
    else:
        out.print(f"model {manifest['model_version']} written to {out_dir} (ranker valid NDCG@10 {ndcg:.4f})")


@app.command()
@guarded
def retrain(
    model: Path | None = typer.Option(
        None, "--model", help="The champion MODEL_DIR: warm start and the model to beat (optional with a --registry that has a champion)."
    ),
    items: Path = ItemsOpt,
    events: Path = EventsOpt,
    out_dir: Path | None = typer.Option(
        None,
        "--out",
        help="MODEL_DIR written only if the challenger is promoted (may be --model; replaced atomically); optional with --registry.",
    ),
    config: Path | None = typer.Option(None, "--config", help="TOML config; default: the warm-start model's own config."),
    registry: Path | None = RegistryOpt,
    tolerance: float | None = typer.Option(
        None,
        "--tolerance",
        help="Promote unless the challenger's NDCG@10 is more than this below the champion's (default: retrain.tolerance).",
    ),
    test_days: float | None = typer.Option(
        None, "--test-days", help="Newest days held out to compare the two (default: retrain.test_days)."
    ),
    seed: int | None = SeedOpt,
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda (scoring the held-out days)."),
):
    """Gated retrain: train a challenger on fresh logs, compare it with the champion on the newest days, promote it only if it is no worse.

    Exit code 10 when the challenger is rejected (the champion is kept and nothing is written to --out).
    """
    from recsys.jobs.retrain import retrain as run_retrain
    from recsys.progress import progress_bars

    with progress_bars() as bar:
        gate = run_retrain(
            items,
            events,
            model_dir=model,
            out_dir=out_dir,
            registry=registry,
            config_path=config,
            tolerance=tolerance,
            test_days=test_days,
            seed=seed,
            device=device,
            progress=bar,
            log=_log,
        )
    targets = [f"{registry} (champion {gate['version']})"] if gate["version"] else []
    targets += [str(out_dir)] if out_dir is not None else []
    out.print(f"challenger promoted: {gate['reason']}; written to {', '.join(targets)}")


@app.command()
@guarded
def export(
    model: Path = typer.Option(..., "--model", help="MODEL_DIR written by `recsys train` (with --format triton, an EXPORT_DIR too)."),
    out_dir: Path = typer.Option(..., "--out", help="EXPORT_DIR (or Triton model repository) to write, replaced atomically."),
    precision: str = typer.Option("fp32", help="fp32, fp16 (for CUDA) or int8 (dynamic, per-channel; for CPU)."),
    format: str = typer.Option("onnx", "--format", help="onnx: an EXPORT_DIR for recsys score/serve; triton: a Triton model repository."),
):
    """Export the model to ONNX (+ tokenizer, ranker, manifest) after checking parity with PyTorch."""
    from recsys.jobs.export import export as run_export

    manifest = run_export(model, out_dir, precision=precision, format=format, log=_log)
    if format == "triton":
        parity = manifest["ranker_parity"]
        out.print(
            f"Triton repository of {manifest['model_version']} ({manifest['precision']}) written to {out_dir}: "
            f"{', '.join(manifest['models'])}; ranker max abs diff {parity['max_abs_diff']:.1e} vs LightGBM"
        )
        return
    parity = manifest["parity"][precision]
    out.print(
        f"exported {manifest['model_version']} ({precision}) to {out_dir}: item-vector cosine {parity['item_vector_mean_cosine']:.6f}"
    )


@app.command()
@guarded
def score(
    model: Path = typer.Option(
        ..., "--model", help="EXPORT_DIR written by `recsys export`, or a model registry (its champion is used), or one of its versions."
    ),
    items: Path = ItemsOpt,
    events: Path = EventsOpt,
    out_file: Path = typer.Option(..., "--out", help="recommendations.parquet to write (and <name>.manifest.json)."),
    k: int = typer.Option(20, "--k", help="Recommendations per user."),
    users: Path | None = typer.Option(None, "--users", help="File with a user_id column: score only these users."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
    cache_dir: Path | None = typer.Option(
        None,
        "--cache-dir",
        help="Item-vector cache: only new or changed items are encoded (default: $RECSYS_CACHE_DIR or ~/.cache/recsys).",
    ),
    no_cache: bool = typer.Option(False, "--no-cache", help="Encode every item, touch no cache."),
    chunk_users: int = typer.Option(
        2_000, "--chunk-users", help="Users per chunk: bounds memory; finished chunks survive a crash and are reused."
    ),
    explain: bool = typer.Option(
        False,
        "--explain",
        help="Add why each item is there: its three largest reasons (LightGBM contributions, in words) and the closest clicked item.",
    ),
    retrieval: str | None = typer.Option(
        None,
        "--retrieval",
        help="Text neighbours: exact, ann (faiss IVF) or auto (ann from candidates.ann_min_items items on); default: the export's.",
    ),
    engine: str = typer.Option(
        "local", "--engine", help="local, or ray: blocks of users ranked by Ray actors; --out is then a folder of Parquet parts."
    ),
    ray_address: str | None = typer.Option(
        None, "--ray-address", help="Ray cluster address (default: [engine] address, $RAY_ADDRESS, else a local Ray)."
    ),
    config: Path | None = typer.Option(
        None, "--config", help="TOML config: its [engine] section (workers, cpus/gpus per worker, batch_users)."
    ),
):
    """Recommend the top K unseen items for every user (or for --users) with the exported model."""
    from recsys.contracts.config import load_config
    from recsys.jobs.score import DEFAULT_CACHE
    from recsys.jobs.score import score as run_score
    from recsys.progress import progress_bars

    cache = None if no_cache else (cache_dir or DEFAULT_CACHE)
    with progress_bars() as bar:
        manifest = run_score(
            model,
            items,
            events,
            out_file,
            k=k,
            users_path=users,
            device=device,
            cache_dir=cache,
            chunk_users=chunk_users,
            explain=explain,
            retrieval=retrieval,
            engine=engine,
            engine_config=load_config(config).engine,
            ray_address=ray_address,
            progress=bar,
            log=_log,
        )
    out.print(
        f"{manifest['rows']} recommendations for {manifest['users']} users written to {out_file} in {manifest['timings_s']['total_s']:.1f}s on {manifest['providers'][0]}"
    )


@app.command()
@guarded
def serve(
    model: Path = typer.Option(..., "--model", help="EXPORT_DIR, or a model registry (its champion; reloaded when a new one is promoted)."),
    items: Path = ItemsOpt,
    events: Path = EventsOpt,
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on."),
    port: int = typer.Option(8000, "--port", help="Port to listen on."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
    cache_dir: Path | None = typer.Option(None, "--cache-dir", help="Item-vector cache (default: $RECSYS_CACHE_DIR or ~/.cache/recsys)."),
    no_cache: bool = typer.Option(False, "--no-cache", help="Encode every item, touch no cache."),
    threads: int = typer.Option(
        1, "--threads", help="Threads per request for ONNX Runtime and LightGBM (requests run side by side); 0: all cores."
    ),
    watch_seconds: float = typer.Option(
        5.0, "--watch-seconds", help="With a registry: how often to look for a new champion (0: only POST /reload)."
    ),
    workers: int = typer.Option(
        1, "--workers", help="Server processes sharing the port, each with its own copy of the model (one per core; POST /reload needs 1)."
    ),
):
    """Answer POST /recommend over HTTP with the lists `recsys score` would write (needs recsys[serve-http])."""
    from recsys.jobs.score import DEFAULT_CACHE
    from recsys.jobs.serve import serve as run_serve

    cache = None if no_cache else (cache_dir or DEFAULT_CACHE)
    run_serve(
        model,
        items,
        events,
        host=host,
        port=port,
        device=device,
        cache_dir=cache,
        threads=threads,
        watch_seconds=watch_seconds,
        workers=workers,
        log=_log,
    )


@app.command()
@guarded
def evaluate(
    items: Path = ItemsOpt,
    events: Path = EventsOpt,
    out_dir: Path = typer.Option(..., "--out", help="REPORT_DIR for report.md, metrics.json, plots/ and the artifacts."),
    test_days: float | None = typer.Option(
        None,
        "--test-days",
        help="Length of the test period in days (default 3: the last 3 days; with --cutoff: the days after it, else until the end of the log).",
    ),
    cutoff: str | None = typer.Option(
        None, "--cutoff", help="Start of the test period (ISO date/time in UTC, or epoch seconds); default: the last --test-days days."
    ),
    config: Path | None = ConfigOpt,
    precision: str = typer.Option("fp32", help="Export precision used for scoring."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda (scoring)."),
    ablations: bool = typer.Option(
        False,
        "--ablations",
        help="Also retrain with one design option flipped at a time (click-only, frozen encoder, MLM pretraining) and with one domain held out (zero-shot transfer); each costs about one more training run.",
    ),
    holdout_domain: str | None = typer.Option(
        None,
        "--holdout-domain",
        help="Domain held out for the cross-domain run of --ablations (default: the one with the most test users).",
    ),
    seed: int | None = SeedOpt,
):
    """Train on the events before a cutoff, test on the next period: every system, baseline, slice and plot in REPORT_DIR."""
    from recsys.jobs.evaluate import evaluate as run_evaluate
    from recsys.progress import progress_bars

    with progress_bars() as bar:
        report = run_evaluate(
            items,
            events,
            out_dir,
            config,
            test_days=test_days,
            cutoff=cutoff,
            precision=precision,
            device=device,
            ablations=ablations,
            seed=seed,
            holdout_domain=holdout_domain,
            progress=bar,
            log=_log,
        )
    _print_headline(report)
    out.print(f"report: {out_dir / 'report.md'}")


def _print_headline(report: dict) -> None:
    from recsys.jobs.evaluate import headline_columns, headline_rows

    table = Table(title=f"{report['queries']} users, {report['test_days']:g} days after {report['cutoff'][:16].replace('T', ' ')} held out")
    table.add_column("system")
    for _, label in headline_columns(report):
        table.add_column(label, justify="right")
    for row in headline_rows(report):
        table.add_row(*row)
    out.print(table)
    missed = [t["target"] for t in report.get("targets", []) if not t["met"]]
    if missed:
        out.print(f"targets missed ({len(missed)} of {len(report['targets'])}): " + "; ".join(missed), highlight=False)


@app.command()
@guarded
def demo(
    workdir: Path = typer.Option(
        Path("demo-work"), "--workdir", help="Folder for the generated data, model, export, recommendations and report."
    ),
    config: Path | None = ConfigOpt,
):
    """Offline, end to end: generate → train → export → score → evaluate, with the real pretrained encoder."""
    from recsys.jobs.demo import demo as run_demo
    from recsys.progress import progress_bars

    with progress_bars() as bar:
        report, manifest = run_demo(workdir, config=config, progress=bar, log=_log)
    _print_headline(report)
    out.print(
        f"recommendations: {workdir / 'recommendations.parquet'} ({manifest['users']} users × {manifest['k']}); report: {workdir / 'report' / 'report.md'}"
    )


models_app = typer.Typer(no_args_is_help=True, help="The model registry: list versions, promote one, roll back the champion.")
app.add_typer(models_app, name="models")
RegistryArg = typer.Option(..., "--registry", help="Model registry folder (written by `recsys train --registry`).")


@models_app.command("list")
@guarded
def models_list(registry: Path = RegistryArg, as_json: bool = typer.Option(False, "--json", help="Print the rows as JSON.")):
    """Every version, oldest first: status, model hash, data window, metrics of training and of the gate."""
    import json

    from recsys.jobs.models import list_versions

    rows = list_versions(registry)
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    table = Table(title=f"{registry}: {len(rows)} version(s)")
    for column in ("version", "status", "model", "created (UTC)", "by", "data until", "ranker NDCG@10", "gate NDCG@10 (champion)"):
        table.add_column(column)
    for row in rows:
        gate = "–" if row["gate_ndcg@10"] is None else f"{row['gate_ndcg@10']:.4f} ({_maybe(row['gate_champion_ndcg@10'])})"
        table.add_row(
            row["version"],
            row["status"],
            (row["model_version"] or "")[:12],
            (row["created_at"] or "")[:16].replace("T", " "),
            row["created_by"] or "",
            (row["data_until"] or "")[:16].replace("T", " "),
            _maybe(row["ranker_valid_ndcg@10"]),
            gate,
        )
    out.print(table)


def _maybe(value) -> str:
    return "–" if value is None else f"{value:.4f}"


@models_app.command("promote")
@guarded
def models_promote(version: str = typer.Argument(..., help="Version to make the champion, e.g. v0003."), registry: Path = RegistryArg):
    """Make VERSION the champion (its files are verified first); `recsys score --model REGISTRY` then uses it."""
    from recsys.jobs.models import promote

    entry = promote(version, registry)
    out.print(f"{version} is the champion of {registry} (was {entry['previous']})")


@models_app.command("rollback")
@guarded
def models_rollback(registry: Path = RegistryArg):
    """Make the previous champion the champion again (its files are verified first)."""
    from recsys.jobs.models import rollback

    entry = rollback(registry)
    out.print(f"rolled back {registry}: {entry['to']} is the champion again (was {entry['version']})")


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
