"""The grouped PSPNet teacher used for TDNet's grouped knowledge distillation.

Its pyramid features (2C channels) are split into N groups exactly as TDNet's paths
split them (group g keeps channels g of x and of every pooled branch). Each group has
its own 3x3 conv to C/4 channels; one classifier (BN, ReLU, 1x1 conv) is shared. The
full logits classify the sum of the group features; group g's logits classify N times
group g's feature, so each group alone is trained to stand for the whole.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from tdnet_cli.models.heads import FCNHead
from tdnet_cli.models.pspnet import PerFrameModel
from tdnet_cli.models.pyramid import PyramidPooling, group_slices
from tdnet_cli.models.resnet import DilatedResNet, feature_size

__all__ = ["GroupedPSPNet", "GroupedPSPNetConfig"]


@dataclass(frozen=True)
class GroupedPSPNetConfig:
    backbone: str = "resnet101"
    width: int = 64
    groups: int = 4  # = the student's number of paths
    num_classes: int = 19
    input_size: tuple[int, int] = (769, 1537)
    aux: bool = False


class GroupedPSPNet(PerFrameModel):
    """See the module docstring."""

    def __init__(self, config: GroupedPSPNetConfig) -> None:
        super().__init__()
        self.config = config
        self.pretrained = DilatedResNet(config.backbone, config.width)
        c = self.pretrained.out_channels
        g = config.groups
        self.ppm = PyramidPooling(c)
        self.group_convs = nn.ModuleList(nn.Conv2d(2 * c // g, c // 4, 3, padding=1, bias=False) for _ in range(g))
        self.classifier = nn.Sequential(
            nn.BatchNorm2d(c // 4), nn.ReLU(inplace=True), nn.Dropout2d(0.1), nn.Conv2d(c // 4, config.num_classes, 1)
        )
        if config.aux:
            self.auxlayer = FCNHead(self.pretrained.layer3_channels, config.num_classes, 4)
        self.feature_size = feature_size(config.input_size)

    def _group_features(self, c4: torch.Tensor) -> list[torch.Tensor]:
        z = self.ppm(c4)  # [x, p1, p2, p3, p6]
        c = c4.shape[1]
        parts = torch.split(z, [c, c // 4, c // 4, c // 4, c // 4], dim=1)
        feats = []
        for i, conv in enumerate(self.group_convs):
            xs, bs = group_slices(c, len(self.group_convs), i)
            zg = torch.cat([parts[0][:, xs]] + [p[:, bs] for p in parts[1:]], 1)
            feats.append(conv(zg))
        return feats

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """(B, 3, H, W) or a clip (B, T, 3, H, W) (last frame used) -> feature-size logits."""
        if x.dim() == 5:
            x = x[:, -1]
        c3, c4 = self.pretrained.forward_features(x)
        feats = self._group_features(c4)
        n = len(feats)
        out = {"out": self.classifier(torch.stack(feats).sum(0)), "groups": [self.classifier(n * f) for f in feats]}
        if self.config.aux:
            out["aux"] = self.auxlayer(c3)
        return out

    def step_tensors(self, x: torch.Tensor, memories: tuple = (), path: int = 0):
        return self.classifier(torch.stack(self._group_features(self.pretrained(x))).sum(0)), None
