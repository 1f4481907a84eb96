"""The multi-task text model, in one file: encoder wrapper, user interest, task heads, output, loss.

    item text ──encoder──► mean pool ──► projection ──► item vector v            (N, D), once per item
    history of item vectors + recency ──► attention pooling (or Transformer layers) ──► user vector u    (B, D)
    [u, v, u⊙v, u·v] ──► shared MLP ──► click logit, conversion logit            (B, C)

ESMM (Ma et al., 2018): p_click = σ(click), p_purchase = p_click · σ(conversion); both losses are taken
over all exposures, so the purchase task never trains on the biased "clicked only" sample and
p_purchase ≤ p_click holds by construction.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from recsys.contracts.config import Config, ModelConfig


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Average of the token states that are not padding."""
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
    return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)  # (B, H)


class ItemEncoder(nn.Module):
    """Pretrained Transformer → mean pooling → projection to the shared item space (L2-normalised).

    With `word_bag_tokens` > 0 a bag of the text's token embeddings (zero at the start, so the model starts
    as the plain encoder) is added before the normalisation: a trainable per-word direction the pretrained
    encoder's mean pool blurs (on the generated shops a linear readout of a bag of words recovers R² 0.94 of
    the true item factors, the frozen encoder 0.64: benchmarks/ceilings.py). `pooled` then carries the
    token ids after the encoder's pooled output, so the training's memory bank of pooled outputs still
    holds everything `project` needs."""

    def __init__(self, encoder: nn.Module, dim: int, word_bag_tokens: int = 0):
        super().__init__()
        self.encoder = encoder
        hidden = encoder.config.hidden_size
        self.projection = nn.Sequential(nn.Linear(hidden, dim), nn.LayerNorm(dim))
        self.word_bag_tokens = word_bag_tokens
        self.pooled_width = hidden + word_bag_tokens
        if word_bag_tokens:
            self.words = nn.Embedding(encoder.config.vocab_size, dim, padding_idx=0)
            nn.init.zeros_(self.words.weight)

    def _mean_pool(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state  # (B, T, H)
        return mean_pool(hidden, attention_mask)  # (B, H)

    def _bag(self, ids: torch.Tensor) -> torch.Tensor:
        """Mean of the token embeddings of `ids` (B, T), id 0 = padding."""
        mask = (ids != 0).unsqueeze(-1).to(self.words.weight.dtype)
        return (self.words(ids) * mask).sum(1) / mask.sum(1).clamp(min=1.0)

    def pooled(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        pooled = self._mean_pool(input_ids, attention_mask)
        if not self.word_bag_tokens:
            return pooled
        ids = (input_ids * attention_mask)[:, : self.word_bag_tokens]
        ids = F.pad(ids, (0, self.word_bag_tokens - ids.shape[1]))
        return torch.cat([pooled, ids.to(pooled.dtype)], dim=1)  # ids < 2^24: exact in float32

    def project(self, pooled: torch.Tensor) -> torch.Tensor:
        if not self.word_bag_tokens:
            return F.normalize(self.projection(pooled), dim=-1)  # (B, D)
        text, ids = pooled[:, : -self.word_bag_tokens], pooled[:, -self.word_bag_tokens :].round().long()
        return F.normalize(self.projection(text) + self._bag(ids), dim=-1)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        pooled = self._mean_pool(input_ids, attention_mask)
        if not self.word_bag_tokens:
            return F.normalize(self.projection(pooled), dim=-1)
        # the exported graph: ids never pass through a float (fp16 would not hold them)
        return F.normalize(self.projection(pooled) + self._bag(input_ids * attention_mask), dim=-1)

    def freeze_lower_layers(self, count: int) -> None:
        """Freeze embeddings and the lowest `count` layers (-1: the whole encoder)."""
        layers = self.encoder.encoder.layer
        count = len(layers) if count < 0 else min(count, len(layers))
        if count > 0:
            for p in self.encoder.embeddings.parameters():
                p.requires_grad_(False)
        for layer in layers[:count]:
            for p in layer.parameters():
                p.requires_grad_(False)


def history_mean(history: torch.Tensor, history_mask: torch.Tensor) -> torch.Tensor:
    """(B, D) mean of the clicked items' vectors, as a (1, L) @ (L, D) product per user: a ReduceSum over
    the history axis summed in another order when the batch held one user, and a user's vector must be the
    same bits in any batch (tested)."""
    mask = history_mask.unsqueeze(1).to(history.dtype)
    return (mask @ history).squeeze(1) / history_mask.sum(1, keepdim=True).clamp(min=1).to(history.dtype)


class UserInterest(nn.Module):
    """Multi-head attention pooling of the user's recent item vectors with a learned query.

    A learned "no history" token is always present, so a user with no clicks gets a sensible vector.
    Slot 0 of `history_mask` may be all zero: the default token keeps the softmax defined.
    """

    def __init__(self, dim: int, heads: int, history_length: int, dropout: float):
        super().__init__()
        self.heads, self.dim = heads, dim
        self.default_token = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
        self.recency = nn.Embedding(history_length + 1, dim)  # 0: default token, i: i-th most recent
        self.query = nn.Parameter(torch.randn(heads, dim // heads) * 0.02)
        self.key = nn.Linear(dim, dim)
        self.value = nn.Linear(dim, dim)
        self.out = nn.Sequential(nn.Linear(dim, dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(dim, dim))
        self.norm = nn.LayerNorm(dim)

    def forward(self, history: torch.Tensor, history_mask: torch.Tensor) -> torch.Tensor:
        batch, length, _ = history.shape  # (B, L, D)
        tokens = torch.cat([self.default_token.expand(batch, 1, self.dim), history], dim=1)  # (B, L+1, D)
        positions = torch.arange(length + 1, device=history.device)
        tokens = tokens + self.recency(positions).unsqueeze(0)
        mask = torch.cat([torch.ones(batch, 1, dtype=torch.bool, device=history.device), history_mask.bool()], dim=1)  # (B, L+1)
        head_dim = self.dim // self.heads
        keys = self.key(tokens).view(batch, length + 1, self.heads, head_dim)  # (B, L+1, h, d)
        values = self.value(tokens).view(batch, length + 1, self.heads, head_dim)
        # batched matrix products with one small product per (user, head), not einsum: ONNX Runtime's
        # Einsum picks its kernels by batch size, and a user's vector then changed in the 8th digit with
        # the users batched beside it; these products give each user the same bits in any batch (tested)
        scores = (keys.transpose(1, 2) @ self.query.unsqueeze(-1)).squeeze(-1) / math.sqrt(head_dim)  # (B, h, L+1)
        scores = scores.masked_fill(~mask.unsqueeze(1), -1e4)
        weights = scores.softmax(dim=-1)
        pooled = (weights.unsqueeze(2) @ values.transpose(1, 2)).reshape(batch, self.dim)  # (B, h, 1, d) → (B, D)
        return F.normalize(self.norm(pooled + self.out(pooled) + history_mean(history, history_mask)), dim=-1)  # (B, D)


class _SelfAttentionBlock(nn.Module):
    """Pre-LN Transformer layer (self-attention + feed-forward) over (B, T, D) tokens with a key mask.

    Written with batched matrix products, one small product per (user, head), like `UserInterest`: each
    user's numbers stay the same bits whatever batch they are in, also as an ONNX graph (tested)."""

    def __init__(self, dim: int, heads: int, dropout: float):
        super().__init__()
        self.heads, self.head_dim = heads, dim // heads
        self.attention_norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.attention_out = nn.Linear(dim, dim)
        self.feed_norm = nn.LayerNorm(dim)
        self.feed = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(2 * dim, dim))
        self.dropout = nn.Dropout(dropout)

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        batch, length, dim = tokens.shape  # (B, T, D); mask (B, T) bool, True = a real token
        q, k, v = self.qkv(self.attention_norm(tokens)).view(batch, length, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        scores = (q @ k.transpose(-1, -2)) / math.sqrt(self.head_dim)  # (B, h, T, T)
        scores = scores.masked_fill(~mask[:, None, None, :], -1e4)
        attended = (scores.softmax(dim=-1) @ v).transpose(1, 2).reshape(batch, length, dim)  # (B, T, D)
        tokens = tokens + self.dropout(self.attention_out(attended))
        return tokens + self.dropout(self.feed(self.feed_norm(tokens)))


class SequenceInterest(nn.Module):
    """The user's recent item vectors read by a small Transformer (`model.user_tower = "transformer"`).

    Tokens: a learned summary token (which is also what a user with no history gets) and the history, each
    with its recency embedding; `layers` pre-LN self-attention layers over them, so items are read in the
    context of each other and of their order, where attention pooling weighs each on its own. The user
    vector is the layer-normalised sum of the summary token's state and the mean of the clicked items,
    normalised: at the start (small recency embeddings, a small summary token) that is the mean of the
    history, the vector attention pooling also starts from. A first version with unit-scale recency
    embeddings and the mean added after the LayerNorm, where it was a tenth of the summary's size, trained
    to a validation click AUC of 0.577 against the pooling's 0.602 and halved the text model's EV on the
    demo shop (RESULTS.md, 2026-12-07). Same inputs and output as `UserInterest`: the
    exported user graph, serving and Triton are unchanged."""

    def __init__(self, dim: int, heads: int, history_length: int, dropout: float, layers: int = 2):
        super().__init__()
        self.dim = dim
        self.default_token = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
        self.recency = nn.Embedding(history_length + 1, dim)  # 0: the summary token, i: i-th most recent
        nn.init.normal_(self.recency.weight, std=0.02)  # small beside the unit item vectors, as positions in a Transformer
        self.blocks = nn.ModuleList(_SelfAttentionBlock(dim, heads, dropout) for _ in range(layers))
        self.norm = nn.LayerNorm(dim)

    def forward(self, history: torch.Tensor, history_mask: torch.Tensor) -> torch.Tensor:
        batch, length, _ = history.shape  # (B, L, D)
        tokens = torch.cat([self.default_token.expand(batch, 1, self.dim), history], dim=1)  # (B, L+1, D)
        tokens = tokens + self.recency(torch.arange(length + 1, device=history.device)).unsqueeze(0)
        mask = torch.cat([torch.ones(batch, 1, dtype=torch.bool, device=history.device), history_mask.bool()], dim=1)
        for block in self.blocks:
            tokens = block(tokens, mask)
        return F.normalize(self.norm(tokens[:, 0] + history_mean(history, history_mask)), dim=-1)  # (B, D)


@dataclass
class TaskOutput:
    """Per-task logits for (user, candidate) pairs, and their similarity in the shared space."""

    click_logit: torch.Tensor  # (B, C)
    conversion_logit: torch.Tensor  # (B, C)
    similarity: torch.Tensor  # (B, C) cosine of user and item vectors

    @property
    def p_click(self) -> torch.Tensor:
        return torch.sigmoid(self.click_logit)

    @property
    def p_purchase(self) -> torch.Tensor:
        return torch.sigmoid(self.click_logit) * torch.sigmoid(self.conversion_logit)


class InterestScorer(nn.Module):
    """Click and conversion heads over one shared representation of (user, item)."""

    def __init__(self, dim: int, dropout: float, hidden: int = 128):
        super().__init__()
        self.shared = nn.Sequential(
            nn.Linear(3 * dim + 1, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, hidden // 2), nn.GELU()
        )
        self.click = nn.Linear(hidden // 2, 1)
        self.conversion = nn.Linear(hidden // 2, 1)
        self.similarity_scale = nn.Parameter(torch.tensor(5.0))

    def forward(self, users: torch.Tensor, items: torch.Tensor) -> TaskOutput:
        # users (B, D), items (B, C, D)
        product = users.unsqueeze(1) * items  # (B, C, D)
        similarity = product.sum(-1)  # (B, C)
        # the first layer reads [u, i, u*i, similarity]; applied block by block, the user's block once per
        # user and no (B, C, 3D+1) concatenation: the same function, 1.7x faster as an ONNX graph per pair
        first = self.shared[0]
        dim = users.shape[-1]
        w_user, w_item, w_product, w_similarity = (
            first.weight[:, :dim],
            first.weight[:, dim : 2 * dim],
            first.weight[:, 2 * dim : 3 * dim],
            first.weight[:, 3 * dim],
        )
        hidden = (
            (users @ w_user.T + first.bias).unsqueeze(1)
            + items @ w_item.T
            + product @ w_product.T
            + similarity.unsqueeze(-1) * w_similarity
        )
        z = self.shared[1:](hidden)  # (B, C, H/2)
        click = self.click(z).squeeze(-1) + self.similarity_scale * similarity
        return TaskOutput(click, self.conversion(z).squeeze(-1), similarity)


MAX_POSITION = 50


class PositionBias(nn.Module):
    """Click-logit shift of slate position, used in training only (PAL, Guo et al. 2019).

    Position 1 is the reference (shift 0) and so is an unknown position (0): the exported model's
    p_click is P(click | shown at the top), free of the position bias of the logged slates.
    """

    def __init__(self, max_position: int = MAX_POSITION):
        super().__init__()
        self.shift = nn.Embedding(max_position + 1, 1)
        nn.init.zeros_(self.shift.weight)

    def forward(self, position: torch.Tensor) -> torch.Tensor:
        position = position.clamp(0, self.shift.num_embeddings - 1)
        shift = self.shift(position).squeeze(-1) - self.shift.weight[1, 0]
        return torch.where(position > 0, shift, torch.zeros_like(shift))


class TextRecModel(nn.Module):
    """Item encoder + user interest + multi-task scorer."""

    def __init__(self, config: ModelConfig, encoder: nn.Module, task_names: tuple[str, ...] = ("click", "purchase")):
        super().__init__()
        self.config = config
        self.items = ItemEncoder(encoder, config.dim, config.max_length if config.word_bag else 0)
        if config.user_tower == "transformer":
            self.users = SequenceInterest(config.dim, config.heads, config.history_length, config.dropout, config.user_layers)
        else:
            self.users = UserInterest(config.dim, config.heads, config.history_length, config.dropout)
        self.scorer = InterestScorer(config.dim, config.dropout, config.scorer_hidden)
        self.position_bias = PositionBias()
        # learned task weights (log variances, Kendall et al. 2018); used when task_weighting = "uncertainty"
        self.task_log_vars = nn.ParameterDict({name: nn.Parameter(torch.zeros(())) for name in (*task_names, "retrieval")})

    def forward(self, history: torch.Tensor, history_mask: torch.Tensor, candidates: torch.Tensor) -> TaskOutput:
        # history (B, L, D) item vectors, history_mask (B, L), candidates (B, C, D)
        return self.scorer(self.users(history, history_mask), candidates)


@dataclass
class LossOutput:
    total: torch.Tensor
    parts: dict[str, float]


def _bce_from_log_probs(log_p: torch.Tensor, log_not_p: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return -(target * log_p + (1 - target) * log_not_p).mean()


def multitask_loss(
    model: TextRecModel,
    out: TaskOutput,
    clicked: torch.Tensor,
    purchased: torch.Tensor,
    user_vectors: torch.Tensor | None,
    batch_item_vectors: torch.Tensor | None,
    positive_item: torch.Tensor | None,
    config: Config,
    scales: dict[str, float] | None = None,
) -> LossOutput:
    """ESMM click + click-and-purchase losses over all exposures, plus an in-batch retrieval softmax.

    `positive_item` (E,) indexes `batch_item_vectors` (M, D) for each exposure, -1 where not clicked.
    `scales` multiplies named terms in the total (a data-parallel replica's share of its batch:
    `recsys.train._replica_share`); `parts` stay unscaled.
    """
    losses: dict[str, torch.Tensor] = {}
    losses["click"] = F.binary_cross_entropy_with_logits(out.click_logit, clicked)
    if any(t.name == "purchase" for t in config.tasks):
        # log p_ctcvr = log σ(a) + log σ(b); log(1 - p_ctcvr) computed stably
        log_p = F.logsigmoid(out.click_logit) + F.logsigmoid(out.conversion_logit)
        log_not_p = torch.log1p(-torch.exp(log_p).clamp(max=1 - 1e-6))
        losses["purchase"] = _bce_from_log_probs(log_p, log_not_p, purchased)
    if config.train.retrieval_weight > 0 and user_vectors is not None and positive_item is not None:
        keep = positive_item >= 0
        if keep.any():
            logits = user_vectors[keep] @ batch_item_vectors.T / config.train.temperature  # (P, M)
            losses["retrieval"] = F.cross_entropy(logits, positive_item[keep])
    weights = {t.name: t.weight for t in config.tasks} | {"retrieval": config.train.retrieval_weight}
    total = torch.zeros((), dtype=out.click_logit.dtype)
    for name, loss in losses.items():
        loss = loss * scales.get(name, 1.0) if scales else loss
        if config.train.task_weighting == "uncertainty":
            log_var = model.task_log_vars[name]
            total = total + torch.exp(-log_var) * loss + log_var
        else:
            total = total + weights[name] * loss
    return LossOutput(total, {name: float(loss.detach()) for name, loss in losses.items()})


class SequenceRecommender(nn.Module):
    """SASRec (Kang & McAuley, 2018) over hybrid item vectors: an ID embedding plus projected text.

        item i ──► g·ID[i] (dropped with p = id_dropout while training) + MLP(text vector of i)   (N + 1, D)
        last L clicks ──► item vectors + positions ──► causal Transformer ──► state at each position
        score(next = j) = state · item vector j, a softmax over the whole catalogue

    With `text=None` it is plain SASRec; with `use_ids=False` a text-only model that scores items no one has
    clicked. Index 0 is padding (a zero vector). Item vectors are tied between input and output, so an item
    the model has only read about is scored with the same vector it would be clicked with.
    """

    def __init__(
        self,
        n_items: int,
        *,
        dim: int = 64,
        layers: int = 2,
        heads: int = 2,
        max_len: int = 100,
        dropout: float = 0.2,
        text: torch.Tensor | None = None,
        use_ids: bool = True,
        id_dropout: float = 0.0,
    ):
        super().__init__()
        if text is None and not use_ids:
            raise ValueError("a sequence model needs item ids, item text or both")
        self.n_items, self.dim, self.max_len, self.id_dropout = n_items, dim, max_len, id_dropout
        self.ids = nn.Embedding(n_items + 1, dim, padding_idx=0) if use_ids else None
        if self.ids is not None:
            nn.init.normal_(self.ids.weight, std=0.02)
            with torch.no_grad():
                self.ids.weight[0].zero_()
        if text is not None:
            if text.shape[0] != n_items + 1:
                raise ValueError(f"text has {text.shape[0]} rows, expected {n_items + 1} (padding row first)")
            self.register_buffer("text", text.float(), persistent=False)
            self.text_proj = nn.Sequential(nn.Linear(text.shape[1], dim), nn.GELU(), nn.Linear(dim, dim))
        else:
            self.text, self.text_proj = None, None
        self.positions = nn.Embedding(max_len, dim)
        layer = nn.TransformerEncoderLayer(
            dim, heads, dim_feedforward=dim, dropout=dropout, activation="gelu", batch_first=True, norm_first=True
        )
        self.blocks = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.input_norm = nn.LayerNorm(dim)
        self.output_norm = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)
        self.register_buffer("_not_padding", (torch.arange(n_items + 1) > 0).float().unsqueeze(1), persistent=False)

    def item_vectors(self) -> torch.Tensor:
        """(N + 1, D): the catalogue as both input tokens and output targets; row 0 is zero."""
        table = torch.zeros(self.n_items + 1, self.dim, device=self.positions.weight.device)
        if self.ids is not None:
            ids = self.ids.weight
            if self.training and self.id_dropout > 0:
                keep = (torch.rand(ids.shape[0], 1, device=ids.device) >= self.id_dropout).float()
                ids = ids * keep
            table = table + ids
        if self.text_proj is not None:
            table = table + self.text_proj(self.text)
        return table * self._not_padding

    def states(self, sequences: torch.Tensor, table: torch.Tensor | None = None) -> torch.Tensor:
        """(B, L) item indices, left-padded with 0 → (B, L, D) causal states (each sees itself and earlier clicks)."""
        table = self.item_vectors() if table is None else table
        length = sequences.shape[1]
        x = table[sequences] * math.sqrt(self.dim) + self.positions.weight[self.max_len - length :].unsqueeze(0)
        x = self.dropout(self.input_norm(x))
        padding = sequences == 0
        # Causal, and no query attends to padding except itself (a fully masked row would give NaN).
        causal = torch.ones(length, length, dtype=torch.bool, device=sequences.device).triu(1)
        blocked = causal.unsqueeze(0) | padding.unsqueeze(1)
        blocked = blocked & ~torch.eye(length, dtype=torch.bool, device=sequences.device).unsqueeze(0)
        mask = blocked.repeat_interleave(self.blocks.layers[0].self_attn.num_heads, dim=0)
        h = self.blocks(x, mask=mask)
        return self.output_norm(h) * (~padding).unsqueeze(-1).float()

    def next_item_loss(self, inputs: torch.Tensor, targets: torch.Tensor, absent: torch.Tensor | None = None) -> torch.Tensor:
        """Full-softmax cross-entropy of the next click at every non-padding position (targets 0 are skipped).

        `absent` (N + 1,) bool: items that did not exist while the training clicks happened; they are no
        one's negative, or a text model would learn to push down exactly the items it has never seen clicked.
        """
        table = self.item_vectors()
        logits = self.states(inputs, table) @ table.T  # (B, L, N + 1)
        logits[..., 0] = float("-inf")
        if absent is not None:
            logits[..., absent] = float("-inf")
        return F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=0)

    @torch.no_grad()
    def score_next(self, sequences: torch.Tensor) -> torch.Tensor:
        """(B, L) left-padded histories → (B, N + 1) scores of every item as the next click."""
        table = self.item_vectors()
        return self.states(sequences, table)[:, -1] @ table.T
