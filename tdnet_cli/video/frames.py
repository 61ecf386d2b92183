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
    "is_camera",
    "is_image_output",
    "is_live",
    "is_stdin",
    "is_stream_spec",
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
_CAMERA_RE = re.compile(r"^/dev/video[0-9]+$")
# Protocols that carry a live stream: read once, as it comes (no second look at the start, no
# restart, no length). http(s) is left out: it serves files as often as streams.
LIVE_SCHEMES = ("tcp", "udp", "udplite", "rtp", "srtp", "rtsp", "rtsps", "rtmp", "rtmps", "rtmpt", "srt", "rist")


def is_url(spec: str) -> bool:
    """True for ``scheme://...`` inputs, which go to ffmpeg untouched."""
    return bool(_URL_RE.match(spec))


def is_stdin(spec: str) -> bool:
    """``-``: a video container arriving on standard input."""
    return spec == "-"


def is_camera(spec: str) -> bool:
    """A V4L2 camera, ``/dev/videoN``."""
    return bool(_CAMERA_RE.match(spec))


def is_live(spec: str) -> bool:
    """Standard input, a camera or a live protocol (:data:`LIVE_SCHEMES`): a source that can be
    read only once, from where it is now, and whose length nobody knows."""
    if is_stdin(spec) or is_camera(spec):
        return True
    return is_url(spec) and spec.split(":", 1)[0].lower() in LIVE_SCHEMES


def is_stream_spec(spec: str) -> bool:
    """An input that is no file or folder of this machine: a URL, standard input or a camera.
    Its outputs go to the current folder (or --out-dir), and no output can be it."""
    return is_url(spec) or is_stdin(spec) or is_camera(spec)


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
    live: bool = False  # read once as it comes (stdin, a camera, a live protocol): see is_live


class FrameSource(Protocol):
    info: SourceInfo
    problems: list[str]  # non-fatal read errors (corrupt data); filled while iterating

    def __iter__(self) -> Iterator[Frame]: ...

    def close(self) -> None: ...
