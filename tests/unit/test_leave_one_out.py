"""Leave-one-out protocol, its ID peers and the sequence model (recsys/loo.py, recsys/peers.py, recsys/sequential.py)."""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl
import pytest
import torch

from recsys.contracts import schema as S
from recsys.loo import cold_test_users, evaluate_scorer, leave_one_out, metrics_from_ranks, target_ranks, with_cold_items
from recsys.model import SequenceRecommender
from recsys.peers import ease_weights, popularity_scorer, tune_ease
from recsys.sequential import SequenceConfig, fit_sequence_model, left_pad, scorer

T0 = dt.datetime(2024, 1, 1)


def _events(rows: list[tuple[int, int, int]], event: str = S.CLICK) -> pl.DataFrame:
    """(user, item, second) rows as a contract events frame."""
    return pl.DataFrame(
        {
            S.USER_ID: [r[0] for r in rows],
            S.ITEM_ID: [r[1] for r in rows],
            S.EVENT: [event] * len(rows),
            S.TIMESTAMP: [T0 + dt.timedelta(seconds=r[2]) for r in rows],
        }
    )


def test_split_orders_by_time_keeps_first_click_and_drops_short_users():
    events = pl.concat(
        [
            _events([(1, 30, 3), (1, 10, 1), (1, 20, 2), (1, 10, 5), (1, 40, 4), (2, 10, 1), (2, 20, 2)]),
            _events([(1, 50, 9)], event=S.PURCHASE),  # not a click: ignored
        ]
    )
    split = leave_one_out(events)
    assert split.user_ids.tolist() == [1]  # user 2 has two clicks, fewer than three
    ids = split.item_ids[split.sequences[0]].tolist()
    assert ids == [10, 20, 30, 40]  # the repeat click on 10 at second 5 is dropped
    assert split.item_ids[split.train(0)].tolist() == [10, 20]
    assert split.item_ids[split.target(0, "valid")] == 30 and split.item_ids[split.target(0, "test")] == 40
    assert split.item_ids[split.history(0, "test")].tolist() == [10, 20, 30]
    assert not split.tied[0]


def test_ties_are_broken_by_a_fixed_hash_not_by_row_or_item_order():
    rows = [(u, i, 100) for u in range(1, 41) for i in (5, 6)] + [(u, 1, 1) for u in range(1, 41)]
    a = leave_one_out(_events(rows))
    b = leave_one_out(_events(rows[::-1]))
    assert all(np.array_equal(x, y) for x, y in zip(a.sequences, b.sequences))  # row order does not matter
    assert a.tied.all()
    lasts = {int(a.item_ids[s[-1]]) for s in a.sequences}
    assert lasts == {5, 6}  # neither item id always comes last


def test_target_rank_excludes_history_and_counts_ties_half():
    split = leave_one_out(_events([(1, 1, 1), (1, 2, 2), (1, 3, 3), (1, 4, 4)]))
    # indices: item k → index k; train [1, 2], valid 3, test 4
    scores = np.array([[9.0, 8.0, 7.0, 5.0, 1.0]])  # padding and history score high but are excluded
    assert target_ranks(scores, split, np.array([0]), "valid")[0] == 0.0
    assert target_ranks(scores, split, np.array([0]), "test")[0] == 0.0  # 3 is history at test time
    flat = np.ones((1, 5))
    assert target_ranks(flat, split, np.array([0]), "valid")[0] == 0.5  # tied with item 4: half a place
    m = metrics_from_ranks(np.array([0.0, 9.0, 10.0]))
    assert m["ndcg@10"] == pytest.approx([1.0, 1 / np.log2(11), 0.0])
    assert m["hr@10"].tolist() == [1.0, 1.0, 0.0]


