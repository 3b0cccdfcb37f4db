"""Model size table: parameters, FLOPs and SE blocks of each architecture.

FLOPs come from ``torch.utils.flop_counter.FlopCounterMode``, which counts convolutions and matrix
products (1 multiply-add = 2 FLOPs; BN, ReLU, pooling and the SE gating product are not counted).
Models are built on the ``meta`` device, so counting needs no memory and no real arithmetic.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import lru_cache

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from kneelib.models.registry import build_model, get_spec, list_models
from kneelib.models.se import count_se_blocks

__all__ = ["ModelSummary", "count_flops", "count_parameters", "format_table", "summarize", "summarize_all"]


@dataclass(frozen=True)
class ModelSummary:
    """One row of the model table."""

    name: str
    title: str
    num_classes: int
    parameters: int
    image_size: int
    gflops: float
    se_blocks: int

    @property
    def gmacs(self) -> float:
        """Giga multiply-accumulates (= GFLOPs / 2)."""
        return self.gflops / 2

    def as_dict(self) -> dict[str, object]:
        """JSON-ready dict (with ``gmacs``)."""
        return {**asdict(self), "gmacs": self.gmacs}


def count_parameters(model: nn.Module) -> int:
    """Number of parameters (trainable or not; buffers excluded)."""
    return sum(p.numel() for p in model.parameters())


def count_flops(model: nn.Module, *, image_size: int = 224) -> int:
    """FLOPs (2 per multiply-add) of one forward pass of a 1x3xSxS input, on the model's device."""
    device = next(model.parameters()).device
    x = torch.zeros(1, 3, image_size, image_size, device=device)
    was_training = model.training
    model.eval()
    counter = FlopCounterMode(display=False)
    try:
        with torch.no_grad(), counter:
            model(x)
    finally:
        model.train(was_training)
    return counter.get_total_flops()


@lru_cache(maxsize=64)
def summarize(name: str, *, num_classes: int = 5, image_size: int = 224) -> ModelSummary:
    """Parameters, GFLOPs at ``image_size`` and SE blocks of ``name`` (built on the meta device; cached)."""
    with torch.device("meta"):
        model = build_model(name, num_classes=num_classes)
    return ModelSummary(
        name=name,
        title=get_spec(name).title,
        num_classes=num_classes,
        parameters=count_parameters(model),
        image_size=image_size,
        gflops=count_flops(model, image_size=image_size) / 1e9,
        se_blocks=count_se_blocks(model),
    )


def summarize_all(*, num_classes: int = 5, image_size: int = 224) -> list[ModelSummary]:
    """:func:`summarize` for every architecture in :func:`list_models` order."""
    return [summarize(n, num_classes=num_classes, image_size=image_size) for n in list_models()]


def format_table(rows: list[ModelSummary]) -> str:
    """Plain-text table: name, parameters, GFLOPs, GMACs, SE blocks."""
    size = rows[0].image_size if rows else 224
    header = ("model", "parameters", f"GFLOPs@{size}px", f"GMACs@{size}px", "SE blocks")
    body = [
        (r.name, f"{r.parameters:,}", f"{r.gflops:.2f}", f"{r.gmacs:.2f}", str(r.se_blocks)) for r in rows
    ]
    widths = [max(len(row[i]) for row in (header, *body)) for i in range(len(header))]
    lines = [
        "  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths)))
        for row in (header, *body)
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
