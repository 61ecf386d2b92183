"""Small helpers shared by the scene and the renderer: seamless noise, wrapping blur,
colour jitter and mixing, and the palette of car paints."""

from __future__ import annotations

import cv2
import numpy as np

_NOISE_N = 256  # texture tile size (power of two: coordinates wrap with & (N - 1))


def _tile_noise(rng: np.random.Generator, n: int = _NOISE_N) -> np.ndarray:
    """A seamless (wrapping) multi-octave value-noise tile in about [-1, 1], float32."""
    out = np.zeros((n, n), np.float32)
    amp, total = 1.0, 0.0
    for cells in (4, 8, 16, 32, 64):
        g = rng.standard_normal((cells, cells)).astype(np.float32)
        # Upsample a 3x3 tiling and keep the centre: the result wraps without a seam.
        big = cv2.resize(np.tile(g, (3, 3)), (3 * n, 3 * n), interpolation=cv2.INTER_CUBIC)
        out += amp * big[n : 2 * n, n : 2 * n]
        total += amp
        amp *= 0.6
    out /= total
    return np.clip(out / (3.0 * out.std() + 1e-6), -1.0, 1.0)


def _jitter(rng: np.random.Generator, rgb: tuple[float, float, float], amount: float) -> np.ndarray:
    """A colour with independent per-channel jitter (multiplicative), clipped to 0..255."""
    c = np.asarray(rgb, np.float32) * (1.0 + amount * rng.uniform(-1, 1, 3).astype(np.float32))
    return np.clip(c, 0, 255)


def _mix(a: np.ndarray, b: np.ndarray, t: float) -> np.ndarray:
    return (1.0 - t) * np.asarray(a, np.float32) + t * np.asarray(b, np.float32)


def _noise1d(rng: np.random.Generator, n: int, cells: int, k: int) -> np.ndarray:
    """``k`` independent smooth 1-D noises of length n with about ``cells`` bumps, as (n, k)."""
    g = rng.standard_normal((k, max(cells, 2))).astype(np.float32)
    return np.ascontiguousarray(cv2.resize(g, (n, k), interpolation=cv2.INTER_CUBIC).T)


def _wrap_blur(img: np.ndarray, kx: int, kz: int) -> np.ndarray:
    """Box blur that wraps around vertically (the ground texture repeats along the street)."""
    if kx <= 1 and kz <= 1:
        return img
    n = img.shape[0]
    big = np.concatenate([img, img, img], axis=0)
    return cv2.blur(big, (max(kx, 1), max(kz, 1)), borderType=cv2.BORDER_REPLICATE)[n : 2 * n]


_CAR_COLOURS = np.array(
    [
        (235, 235, 232),
        (25, 25, 28),
        (160, 163, 168),
        (95, 98, 104),
        (40, 55, 95),
        (150, 25, 30),
        (30, 70, 45),
        (190, 190, 180),
        (110, 20, 25),
        (70, 110, 160),
        (200, 160, 40),
        (120, 90, 60),
    ],
    np.float32,
)
