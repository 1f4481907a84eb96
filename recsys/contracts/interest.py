"""The interest model's interface: what candidates, ranking features and evaluation call, satisfied by
the torch model (`recsys.model_io.TorchInterestModel`) and by ONNX Runtime (`serving.onnx_model`)."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class InterestModel(Protocol):
    dim: int
    provider: str

    def encode_items(self, texts: list[str], progress=None) -> np.ndarray:
        """(N, D) L2-normalised item vectors, one per text, each a function of its text alone."""

    def user_vectors(self, history: np.ndarray, history_mask: np.ndarray) -> np.ndarray:
        """(B, D) interest vectors from (B, L, D) history item vectors and their (B, L) mask."""

    def score(self, users: np.ndarray, items: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(p_click, p_purchase, similarity), each (B, C), for (B, D) users and (B, C, D) candidates."""
