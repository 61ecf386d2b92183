"""YUV 4:2:0 frames as decoders deliver them, and limited-range BT.601/BT.709 conversions.

Decoding to YUV instead of RGB lets `segment` skip two full-resolution colour conversions
per frame (ffmpeg's YUV->RGB on the way in, RGB->YUV for the encoder on the way out) and
halves the bytes through both pipes: the overlay is blended on the planes themselves
(blending is affine, so it commutes with the colour matrix) and only the model's small
input is converted to RGB.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

__all__ = ["MATRICES", "YUV420", "rgb_to_i420", "rgb_to_yuv", "rgb_to_yuv_affine", "yuv_to_rgb_affine"]

# (Kr, Kb) of each colour matrix; Kg = 1 - Kr - Kb.
MATRICES = {"bt601": (0.299, 0.114), "bt709": (0.2126, 0.0722)}


def rgb_to_yuv_affine(matrix: str) -> np.ndarray:
    """3x4 map (for ``cv2.transform``) from 0..255 RGB to limited-range (tv) Y'CbCr."""
    kr, kb = MATRICES[matrix]
    kg = 1.0 - kr - kb
    luma = np.array([kr, kg, kb])
    cb = (np.array([0.0, 0.0, 1.0]) - luma) / (2 * (1 - kb))
    cr = (np.array([1.0, 0.0, 0.0]) - luma) / (2 * (1 - kr))
    m = np.zeros((3, 4))
    m[0, :3], m[0, 3] = luma * 219 / 255, 16
    m[1, :3], m[1, 3] = cb * 224 / 255, 128
    m[2, :3], m[2, 3] = cr * 224 / 255, 128
    return m


def yuv_to_rgb_affine(matrix: str) -> np.ndarray:
    """3x4 map (for ``cv2.transform``) from limited-range Y'CbCr to 0..255 RGB."""
    fwd = rgb_to_yuv_affine(matrix)
    inv = np.linalg.inv(fwd[:, :3])
    return np.concatenate([inv, -(inv @ fwd[:, 3])[:, None]], axis=1)


def rgb_to_yuv(rgb: np.ndarray, matrix: str) -> np.ndarray:
    """(..., 3) uint8 RGB -> (..., 3) uint8 Y, U, V at the same resolution."""
    flat = np.ascontiguousarray(rgb, dtype=np.uint8).reshape(1, -1, 3)
    return cv2.transform(flat, rgb_to_yuv_affine(matrix)).reshape(rgb.shape)


def rgb_to_i420(rgb: np.ndarray, matrix: str) -> np.ndarray:
    """(H, W, 3) uint8 RGB with even sides -> an I420 buffer ((H * 3 // 2, W), like OpenCV's)."""
    h, w = rgb.shape[:2]
    yuv = rgb_to_yuv(rgb, matrix)
    chroma = [
        cv2.resize(np.ascontiguousarray(yuv[:, :, i]), (w // 2, h // 2), interpolation=cv2.INTER_AREA) for i in (1, 2)
    ]  # the mean of each 2x2 block
    return YUV420.from_planes(yuv[:, :, 0], *chroma, matrix).data.reshape(h * 3 // 2, w)


@dataclass(frozen=True, eq=False)
class YUV420:
    """One planar 4:2:0 frame (I420 layout: Y, then U, then V; chroma planes of ceil(H/2) x
    ceil(W/2)), limited range, in colour ``matrix``."""

    data: np.ndarray  # flat uint8
    height: int
    width: int
    matrix: str = "bt601"

    @staticmethod
    def nbytes(height: int, width: int) -> int:
        return height * width + 2 * ((height + 1) // 2) * ((width + 1) // 2)

    @classmethod
    def empty(cls, height: int, width: int, matrix: str = "bt601") -> YUV420:
        return cls(np.empty(cls.nbytes(height, width), np.uint8), height, width, matrix)

    @classmethod
    def from_planes(cls, y: np.ndarray, u: np.ndarray, v: np.ndarray, matrix: str = "bt601") -> YUV420:
        """A frame holding copies of three planes (Y of H x W, U and V of the chroma size)."""
        frame = cls.empty(*y.shape, matrix)
        frame.y[:], frame.u[:], frame.v[:] = y, u, v
        return frame

    @property
    def chroma_size(self) -> tuple[int, int]:
        return (self.height + 1) // 2, (self.width + 1) // 2

    @property
    def y(self) -> np.ndarray:
        return self.data[: self.height * self.width].reshape(self.height, self.width)

    def _chroma(self, i: int) -> np.ndarray:
        ch, cw = self.chroma_size
        start = self.height * self.width + i * ch * cw
        return self.data[start : start + ch * cw].reshape(ch, cw)

    @property
    def u(self) -> np.ndarray:
        return self._chroma(0)

    @property
    def v(self) -> np.ndarray:
        return self._chroma(1)

    def to_rgb(self, size: tuple[int, int] | None = None) -> np.ndarray:
        """(h, w, 3) uint8 RGB at ``size`` (default: the frame's own). Each plane is resized
        on its own first, so a small ``size`` costs a small conversion."""
        h, w = size or (self.height, self.width)
        # At the frame's own size each chroma sample covers its 2x2 block, as ffmpeg's own
        # conversion does; resized outputs interpolate.
        full = (h, w) == (self.height, self.width)
        planes = [
            p
            if p.shape == (h, w)
            else cv2.resize(p, (w, h), interpolation=cv2.INTER_NEAREST if full else cv2.INTER_LINEAR)
            for p in (self.y, self.u, self.v)
        ]
        return cv2.transform(cv2.merge(planes), yuv_to_rgb_affine(self.matrix))
