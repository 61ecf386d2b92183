"""A model's configuration read from the shapes of a raw state dict (the authors' released
files carry no metadata): backbone, classes, paths and head sizes."""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch

from tdnet_cli.errors import CheckpointError
from tdnet_cli.models.grouped_psp import GroupedPSPNetConfig
from tdnet_cli.models.pspnet import PSPNetConfig
from tdnet_cli.models.resnet import RESNET_SPECS
from tdnet_cli.models.tdnet import TDNetConfig

__all__ = ["infer_config"]


def _dims(sd: Mapping[str, torch.Tensor], key: str, expected: str, where: str) -> tuple[int, ...]:
    """The shape of ``sd[key]``, which must have as many dimensions as ``expected`` names, each >= 1."""
    shape = tuple(sd[key].shape)
    rank = expected.count(",") + 1
    if len(shape) != rank or min(shape, default=0) < 1:
        raise CheckpointError(f"{where}: {key} has shape {shape}; expected {expected}")
    return shape


def _backbone_from_keys(sd: Mapping[str, torch.Tensor], prefix: str, where: str) -> tuple[str, int]:
    """(backbone name, width) from the block layout; the width is layer1's first conv's output
    (``width`` for both block kinds), so a damaged stem is reported by the shape check instead."""
    bottleneck = f"{prefix}.layer1.0.conv3.weight" in sd
    counts = []
    for layer in range(1, 5):
        pat = re.compile(rf"^{re.escape(prefix)}\.layer{layer}\.(\d+)\.conv1\.weight$")
        counts.append(len({m.group(1) for k in sd if (m := pat.match(k))}))
    block = "bottleneck" if bottleneck else "basic"
    for name, spec in RESNET_SPECS.items():
        if spec.block == block and spec.layers == tuple(counts):
            width = _dims(sd, f"{prefix}.layer1.0.conv1.weight", "(width, channels, k, k)", where)[0]
            return name, width
    raise CheckpointError(f"{where}: unrecognised backbone under {prefix!r} (a {block} ResNet with blocks {counts})")


def infer_config(sd: Mapping[str, torch.Tensor], where: str = "the state dict") -> TDNetConfig | PSPNetConfig:
    """Work out a model configuration from a state dict's key layout and shapes.

    Every shape read here is checked first (dimensions, divisibility), naming the key; the shapes
    of all other keys are checked against the model built from the result (``load_checkpoint``).
    """
    try:
        if "pretrained1.layer1.0.conv1.weight" in sd:
            return _infer_tdnet(sd, where)
        if "pretrained.layer1.0.conv1.weight" in sd and "group_convs.0.weight" in sd:
            backbone, width = _backbone_from_keys(sd, "pretrained", where)
            return GroupedPSPNetConfig(
                backbone=backbone,
                width=width,
                groups=len({k.split(".")[1] for k in sd if k.startswith("group_convs.")}),
                num_classes=_dims(sd, "classifier.3.weight", "(classes, channels, 1, 1)", where)[0],
                aux="auxlayer.conv5.0.weight" in sd,
            )
        if "pretrained.layer1.0.conv1.weight" in sd and "head.conv5.1.weight" in sd:
            backbone, width = _backbone_from_keys(sd, "pretrained", where)
            return PSPNetConfig(
                backbone=backbone,
                width=width,
                num_classes=_dims(sd, "head.conv5.5.weight", "(classes, channels, 1, 1)", where)[0],
                aux="auxlayer.conv5.0.weight" in sd,
            )
    except KeyError as exc:
        raise CheckpointError(f"{where}: incomplete TDNet/PSPNet state dict: key {exc.args[0]!r} is missing") from None
    raise CheckpointError(
        f"{where} is not a TDNet or PSPNet state dict (no 'pretrained1.*' or 'pretrained.*' + 'head.conv5.*' keys; "
        f"first keys: {', '.join(list(sd)[:3])})"
    )


def _infer_tdnet(sd: Mapping[str, torch.Tensor], where: str) -> TDNetConfig:
    n = len({m.group(1) for k in sd if (m := re.match(r"^pretrained(\d+)\.", k))})
    if n < 2:
        raise CheckpointError(f"{where}: a TDNet state dict with one path (only pretrained1.*); expected 2 or more")
    backbone, width = _backbone_from_keys(sd, "pretrained1", where)
    c = 8 * width * (4 if RESNET_SPECS[backbone].block == "bottleneck" else 1)  # the backbone's channels
    value_dim, d = _dims(sd, "enc1.w_vs.0.conv.weight", "(value_dim, channels, 1, 1)", where)[:2]
    # the encoder takes 2c/G channels: one of G groups of the pyramid's 2c, G dividing c/4
    if (2 * c) % d or (c // 4) % ((2 * c) // d):
        raise CheckpointError(
            f"{where}: enc1.w_vs.0.conv.weight takes {d} channels; expected 2 x {c} / G "
            f"for a group count G dividing {c // 4} (the backbone gives {c} channels)"
        )
    head = _dims(sd, "head1.conv5.0.weight", "(value_dim / reduction, value_dim, 3, 3)", where)[0]
    if value_dim % head:
        raise CheckpointError(
            f"{where}: head1.conv5.0.weight has {head} output channels; expected a divisor "
            f"of value_dim {value_dim} (from enc1.w_vs.0.conv.weight)"
        )
    fh, fw = _dims(sd, "layer_norm1.ln.weight", "(feature height, feature width)", where)
    return TDNetConfig(
        num_paths=n,
        groups=(2 * c) // d,
        backbone=backbone,
        width=width,
        key_dim=_dims(sd, "enc1.w_qs.1.conv.weight", "(key_dim, key_dim, 1, 1)", where)[0],
        value_dim=value_dim,
        head_reduction=value_dim // head,
        num_classes=_dims(sd, "head1.conv5.4.weight", "(classes, channels, 1, 1)", where)[0],
        input_size=((fh - 1) * 8 + 1, (fw - 1) * 8 + 1),
        aux="aux1.conv5.0.weight" in sd,
    )
