"""Where the scoring time of a user with a history goes (issue 13's "profile first"): the stages of
`serving.score.rank_users` (candidates, the feature join, the feature matrix, LightGBM, top-k) each on its own
clock, over every user with a past in chunks as `recsys score` ranks them, and the candidates' parts from a
cProfile of `generate_candidates` (scaled to its unprofiled time). The staged answer of the first chunk is
checked equal to `rank_users`'; encoding and the snapshot are done before any clock starts.

    .venv/bin/python benchmarks/scoring_profile.py                 # the serve benchmark's 20k users × 50k items shop
    .venv/bin/python benchmarks/scoring_profile.py --shop DIR --export EXPORT_DIR --users 5000

The shop defaults to the one `benchmarks/serve_latency.py` generates (20,000 users, 50,000 items) and the
export to `benchmarks/run.py`'s int8 one.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

OUT = ROOT / "benchmarks" / "out"

# inside candidate generation, (stage, function of serving/candidates.py): its cumulative time in the profile
CANDIDATE_STAGES = (
    ("user vectors (ONNX user graph)", "user_vectors"),
    ("text retrieval, exact top-k over the catalog", "_text_top_k"),
    ("merging the sources", "_merge_sources"),
    ("scoring the pairs (ONNX scorer graph, history cosines)", "score_pairs"),
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shop", type=Path, default=OUT / "serve-20000-50000")
    parser.add_argument("--export", type=Path, default=OUT / "export-int8")
    parser.add_argument("--users", type=int, default=None, help="the first N users with a history (default: all of them)")
    args = parser.parse_args()

    import features
    from recsys.contracts import schema as S
    from recsys.jobs.score import open_scoring
    from serving.candidates import generate_candidates
    from serving.ranking import feature_matrix, top_k
    from serving.score import CHUNK_USERS, rank_chunks, rank_users

    opened, _ = open_scoring(args.export, args.shop / "items.parquet", args.shop / "events", device="cpu", cache_dir=OUT / "score-cache")
    model, ranker, snapshot, tables = opened.model, opened.ranker, opened.snapshot, opened.tables
    users = snapshot.users[S.USER_ID]
    users = users.head(args.users) if args.users else users
    history_length = opened.config["history_length"]

    def shipped() -> None:
        for _ in rank_chunks(model, ranker, snapshot, tables, users, k=20, candidates=opened.candidates, history_length=history_length):
            pass

    shipped()  # warm-up
    started = time.perf_counter()
    shipped()
    plain = time.perf_counter() - started

    # the same stages as serving.score.rank_users, one clock each (its answer is checked against rank_users')
    seconds = dict.fromkeys(
        (
            "candidates",
            "joining the behavioural features (polars)",
            "the feature matrix (polars → float64 numpy)",
            "LightGBM's prediction",
            "top-k per user",
        ),
        0.0,
    )
    profile = cProfile.Profile()
    for begin in range(0, users.len(), CHUNK_USERS):
        chunk = users.slice(begin, CHUNK_USERS)
        clock = time.perf_counter()
        cand = profile.runcall(generate_candidates, model, snapshot, chunk, opened.candidates, history_length)
        marks = [clock, time.perf_counter()]
        frame = features.join_features(cand.lazy(), tables).collect(engine="in-memory")
        marks.append(time.perf_counter())
        matrix = feature_matrix(frame, ranker.feature_names)
        marks.append(time.perf_counter())
        scores = ranker.booster_.predict(matrix)
        marks.append(time.perf_counter())
        ranked = top_k(frame, scores, 20).select(*S.RECOMMENDATION_COLUMNS)
        marks.append(time.perf_counter())
        for name, (a, b) in zip(seconds, zip(marks, marks[1:])):
            seconds[name] += b - a
        if begin == 0:
            expected = rank_users(model, ranker, snapshot, tables, chunk, 20, opened.candidates, history_length)
            assert ranked.equals(expected), "the staged ranking differs from serving.score.rank_users"
    total = sum(seconds.values())
    stats = pstats.Stats(profile).stats
    inside = {
        stage: sum(c for (file, _, name), (_, _, _, c, _) in stats.items() if name == function and file.endswith("serving/candidates.py"))
        for stage, function in CANDIDATE_STAGES
    }
    profiled = max(c for (file, _, name), (_, _, _, c, _) in stats.items() if name == "generate_candidates")
    scale = seconds["candidates"] / profiled  # cProfile's overhead taken out of the candidates' parts

    print(
        f"{users.len():,} users with a history, {len(snapshot.catalog):,} items: {plain:.2f} s = {users.len() / plain:,.0f} users/s (shipped path)\n"
    )
    print("| stage | s | share |\n|---|---:|---:|")
    for name, value in seconds.items():
        print(f"| {name} | {value:.2f} | {value / total:.0%} |")
        if name == "candidates":
            for stage, value in inside.items():
                print(f"| … {stage} | {value * scale:.2f} | {value * scale / total:.0%} |")
            rest = seconds["candidates"] - sum(inside.values()) * scale
            print(f"| … the rest: co-visitation, popularity, new arrivals, seen items, plumbing | {rest:.2f} | {rest / total:.0%} |")
    print(f"| all stages | {total:.2f} | 100% |")


if __name__ == "__main__":
    main()
