"""Per-user temporal leave-one-out: the protocol the sequential-recommendation literature reports on.

Each user's clicks in time order; the last is the test target, the second-last the validation target,
the rest the training sequence (docs/ARCHITECTURE.md, "Leave-one-out"). Every system scores *all* items
for every user, the user's history is excluded (for the test: the training items and the validation item),
and the target's rank gives NDCG@10 and HR@10 per user, so systems compare by paired differences over
the same users. Items are indexed 1..N; index 0 is padding for sequence models and never recommended.

Clicks that share a timestamp have no order in the data. Sorting them by item id would hand a sequence
model a pattern to learn (MovieLens-100k: 44% of the users' test and validation clicks share a second), so
ties are broken by a fixed hash of (user, item), and `tied` marks the users whose test and validation clicks
share a timestamp so they can be reported apart.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from recsys.contracts import schema as S

K = 10
_MIX = np.uint64(0x9E3779B97F4A7C15)


def _tie_break(users: np.ndarray, items: np.ndarray) -> np.ndarray:
    """A fixed pseudo-random key per (user, item) (splitmix64), unrelated to either id's order."""
    with np.errstate(over="ignore"):
        z = users.astype(np.uint64) * _MIX + items.astype(np.uint64) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


@dataclass
class LeaveOneOut:
    """Users' click sequences (item indices 1..N) with the last two held out."""

    user_ids: np.ndarray  # (U,) the contract's user ids
    item_ids: np.ndarray  # (N + 1,) item id of each index; [0] is padding (a copy of [1], never an answer)
    sequences: list[np.ndarray]  # per user, every click's item index in time order (≥ 3 each)
    tied: np.ndarray  # (U,) bool: the test and validation clicks share a timestamp
    cold: np.ndarray | None = None  # (N + 1,) bool: items kept out of every training sequence (`with_cold_items`)

    @property
    def n_items(self) -> int:
        return len(self.item_ids) - 1

    def index(self, item_id) -> int:
        """The index of a contract item id (1..N)."""
        return int(np.flatnonzero(self.item_ids[1:] == item_id)[0]) + 1

    def train(self, u: int) -> np.ndarray:
        """The clicks a system learns from: all but the last two, less the cold items."""
        train = self.sequences[u][:-2]
        return train if self.cold is None else train[~self.cold[train]]

    def history(self, u: int, part: str) -> np.ndarray:
        """What a system may see when predicting `part`'s target: the clicks before it (cold items included:
        a new item's clicks reach the log before any retraining), excluded from its ranking."""
        return self.sequences[u][:-2] if part == "valid" else self.sequences[u][:-1]

    def target(self, u: int, part: str) -> int:
        return int(self.sequences[u][-2] if part == "valid" else self.sequences[u][-1])

    def train_counts(self) -> np.ndarray:
        """(N + 1,) training clicks per item index."""
        counts = np.zeros(self.n_items + 1, np.int64)
        for u in range(len(self.sequences)):
            np.add.at(counts, self.train(u), 1)
        return counts


def leave_one_out(events: pl.DataFrame, *, min_clicks: int = 3) -> LeaveOneOut:
    """The split of a contract events frame: clicks only, each (user, item) once (its first click)."""
    clicks = (
        events.filter(pl.col(S.EVENT) == S.CLICK)
        .select(S.USER_ID, S.ITEM_ID, S.TIMESTAMP)
        .sort(S.TIMESTAMP, maintain_order=True)
        .unique([S.USER_ID, S.ITEM_ID], keep="first", maintain_order=True)
    )
    item_ids = np.sort(clicks[S.ITEM_ID].unique().to_numpy())
    index = pl.DataFrame({S.ITEM_ID: item_ids, "_index": np.arange(1, len(item_ids) + 1, dtype=np.int64)})
    frame = clicks.join(index, on=S.ITEM_ID, maintain_order="left")
    user_codes = np.unique(frame[S.USER_ID].cast(pl.String).to_numpy(), return_inverse=True)[1]
    frame = frame.with_columns(pl.Series("_tie", _tie_break(user_codes, frame["_index"].to_numpy())))
    grouped = (
        frame.sort([S.USER_ID, S.TIMESTAMP, "_tie"])
        .group_by(S.USER_ID, maintain_order=True)
        .agg(pl.col("_index"), pl.col(S.TIMESTAMP).tail(2).alias("_last_two"))
        .filter(pl.col("_index").list.len() >= min_clicks)
    )
    tied = grouped["_last_two"].list.get(0) == grouped["_last_two"].list.get(1)
    return LeaveOneOut(
        user_ids=grouped[S.USER_ID].to_numpy(),
        item_ids=np.concatenate([[item_ids[0]], item_ids]),
        sequences=[np.asarray(s, np.int64) for s in grouped["_index"].to_list()],
        tied=tied.to_numpy(),
    )


