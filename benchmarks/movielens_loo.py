"""MovieLens-100k in the peers' protocol: per-user temporal leave-one-out, full ranking, history excluded.

    .venv/bin/python benchmarks/movielens_loo.py                     # 3 seeds, tuned on validation (~35 min on 2 cores)
    .venv/bin/python benchmarks/movielens_loo.py --seeds 0 --quick   # one seed, no grid (~5 min)

Systems, all trained on the same training sequences, tuned on the same validation clicks and scored on the
same test clicks over all 1,682 items (recsys/loo.py):

- popularity; EASE (λ on validation); BPR-MF (weight decay on validation, early stopping);
- SASRec: `recsys.model.SequenceRecommender` with item ids only (full softmax, early stopping on
  validation NDCG@10; dimension and dropout on validation);
- text + ID: the same model whose item vectors add a projection of the frozen pretrained encoder's
  vector of "title. Year: … Genres: …" to the ID embedding;
- text only: no ID embedding at all (every item vector comes from its words);
- with --product TOWER…: the product's own text model (`recsys.sequential.product_scorer`: what `recsys train`
  fits, the shipped defaults or --product-config, with that user tower), every item ranked by p_click.

Reported: test NDCG@10 and HR@10 per system (mean ± se over seeds), paired differences per user of the
seed-averaged metric (text + ID − each system, se and 95% bootstrap interval), and the same split by users
whose test and validation clicks share a timestamp (`tied`) and those whose do not. Writes --work/results.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from recsys.contracts.config import USER_TOWERS  # noqa: E402

HYBRID = "text + ID (ours)"
SASREC = "SASRec (ID only)"
SEQUENCE_SYSTEMS = {
    SASREC: {"use_ids": True, "use_text": False},
    HYBRID: {"use_ids": True, "use_text": True},
    "text only (ours)": {"use_ids": False, "use_text": True},
}
# The points the full grid chose on validation (benchmarks/RESULTS.md, 2026-12-03), for --cold-items runs.
CHOSEN = {
    SASREC: {"dim": 128, "dropout": 0.4},
    HYBRID: {"dim": 64, "id_dropout": 0.3},
    "text only (ours)": {"dim": 128, "dropout": 0.2},
}
DIMS = (64, 128)
# Each sequence system gets the same 4-point grid (dimension × its own regulariser), chosen on validation.
GRIDS = {
    SASREC: [{"dropout": 0.2}, {"dropout": 0.4}],
    HYBRID: [{"id_dropout": 0.0}, {"id_dropout": 0.3}],
    "text only (ours)": [{"dropout": 0.2}, {"dropout": 0.4}],
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, help="folder with ml-100k.inter/.item or u.data/u.item; default: fetch the recbole wheel")
    parser.add_argument("--work", type=Path, default=ROOT / "benchmarks" / "out" / "movielens_loo")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--quick", action="store_true", help="no dimension grid (64), at most 60 epochs")
    parser.add_argument(
        "--cold-items",
        type=float,
        default=0.0,
        help="keep this share of items out of all training (new items) and report the users whose test click is one; uses the chosen configs",
    )
    parser.add_argument("--chosen", action="store_true", help="no grid: the configs the full grid chose on validation (CHOSEN)")
    parser.add_argument(
        "--product",
        nargs="*",
        choices=USER_TOWERS,
        default=[],
        help="also the product's own text model (recsys train's, shipped defaults) with these user towers, one run per seed",
    )
    parser.add_argument("--product-config", type=Path, default=None, help="a TOML config for the product's rows instead of the defaults")
    parser.add_argument(
        "--peers", action=argparse.BooleanOptionalAction, default=True, help="the ID peers and sequence models (default: yes)"
    )
    parser.add_argument(
        "--reference", default=None, help="the system the paired differences are taken against (default: text + ID, else the last row)"
    )
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)

    import torch

    from benchmarks.movielens import fetch_ml100k
    from recsys.contracts.config import ModelConfig, load_config
    from recsys.encoder import resolve_encoder, text_vectors
    from recsys.evaluate import paired_difference
    from recsys.loo import cold_test_users, evaluate_scorer, leave_one_out, with_cold_items
    from recsys.movielens import load_movielens
    from recsys.peers import popularity_scorer, tune_bpr, tune_ease
    from recsys.sequential import SequenceConfig, fit_sequence_model, item_texts, product_scorer, scorer

    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    items, events = load_movielens(args.source or fetch_ml100k(args.work / "source"))
    split = leave_one_out(events)
    if args.cold_items > 0:
        split = with_cold_items(split, args.cold_items, seed=0)
        print(f"{int(split.cold.sum())} cold items, {int(cold_test_users(split).sum())} users with a cold test click", flush=True)
    print(f"{len(split.sequences)} users, {split.n_items} items, {split.tied.mean():.0%} with tied test/validation timestamps", flush=True)
    text = text_vectors(item_texts(items, split), resolve_encoder(ModelConfig()))

    per_user: dict[str, list[dict]] = {}  # system → per-seed {metric: (U,) array}
    details: dict[str, dict] = {}

    def record(name: str, score, info: dict) -> None:
        test = evaluate_scorer(score, split, "test")
        per_user.setdefault(name, []).append(test)
        details.setdefault(name, []).append({**info, "test_ndcg@10": float(test["ndcg@10"].mean())})
        print(f"  {name}: {json.dumps(details[name][-1])}", flush=True)

    record("popularity", popularity_scorer(split), {})
    ease = tune_ease(split)
    record("EASE", ease.scorer, {"lambda": ease.params["lambda"], "valid_ndcg@10": ease.valid_ndcg})
    if args.peers:  # BPR and the sequence models (popularity and EASE take seconds: always)
        for seed in args.seeds:
            bpr = tune_bpr(split, seed=seed)
            record("BPR-MF", bpr.scorer, {"seed": seed, **bpr.params, "valid_ndcg@10": bpr.valid_ndcg})

        max_epochs = 60 if args.quick else 200
        for name, flags in SEQUENCE_SYSTEMS.items():
            chosen, first = None, None
            if args.cold_items > 0 or args.chosen:
                grid = [CHOSEN[name]]
            elif args.quick:
                grid = [{"dim": 64, **GRIDS[name][-1]}]
            else:
                grid = [{"dim": d, **g} for d in DIMS for g in GRIDS[name]]
            for point in grid:
                config = SequenceConfig(batch_size=32, max_epochs=max_epochs, patience=10, seed=args.seeds[0], **flags, **point)
                fitted = fit_sequence_model(split, config, text=text)
                print(
                    f"  {name} {point}: valid {fitted.best_valid_ndcg:.4f} at epoch {fitted.best_epoch} ({fitted.seconds:.0f} s)",
                    flush=True,
                )
                if first is None or fitted.best_valid_ndcg > first.best_valid_ndcg:
                    chosen, first = config, fitted
            for seed in args.seeds:
                fitted = (
                    first
                    if seed == args.seeds[0]
                    else fit_sequence_model(split, SequenceConfig(**{**chosen.__dict__, "seed": seed}), text=text)
                )
                info = {
                    "seed": seed,
                    "dim": chosen.dim,
                    "dropout": chosen.dropout,
                    "id_dropout": chosen.id_dropout,
                    "best_epoch": fitted.best_epoch,
                    "valid_ndcg@10": fitted.best_valid_ndcg,
                }
                record(name, scorer(fitted.model, split), {**info, "seconds": round(fitted.seconds, 1)})

    for tower in args.product:
        for seed in args.seeds:
            config = load_config(args.product_config).with_seed(seed + 7).replace(model={"user_tower": tower})
            tic = time.perf_counter()
            scores, report = product_scorer(split, events, items, config, encoder_folder=resolve_encoder(config.model))
            info = {"seed": seed + 7, "best_epoch": report["curves"]["best_epoch"], "seconds": round(time.perf_counter() - tic, 1)}
            record(f"product text model ({tower})", scores["p_click"], info)
            record(f"product text model ({tower}), by similarity", scores["similarity"], info)

    # Seed-averaged per-user metrics: paired differences over the same 943 users, against text + ID (or,
    # without the peers, the last product row)
    reference = args.reference or (HYBRID if HYBRID in per_user else list(per_user)[-1])
    averaged = {name: {m: np.mean([run[m] for run in runs], axis=0) for m in runs[0]} for name, runs in per_user.items()}
    groups = {"all": np.ones(len(split.tied), bool), "tied": split.tied, "not tied": ~split.tied}
    if split.cold is not None:
        groups |= {"cold test": cold_test_users(split), "warm test": ~cold_test_users(split)}
    table = {}
    for name, runs in per_user.items():
        seed_means = np.array([run["ndcg@10"].mean() for run in runs])
        table[name] = {
            "ndcg@10": float(seed_means.mean()),
            "ndcg@10_se_over_seeds": float(seed_means.std(ddof=1) / np.sqrt(len(runs))) if len(runs) > 1 else None,
            "hr@10": float(np.mean([run["hr@10"].mean() for run in runs])),
            "seeds": len(runs),
            **{f"ndcg@10|{g}": float(averaged[name]["ndcg@10"][mask].mean()) for g, mask in groups.items() if g != "all"},
        }
    paired = {
        g: {
            name: paired_difference(averaged[reference]["ndcg@10"][mask], averaged[name]["ndcg@10"][mask])
            for name in per_user
            if name != reference
        }
        for g, mask in groups.items()
    }
    results = {
        "protocol": "per-user temporal leave-one-out, full ranking over all items, history excluded, ties broken by a fixed hash",
        "users": len(split.sequences),
        "items": split.n_items,
        "tied_share": float(split.tied.mean()),
        "seeds": args.seeds,
        "systems": table,
        "runs": details,
        "paired_reference": reference,
        "paired_ndcg@10_reference_minus": paired,
        "minutes": round((time.perf_counter() - started) / 60, 1),
    }
    args.work.mkdir(parents=True, exist_ok=True)
    (args.work / "results.json").write_text(json.dumps(results, indent=2, default=float))
    # the seed-averaged NDCG@10 of every user, for pairing with another run of this script (other code, other config)
    pl.DataFrame({"user_id": split.user_ids, **{name: averaged[name]["ndcg@10"] for name in per_user}}).write_parquet(
        args.work / "per_user.parquet"
    )

    print(f"\n| system | NDCG@10 | ± se (seeds) | HR@10 | NDCG@10 tied | NDCG@10 not tied | {reference} − system [95% CI] |")
    print("|---|---|---|---|---|---|---|")
    for name, row in table.items():
        se = f"{row['ndcg@10_se_over_seeds']:.4f}" if row["ndcg@10_se_over_seeds"] is not None else "–"
        d = paired["all"].get(name)
        diff = f"{d['mean']:+.4f} [{d['ci95'][0]:+.4f}, {d['ci95'][1]:+.4f}]" if d else "–"
        print(
            f"| {name} | {row['ndcg@10']:.4f} | {se} | {row['hr@10']:.4f} | {row['ndcg@10|tied']:.4f} | {row['ndcg@10|not tied']:.4f} | {diff} |"
        )
    if split.cold is not None:
        print(f"\n| system | NDCG@10 cold test users | {reference} − system | NDCG@10 warm test users |")
        print("|---|---|---|---|")
        for name in table:
            cold, warm = (float(averaged[name]["ndcg@10"][groups[g]].mean()) for g in ("cold test", "warm test"))
            d = paired["cold test"].get(name)
            diff = f"{d['mean']:+.4f} [{d['ci95'][0]:+.4f}, {d['ci95'][1]:+.4f}]" if d else "–"
            print(f"| {name} | {cold:.4f} | {diff} | {warm:.4f} |")
    print(f"\n{results['minutes']} min; {args.work / 'results.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
