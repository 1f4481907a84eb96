"""ID-only peers for the leave-one-out protocol (recsys/loo.py), each tuned on validation like our own model.

- popularity: training clicks per item;
- EASE (Steck, 2019): closed-form item-item weights B = I − P·diag(1/diag P), P = (XᵀX + λI)⁻¹, λ chosen
  on validation NDCG@10;
- BPR-MF (Rendle et al., 2009): user and item factors trained on (user, clicked, uniform negative) triples
  with Adam, early stopping on validation NDCG@10.

Every peer scores a user from what the protocol lets it see (`LeaveOneOut.history`): EASE and popularity
read the validation click at test time as SASRec does; BPR's user factor is fitted on the training clicks
only, as in the libraries' leave-one-out runs.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch

from recsys.loo import EarlyStopping, LeaveOneOut, evaluate_scorer

EASE_LAMBDAS = (50.0, 100.0, 200.0, 300.0, 500.0, 1000.0, 2000.0)


def popularity_scorer(split: LeaveOneOut):
    counts = split.train_counts().astype(np.float64)
    return lambda users, part: np.tile(counts, (len(users), 1))


def _click_matrix(rows: list[np.ndarray], n_items: int) -> np.ndarray:
    """(len(rows), N + 1) 0/1: row r has a 1 at each item index of rows[r]."""
    x = np.zeros((len(rows), n_items + 1), np.float64)
    for r, items in enumerate(rows):
        x[r, items] = 1.0
    return x


def ease_weights(split: LeaveOneOut, lam: float) -> np.ndarray:
    """(N + 1, N + 1) EASE weights fitted on the training clicks (zero diagonal)."""
    x = _click_matrix([split.train(u) for u in range(len(split.sequences))], split.n_items)
    gram = x.T @ x + lam * np.eye(x.shape[1])
    p = np.linalg.inv(gram)
    b = -p / np.diag(p)[None, :]
    np.fill_diagonal(b, 0.0)
    return b


def ease_scorer(weights: np.ndarray, split: LeaveOneOut):
    return lambda users, part: _click_matrix([split.history(u, part) for u in users], split.n_items) @ weights


@dataclass
class Tuned:
    scorer: object
    params: dict
    valid_ndcg: float
    grid: dict


def tune_ease(split: LeaveOneOut, lambdas=EASE_LAMBDAS) -> Tuned:
    grid, best = {}, None
    for lam in lambdas:
        score = ease_scorer(ease_weights(split, lam), split)
        grid[lam] = float(evaluate_scorer(score, split, "valid")["ndcg@10"].mean())
        if best is None or grid[lam] > grid[best[0]]:
            best = (lam, score)
    return Tuned(best[1], {"lambda": best[0]}, grid[best[0]], grid)


def fit_bpr(
    split: LeaveOneOut,
    *,
    dim: int = 64,
    weight_decay: float = 1e-5,
    lr: float = 1e-3,
    batch_size: int = 2048,
    max_epochs: int = 300,
    patience: int = 10,
    seed: int = 0,
) -> Tuned:
    """BPR-MF with the best validation epoch's factors."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    users = np.concatenate([np.full(len(split.train(u)), u) for u in range(len(split.sequences))])
    positives = np.concatenate([split.train(u) for u in range(len(split.sequences))])
    # negatives only among items that existed in training (not the cold ones of `with_cold_items`)
    warm = np.arange(1, split.n_items + 1) if split.cold is None else np.flatnonzero(~split.cold[1:]) + 1
    user_factors = torch.nn.Embedding(len(split.sequences), dim)
    item_factors = torch.nn.Embedding(split.n_items + 1, dim)
    for table in (user_factors, item_factors):
        torch.nn.init.normal_(table.weight, std=0.1)
    optimizer = torch.optim.Adam([*user_factors.parameters(), *item_factors.parameters()], lr=lr)

    def score(batch_users: np.ndarray, part: str) -> np.ndarray:
        with torch.no_grad():
            return (user_factors.weight[torch.from_numpy(batch_users)] @ item_factors.weight.T).numpy()

    stopping = EarlyStopping(patience)
    for epoch in range(max_epochs):
        order = rng.permutation(len(users))
        negatives = warm[rng.integers(0, len(warm), size=len(users))]
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            u = user_factors(torch.from_numpy(users[rows]))
            pos = item_factors(torch.from_numpy(positives[rows]))
            neg = item_factors(torch.from_numpy(negatives[rows]))
            margin = (u * pos).sum(-1) - (u * neg).sum(-1)
            loss = -torch.nn.functional.logsigmoid(margin).mean() + weight_decay * (
                u.pow(2).sum() + pos.pow(2).sum() + neg.pow(2).sum()
            ) / len(rows)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        valid = float(evaluate_scorer(score, split, "valid")["ndcg@10"].mean())
        if stopping.step(epoch, valid, lambda: (copy.deepcopy(user_factors.state_dict()), copy.deepcopy(item_factors.state_dict()))):
            break
    user_factors.load_state_dict(stopping.state[0])
    item_factors.load_state_dict(stopping.state[1])
    params = {"dim": dim, "weight_decay": weight_decay, "lr": lr, "best_epoch": stopping.best_epoch + 1}
    return Tuned(score, params, stopping.best, {"curve": stopping.curve})


def tune_bpr(split: LeaveOneOut, *, weight_decays=(1e-5, 1e-4, 1e-3), dim: int = 64, seed: int = 0) -> Tuned:
    runs = {wd: fit_bpr(split, dim=dim, weight_decay=wd, seed=seed) for wd in weight_decays}
    best = max(runs, key=lambda wd: runs[wd].valid_ndcg)
    out = runs[best]
    out.grid = {wd: r.valid_ndcg for wd, r in runs.items()}
    return out