def with_cold_items(split: LeaveOneOut, share: float, *, seed: int = 0) -> LeaveOneOut:
    """The split with a random `share` of the items removed from all training: items no model has seen
    clicked, as on the day they arrive. Evaluate on `cold_test_users` to see who can still find them."""
    rng = np.random.default_rng(seed)
    cold = np.zeros(split.n_items + 1, bool)
    cold[1 + rng.choice(split.n_items, size=round(share * split.n_items), replace=False)] = True
    return LeaveOneOut(split.user_ids, split.item_ids, split.sequences, split.tied, cold)


def cold_test_users(split: LeaveOneOut) -> np.ndarray:
    """(U,) bool: users whose test target is a cold item."""
    return np.array([bool(split.cold[s[-1]]) for s in split.sequences]) if split.cold is not None else np.zeros(len(split.sequences), bool)


class EarlyStopping:
    """Keeps the state of the best validation epoch; `step` says when `patience` epochs brought nothing better."""

    def __init__(self, patience: int):
        self.patience, self.best, self.best_epoch, self.state, self.curve = patience, float("-inf"), -1, None, []

    def step(self, epoch: int, score: float, snapshot) -> bool:
        """Record `score` for `epoch`; `snapshot()` is called (and kept) only when it is the best so far."""
        self.curve.append(score)
        if score > self.best:
            self.best, self.best_epoch, self.state = score, epoch, snapshot()
            return False
        return epoch - self.best_epoch >= self.patience


def target_ranks(scores: np.ndarray, split: LeaveOneOut, users: np.ndarray, part: str) -> np.ndarray:
    """0-based rank of each user's target among all items not in the user's history.

    `scores` is (len(users), N + 1). Ties with the target count half (the expected rank under a random
    tie-break), so a constant scorer is not credited with the best rank.
    """
    scores = np.array(scores, dtype=np.float64, copy=True)
    ranks = np.empty(len(users), np.float64)
    for row, u in enumerate(users):
        s = scores[row]
        s[0] = -np.inf
        s[split.history(u, part)] = -np.inf
        t = split.target(u, part)
        above = np.count_nonzero(s > s[t])
        ties = np.count_nonzero(s == s[t]) - 1
        ranks[row] = above + ties / 2.0
    return ranks


def metrics_from_ranks(ranks: np.ndarray, k: int = K) -> dict[str, np.ndarray]:
    """Per-user NDCG@k (one relevant item: 1/log2(rank + 2)) and HR@k."""
    hit = ranks < k
    return {f"ndcg@{k}": np.where(hit, 1.0 / np.log2(ranks + 2.0), 0.0), f"hr@{k}": hit.astype(np.float64)}


def evaluate_scorer(score, split: LeaveOneOut, part: str, *, batch: int = 256) -> dict[str, np.ndarray]:
    """Per-user metrics of `score(users, part) -> (len(users), N + 1)` over every user of the split."""
    users = np.arange(len(split.sequences))
    ranks = np.concatenate(
        [target_ranks(score(users[i : i + batch], part), split, users[i : i + batch], part) for i in range(0, len(users), batch)]
    )
    return metrics_from_ranks(ranks)
