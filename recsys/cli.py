"""The `recsys` command line: one thin function per job (DESIGN.md §2).

Errors of the user's input (`RecsysError`) become one line on stderr and a non-zero exit; anything
else is a bug and keeps its traceback.
"""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see DESIGN.md §8: spin-waiting on shared 2-core machines

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False, help="Personalized recommendations that understand item text.")
out = Console()
err = Console(stderr=True)


def guarded(func):
    """Turn RecsysError into `recsys: <message>` and its exit code."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        from recsys.errors import RecsysError

        try:
            return func(*args, **kwargs)
        except RecsysError as exc:
            message = " ".join(str(exc).split())
            err.print(f"[bold red]recsys:[/bold red] {message}", highlight=False, soft_wrap=True)
            raise typer.Exit(exc.exit_code) from None

    return wrapper


def _log(message: str) -> None:
    err.print(f"[dim]·[/dim] {message}", highlight=False, soft_wrap=True)


ItemsOpt = typer.Option(..., "--items", help="Items file (Parquet or CSV): item_id, title[, description, category, domain, price, created_at].")
EventsOpt = typer.Option(..., "--events", help="Events file or directory of daily files: user_id, item_id, event, timestamp.")
ConfigOpt = typer.Option(None, "--config", help="TOML config; defaults are used for what it does not set.")


@app.command()
@guarded
def generate(
    out_dir: Path = typer.Option(..., "--out", help="Folder for items.parquet, events/ (one file a day) and truth/."),
    users: int = typer.Option(1500, help="Number of users."),
    items: int = typer.Option(1200, help="Items in the catalog at the start (more arrive every day)."),
    days: int = typer.Option(28, help="Days of interaction logs."),
    seed: int = typer.Option(0, help="Random seed: the same seed gives byte-identical files."),
):
    """Generate a synthetic shop: catalog with text, daily impression/click/purchase logs, ground truth."""
    from recsys.generate import generate_shop

    summary = generate_shop(out_dir, users=users, items=items, days=days, seed=seed)
    out.print(f"generated {out_dir}: {summary}")


@app.command()
@guarded
def train(
    items: Path = ItemsOpt,
    events: Path = EventsOpt,
    out_dir: Path = typer.Option(..., "--out", help="MODEL_DIR to write (replaced atomically)."),
    config: Optional[Path] = ConfigOpt,
):
    """Fine-tune the multi-task text model, then the LightGBM ranker on the window after it."""
    from recsys.config import load_config
    from recsys.pipeline import train_pipeline
    from recsys.progress import progress_bars

    cfg = load_config(config)
    with progress_bars() as bar:
        manifest = train_pipeline(items, events, out_dir, cfg, progress=bar, log=_log)
    out.print(f"model {manifest['model_version']} written to {out_dir} (ranker valid NDCG@10 {manifest['metrics']['ranker_valid_ndcg@10']:.4f})")


@app.command()
@guarded
def retrain(
    model: Path = typer.Option(..., "--model", help="Existing MODEL_DIR to warm-start from."),
    items: Path = ItemsOpt,
    events: Path = EventsOpt,
    out_dir: Path = typer.Option(..., "--out", help="MODEL_DIR to write (may be the same as --model; replaced atomically)."),
    config: Optional[Path] = typer.Option(None, "--config", help="TOML config; default: the model's own config."),
):
    """Retrain on fresh logs, warm-starting the text model from an existing model."""
    from recsys.config import load_config
    from recsys.pipeline import train_pipeline
    from recsys.progress import progress_bars

    cfg = load_config(config or (model / "config.toml"))
    with progress_bars() as bar:
        manifest = train_pipeline(items, events, out_dir, cfg, warm_start=model, progress=bar, log=_log)
    out.print(f"model {manifest['model_version']} written to {out_dir}")


@app.command()
@guarded
def export(
    model: Path = typer.Option(..., "--model", help="MODEL_DIR written by `recsys train`."),
    out_dir: Path = typer.Option(..., "--out", help="EXPORT_DIR to write (replaced atomically)."),
    precision: str = typer.Option("fp32", help="fp32, fp16 (for CUDA) or int8 (dynamic, per-channel; for CPU)."),
):
    """Export the model to ONNX (+ tokenizer, ranker, manifest) after checking parity with PyTorch."""
    from export.onnx_export import export_model

    manifest = export_model(model, out_dir, precision=precision, log=_log)
    parity = manifest["parity"][precision]
    out.print(f"exported {manifest['model_version']} ({precision}) to {out_dir}: item-vector cosine {parity['item_vector_mean_cosine']:.6f}")


@app.command()
@guarded
def score(
    model: Path = typer.Option(..., "--model", help="EXPORT_DIR written by `recsys export`."),
    items: Path = ItemsOpt,
    events: Path = EventsOpt,
    out_file: Path = typer.Option(..., "--out", help="recommendations.parquet to write (and <name>.manifest.json)."),
    k: int = typer.Option(20, "--k", help="Recommendations per user."),
    users: Optional[Path] = typer.Option(None, "--users", help="File with a user_id column: score only these users."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
    cache_dir: Optional[Path] = typer.Option(None, "--cache-dir", help="Item-vector cache: only new or changed items are encoded (default: $RECSYS_CACHE_DIR or ~/.cache/recsys)."),
    no_cache: bool = typer.Option(False, "--no-cache", help="Encode every item, touch no cache."),
    chunk_users: int = typer.Option(20_000, "--chunk-users", help="Users per chunk: bounds memory; finished chunks survive a crash and are reused."),
):
    """Recommend the top K unseen items for every user (or for --users) with the exported model."""
    from recsys.progress import progress_bars
    from serving.score import default_cache_dir
    from serving.score import score as run_score

    cache = None if no_cache else (cache_dir or default_cache_dir())
    with progress_bars() as bar:
        manifest = run_score(model, items, events, out_file, k=k, users_path=users, device=device, cache_dir=cache, chunk_users=chunk_users, progress=bar, log=_log)
    out.print(f"{manifest['rows']} recommendations for {manifest['users']} users written to {out_file} in {manifest['timings_s']['total_s']:.1f}s on {manifest['providers'][0]}")


@app.command()
@guarded
def evaluate(
    items: Path = ItemsOpt,
    events: Path = EventsOpt,
    out_dir: Path = typer.Option(..., "--out", help="REPORT_DIR for report.md, metrics.json and the artifacts."),
    test_days: float = typer.Option(3, "--test-days", help="Hold out the last N days."),
    config: Optional[Path] = ConfigOpt,
    precision: str = typer.Option("fp32", help="Export precision used for scoring."),
):
    """Train on all but the last N days, recommend as of that cutoff, report metrics against popularity."""
    from recsys.config import load_config
    from recsys.evaluate import evaluate_pipeline
    from recsys.progress import progress_bars

    with progress_bars() as bar:
        report = evaluate_pipeline(items, events, out_dir, load_config(config), test_days=test_days, precision=precision, progress=bar, log=_log)
    _print_headline(report)
    out.print(f"report: {out_dir / 'report.md'}")


def _print_headline(report: dict) -> None:
    from recsys.evaluate import HEADLINE, headline_rows

    table = Table(title=f"{report['queries']} users, last {report['test_days']:g} days held out")
    table.add_column("system")
    for _, label in HEADLINE:
        table.add_column(label, justify="right")
    for row in headline_rows(report):
        table.add_row(*row)
    out.print(table)


@app.command()
@guarded
def demo(
    workdir: Path = typer.Option(Path("demo-work"), "--workdir", help="Folder for the generated data, model, export, recommendations and report."),
    config: Optional[Path] = ConfigOpt,
):
    """Offline, end to end: generate → train → export → score → evaluate, with the real pretrained encoder."""
    from recsys.config import load_config
    from recsys.evaluate import evaluate_pipeline
    from recsys.generate import generate_shop
    from recsys.progress import progress_bars
    from serving.score import score as run_score

    data = workdir / "data"
    _log(f"generating a synthetic shop in {data}")
    generate_shop(data, seed=0)
    with progress_bars() as bar:
        report = evaluate_pipeline(data / "items.parquet", data / "events", workdir / "report", load_config(config), test_days=3, progress=bar, log=_log)
        export_dir = workdir / "report" / "artifacts" / "export"
        manifest = run_score(export_dir, data / "items.parquet", data / "events", workdir / "recommendations.parquet", k=20, progress=bar, log=_log)
    _print_headline(report)
    out.print(f"recommendations: {workdir / 'recommendations.parquet'} ({manifest['users']} users × {manifest['k']}); report: {workdir / 'report' / 'report.md'}")


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
