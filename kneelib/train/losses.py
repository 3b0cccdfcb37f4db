"""What a training step minimises (``TrainConfig.loss``): the paper's cross-entropy, cross-entropy weighted against
the grades' frequencies, or CORN's ordinal loss (with :class:`kneelib.models.ordinal.CornHead`).

Validation always reports plain cross-entropy of the model's K outputs (for CORN, the negative log-likelihood of its
class probabilities). The training loss is what is minimised, so it reads on another scale for the other losses:
CORN's divides by (image, task) pairs, about twice the images at 5 grades; the class-weighted one is a weighted mean.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
import torch.nn.functional as F

from kneelib.train.config import LOSSES

__all__ = ["LOSSES", "Criterion", "class_frequency_weights", "corn_loss", "head_of", "make_criterion"]

#: ``criterion(logits, targets) -> loss``: float32 logits (or CORN log-probabilities), int64 targets.
Criterion = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def class_frequency_weights(targets: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``n / (K · n_k)`` per class (scikit-learn's "balanced" weights): each grade weighs as much in the loss as
    the others together; a grade absent from ``targets`` gets weight 0."""
    counts = torch.bincount(targets.long().cpu(), minlength=num_classes).double()
    weights = torch.where(counts > 0, counts.sum() / (num_classes * counts.clamp(min=1)), torch.zeros_like(counts))
    return weights.float()


def corn_loss(log_probs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """CORN's loss from a :class:`~kneelib.models.ordinal.CornHead`'s class log-probabilities.

    CORN sums a binary cross-entropy over the K−1 conditional tasks ``grade > k`` of every image whose grade is above
    k−1, and divides by the number of those (image, task) pairs. For one image of grade y the terms telescope to
    ``−log P(grade = y)``, so the loss is the summed negative log-likelihood over ``Σ min(y, K−2) + 1`` pairs.
    """
    pairs = (targets.clamp(max=log_probs.shape[1] - 2) + 1).sum()
    return -log_probs.gather(1, targets[:, None]).sum() / pairs


def head_of(loss: str | None) -> str:
    """The model head a run trained with ``loss`` has (``kneelib.models.registry.build_model``'s ``head``)."""
    return "corn" if loss == "corn" else "linear"


def make_criterion(loss: str = "cross_entropy", *, label_smoothing: float = 0.0, num_classes: int = 0,
                   train_targets: torch.Tensor | None = None, device: torch.device | None = None) -> Criterion:
    """The training criterion of ``loss``; ``class_weighted`` reads the training split's ``train_targets``."""
    if loss == "cross_entropy":
        return functools.partial(F.cross_entropy, label_smoothing=label_smoothing)
    if loss == "class_weighted":
        if train_targets is None:
            raise ValueError("class-weighted loss needs the training targets")
        weight = class_frequency_weights(train_targets, num_classes).to(device)
        return functools.partial(F.cross_entropy, weight=weight, label_smoothing=label_smoothing)
    if loss == "corn":
        return corn_loss
    raise ValueError(f"unknown loss {loss!r}; choose one of {', '.join(LOSSES)}")
