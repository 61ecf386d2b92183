"""Pyramid pooling (PSPNet), optionally keeping one channel group for a TDNet path."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["BINS", "PyramidPooling", "group_slices"]

BINS = (1, 2, 3, 6)


def group_slices(in_channels: int, groups: int, group: int) -> tuple[slice, slice]:
    """Channels that group ``group`` of ``groups`` keeps: (of x, of each pooled branch)."""
    cx, cb = in_channels // groups, in_channels // (4 * groups)
    return slice(group * cx, (group + 1) * cx), slice(group * cb, (group + 1) * cb)


class PyramidPooling(nn.Module):
    """Four pooled branches (1, 2, 3, 6 bins), each 1x1 conv C -> C/4 + BN + ReLU, upsampled.

    With ``groups=G, group=g`` only group ``g`` of the input and of every branch is kept
    (channels ``[g*C/G, (g+1)*C/G)`` of x and ``[g*C/(4G), (g+1)*C/(4G))`` of each branch),
    giving ``2C/G`` channels; with ``groups=1`` the full ``2C`` PSPNet output.

    ``prune_to_group()`` drops the branch channels that are thrown away anyway, for
    inference: the outputs are unchanged.
    """

    def __init__(self, in_channels: int, groups: int = 1, group: int = 0) -> None:
        super().__init__()
        if in_channels % (4 * groups):
            raise ValueError(f"in_channels {in_channels} is not divisible by 4 x groups ({groups})")
        inter = in_channels // 4
        for i in range(len(BINS)):
            self.add_module(
                f"conv{i + 1}",
                nn.Sequential(
                    nn.Conv2d(in_channels, inter, 1, bias=False), nn.BatchNorm2d(inter), nn.ReLU(inplace=True)
                ),
            )
        self.in_channels = in_channels
        self.groups = groups
        self.group = group
        self.pruned = False
        self.out_channels = 2 * in_channels // groups

    def branches(self) -> list[nn.Sequential]:
        return [self.conv1, self.conv2, self.conv3, self.conv4]

    def pooled(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Branch outputs at their pooled resolution (already sliced to the group)."""
        outs = []
        for bins, branch in zip(BINS, self.branches()):
            p = branch(F.adaptive_avg_pool2d(x, bins))
            if not self.pruned and self.groups > 1:
                p = p[:, self._branch_slice()]
            outs.append(p)
        return outs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        parts = [x[:, self._x_slice()] if self.groups > 1 else x]
        parts += [F.interpolate(p, (h, w), mode="bilinear", align_corners=True) for p in self.pooled(x)]
        return torch.cat(parts, 1)

    def _x_slice(self) -> slice:
        return group_slices(self.in_channels, self.groups, self.group)[0]

    def _branch_slice(self) -> slice:
        return group_slices(self.in_channels, self.groups, self.group)[1]

    @torch.no_grad()
    def prune_to_group(self) -> None:
        """Keep only the kept group's output channels in each branch (inference only)."""
        if self.pruned or self.groups == 1:
            return
        keep = self._branch_slice()
        for branch in self.branches():
            for layer in branch:
                if isinstance(layer, nn.Conv2d):
                    layer.weight = nn.Parameter(layer.weight[keep].clone())
                    if layer.bias is not None:
                        layer.bias = nn.Parameter(layer.bias[keep].clone())
                    layer.out_channels = layer.weight.shape[0]
                elif isinstance(layer, nn.BatchNorm2d):
                    for name in ("weight", "bias"):
                        setattr(layer, name, nn.Parameter(getattr(layer, name)[keep].clone()))
                    layer.running_mean = layer.running_mean[keep].clone()
                    layer.running_var = layer.running_var[keep].clone()
                    layer.num_features = layer.weight.shape[0]
        self.pruned = True
