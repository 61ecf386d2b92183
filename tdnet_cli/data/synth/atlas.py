"""Facade textures: per-lot vertical profiles of buildings, tree lines, walls, fences and
hedges, resampled column by column with ``cv2.remap`` by the renderer."""

from __future__ import annotations

import math

import cv2
import numpy as np

from tdnet_cli.data.synth.textures import _noise1d
from tdnet_cli.data.synth.world import _BUILDING, _HEDGE, _NONE, _TREELINE, _WALL, _Lots

_VARIANTS = 6  # texture variants per facade lot (see _Atlas)


class _Atlas:
    """Vertical texture profiles of the lots of one facade plane, for ``cv2.remap``.

    A vertical plane seen by a pinhole camera shows, in every image column, one vertical
    line of the facade, scaled linearly. So each column can be drawn by resampling a 1-D
    profile (colour as a function of height): the atlas holds, per lot, ``_VARIANTS``
    profiles of the wall between windows, as many through a window column, and one
    average (for far columns where windows are below a pixel), each at four vertical blur
    levels (a per-column mip-map against shimmering in the distance).
    """

    CPL = 2 * _VARIANTS + 1  # atlas columns per lot

    def __init__(self, lots: _Lots, lit: float, ry: float, rng: np.random.Generator, glass: np.ndarray) -> None:
        self.ry = ry
        self.hmax = float(max(lots.height.max() * 1.25, 1.0) + 0.5)
        ny = int(math.ceil(self.hmax / ry)) + 2
        Y = (self.hmax - np.arange(ny, dtype=np.float32) * ry)[:, None]  # row 0 is the top
        n, V = len(lots.z), _VARIANTS
        A = np.zeros((ny, n * self.CPL, 3), np.float32)
        ao = 1.0 - 0.3 * np.exp(-np.clip(Y, 0, None) * 1.5)  # darker near the ground
        for i in range(n):
            kind, H, col, p = int(lots.kind[i]), float(lots.height[i]), lots.col[i], lots.p[i]
            if kind == _NONE:
                continue
            noise = _noise1d(rng, ny, max(2, int(ny * ry / 0.6)), 2 * V)
            fine = _noise1d(rng, ny, max(2, int(ny * ry / 0.12)), 2 * V)
            blk = np.empty((ny, 2 * V, 3), np.float32)
            if kind == _BUILDING:
                _pitch, wf, fh, gf = (float(v) for v in p)
                shade = lit * ao * (1.0 + 0.025 * noise + 0.02 * fine)
                shade = shade * np.where(Y > H - 0.45, 0.72, 1.0) * np.where(Y < gf, 0.88, 1.0)
                blk[:] = col * shade[..., None]
                fy = ((Y - gf) / fh) % 1.0
                floor_no = np.floor((Y - gf) / fh).astype(np.int64)
                glass_rows = (fy > 0.3) & (fy < 0.8) & (Y > gf) & (Y < H - 0.8)
                sill = (fy > 0.26) & (fy <= 0.3) & (Y > gf) & (Y < H - 0.8)
                shop = (Y > 0.35) & (Y < gf - 0.45)
                for v in range(V):
                    bright = (0.22 + 0.5 * rng.random(int(H / fh) + 3)).astype(np.float32)
                    lvl = bright[np.clip(floor_no[:, 0], 0, len(bright) - 1)][:, None]
                    g = glass[None, :] * lvl
                    c = blk[:, V + v]
                    c[:] = np.where(glass_rows, g, c)
                    c[:] = np.where(sill, col * lit * 1.12, c)
                    c[:] = np.where(shop, glass[None, :] * 0.35, c)
                mixed = (1 - wf) * blk[:, :V].mean(1) + wf * blk[:, V:].mean(1)
            elif kind in (_TREELINE, _HEDGE):
                shade = lit * np.clip(0.55 + Y * 0.06, 0, 1.1) * (1.0 + 0.3 * noise + 0.25 * fine)
                blk[:] = col * shade[..., None]
                mixed = blk.mean(1)
            elif kind == _WALL:
                course = float(p[0])
                mortar = ((Y / course) % 1.0) < 0.12
                shade = lit * ao * (1.0 + 0.04 * noise + 0.03 * fine) * np.where(mortar | (Y > H - 0.12), 0.7, 1.0)
                blk[:] = col * shade[..., None]
                mixed = blk.mean(1)
            else:  # fence: slats (first half) and the gaps between them (second half)
                frac = float(p[1])
                shade = lit * ao * (1.0 + 0.08 * noise + 0.06 * fine)
                blk[:] = col * shade[..., None]
                rails = ((Y > H - 0.12) & (Y <= H)) | ((Y > 0.15) & (Y < 0.25))
                blk[:, V:] = np.where(rails[..., None], blk[:, V:], blk[:, V:] * 0.38)
                mixed = frac * blk[:, :V].mean(1) + (1 - frac) * blk[:, V:].mean(1)
            A[:, i * self.CPL : i * self.CPL + 2 * V] = blk
            A[:, i * self.CPL + 2 * V] = mixed
        A = np.clip(A, 0, 255).astype(np.uint8)
        self.ncols = A.shape[1]
        self.img = np.concatenate([A] + [cv2.blur(A, (1, k)) for k in (3, 6, 12)], axis=1)
