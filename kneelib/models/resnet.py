"""ResNet-18/34/50 and their SE variants on torchvision's ``ResNet``, ``BasicBlock`` and ``Bottleneck``.

SE-ResNet blocks put the SE block on the output of the residual branch's last BN, before the
shortcut addition (paper Fig. 2; reference code ``custom_resnets.py`` / ``se_nets.py``). Every
torchvision tensor keeps its name, so ImageNet checkpoints map one-to-one; the SE blocks add
``layerI.J.se.fc{1,2}.*``.

Reference-code details kept here: SE-ResNet-18/34 excitations have no biases (moskomule's
``SE_Block``), SE-ResNet-50 ones do (Cadene's ``SEModule``). Not kept: the reference SE-ResNet-50
is Cadene's Caffe-style network (stride on the first 1x1 conv, ``ceil_mode`` max pool, SE layers
pretrained on ImageNet); kneelib uses torchvision's layout (stride on the 3x3 conv) so torchvision's
ImageNet weights fit. Parameter counts are identical either way.

``zero_init_residual`` (torchvision's option; Goyal et al. 2017) starts every residual branch's last
BN at zero, so each block begins as the identity. ``build_model`` sets it for random-init ResNets:
from scratch, a ResNet-50 otherwise spends its first epochs recovering from exploding activations.
Loaded weights overwrite those BN weights, so it changes nothing for pretrained models.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

from torch import Tensor, nn
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet

from kneelib.models.se import REDUCTION, SqueezeExcite, reset_se_parameters

__all__ = [
    "SEBasicBlock",
    "SEBottleneck",
    "resnet18",
    "resnet34",
    "resnet50",
    "se_resnet18",
    "se_resnet34",
    "se_resnet50",
]


class SEBasicBlock(BasicBlock):
    """torchvision's basic block with SE after ``bn2``, before the shortcut addition."""

    #: the reference SE-ResNet-18/34 use bias-free excitation layers
    se_bias: ClassVar[bool] = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.se = SqueezeExcite(self.bn2.num_features, reduction=REDUCTION, bias=self.se_bias)

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.se(self.bn2(self.conv2(out)))
        return self.relu(out + identity)


class SEBottleneck(Bottleneck):
    """torchvision's bottleneck block with SE after ``bn3``, before the shortcut addition."""

    #: the reference SE-ResNet-50 (Cadene's SENet code) uses excitation layers with biases
    se_bias: ClassVar[bool] = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.se = SqueezeExcite(self.bn3.num_features, reduction=REDUCTION, bias=self.se_bias)

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.se(self.bn3(self.conv3(out)))
        return self.relu(out + identity)


BlockType = type[BasicBlock] | type[Bottleneck]


def _resnet(block: BlockType, layers: list[int], num_classes: int, zero_init_residual: bool) -> ResNet:
    model = ResNet(block, layers, num_classes=num_classes, zero_init_residual=zero_init_residual)
    reset_se_parameters(model)  # ResNet's init gave the SE convs a kaiming (fan-out) init
    return model


def resnet18(*, num_classes: int = 1000, zero_init_residual: bool = False) -> ResNet:
    """ResNet-18 (basic blocks [2, 2, 2, 2])."""
    return _resnet(BasicBlock, [2, 2, 2, 2], num_classes, zero_init_residual)


def resnet34(*, num_classes: int = 1000, zero_init_residual: bool = False) -> ResNet:
    """ResNet-34 (basic blocks [3, 4, 6, 3])."""
    return _resnet(BasicBlock, [3, 4, 6, 3], num_classes, zero_init_residual)


def resnet50(*, num_classes: int = 1000, zero_init_residual: bool = False) -> ResNet:
    """ResNet-50 (bottleneck blocks [3, 4, 6, 3])."""
    return _resnet(Bottleneck, [3, 4, 6, 3], num_classes, zero_init_residual)


def se_resnet18(*, num_classes: int = 1000, zero_init_residual: bool = False) -> ResNet:
    """SE-ResNet-18: 8 SE blocks."""
    return _resnet(SEBasicBlock, [2, 2, 2, 2], num_classes, zero_init_residual)


def se_resnet34(*, num_classes: int = 1000, zero_init_residual: bool = False) -> ResNet:
    """SE-ResNet-34: 16 SE blocks."""
    return _resnet(SEBasicBlock, [3, 4, 6, 3], num_classes, zero_init_residual)


def se_resnet50(*, num_classes: int = 1000, zero_init_residual: bool = False) -> ResNet:
    """SE-ResNet-50: 16 SE blocks."""
    return _resnet(SEBottleneck, [3, 4, 6, 3], num_classes, zero_init_residual)


#: builders by name, for the registry
BUILDERS: dict[str, Callable[..., nn.Module]] = {
    "resnet18": resnet18,
    "resnet34": resnet34,
    "resnet50": resnet50,
    "se_resnet18": se_resnet18,
    "se_resnet34": se_resnet34,
    "se_resnet50": se_resnet50,
}
