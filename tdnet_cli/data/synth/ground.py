"""The ground: a world-space texture that repeats along the street (one blur level per
depth band), drawn per frame as one homography (``cv2.warpPerspective``); its labels are
one convex polygon per zone, plus the zebra crossing and stop line (paint only).

``_Ground`` is a mixin of ``render._Renderer``.
"""

from __future__ import annotations

import itertools
import math

import cv2
import numpy as np

from tdnet_cli.data.synth.textures import _wrap_blur
from tdnet_cli.data.synth.world import _COBBLE, _PAVER

_GROUND_BANDS = (0.0, 9.0, 18.0, 35.0, 70.0, 140.0, 1e9)  # depth bands with their own texture blur


class _Ground:
    """Ground texture set-up and per-frame ground drawing of a ``_Renderer`` (mixin)."""

    def _init_ground(self, rng: np.random.Generator) -> None:
        """The ground as a texture in world coordinates (x across, z along, repeating in z)."""
        s, st = self.s, self.s.style
        rx = 0.03
        x0, x1 = s.back_l - 8.0, s.back_r + 8.0
        nx = int(math.ceil((x1 - x0) / rx)) + 1
        X = (x0 + np.arange(nx) * rx).astype(np.float64)
        period = s.dash_period * max(1, math.ceil(20.0 / s.dash_period))  # dashes tile the repeat
        nz = int(round(period / 0.05))
        rz = period / nz
        Z = np.arange(nz) * rz
        zone = np.searchsorted(s.zone_x, X, side="right") - 1
        mat = s.zone_mat[zone]
        noise = np.zeros((nz, nx), np.float32)
        for fs, a in ((3.2, 1.0), (1.6, 0.7), (0.8, 0.5), (0.3, 0.35), (0.12, 0.25)):
            cz, cxn = max(2, int(round(period / fs))), max(2, int(round((x1 - x0) / fs)))
            g = rng.standard_normal((cz, cxn)).astype(np.float32)
            big = cv2.resize(np.concatenate([g, g, g], axis=0), (nx, 3 * nz), interpolation=cv2.INTER_CUBIC)
            noise += a * big[nz : 2 * nz]
        noise /= 3.0 * noise.std() + 1e-6
        amp = np.array([0.12, 0.10, 0.35, 0.3, 0.18], np.float32)[mat]
        shade = 1.0 + amp[None, :] * np.clip(noise, -1, 1)
        jz = period / max(1, round(period / 0.4))
        joints = (((X / 0.4) % 1.0) < 0.08)[None, :] | (((Z / jz) % 1.0) < 0.1)[:, None]
        paved = ((mat == _PAVER) | (mat == _COBBLE))[None, :]
        shade = shade * np.where(paved & joints, np.float32(0.78), np.float32(1.0))
        col = st.materials[mat][None, :, :] * shade[..., None]
        rail_col = np.array([150, 150, 155], np.float32)
        for x, hw, per, duty, is_rail in zip(s.line_x, s.line_hw, s.line_period, s.line_duty, s.line_rail):
            c0 = max(0, int((x - hw - x0) / rx) - 2)
            c1 = min(nx, int((x + hw - x0) / rx) + 3)
            cov_x = np.clip((hw - np.abs(X[c0:c1] - x)) / rx + 0.5, 0, 1).astype(np.float32)
            on_z = ((((Z / per) % 1.0) < duty) if duty < 1 else np.ones(nz, bool)).astype(np.float32)
            cov = (on_z[:, None] * cov_x[None, :])[..., None]
            paint = rail_col if is_rail else st.marking
            col[:, c0:c1] += (paint - col[:, c0:c1]) * cov
        g0 = np.clip(col, 0, 255).astype(np.uint8)
        self.g_x0, self.g_rx, self.g_rz, self.g_period = x0, rx, rz, period
        # One texture per depth band, blurred to that band's pixel footprint, so far
        # markings and texture average out instead of flickering from frame to frame.
        levels = []
        for za, zb in itertools.pairwise(_GROUND_BANDS):
            zrep = min(zb, 2.5 * za if za > 0 else zb)
            fz = zrep * zrep / (self.f * s.hc)  # metres along the street per image row
            fx = zrep / self.f
            kz, kx = int(round(0.7 * fz / rz)), int(round(0.7 * fx / rx))
            if kz >= nz:  # footprint longer than the repeat: the average along z
                levels.append(_wrap_blur(g0, kx, 1).mean(axis=0, keepdims=True).astype(np.uint8))
            else:
                levels.append(_wrap_blur(g0, kx, kz))
        self.g_levels = levels

    # ---- ground ----------------------------------------------------------------------
    def _ground(self) -> None:
        s, h, w, f = self.s, self.h, self.w, self.f
        r0 = max(0, int(math.floor(self.cy)) + 1)
        if r0 >= h:
            return
        # Image pixel (x, y) -> ground texture coordinates is a homography.
        a = 1.0 / f
        c, sn, hc = self.cos, self.sin, s.hc
        zorg = math.floor(self.cam[1] / self.g_period) * self.g_period  # keeps texture coordinates small
        camz = self.cam[1] - zorg
        U = np.array([a, 0.0, -a * self.cx])
        Vr = np.array([0.0, a, -a * self.cy])
        one = np.array([0.0, 0.0, 1.0])
        num_x = hc * c * U + hc * sn * one + self.cam[0] * Vr
        num_z = hc * c * one - hc * sn * U + camz * Vr
        M = np.stack([(num_x - self.g_x0 * Vr) / self.g_rx, num_z / self.g_rz, Vr])
        rows_of = [h if za <= 0 else self.cy + f * hc / za for za in _GROUND_BANDS[:-1]]
        for k, tex in enumerate(self.g_levels):
            rb = min(h, int(math.ceil(rows_of[k])))
            ra = (
                max(r0, int(math.ceil(self.cy + f * hc / _GROUND_BANDS[k + 1])))
                if k + 1 < len(_GROUND_BANDS) - 1
                else r0
            )
            if rb <= ra:
                continue
            Mb = M @ np.array([[1.0, 0.0, 0.0], [0.0, 1.0, ra], [0.0, 0.0, 1.0]])
            cv2.warpPerspective(
                tex,
                Mb,
                (w, rb - ra),
                dst=self.img[ra:rb],
                flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                borderMode=cv2.BORDER_WRAP,
            )
        dist = hc * f / np.maximum(self.rows[r0:] - self.cy, 1e-3)
        self._blend_haze(self.img[r0:], 1.0 - np.exp(-dist / s.style.haze_dist), axis=0)
        # Labels: one convex polygon per ground zone.
        xs = np.clip(np.append(s.zone_x, 1e9), -150.0, 150.0) - self.cam[0]
        zn, zf = 0.5, 1e5
        for i, lab in enumerate(s.zone_label):
            pts = self._project([(xs[i], 0.0, zn), (xs[i + 1], 0.0, zn), (xs[i + 1], 0.0, zf), (xs[i], 0.0, zf)])
            if pts is not None:
                cv2.fillConvexPoly(self.lab, np.round(pts * 16).astype(np.int32), int(lab), cv2.LINE_8, 4)
        # Zebra crossing and stop line (paint: image only, labels stay road).
        dz = s.crossing_z - self.cam[1]
        if 1.0 < dz < 150.0:
            self.fog = 1.0 - math.exp(-dz / s.style.haze_dist)
            paint = s.style.marking
            for lo, hi in (s.road_l, s.road_r):
                x = lo + 0.3
                while x + 0.5 < hi - 0.2:
                    q = self._project(
                        [
                            (x - self.cam[0], 0.0, dz),
                            (x + 0.5 - self.cam[0], 0.0, dz),
                            (x + 0.5 - self.cam[0], 0.0, dz + 4.0),
                            (x - self.cam[0], 0.0, dz + 4.0),
                        ]
                    )
                    if q is not None:
                        self._fill(q, paint, None)
                    x += 1.0
            x0, x1 = s.road_r[0] - self.cam[0], s.road_r[1] - self.cam[0]
            q = self._project([(x0, 0.0, dz - 1.0), (x1, 0.0, dz - 1.0), (x1, 0.0, dz - 0.6), (x0, 0.0, dz - 0.6)])
            if q is not None:
                self._fill(q, paint, None)
