"""DenseNet-121 (torchvision's ``DenseNet``) and SE-DenseNet-121 built from torchvision's blocks.

SE placement (paper Table 3, reference code ``custom_densenets.py``), 67 SE blocks in all:

* ``features.se0`` after the stem pooling (64 channels);
* ``features.se_denseblockI`` before each of the 4 dense blocks (64, 128, 256, 512 channels);
* ``features.denseblockI.denselayerJ.se`` on the input of each of the 58 dense layers, before its
  first BN; the layer's output is concatenated with the *un-rescaled* input (the block still
  carries the plain features; only the layer's bottleneck sees the SE-rescaled copy);
* ``features.se_transitionI`` before each of the 3 transitions (256, 512, 1024 channels);
* ``features.se5`` after the final BN ``norm5`` (1024 channels), before the ReLU and pooling.

All torchvision tensor names (``features.denseblock1.denselayer1.norm1.weight``, ...) are unchanged,
so ImageNet checkpoints map one-to-one. Global pooling is adaptive (the reference code's fixed 7x7
pool only works at 224 px).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.densenet import DenseNet, _DenseBlock, _DenseLayer, _Transition

from kneelib.models.se import REDUCTION, SqueezeExcite, reset_se_parameters

__all__ = ["SEDenseLayer", "SEDenseBlock", "SEDenseNet", "densenet121", "se_densenet121"]

#: DenseNet-121's configuration: growth rate, layers per block, stem width, bottleneck factor
GROWTH_RATE = 32
BLOCK_CONFIG = (6, 12, 24, 16)
NUM_INIT_FEATURES = 64
BN_SIZE = 4


class SEDenseLayer(_DenseLayer):
    """torchvision's dense layer with an SE block on its (concatenated) input, before ``norm1``."""

    def __init__(self, num_input_features: int, growth_rate: int, bn_size: int, drop_rate: float,
                 memory_efficient: bool = False) -> None:
        super().__init__(num_input_features, growth_rate, bn_size, drop_rate, memory_efficient)
        self.se = SqueezeExcite(num_input_features, reduction=REDUCTION)

    def bn_function(self, inputs: list[Tensor]) -> Tensor:
        return self.conv1(self.relu1(self.norm1(self.se(torch.cat(inputs, 1)))))


class SEDenseBlock(_DenseBlock):
    """torchvision's dense block (same forward and names) made of :class:`SEDenseLayer`."""

    def __init__(self, num_layers: int, num_input_features: int, bn_size: int, growth_rate: int,
                 drop_rate: float, memory_efficient: bool = False) -> None:
        nn.ModuleDict.__init__(self)  # _DenseBlock.__init__ would build plain layers
        for i in range(num_layers):
            layer = SEDenseLayer(num_input_features + i * growth_rate, growth_rate, bn_size,
                                 drop_rate, memory_efficient)
            self.add_module(f"denselayer{i + 1}", layer)


class SEDenseNet(nn.Module):
    """SE-DenseNet-BC: torchvision's DenseNet layout plus 2 x blocks + 1 + layers SE blocks (67 for 121)."""

    def __init__(
        self,
        growth_rate: int = GROWTH_RATE,
        block_config: tuple[int, ...] = BLOCK_CONFIG,
        num_init_features: int = NUM_INIT_FEATURES,
        bn_size: int = BN_SIZE,
        drop_rate: float = 0.0,
        num_classes: int = 1000,
        memory_efficient: bool = False,
    ) -> None:
        super().__init__()
        layers: OrderedDict[str, nn.Module] = OrderedDict(
            conv0=nn.Conv2d(3, num_init_features, kernel_size=7, stride=2, padding=3, bias=False),
            norm0=nn.BatchNorm2d(num_init_features),
            relu0=nn.ReLU(inplace=True),
            pool0=nn.MaxPool2d(kernel_size=3, stride=2, padding=1),
            se0=SqueezeExcite(num_init_features),
        )
        channels = num_init_features
        for i, num_layers in enumerate(block_config, start=1):
            layers[f"se_denseblock{i}"] = SqueezeExcite(channels)
            layers[f"denseblock{i}"] = SEDenseBlock(num_layers, channels, bn_size, growth_rate,
                                                    drop_rate, memory_efficient)
            channels += num_layers * growth_rate
            if i < len(block_config):
                layers[f"se_transition{i}"] = SqueezeExcite(channels)
                layers[f"transition{i}"] = _Transition(channels, channels // 2)
                channels //= 2
        layers["norm5"] = nn.BatchNorm2d(channels)
        layers["se5"] = SqueezeExcite(channels)
        self.features = nn.Sequential(layers)
        self.classifier = nn.Linear(channels, num_classes)
        _densenet_init(self)
        reset_se_parameters(self)

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.features(x))
        out = torch.flatten(F.adaptive_avg_pool2d(out, 1), 1)
        return self.classifier(out)


def _densenet_init(model: nn.Module) -> None:
    """DenseNet's usual init: He-normal convs, unit BN, zero linear bias."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.zeros_(m.bias)


def densenet121(*, num_classes: int = 1000) -> DenseNet:
    """DenseNet-121 (torchvision's class, growth 32, blocks 6/12/24/16)."""
    return DenseNet(GROWTH_RATE, BLOCK_CONFIG, NUM_INIT_FEATURES, BN_SIZE, num_classes=num_classes)


def se_densenet121(*, num_classes: int = 1000) -> SEDenseNet:
    """SE-DenseNet-121: 67 SE blocks (1 stem + 4 pre-block + 58 dense-layer + 3 pre-transition + 1)."""
    return SEDenseNet(GROWTH_RATE, BLOCK_CONFIG, NUM_INIT_FEATURES, BN_SIZE, num_classes=num_classes)


#: builders by name, for the registry
BUILDERS: dict[str, Callable[..., nn.Module]] = {
    "densenet121": densenet121,
    "se_densenet121": se_densenet121,
}