def _cycles(users: int = 80, items: int = 40, length: int = 12, seed: int = 0) -> pl.DataFrame:
    """Every user walks the catalogue in order from a random start: the next item is the current one + 1."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(users):
        start = int(rng.integers(items))
        rows += [(u, 1 + (start + t) % items, t) for t in range(length)]
    return _events(rows)


def test_ease_learns_co_occurrence_and_has_zero_diagonal():
    split = leave_one_out(
        _events([(u, i, i) for u in range(20) for i in ((1, 2, 3, 7, 8) if u % 2 else (4, 5, 6, 9, 10))])
    )  # training: the first three
    b = ease_weights(split, 1.0)
    assert np.allclose(np.diag(b), 0.0)
    one, two, four = (split.index(i) for i in (1, 2, 4))
    assert b[one, two] > 0.1 and abs(b[one, four]) < 1e-6  # never seen together → no weight


def test_sequence_model_is_causal_and_ignores_padding():
    torch.manual_seed(0)
    model = SequenceRecommender(10, dim=16, max_len=6, dropout=0.0).eval()
    seq = torch.tensor([[0, 0, 3, 4, 5, 6]])
    changed = torch.tensor([[0, 0, 3, 4, 5, 9]])
    with torch.no_grad():
        a, b = model.states(seq), model.states(changed)
    assert torch.allclose(a[:, :5], b[:, :5], atol=1e-6)  # a later click never changes an earlier state
    assert not torch.allclose(a[:, 5], b[:, 5])
    assert torch.isfinite(model.score_next(torch.zeros(2, 6, dtype=torch.long))).all()  # all padding: no NaN
    assert torch.allclose(model.score_next(left_pad([np.array([3, 4])], 6)), model.score_next(torch.tensor([[0, 0, 0, 0, 3, 4]])))


def test_text_only_model_scores_items_by_their_words():
    text = torch.randn(6, 8)
    text[0] = 0
    text[5] = text[4]  # item 5 reads exactly like item 4
    model = SequenceRecommender(5, dim=8, max_len=4, dropout=0.0, text=text, use_ids=False).eval()
    scores = model.score_next(torch.tensor([[0, 1, 2, 3]]))
    assert scores[0, 4] == pytest.approx(scores[0, 5].item())
    with pytest.raises(ValueError, match="ids, item text or both"):
        SequenceRecommender(5, text=None, use_ids=False)


def test_sequence_model_learns_what_comes_next_and_beats_popularity_and_ease():
    split = leave_one_out(_cycles())
    config = SequenceConfig(dim=16, layers=1, heads=1, max_len=12, dropout=0.0, lr=1e-2, batch_size=16, max_epochs=40, patience=5)
    fitted = fit_sequence_model(split, config)
    test = evaluate_scorer(scorer(fitted.model, split), split, "test")["ndcg@10"].mean()
    popularity = evaluate_scorer(popularity_scorer(split), split, "test")["ndcg@10"].mean()
    ease = evaluate_scorer(tune_ease(split, lambdas=(1.0, 10.0)).scorer, split, "test")["ndcg@10"].mean()
    assert fitted.best_valid_ndcg == max(fitted.curve)  # the best validation epoch is the one kept
    assert test > 0.9 > popularity  # the order is the whole signal: only a sequence model sees it
    assert test > ease


def test_cold_items_are_out_of_training_but_in_the_history_a_system_sees():
    split = with_cold_items(leave_one_out(_cycles()), 0.25, seed=3)
    cold = split.cold
    assert cold.sum() == 10 and not cold[0]
    for u in range(len(split.sequences)):
        assert not cold[split.train(u)].any()
        assert np.array_equal(split.history(u, "test"), split.sequences[u][:-1])  # the log still holds their clicks
    assert cold_test_users(split).tolist() == [bool(cold[s[-1]]) for s in split.sequences]
    assert split.train_counts()[cold].sum() == 0
    assert np.allclose(ease_weights(split, 1.0)[cold], 0.0)  # EASE has nothing to say about an item it never saw


def test_items_absent_from_training_are_no_ones_negative():
    torch.manual_seed(0)
    model = SequenceRecommender(8, dim=8, max_len=4, dropout=0.0).eval()
    inputs, targets = torch.tensor([[0, 1, 2, 3]]), torch.tensor([[0, 2, 3, 4]])
    absent = torch.zeros(9, dtype=torch.bool)
    absent[[6, 7]] = True
    with torch.no_grad():
        table = model.item_vectors()
        logits = (model.states(inputs, table) @ table.T)[0, 1:]  # positions with a target
        kept = logits[:, [1, 2, 3, 4, 5, 8]]  # the catalogue without padding and the absent items
        by_hand = torch.nn.functional.cross_entropy(kept, torch.tensor([1, 2, 3]))
        assert model.next_item_loss(inputs, targets, absent).item() == pytest.approx(by_hand.item(), rel=1e-5)
        assert model.next_item_loss(inputs, targets).item() > by_hand.item()  # more negatives, larger loss


def test_product_scorer_learns_only_from_training_clicks_and_ranks_every_item(tiny_shop, tiny_config, tiny_encoder, monkeypatch):
    """The product's text model as a leave-one-out system: trained on the training sequences' events only
    (no validation or test click reaches it), scoring all N + 1 indices for every user."""
    import recsys.train
    from recsys.sequential import product_scorer

    items = pl.read_parquet(tiny_shop / "items.parquet")
    events = pl.read_parquet(tiny_shop / "events")
    split = leave_one_out(events)
    seen: dict = {}
    original = recsys.train.train_text_model

    def spy(train_events, *args, **kwargs):
        seen["pairs"] = set(zip(train_events[S.USER_ID].to_list(), train_events[S.ITEM_ID].to_list()))
        return original(train_events, *args, **kwargs)

    monkeypatch.setattr(recsys.train, "train_text_model", spy)
    scores, report = product_scorer(split, events, items, tiny_config, encoder_folder=tiny_encoder)
    held_out = {
        (split.user_ids[u], split.item_ids[split.target(u, part)]) for u in range(len(split.sequences)) for part in ("valid", "test")
    }
    assert seen["pairs"] and not seen["pairs"] & held_out
    assert report["curves"]["best_epoch"] >= 1
    for score in scores.values():
        metrics = evaluate_scorer(score, split, "test")
        assert metrics["ndcg@10"].shape == (len(split.sequences),) and np.isfinite(metrics["ndcg@10"]).all()
    p_click, similarity = scores["p_click"](np.arange(3), "test"), scores["similarity"](np.arange(3), "test")
    assert p_click.shape == similarity.shape == (3, split.n_items + 1)
    assert ((p_click > 0) & (p_click < 1)).all() and (np.abs(similarity) <= 1 + 1e-5).all()
