"""Initialise a model's backbone from a torchvision-format state_dict: ImageNet or a local file.

Every backbone tensor of the checkpoint is copied into the model under the same name (kneelib's
models keep torchvision's names; SE blocks only add names). SE blocks missing from the checkpoint
and the classification head (``fc`` / ``classifier``, always replaced) keep their fresh init.
A backbone tensor that is missing, extra or of another shape is a :class:`KneelibError`.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import torch
from torch import Tensor, nn
from torchvision.models import WeightsEnum
from torchvision.ops import SqueezeExcitation

from kneelib.errors import KneelibError

__all__ = [
    "WeightsReport",
    "cached_checkpoint",
    "imagenet_state_dict",
    "load_backbone",
    "normalize_keys",
    "read_state_dict",
]

logger = logging.getLogger(__name__)

#: old torchvision DenseNet checkpoints name dense-layer tensors ``norm.1``, ``conv.2``, ... (the
#: same pattern torchvision's densenet ``_load_state_dict`` rewrites to ``norm1``, ``conv2``)
_OLD_DENSENET_KEY = re.compile(
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\."
    r"((?:[12])\.(?:weight|bias|running_mean|running_var|num_batches_tracked))$"
)


@dataclass(frozen=True)
class WeightsReport:
    """What :func:`load_backbone` did: tensors copied, tensors left fresh, checkpoint head dropped."""

    source: str
    loaded: tuple[str, ...]
    new_se: tuple[str, ...]
    new_head: tuple[str, ...]
    dropped: tuple[str, ...]

    @property
    def new(self) -> tuple[str, ...]:
        """Model tensors not taken from the checkpoint (fresh SE blocks and the new head)."""
        return self.new_se + self.new_head

    def summary(self) -> str:
        """One line: counts of loaded and new tensors."""
        se = f"{len(self.new_se)} in SE blocks, " if self.new_se else ""
        return (
            f"weights from {self.source}: {len(self.loaded)} tensors loaded; {len(self.new)} new "
            f"({se}{len(self.new_head)} in the head); {len(self.dropped)} checkpoint head tensors dropped"
        )

    def __str__(self) -> str:
        return self.summary()


def normalize_keys(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Strip a ``module.`` (DataParallel) prefix and rename old-style DenseNet keys."""
    out: dict[str, Tensor] = {}
    for key, value in state_dict.items():
        key = key.removeprefix("module.")
        match = _OLD_DENSENET_KEY.match(key)
        out[match.group(1) + match.group(2) if match else key] = value
    return out


def cached_checkpoint(weights: WeightsEnum) -> Path:
    """Where torch's hub cache keeps ``weights`` (``$TORCH_HOME/hub/checkpoints/<file>``)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(weights.url).path)


def imagenet_state_dict(weights: WeightsEnum, *, progress: bool = True) -> dict[str, Tensor]:
    """The torchvision checkpoint of ``weights``: from the torch cache, else downloaded into it."""
    cached = cached_checkpoint(weights)
    if cached.is_file():
        return read_state_dict(cached)
    try:
        return weights.get_state_dict(progress=progress, check_hash=True)
    except Exception as exc:  # no network, proxy, interrupted or corrupt download, ...
        raise KneelibError(
            f"cannot get the ImageNet weights {weights} from {weights.url} "
            f"({type(exc).__name__}: {exc}). Without internet, copy that file to {cached} "
            "(set TORCH_HOME to use another cache), or pass the path of a local state_dict as weights"
        ) from exc


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """A state_dict saved with ``torch.save`` (also inside a ``{"model"|"state_dict": ...}`` dict)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise KneelibError(f"weights file not found: {path} (use 'imagenet', a state_dict path, or none)")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise KneelibError(f"cannot read weights file {path}: {type(exc).__name__}: {exc}") from exc
    for wrapper in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(wrapper), dict):
            obj = obj[wrapper]
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, Tensor) for v in obj.values()):
        raise KneelibError(f"weights file {path} does not hold a state_dict (a dict of tensors)")
    return obj


def _se_prefixes(model: nn.Module) -> tuple[str, ...]:
    return tuple(f"{name}." for name, m in model.named_modules() if isinstance(m, SqueezeExcitation))


def _listing(title: str, items: list[str], limit: int = 5) -> str:
    more = f", ... ({len(items)} in all)" if len(items) > limit else ""
    return f"{title}: " + ", ".join(items[:limit]) + more


def load_backbone(
    model: nn.Module,
    state_dict: Mapping[str, Tensor],
    *,
    head: str,
    source: str,
    target: str = "the model",
) -> WeightsReport:
    """Copy every backbone tensor of ``state_dict`` into ``model``; SE blocks it lacks and ``head`` stay.

    Raises :class:`KneelibError` naming ``source`` and ``target`` when a backbone tensor is missing
    from the checkpoint, has another shape, or the checkpoint has tensors the model does not know.
    """
    checkpoint = normalize_keys(state_dict)
    own = model.state_dict()
    se_prefixes = _se_prefixes(model)
    head_prefix = f"{head}."
    loaded: list[str] = []
    new_se: list[str] = []
    new_head: list[str] = []
    missing: list[str] = []
    mismatched: list[str] = []
    for key, tensor in own.items():
        if key.startswith(head_prefix):
            new_head.append(key)
        elif key in checkpoint:
            if checkpoint[key].shape != tensor.shape:
                mismatched.append(f"{key} {tuple(checkpoint[key].shape)} vs {tuple(tensor.shape)}")
            else:
                loaded.append(key)
        elif se_prefixes and key.startswith(se_prefixes):
            new_se.append(key)
        elif not key.endswith("num_batches_tracked"):  # old checkpoints lack the BN counters
            missing.append(key)
    dropped = [k for k in checkpoint if k.startswith(head_prefix)]
    unexpected = [k for k in checkpoint if k not in own and not k.startswith(head_prefix)]
    problems = [
        _listing("shape mismatch (checkpoint vs model)", mismatched) if mismatched else "",
        _listing("missing from the checkpoint", missing) if missing else "",
        _listing("not in the model", unexpected) if unexpected else "",
    ]
    if any(problems):
        details = "; ".join(p for p in problems if p)
        raise KneelibError(f"weights from {source} do not fit {target}: {details}")
    model.load_state_dict({k: checkpoint[k] for k in loaded}, strict=False)
    report = WeightsReport(source, tuple(loaded), tuple(new_se), tuple(new_head), tuple(dropped))
    logger.info("%s: %s", target, report.summary())
    return report
