"""The eight architectures by name: ``build_model``, ``list_models`` and their ImageNet weights.

Parameter counts at 5 classes equal the paper's reference implementation exactly (resnet18
11,179,077 ... se_densenet121 10,008,263); see ``tests/test_models.py``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from torch import nn
from torchvision.models import (
    DenseNet121_Weights,
    ResNet18_Weights,
    ResNet34_Weights,
    ResNet50_Weights,
    WeightsEnum,
)

from kneelib.errors import KneelibError
from kneelib.models import densenet, resnet
from kneelib.models.ordinal import attach_corn_head
from kneelib.models.weights import (
    WeightsReport,
    imagenet_state_dict,
    load_backbone,
    read_state_dict,
)

__all__ = ["HEADS", "ModelSpec", "build_model", "get_spec", "list_models"]

#: ``build_model``'s heads: the paper's linear layer, or CORN's ordinal head.
HEADS = ("linear", "corn")

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelSpec:
    """One architecture: its builder, display title, ImageNet weights and head module name."""

    name: str
    title: str
    builder: Callable[..., nn.Module]
    imagenet: WeightsEnum
    head: str


def _spec(name: str, title: str, imagenet: WeightsEnum, head: str) -> ModelSpec:
    builder = {**resnet.BUILDERS, **densenet.BUILDERS}[name]
    return ModelSpec(name, title, builder, imagenet, head)


_SPECS: dict[str, ModelSpec] = {
    s.name: s
    for s in (
        _spec("resnet18", "ResNet-18", ResNet18_Weights.IMAGENET1K_V1, "fc"),
        _spec("resnet34", "ResNet-34", ResNet34_Weights.IMAGENET1K_V1, "fc"),
        _spec("resnet50", "ResNet-50", ResNet50_Weights.IMAGENET1K_V1, "fc"),
        _spec("densenet121", "DenseNet-121", DenseNet121_Weights.IMAGENET1K_V1, "classifier"),
        _spec("se_resnet18", "SE-ResNet-18", ResNet18_Weights.IMAGENET1K_V1, "fc"),
        _spec("se_resnet34", "SE-ResNet-34", ResNet34_Weights.IMAGENET1K_V1, "fc"),
        _spec("se_resnet50", "SE-ResNet-50", ResNet50_Weights.IMAGENET1K_V1, "fc"),
        _spec("se_densenet121", "SE-DenseNet-121", DenseNet121_Weights.IMAGENET1K_V1, "classifier"),
    )
}


def list_models() -> list[str]:
    """The architecture names, plain models first, in the paper's table order."""
    return list(_SPECS)


def get_spec(name: str) -> ModelSpec:
    """The :class:`ModelSpec` of ``name``; unknown names are a :class:`KneelibError`."""
    try:
        return _SPECS[name]
    except KeyError:
        raise KneelibError(f"unknown model {name!r}; choose one of: {', '.join(_SPECS)}") from None


def build_model(
    name: str,
    *,
    num_classes: int,
    weights: None | str | Path = None,
    head: str = "linear",
    progress: bool = True,
) -> nn.Module:
    """Build ``name`` with a ``num_classes``-way head: ``"linear"`` (the paper's) or ``"corn"`` (an ordinal
    :class:`~kneelib.models.ordinal.CornHead`, whose K outputs are class log-probabilities).

    ``weights``: ``None`` (or ``"none"``) for random init (ResNets with ``zero_init_residual``);
    ``"imagenet"`` for torchvision's ImageNet-1k checkpoint (from the torch hub cache, else
    downloaded; ``progress`` shows a bar); or the path of a torchvision-format state_dict. Backbone tensors are copied, SE blocks absent
    from the checkpoint and the head keep their fresh init; the :class:`WeightsReport` is logged and
    kept as ``model.weights_report`` (``None`` without weights).
    """
    spec = get_spec(name)
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise KneelibError(f"num_classes must be a positive integer, got {num_classes!r}")
    if isinstance(weights, str) and weights.lower() in ("", "none"):
        weights = None
    # From scratch, ResNets start each residual block as the identity (see kneelib.models.resnet).
    extra = {"zero_init_residual": True} if weights is None and spec.builder in resnet.BUILDERS.values() else {}
    if head not in HEADS:
        raise KneelibError(f"unknown head {head!r}; choose one of: {', '.join(HEADS)}")
    if head == "corn" and num_classes < 2:
        raise KneelibError("an ordinal (corn) head needs at least 2 classes")
    model = spec.builder(num_classes=num_classes, **extra)
    if head == "corn":
        attach_corn_head(model, spec.head, num_classes)
    report: WeightsReport | None = None
    if isinstance(weights, str) and weights.lower() == "imagenet":
        state_dict = imagenet_state_dict(spec.imagenet, progress=progress)
        report = load_backbone(model, state_dict, head=spec.head, target=name,
                               source=f"ImageNet ({spec.imagenet})")
    elif weights is not None:
        state_dict = read_state_dict(weights)
        report = load_backbone(model, state_dict, head=spec.head, target=name, source=str(weights))
    model.weights_report = report
    return model
