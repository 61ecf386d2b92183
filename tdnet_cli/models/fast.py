"""The inference fast path: the same function as the plain model, computed with less work.

``optimize_for_inference`` returns a copy in which
- BatchNorm is folded into the preceding convolution (inference statistics only),
- pyramid-pooling branches compute only the channel group their path keeps,
- attention applies its output projection to the few source values instead of every
  target position, and uses ``scaled_dot_product_attention`` on CUDA,
- activations are channels_last, which oneDNN and cuDNN run faster,
- optionally (CPU fp32), the wide 3x3 convolutions run as Winograd products
  (:mod:`tdnet_cli.models.winograd`).
Outputs stay within float rounding of the plain path (tests check the conformance
tolerance on both).
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from tdnet_cli.models.attention import AttentionPropagation
from tdnet_cli.models.pyramid import PyramidPooling
from tdnet_cli.models.winograd import WinogradConv2d, use_winograd

__all__ = ["fold_all_bn", "fold_bn", "optimize_for_inference", "swap_winograd"]

_PAIRS = (("conv", "bn"), ("conv1", "bn1"), ("conv2", "bn2"), ("conv3", "bn3"))


@torch.no_grad()
def fold_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> None:
    """Fold an eval-mode BatchNorm into ``conv`` in place (conv gains a bias)."""
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
    conv.weight = nn.Parameter(conv.weight * scale.view(-1, 1, 1, 1))
    conv.bias = nn.Parameter((bias - bn.running_mean) * scale + bn.bias)


def _last_conv(module: nn.Module) -> nn.Conv2d | None:
    if isinstance(module, nn.Conv2d):
        return module
    if isinstance(module, nn.Sequential) and len(module) and isinstance(module[-1], nn.Conv2d):
        return module[-1]
    return None


def fold_all_bn(model: nn.Module) -> int:
    """Fold every (conv, BN) pair of ``model`` in place; returns how many were folded."""
    folded = 0
    for module in list(model.modules()):
        for conv_name, bn_name in _PAIRS:
            conv = _last_conv(getattr(module, conv_name, None)) if hasattr(module, conv_name) else None
            bn = getattr(module, bn_name, None)
            if conv is not None and isinstance(bn, nn.BatchNorm2d):
                fold_bn(conv, bn)
                setattr(module, bn_name, nn.Identity())
                folded += 1
        if isinstance(module, nn.Sequential):
            for i in range(len(module) - 1):
                if isinstance(module[i], nn.Conv2d) and isinstance(module[i + 1], nn.BatchNorm2d):
                    fold_bn(module[i], module[i + 1])
                    module[i + 1] = nn.Identity()
                    folded += 1
    return folded


def swap_winograd(model: nn.Module, min_channels: int = 256) -> int:
    """Replace every conv that :func:`use_winograd` accepts by a :class:`WinogradConv2d`, in
    place (after BN folding, so the folded bias comes along); returns how many."""
    swapped = 0
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if use_winograd(child, min_channels):
                setattr(module, name, WinogradConv2d.from_conv(child))
                swapped += 1
    return swapped


def optimize_for_inference(
    model: nn.Module, *, channels_last: bool = True, winograd: bool = False, winograd_min_channels: int = 256
) -> nn.Module:
    """An inference-only copy of ``model`` (see module docstring). The original is untouched.
    ``winograd``: for the CPU in fp32 (eager, or between compiled graphs: call
    :func:`~tdnet_cli.models.winograd.keep_out_of_compiled_graphs` before ``torch.compile``, as
    the Predictor does); elsewhere the swapped layers would only fall back to ordinary
    convolutions."""
    fast = copy.deepcopy(model).eval()
    for module in fast.modules():
        if isinstance(module, PyramidPooling):
            module.prune_to_group()
        if isinstance(module, AttentionPropagation):
            module.use_sdpa = True
    fold_all_bn(fast)
    if winograd:
        swap_winograd(fast, winograd_min_channels)
    if channels_last:
        fast = fast.to(memory_format=torch.channels_last)
    fast.channels_last = channels_last
    for p in fast.parameters():
        p.requires_grad_(False)
    return fast
