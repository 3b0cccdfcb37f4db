"""The squeeze-and-excitation block (paper Eqs. 1-3), built on ``torchvision.ops.SqueezeExcitation``.

``SE(x) = x * sigmoid(W2 relu(W1 avgpool(x)))`` with ``W1: C -> C // r`` and ``W2: C // r -> C``,
``r = 16``. ``fc1``/``fc2`` are 1x1 convolutions (the same maths as linear layers on the pooled
vector). ``bias`` chooses whether they carry biases: the paper's reference code uses bias-free
excitations in SE-ResNet-18/34 and biased ones in SE-ResNet-50 and SE-DenseNet-121, which is what
makes the parameter counts match (see :mod:`kneelib.models.registry`).
"""

from __future__ import annotations

import torch
from torch import nn
from torchvision.ops import SqueezeExcitation

__all__ = ["REDUCTION", "SqueezeExcite", "capture_excitations", "count_se_blocks", "reset_se_parameters"]

#: The paper's reduction ratio r.
REDUCTION = 16


class SqueezeExcite(SqueezeExcitation):
    """SE block on ``channels`` feature maps, squeezed to ``channels // reduction`` (at least 1)."""

    def __init__(self, channels: int, *, reduction: int = REDUCTION, bias: bool = True) -> None:
        squeeze = max(1, channels // reduction)
        super().__init__(channels, squeeze)
        if not bias:  # torchvision's block always has biases; swap in bias-free 1x1 convs
            self.fc1 = nn.Conv2d(channels, squeeze, 1, bias=False)
            self.fc2 = nn.Conv2d(squeeze, channels, 1, bias=False)
        self.channels = channels
        self.reduction = reduction

    def reset_parameters(self) -> None:
        """PyTorch's default initialisation of both excitation layers."""
        self.fc1.reset_parameters()
        self.fc2.reset_parameters()

    def extra_repr(self) -> str:
        return f"channels={self.channels}, reduction={self.reduction}, bias={self.fc1.bias is not None}"


def count_se_blocks(model: nn.Module) -> int:
    """Number of SE blocks (any ``torchvision.ops.SqueezeExcitation``) inside ``model``."""
    return sum(isinstance(m, SqueezeExcitation) for m in model.modules())


def reset_se_parameters(model: nn.Module) -> None:
    """Give every SE block PyTorch's default init (undoing a backbone's blanket conv init)."""
    for module in model.modules():
        if isinstance(module, SqueezeExcite):
            module.reset_parameters()


@torch.inference_mode()
def capture_excitations(model: nn.Module, images: torch.Tensor) -> dict[str, torch.Tensor]:
    """The excitation weights ``s`` (Eq. 2) of every SE block for a batch: ``{block name: (N, C)}``.

    Hooks the sigmoid of each block during one forward pass in eval mode, then removes the hooks.
    """
    captured: dict[str, torch.Tensor] = {}
    handles = []
    for name, module in model.named_modules():
        if isinstance(module, SqueezeExcitation):
            def hook(_m: nn.Module, _inp: tuple, out: torch.Tensor, name: str = name) -> None:
                captured[name] = out.flatten(1).float().cpu()
            handles.append(module.scale_activation.register_forward_hook(hook))
    was_training = model.training
    model.eval()
    try:
        model(images)
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return captured
