"""CORN's ordinal head (Shi, Cao & Raschka 2023, "Deep neural networks for rank-consistent ordinal regression based
on conditional probabilities"), presented as an ordinary K-way classifier.

The head has K−1 outputs ``f_k = logit P(grade > k | grade > k−1)``; the class probabilities they imply are
``P(grade = k) = P(grade > k−1) · (1 − σ(f_k))`` with ``P(grade > k) = Π_{j≤k} σ(f_j)``. :class:`CornHead`
returns their logarithms, so every consumer of a model's K "logits" (argmax, softmax, the seeds' ensemble mean,
ONNX) runs unchanged: ``softmax`` of log-probabilities is the probabilities themselves. Two differences from the
published method follow: a grade is predicted as the most probable one (the argmax, as for every model here), where
CORN's authors count the ``P(grade > k) > 0.5`` (the median); and Grad-CAM explains ``log P(grade)``, not a raw logit.
The linear layer keeps PyTorch's default initialisation (the plain DenseNet head's bias starts at zero).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["CornHead", "attach_corn_head"]


class CornHead(nn.Module):
    """A linear layer to K−1 conditional logits, returned as K class log-probabilities (float32)."""

    def __init__(self, in_features: int, num_classes: int) -> None:
        super().__init__()
        if num_classes < 2:
            raise ValueError("an ordinal head needs at least 2 classes")
        self.linear = nn.Linear(in_features, num_classes - 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        conditional = self.linear(x).float()
        survive = torch.cumsum(F.logsigmoid(conditional), dim=1)  # log P(grade > k)
        before = F.pad(survive[:, :-1], (1, 0))  # log P(grade > k - 1); 0 for k = 0
        return torch.cat([before + F.logsigmoid(-conditional), survive[:, -1:]], dim=1)


def attach_corn_head(model: nn.Module, head: str, num_classes: int) -> nn.Module:
    """``model`` with its linear head (attribute ``head``) replaced by a :class:`CornHead` of the same input."""
    linear = getattr(model, head)
    setattr(model, head, CornHead(linear.in_features, num_classes))
    return model
