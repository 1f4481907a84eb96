"""`recsys demo`: offline, end to end, with the real pretrained encoder: generate → train → export →
evaluate → score, all under one work folder."""

from __future__ import annotations

from pathlib import Path

from recsys.contracts.config import Config
from recsys.generate import generate_shop
from recsys.jobs.common import config_file, noop
from recsys.jobs.evaluate import evaluate
from recsys.jobs.paths import Output, check_paths
from recsys.jobs.score import score


def demo(workdir: str | Path = "demo-work", *, config: Config | str | Path | None = None, progress=None, log=noop) -> tuple[dict, dict]:
    """(evaluation report, recommendations manifest)."""
    workdir = Path(workdir)
    check_paths({"--config": config_file(config)}, [Output("--workdir", workdir, "dir")])
    data = workdir / "data"
    log(f"generating a synthetic shop in {data}")
    generate_shop(data, seed=0)
    report = evaluate(data / "items.parquet", data / "events", workdir / "report", config, test_days=3, progress=progress, log=log)
    export_dir = workdir / "report" / "artifacts" / "export"
    manifest = score(
        export_dir, data / "items.parquet", data / "events", workdir / "recommendations.parquet", k=20, progress=progress, log=log
    )
    return report, manifest
