"""The multi-task model: shapes, ESMM's p_purchase ≤ p_click, and learning on a learnable toy problem."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from recsys.encoder import load_encoder
from recsys.model import TextRecModel, multitask_loss


@pytest.fixture()
def model(tiny_encoder, tiny_config):
    torch.manual_seed(0)
    return TextRecModel(tiny_config.model, load_encoder(tiny_encoder))


def test_forward_shapes(model, tiny_config):
    d, length = tiny_config.model.dim, tiny_config.model.history_length
    items = model.items(torch.randint(5, 300, (7, 11)), torch.ones(7, 11, dtype=torch.long))
    assert items.shape == (7, d)
    assert torch.allclose(items.norm(dim=-1), torch.ones(7), atol=1e-5)
    history = torch.randn(3, length, d)
    mask = torch.zeros(3, length, dtype=torch.bool)
    mask[0, :2] = True  # user 1 and 2 have no history at all: the default token keeps them defined
    out = model(history, mask, torch.randn(3, 4, d))
    assert out.click_logit.shape == (3, 4) and out.conversion_logit.shape == (3, 4) and out.similarity.shape == (3, 4)
    assert torch.isfinite(out.p_click).all()
    assert (out.p_purchase <= out.p_click).all()


def test_scorer_is_its_first_layer_applied_to_the_concatenation(model, tiny_config):
    """The block-wise first layer is the plain Linear over [u, i, u*i, similarity], values and gradients."""
    torch.manual_seed(1)
    scorer, d = model.scorer.eval(), tiny_config.model.dim
    users = torch.nn.functional.normalize(torch.randn(4, d), dim=-1).requires_grad_()
    items = torch.nn.functional.normalize(torch.randn(4, 6, d), dim=-1).requires_grad_()
    out = scorer(users, items)
    u = users.unsqueeze(1).expand_as(items)
    similarity = (u * items).sum(-1)
    z = scorer.shared(torch.cat([u, items, u * items, similarity.unsqueeze(-1)], dim=-1))
    reference = scorer.click(z).squeeze(-1) + scorer.similarity_scale * similarity
    assert torch.allclose(out.click_logit, reference, atol=1e-5)
    assert torch.allclose(out.conversion_logit, scorer.conversion(z).squeeze(-1), atol=1e-5)
    grads = torch.autograd.grad(out.click_logit.sum(), (users, items, scorer.shared[0].weight))
    expected = torch.autograd.grad(reference.sum(), (users, items, scorer.shared[0].weight))
    for got, want in zip(grads, expected):
        assert torch.allclose(got, want, atol=1e-5)


def test_loss_decreases_on_a_learnable_problem(model, tiny_config):
    """Users like items whose vector is close to their history: the scorer must learn that."""
    cfg = tiny_config.replace(train={"retrieval_weight": 0.5})
    torch.manual_seed(1)
    d, length = cfg.model.dim, cfg.model.history_length
    centers = torch.nn.functional.normalize(torch.randn(4, d), dim=-1)
    optimizer = torch.optim.Adam([p for n, p in model.named_parameters() if not n.startswith("items.encoder")], lr=3e-3)
    losses = []
    for _step in range(150):
        topic = torch.randint(0, 4, (64,))
        history = torch.nn.functional.normalize(centers[topic].unsqueeze(1) + 0.3 * torch.randn(64, length, d), dim=-1)
        cand_topic = torch.where(torch.rand(64) < 0.5, topic, torch.randint(0, 4, (64,)))
        candidates = torch.nn.functional.normalize(centers[cand_topic] + 0.3 * torch.randn(64, d), dim=-1).unsqueeze(1)
        clicked = (cand_topic == topic).float().unsqueeze(1)
        purchased = clicked * (torch.rand(64, 1) < 0.5).float()
        users = model.users(history, torch.ones(64, length, dtype=torch.bool))
        out = model.scorer(users, candidates)
        loss = multitask_loss(model, out, clicked, purchased, None, None, None, cfg)
        optimizer.zero_grad()
        loss.total.backward()
        optimizer.step()
        losses.append(float(loss.total.detach()))
    assert np.mean(losses[-20:]) < 0.7 * np.mean(losses[:20])


def test_uncertainty_weighting_learns_task_weights(model, tiny_config):
    cfg = tiny_config.replace(train={"task_weighting": "uncertainty"})
    out = model.scorer(
        torch.nn.functional.normalize(torch.randn(8, cfg.model.dim), dim=-1),
        torch.nn.functional.normalize(torch.randn(8, 2, cfg.model.dim), dim=-1),
    )
    loss = multitask_loss(model, out, torch.ones(8, 2), torch.zeros(8, 2), None, None, None, cfg)
    loss.total.backward()
    assert model.task_log_vars["click"].grad is not None and model.task_log_vars["purchase"].grad is not None


def test_freezing_lower_layers(model):
    model.items.freeze_lower_layers(1)
    layers = model.items.encoder.encoder.layer
    assert not any(p.requires_grad for p in layers[0].parameters())
    assert all(p.requires_grad for p in layers[1].parameters())
    assert not any(p.requires_grad for p in model.items.encoder.embeddings.parameters())


def test_transformer_user_tower_reads_only_real_history_in_order(tiny_encoder, tiny_config):
    """model.user_tower = "transformer": padding slots change nothing, a user without history gets the summary
    token's vector, and the order of the history matters (recency), unlike a bag of its items."""
    config = tiny_config.replace(model={"user_tower": "transformer"}).model
    torch.manual_seed(0)
    model = TextRecModel(config, load_encoder(tiny_encoder)).eval()
    d, length = config.dim, config.history_length
    history = torch.nn.functional.normalize(torch.randn(4, length, d), dim=-1)
    mask = torch.zeros(4, length, dtype=torch.bool)
    mask[0, :3] = mask[1, :3] = mask[2, :3] = True  # users 0-2 have three clicks, user 3 none
    history[1, :3] = history[0, :3]  # user 1: user 0's clicks with other values behind the padding
    history[2, :3] = history[0, [2, 1, 0]]  # the same three items, most recent first reversed
    with torch.no_grad():
        users = model.users(history, mask)
        alone = model.users(torch.zeros(1, length, d), torch.zeros(1, length, dtype=torch.bool))
    torch.testing.assert_close(users[0], users[1])
    assert not torch.allclose(users[0], users[2], atol=1e-4)
    torch.testing.assert_close(users[3], alone[0])
    assert torch.allclose(users.norm(dim=-1), torch.ones(4), atol=1e-5)


