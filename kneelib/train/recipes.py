"""Training recipes: named sets of TrainConfig fields (what the optimiser, schedule and weight average of
:mod:`kneelib.train.optim` are built from).

``paper`` is the paper's recipe (Adam 1e-3, weight decay 1e-4, lr × 0.95 every 5 epochs), which assumes
ImageNet-pretrained weights. ``scratch`` is for training from random weights (offline machines, no
ImageNet): AdamW (decoupled weight decay 0.05) at a peak lr of 4e-3 for the ResNets and 1e-3 for the
DenseNets (:data:`FAMILY_FIELDS`), reached by a one-epoch linear warm-up and followed by a cosine decay, both
stepped per batch. Each ingredient was chosen by an ablation on the real crops
(``benchmarks/recipe_ablation.py``, ``notebooks/07_recipe.ipynb``): label smoothing, a weight EMA and
class-balanced sampling were tried and left out, and so, later, were a class-weighted loss and CORN's ordinal loss
(docs/cpu-budget.md); TrainConfig keeps them all as options.
"""

from __future__ import annotations

from typing import Any

from kneelib.errors import KneelibError

#: Recipe name → the TrainConfig fields it sets (every other field keeps its default).
RECIPES: dict[str, dict[str, Any]] = {
    "paper": {},
    "scratch": {"optimizer": "adamw", "lr": 4e-3, "weight_decay": 0.05, "schedule": "cosine", "warmup_epochs": 1},
}
#: Recipe name → architecture family (:func:`arch_family`) → the fields that family changes on top of the
#: recipe, each chosen on val' by one-change-at-a-time measurements (``benchmarks/recipe_ablation.py --arch``).
FAMILY_FIELDS: dict[str, dict[str, dict[str, Any]]] = {
    "paper": {},
    # DenseNets from random weights: at 4e-3 they stay at the class prior; 1e-3 led on val' among 4e-3..2.5e-4
    # (the numbers and conditions: docs/recipes.md, "The DenseNets need a lower peak learning rate").
    "scratch": {"densenet": {"lr": 1e-3}},
}
OPTIMIZERS = ("adam", "adamw")
SCHEDULES = ("step", "cosine")


def arch_family(arch: str) -> str:
    """``densenet`` for the DenseNets (plain and SE), ``resnet`` for the ResNets."""
    return "densenet" if "densenet" in arch else "resnet"


def recipe_fields(name: str, arch: str | None = None) -> dict[str, Any]:
    """The fields a recipe sets (for ``arch``: with its family's changes); KneelibError for an unknown one."""
    if name not in RECIPES:
        raise KneelibError(f"unknown recipe {name!r}; choose from {', '.join(RECIPES)}")
    family = FAMILY_FIELDS.get(name, {}).get(arch_family(arch), {}) if arch else {}
    return {**RECIPES[name], **family}
