"""`recsys generate`: a synthetic shop with ground truth (`recsys.generate`)."""

from __future__ import annotations

from pathlib import Path

from recsys.generate import generate_shop
from recsys.jobs.paths import Output, check_paths


def generate(out_dir: str | Path, *, users: int = 1500, items: int = 1200, days: int = 28, seed: int = 0, mode: str = "behaviour") -> dict:
    """Write items.parquet, events/ and truth/ under `out_dir`; returns the summary."""
    check_paths({}, [Output("--out", out_dir, "dir")])
    return generate_shop(out_dir, users=users, items=items, days=days, seed=seed, mode=mode)