def test_transformer_user_tower_exports_with_parity_and_batch_invariance(tiny_shop, tiny_config, tmp_path):
    """The transformer tower trains, exports through the same user graph (fp32 parity checked by the export)
    and gives each user the same bits in any batch, as the serving path requires."""
    from export.onnx_export import export_model
    from recsys.jobs.common import train_model_dir
    from serving.onnx_model import OnnxInterestModel

    config = tiny_config.replace(model={"user_tower": "transformer"}, train={"epochs": 0})
    train_model_dir(tiny_shop / "items.parquet", tiny_shop / "events", tmp_path / "model", config)
    manifest = export_model(tmp_path / "model", tmp_path / "export", precision="fp32")
    assert manifest["parity"]["fp32"]["max_abs_diff"] < 1e-4
    model = OnnxInterestModel(tmp_path / "export")
    rng = np.random.default_rng(0)
    n = 23
    history = rng.standard_normal((n, model.history_length, model.dim)).astype(np.float32)
    mask = (rng.random((n, model.history_length)) < 0.5).astype(np.float32)
    mask[:3] = 0
    users = model.user_vectors(history, mask)
    for size in (1, 2, 7):
        for start in range(0, n, size):
            np.testing.assert_array_equal(
                model.user_vectors(history[start : start + size], mask[start : start + size]), users[start : start + size]
            )
