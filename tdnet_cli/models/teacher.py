"""The distillation teacher: a frozen per-frame PSPNet whose head is split into path groups.

TDNet's grouped knowledge distillation (the authors' training recipe) teaches each student path
with one group of the teacher's head. The released PSPNet-101 is converted exactly: its
head's first 3x3 conv, whose 4096 inputs are the backbone's 2048 channels followed by the
four pyramid levels' 512 each, is split by *input* channels into N convs without BN.
Group g keeps the backbone channels [g*2048/N, (g+1)*2048/N) and each pyramid level's
[g*512/N, (g+1)*512/N), the same slice a student path's pyramid pooling keeps. A conv is
linear in its inputs, so the group features summed are the unsplit conv's output and the
full logits are PSPNet's own. The rest of the head (BN, ReLU, dropout, 1x1 classifier)
is shared: the full logits classify the sum, group g's logits classify ``scale`` times
group g's feature (4 for td4, 1 for td2, as the authors' training code does).
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch import nn

from tdnet_cli.errors import CheckpointError
from tdnet_cli.models.checkpoint import load_checkpoint
from tdnet_cli.models.grouped_psp import GroupedPSPNet
from tdnet_cli.models.pspnet import PSPNet
from tdnet_cli.models.pyramid import BINS, PyramidPooling, group_slices
from tdnet_cli.models.resnet import DilatedResNet

__all__ = [
    "GROUP_SCALE",
    "TEACHER_ORDER",
    "Teacher",
    "group_channels",
    "load_teacher",
    "split_head_weight",
    "teacher_from_grouped",
    "teacher_from_pspnet",
]

# Student path p (0-based) learns from teacher group TEACHER_ORDER[N][p]. In td4 the paths
# 1 and 3 keep the first half of the pyramid channels and paths 2 and 4 the second half;
# of the teacher's four quarters, groups 1, 2 lie in the first half and 3, 4 in the second,
# so path 2 gets group 3 and path 3 group 2.
TEACHER_ORDER: dict[int, tuple[int, ...]] = {4: (0, 2, 1, 3), 2: (0, 1)}
# What each group's feature is multiplied by before the shared classifier.
GROUP_SCALE: dict[int, float] = {4: 4.0, 2: 1.0}


def group_channels(channels: int, groups: int, group: int) -> torch.Tensor:
    """Indices into the pyramid output (x, pool1, pool2, pool3, pool6; ``2 * channels`` in all)
    that group ``group`` of ``groups`` keeps."""
    xs, bs = group_slices(channels, groups, group)
    level = channels // 4
    parts = [torch.arange(xs.start, xs.stop)]
    parts += [torch.arange(channels + i * level + bs.start, channels + i * level + bs.stop) for i in range(len(BINS))]
    return torch.cat(parts)


def split_head_weight(weight: torch.Tensor, groups: int) -> list[torch.Tensor]:
    """The head conv's weight (out, 2C, k, k) split by input channels into ``groups`` weights
    (out, 2C / groups, k, k), group g first."""
    channels = weight.shape[1] // 2
    if weight.shape[1] % 2 or channels % (4 * groups):
        raise ValueError(f"a head conv with {weight.shape[1]} inputs cannot be split into {groups} groups")
    return [weight[:, group_channels(channels, groups, g)].clone() for g in range(groups)]


class Teacher(nn.Module):
    """Frozen backbone + pyramid pooling + N group convs + one shared classifier.

    ``forward(x)`` on a normalised batch (B, 3, H, W) returns ``{"out": (B, classes, h, w),
    "groups": (N tensors like "out")}`` at feature resolution, the groups in student-path
    order. It always runs in eval mode and without gradients.
    """

    def __init__(
        self,
        pretrained: DilatedResNet,
        ppm: PyramidPooling,
        group_convs: nn.ModuleList,
        classifier: nn.Sequential,
        order: tuple[int, ...],
        group_scale: float,
    ) -> None:
        super().__init__()
        if ppm.groups != 1:
            raise ValueError("the teacher's pyramid pooling must keep all channels (groups=1)")
        if sorted(order) != list(range(len(group_convs))):
            raise ValueError(f"order {order} is not a permutation of {len(group_convs)} groups")
        self.pretrained = pretrained
        self.ppm = ppm
        self.group_convs = group_convs
        self.classifier = classifier
        self.order = tuple(order)
        self.group_scale = float(group_scale)
        self.requires_grad_(False)
        self.eval()

    @property
    def num_groups(self) -> int:
        return len(self.group_convs)

    def train(self, mode: bool = True) -> Teacher:
        # A frozen teacher: BN statistics and dropout must never switch to training
        # behaviour, even when a caller sets every module to train mode.
        return super().train(False)

    def group_features(self, c4: torch.Tensor) -> list[torch.Tensor]:
        """Each group conv applied to its slice of the pyramid output, group order."""
        h, w = c4.shape[-2:]
        c, n = c4.shape[1], self.num_groups
        pooled = self.ppm.pooled(c4)  # (B, C/4, bins, bins) per level, all channels
        feats = []
        for g, conv in enumerate(self.group_convs):
            xs, bs = group_slices(c, n, g)
            # Bilinear upsampling acts per channel, so slicing before it gives the same
            # values as PyramidPooling.forward and never builds the full 2C map.
            parts = [c4[:, xs]] + [F.interpolate(p[:, bs], (h, w), mode="bilinear", align_corners=True) for p in pooled]
            feats.append(conv(torch.cat(parts, 1)))
        return feats

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor | tuple[torch.Tensor, ...]]:
        if x.dim() == 5:  # a clip (B, T, 3, H, W): the teacher sees the annotated last frame
            x = x[:, -1]
        feats = self.group_features(self.pretrained(x))
        full = self.classifier(torch.stack(feats).sum(0))
        by_group = [self.classifier(self.group_scale * f) for f in feats]
        return {"out": full, "groups": tuple(by_group[g] for g in self.order)}


def _authors_split(paths: int) -> tuple[tuple[int, ...], float]:
    if paths not in TEACHER_ORDER:
        raise CheckpointError(
            f"a PSPNet teacher is split for 2 or 4 student paths (td2, td4), not {paths}",
            hint="use a td2 or td4 student, or a grouped teacher (gpsp*) trained for it",
        )
    return TEACHER_ORDER[paths], GROUP_SCALE[paths]


def teacher_from_pspnet(psp: PSPNet, paths: int) -> Teacher:
    """Convert a per-frame PSPNet exactly (its modules are shared, the head conv is split)."""
    order, scale = _authors_split(paths)
    conv5 = psp.head.conv5
    ppm, conv, classifier = conv5[0], conv5[1], nn.Sequential(*list(conv5)[2:])
    if conv.in_channels % (8 * paths):
        raise CheckpointError(f"the PSPNet head's {conv.in_channels} input channels do not split into {paths} groups")
    group_convs = nn.ModuleList()
    for weight in split_head_weight(conv.weight.detach(), paths):
        split = nn.Conv2d(weight.shape[1], weight.shape[0], conv.kernel_size, padding=conv.padding, bias=False)
        split.weight = nn.Parameter(weight, requires_grad=False)
        group_convs.append(split)
    return Teacher(psp.pretrained, ppm, group_convs, classifier, order, scale)


def teacher_from_grouped(model: GroupedPSPNet) -> Teacher:
    """Wrap a grouped PSPNet trained by ``tdnet train`` (gpsp* presets): its group g was trained
    for student path g, and its group logits classify N times the group's feature."""
    n = len(model.group_convs)
    return Teacher(model.pretrained, model.ppm, model.group_convs, model.classifier, tuple(range(n)), float(n))


def load_teacher(
    path: str | os.PathLike, *, paths: int, device: str | torch.device = "cpu", source: str = "the path"
) -> Teacher:
    """The frozen teacher (eval mode) for a student with ``paths`` paths.

    ``path`` is a per-frame PSPNet (the released ``psp101.pkl`` raw state dict, or our own
    ``psp*`` checkpoint), converted exactly, or a grouped PSPNet trained by ``tdnet train``
    with ``paths`` groups, used as it is. ``source``: the setting that named it, for messages.
    """
    loaded = load_checkpoint(path, device=device, source=source)
    model = loaded.model
    if isinstance(model, PSPNet):
        teacher = teacher_from_pspnet(model, paths)
    elif isinstance(model, GroupedPSPNet):
        if len(model.group_convs) != paths:
            raise CheckpointError(
                f"{path} is a grouped PSPNet with {len(model.group_convs)} groups; the student has {paths} paths",
                hint="train a teacher with as many groups",
            )
        teacher = teacher_from_grouped(model)
    else:
        raise CheckpointError(
            f"{path} holds a {loaded.kind} model, not a PSPNet teacher",
            hint="pass psp101.pkl (the authors' PSPNet-101) or a psp*/gpsp* checkpoint",
        )
    return teacher.to(device)
