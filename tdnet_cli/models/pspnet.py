"""PSPNet: the per-frame model TDNet replaces (and the teacher it distils from).

Parameter names follow the authors' ``pspnet`` model: ``pretrained.*`` for the dilated
ResNet and ``head.conv5.*`` for pyramid pooling + classifier.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from tdnet_cli.models.heads import FCNHead, classifier_layers
from tdnet_cli.models.pyramid import PyramidPooling
from tdnet_cli.models.resnet import DilatedResNet, feature_size
from tdnet_cli.models.tdnet import StreamState

__all__ = ["PSPHead", "PSPNet", "PSPNetConfig", "PerFrameModel"]


@dataclass(frozen=True)
class PSPNetConfig:
    backbone: str = "resnet101"
    width: int = 64
    num_classes: int = 19
    input_size: tuple[int, int] = (769, 1537)
    aux: bool = False


class PSPHead(nn.Module):
    """Pyramid pooling (2C channels) -> 3x3 conv to C/4 -> BN -> ReLU -> Dropout2d -> 1x1 conv."""

    def __init__(self, in_channels: int, num_classes: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.conv5 = nn.Sequential(
            PyramidPooling(in_channels),
            *classifier_layers(2 * in_channels, in_channels // 4, num_classes, dropout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv5(x)


class PerFrameModel(nn.Module):
    """The streaming interface for models that run on every frame alone (no memory).

    Subclasses set ``config`` (with ``input_size``) and implement ``step_tensors``.
    """

    num_paths = 1

    @property
    def input_size(self) -> tuple[int, int]:
        return self.config.input_size

    def set_input_size(self, input_size: tuple[int, int]) -> None:
        self.feature_size = feature_size(input_size)
        self.config = type(self.config)(**{**self.config.__dict__, "input_size": tuple(input_size)})

    def new_state(self, batch: int = 1) -> StreamState:
        return StreamState(batch=batch)

    def step(self, x: torch.Tensor, state: StreamState) -> tuple[torch.Tensor, StreamState]:
        logits, _ = self.step_tensors(x, (), 0)
        return logits, self.advance(state, None, x.shape[0])

    def next_path(self, state: StreamState) -> int:
        return 0

    def advance(self, state: StreamState, memory, batch: int) -> StreamState:
        return StreamState((), state.frame_index + 1, batch)


class PSPNet(PerFrameModel):
    """One PSPNet run on every frame: the per-frame baseline TDNet replaces."""

    def __init__(self, config: PSPNetConfig) -> None:
        super().__init__()
        self.config = config
        self.pretrained = DilatedResNet(config.backbone, config.width)
        self.head = PSPHead(self.pretrained.out_channels, config.num_classes)
        if config.aux:
            self.auxlayer = FCNHead(self.pretrained.layer3_channels, config.num_classes, 4)
        self.feature_size = feature_size(config.input_size)

    def step_tensors(self, x: torch.Tensor, memories: tuple = (), path: int = 0):
        return self.head(self.pretrained(x)), None

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Training forward on a frame batch (B, 3, H, W) (or the last frame of a clip)."""
        if x.dim() == 5:
            x = x[:, -1]
        c3, c4 = self.pretrained.forward_features(x)
        out = {"out": self.head(c4)}
        if self.config.aux:
            out["aux"] = self.auxlayer(c3)
        return out
