"""Dilated ResNet backbones with output stride 8 (the layout TDNet's checkpoints use).

Layer3 and layer4 keep stride 1 and dilate instead: layer3 uses dilation 2 (its
first block starts at 1), layer4 uses the multi-grid dilations (4, 8, 16). ResNet-50
and -101 use the three-conv "deep base" stem. Parameter names follow the
checkpoints (``conv1``, ``bn1``, ``layer1.0.conv1``, ``downsample.0`` ...).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

__all__ = ["RESNET_SPECS", "BasicBlock", "Bottleneck", "DilatedResNet", "ResNetSpec"]

MULTI_GRID = (4, 8, 16)


def conv3x3(cin: int, cout: int, stride: int = 1, dilation: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=dilation, dilation=dilation, bias=False)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        dilation: tuple[int, int] = (1, 1),
        downsample: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.conv1 = conv3x3(inplanes, planes, stride, dilation[0])
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes, 1, dilation[1])
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += identity
        return self.relu(out)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        dilation: tuple[int, int] = (1, 1),
        downsample: nn.Module | None = None,
    ) -> None:
        super().__init__()
        # Only the 3x3 conv is dilated (dilation[0]); dilation[1] is unused, kept for a uniform signature.
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes, stride, dilation[0])
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        out += identity
        return self.relu(out)


@dataclass(frozen=True)
class ResNetSpec:
    block: str  # "basic" | "bottleneck"
    layers: tuple[int, int, int, int]
    deep_stem: bool


RESNET_SPECS: dict[str, ResNetSpec] = {
    "resnet18": ResNetSpec("basic", (2, 2, 2, 2), False),
    "resnet34": ResNetSpec("basic", (3, 4, 6, 3), False),
    "resnet50": ResNetSpec("bottleneck", (3, 4, 6, 3), True),
    "resnet101": ResNetSpec("bottleneck", (3, 4, 23, 3), True),
}


class DilatedResNet(nn.Module):
    """ResNet with output stride 8. ``width`` scales every stage (64 for the standard nets).

    ``forward`` returns the layer4 features; ``forward_features`` also returns layer3
    (for the auxiliary head used in training).
    """

    def __init__(self, depth: str = "resnet18", width: int = 64, num_classes: int = 1000) -> None:
        super().__init__()
        if depth not in RESNET_SPECS:
            raise ValueError(f"unknown backbone {depth!r}; choose from {sorted(RESNET_SPECS)}")
        spec = RESNET_SPECS[depth]
        block = BasicBlock if spec.block == "basic" else Bottleneck
        self.depth = depth
        self.width = width
        self.expansion = block.expansion
        self.deep_stem = spec.deep_stem
        if spec.deep_stem:
            self.conv1 = nn.Sequential(
                conv3x3(3, width, stride=2),
                nn.BatchNorm2d(width),
                nn.ReLU(inplace=True),
                conv3x3(width, width),
                nn.BatchNorm2d(width),
                nn.ReLU(inplace=True),
                conv3x3(width, 2 * width),
            )
            self.inplanes = 2 * width
        else:
            self.conv1 = nn.Conv2d(3, width, 7, stride=2, padding=3, bias=False)
            self.inplanes = width
        self.bn1 = nn.BatchNorm2d(self.inplanes)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        n1, n2, n3, n4 = spec.layers
        self.layer1 = self._make_layer(block, width, n1, stride=1, dilations=[(1, 1)] * n1)
        self.layer2 = self._make_layer(block, 2 * width, n2, stride=2, dilations=[(1, 1)] * n2)
        # layer3: the first block enters at dilation 1 (its second conv already at 2), later blocks at 2.
        self.layer3 = self._make_layer(block, 4 * width, n3, stride=1, dilations=[(1, 2)] + [(2, 2)] * (n3 - 1))
        # layer4: multi-grid; in BasicBlocks the second conv stays at 4.
        self.layer4 = self._make_layer(
            block, 8 * width, n4, stride=1, dilations=[(MULTI_GRID[i % 3], 4) for i in range(n4)]
        )
        self.out_channels = 8 * width * block.expansion
        self.layer3_channels = 4 * width * block.expansion
        # The ImageNet classifier is unused for segmentation but part of every released
        # state dict, so it is kept for a strict load.
        self.fc = nn.Linear(self.out_channels, num_classes)

    def _make_layer(self, block, planes: int, blocks: int, stride: int, dilations) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * block.expansion, 1, stride=stride, bias=False),
                nn.BatchNorm2d(planes * block.expansion),
            )
        layers = [block(self.inplanes, planes, stride, dilations[0], downsample)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes, 1, dilations[i]) for i in range(1, blocks)]
        return nn.Sequential(*layers)

    def stem(self, x: torch.Tensor) -> torch.Tensor:
        return self.maxpool(self.relu(self.bn1(self.conv1(x))))

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.layer2(self.layer1(self.stem(x)))
        c3 = self.layer3(x)
        return c3, self.layer4(c3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x)[1]


def feature_size(input_size: tuple[int, int]) -> tuple[int, int]:
    """Backbone output size for an input size: three stride-2 stages, each ceil(x / 2)."""
    h, w = input_size
    for _ in range(3):
        h, w = (h + 1) // 2, (w + 1) // 2
    return h, w
