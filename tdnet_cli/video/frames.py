"""What every frame source yields and reports: :class:`Frame`, :class:`SourceInfo`, the
:class:`FrameSource` protocol, and the naming rules inputs share (image extensions, natural
order, URLs)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from typing import Protocol

import cv2
import numpy as np

from tdnet_cli.video.color import YUV420

__all__ = [
    "DEFAULT_FOLDER_FPS",
    "IMAGE_EXTENSIONS",
    "IMAGE_OUTPUT_KINDS",
    "Frame",
    "FrameSource",
    "SourceInfo",
    "is_image_output",
    "is_url",
    "natural_key",
]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
# what `segment` writes for an image input a.png: a.overlay.png, a.color.png, a.labels.png, a.labelids.png
IMAGE_OUTPUT_KINDS = ("overlay", "color", "labels", "labelids")
# A folder of frames has no rate of its own: videos made of one play at this unless told
# otherwise (Cityscapes sequences were recorded at 17 Hz).
DEFAULT_FOLDER_FPS = 17.0
_URL_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*://")


def is_url(spec: str) -> bool:
    """True for ``scheme://...`` inputs, which go to ffmpeg untouched."""
    return bool(_URL_RE.match(spec))


def is_image_output(name: str) -> bool:
    """Whether a file name is one `segment` gives the outputs of image inputs (``a.labels.png``)."""
    return name.lower().endswith(tuple(f".{kind}.png" for kind in IMAGE_OUTPUT_KINDS))


def natural_key(name: str) -> list:
    """Sort key that orders ``frame2`` before ``frame10``."""
    return [int(tok) if tok.isdigit() else tok.lower() for tok in re.split(r"(\d+)", name)]


class Frame:
    """One input frame: ``index``, ``name`` (output stem: the frame file's stem for folders,
    the zero-padded index for videos) and its pixels, as RGB or as the decoder's YUV 4:2:0.

    ``image`` is always (H, W, 3) uint8 RGB; for a YUV frame it is converted on first use,
    so code that only needs the planes (blending, the model's small input) never pays for it.
    """

    __slots__ = ("_rgb", "index", "name", "yuv")

    def __init__(self, index: int, name: str, image: np.ndarray | None = None, *, yuv: YUV420 | None = None) -> None:
        if (image is None) == (yuv is None):
            raise ValueError("a Frame takes RGB pixels or YUV planes, one of the two")
        self.index, self.name, self.yuv, self._rgb = index, name, yuv, image

    @property
    def size(self) -> tuple[int, int]:
        """(H, W)"""
        return (self.yuv.height, self.yuv.width) if self.yuv is not None else self._rgb.shape[:2]

    @property
    def image(self) -> np.ndarray:
        if self._rgb is None:
            self._rgb = self.yuv.to_rgb()
        return self._rgb

    def rgb(self, size: tuple[int, int] | None = None) -> np.ndarray:
        """RGB at ``size`` (H, W), default the frame's own; from YUV planes, resized before
        conversion, so a small size is cheap."""
        if size is None or tuple(size) == self.size:
            return self.image
        if self.yuv is not None and self._rgb is None:
            return self.yuv.to_rgb(size)
        return cv2.resize(self.image, (size[1], size[0]), interpolation=cv2.INTER_LINEAR)

    def __repr__(self) -> str:
        kind = f"yuv420 {self.yuv.matrix}" if self.yuv is not None else "rgb"
        return f"Frame({self.index}, {self.name!r}, {self.size[1]}x{self.size[0]} {kind})"


@dataclass(frozen=True)
class SourceInfo:
    uri: str
    kind: str  # "video" or "frames"
    width: int
    height: int
    fps: Fraction | None  # None for frame folders
    frame_count: int | None  # exact for folders; an estimate (duration x fps) for videos
    has_audio: bool = False
    codec: str | None = None
    matrix: str | None = None  # colour matrix of YUV frames ("bt601"/"bt709"); None: RGB frames


class FrameSource(Protocol):
    info: SourceInfo
    problems: list[str]  # non-fatal read errors (corrupt data); filled while iterating

    def __iter__(self) -> Iterator[Frame]: ...

    def close(self) -> None: ...
