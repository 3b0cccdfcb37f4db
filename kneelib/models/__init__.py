"""Models: ResNet-18/34/50, DenseNet-121 and their squeeze-and-excitation variants.

``build_model(name, num_classes=..., weights=None | "imagenet" | path)``, ``list_models()`` and
``count_se_blocks(model)`` are the public entry points; models take 3xSxS inputs (S >= 64) and
return logits of shape (N, num_classes).
"""

from kneelib.models.registry import ModelSpec, build_model, get_spec, list_models
from kneelib.models.se import SqueezeExcite, capture_excitations, count_se_blocks
from kneelib.models.summary import summarize_all
from kneelib.models.weights import WeightsReport

__all__ = [
    "ModelSpec",
    "SqueezeExcite",
    "WeightsReport",
    "build_model",
    "capture_excitations",
    "count_se_blocks",
    "get_spec",
    "list_models",
    "summarize_all",
]
