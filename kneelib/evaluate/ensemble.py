"""The paper's seed ensemble: the unweighted mean of the members' logits, then softmax."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float64 (numerically stable)."""
    z = np.asarray(logits, dtype=np.float64)
    z = np.exp(z - z.max(axis=-1, keepdims=True))
    return z / z.sum(axis=-1, keepdims=True)


def ensemble_probabilities(logits_list: Sequence[np.ndarray]) -> np.ndarray:
    """The paper's ensemble: softmax of the unweighted mean of the members' logits (N, C)."""
    if len(logits_list) == 0:
        raise ValueError("no logits to ensemble")
    stacked = np.stack([np.asarray(x, dtype=np.float64) for x in logits_list])
    return softmax(stacked.mean(axis=0))
