"""The renderer: one scene at one output size. Sky and skyline, ground, facade planes
and objects far to near (anti-aliased into the image, hard-edged into the label map),
then the camera: optics blur, tone curve, vignetting, sensor grain."""

from __future__ import annotations

import math

import cv2
import numpy as np

from tdnet_cli.data.synth.atlas import _VARIANTS, _Atlas
from tdnet_cli.data.synth.billboards import (
    _Billboard,
    _draw_lamp,
    _draw_light,
    _draw_parked,
    _draw_person,
    _draw_ridden,
    _draw_sign,
    _draw_tree,
)
from tdnet_cli.data.synth.ground import _Ground
from tdnet_cli.data.synth.labels import BUILDING, EGO, SKY, STATIC, VEG, SynthFrame
from tdnet_cli.data.synth.scene import _Scene
from tdnet_cli.data.synth.textures import _NOISE_N, _mix, _tile_noise
from tdnet_cli.data.synth.vehicles import _BOXES, _Vehicles
from tdnet_cli.data.synth.world import (
    _BUILDING,
    _FENCE,
    _HEDGE,
    _KIND_LABEL,
    _NEAR,
    _NONE,
    _TREELINE,
    _Actor,
    _Lots,
)


class _Renderer(_Ground, _Vehicles):
    """Renders a ``_Scene`` at one image size. Pixel centres are at integer coordinates."""

    def __init__(self, scene: _Scene, h: int, w: int) -> None:
        self.s, self.h, self.w = scene, h, w
        st = scene.style
        rng = scene.r_render
        self.rng = rng
        self.f = scene.focal * w
        self.cx = (w - 1) / 2 + scene.cx_off * w
        self.rows = np.arange(h, dtype=np.float32)
        self.cols = np.arange(w, dtype=np.float32)
        self.aa = cv2.LINE_AA
        self.haze = tuple(float(c) for c in st.haze)
        self.fog = 0.0
        self._init_sky(rng)
        self._init_ground(rng)
        glass = (np.array([40, 50, 60], np.float32) + 0.45 * st.sky_horizon).astype(np.float32)
        self.glass = glass
        ry = min(max(40.0 / w, 0.025), 0.25)
        lit_r = st.lit if st.sun > 0 else st.shaded
        lit_l = st.shaded if st.sun > 0 else st.lit
        self.lit_side = {1: lit_r, -1: lit_l}
        self.atlas = {
            "back_r": _Atlas(scene.back_lots_r, lit_r, ry, rng, glass),
            "back_l": _Atlas(scene.back_lots_l, lit_l, ry, rng, glass),
            "front_r": _Atlas(scene.front_lots_r, lit_r, ry, rng, glass),
            "front_l": _Atlas(scene.front_lots_l, lit_l, ry, rng, glass),
        }
        self._init_camera(rng)

    # ---- per-sequence precomputation -------------------------------------------------
    def _init_sky(self, rng: np.random.Generator) -> None:
        s, st, h, w = self.s, self.s.style, self.h, self.w
        pad_y, pad_x = int(0.05 * h) + 2, int(0.06 * w) + 2
        self.pad_y, self.pad_x = pad_y, pad_x
        self.hor0 = s.horizon * h - 0.5
        ys = np.arange(-pad_y, h + pad_y, dtype=np.float32)[:, None]
        xs = np.arange(-pad_x, w + pad_x, dtype=np.float32)[None, :] - self.cx
        el = (self.hor0 - ys) / self.f  # elevation above the horizon (radians, roughly)
        t = np.clip(el / 0.45, 0, 1) ** 0.7
        sky = (1 - t)[..., None] * st.sky_horizon + t[..., None] * st.sky_top
        noise = _tile_noise(rng)
        cl = noise[
            (np.clip(el, 0.001, None) * 90).astype(np.int32) % _NOISE_N,
            ((xs / self.f) * 40 / np.clip(el + 0.08, 0.05, None)).astype(np.int32) % _NOISE_N,
        ]
        cloud = np.clip((cl + 0.2) * 2.0, 0, 1) * st.clouds * np.clip(el * 8, 0, 1)
        white = np.array([235, 235, 238], np.float32) * (0.8 if st.weather != "sunny" else 1.0)
        sky = sky * (1 - cloud[..., None]) + white * cloud[..., None]
        self.sky = np.clip(sky, 0, 255).astype(np.uint8)
        # Distant skyline: a silhouette a little above the horizon, across the panorama.
        n = w + 2 * pad_x
        k = max(8, n // 24)
        rep = int(math.ceil(n / k))
        prof = np.repeat(rng.uniform(0.005, 0.04, k).astype(np.float32), rep)[:n]
        veg = np.repeat(rng.random(k) < 0.4, rep)[:n]
        self.skyline_h = np.where(veg, prof * 0.6, prof) * self.f
        self.skyline_lab = np.where(veg, VEG, BUILDING).astype(np.int32)
        tree_c = _mix(st.haze, (70, 100, 60), 0.45)
        house_c = _mix(st.haze, (120, 120, 125), 0.45)
        self.skyline_col = np.where(veg[:, None], tree_c[None, :], house_c[None, :]).astype(np.uint8)

    def _init_camera(self, rng: np.random.Generator) -> None:
        st, h, w = self.s.style, self.h, self.w
        # Ego bonnet: a shallow arc at the bottom, fixed to the camera.
        bh = float(rng.uniform(0.1, 0.17)) * h
        xsn = (self.cols + 0.5) / w * 2 - 1
        top = h - bh * (1 - 0.55 * xsn**2)
        b_top = int(max(0, math.floor(top.min())))
        self.bonnet_top = b_top
        self.bonnet_m = self.rows[b_top:, None] >= top[None, :]
        yy = np.clip((self.rows[b_top:, None] - top[None, :]) / max(bh, 1.0), 0, None)
        shade = 0.55 + 0.35 * np.exp(-yy * 6) + 0.1 * (1 - xsn[None, :] ** 2)
        bon = st.bonnet[None, None, :] * shade[..., None] + 0.35 * np.exp(-yy * 10)[..., None] * st.sky_horizon
        self.bonnet_rgb = np.clip(bon, 0, 255).astype(np.uint8)
        # Tone curve (exposure, white balance, gamma, contrast) as one per-channel LUT.
        x = np.arange(256, dtype=np.float32) / 255.0
        lut = np.empty((256, 1, 3), np.uint8)
        for c in range(3):
            y = np.clip(x * st.exposure * st.white[c], 0, 1) ** st.gamma
            lut[:, 0, c] = np.round(np.clip(0.5 + (y - 0.5) * st.contrast, 0, 1) * 255).astype(np.uint8)
        self.lut = lut
        rr = ((self.rows[:, None] - h / 2) / (h / 2)) ** 2 + ((self.cols[None, :] - w / 2) / (w / 2)) ** 2
        vig = 1.0 - float(rng.uniform(0.1, 0.3)) * np.clip(rr / 2, 0, 1)
        self.vignette = cv2.merge([np.round(vig * 255).astype(np.uint8)] * 3)
        g = rng.normal(0, st.grain, (h + 16, w + 16, 3)).astype(np.float32)
        self.grain_pos = np.clip(g, 0, 255).astype(np.uint8)
        self.grain_neg = np.clip(-g, 0, 255).astype(np.uint8)

    # ---- per frame -------------------------------------------------------------------
    def render(self, t: float) -> SynthFrame:
        s, h, w = self.s, self.h, self.w
        cam_x, cam_z, yaw, hor = s.camera(t)
        self.cam = (cam_x, cam_z)
        self.cos, self.sin = math.cos(yaw), math.sin(yaw)
        self.cy = hor * h - 0.5
        self.t = t
        self.u = (self.cols - self.cx) / self.f

        dy = int(round(self.cy - self.hor0))
        dx = int(round(self.f * (yaw - s.yaw0)))
        y0 = min(max(self.pad_y - dy, 0), 2 * self.pad_y)
        x0 = min(max(self.pad_x + dx, 0), 2 * self.pad_x)
        self.img = img = self.sky[y0 : y0 + h, x0 : x0 + w].copy()
        self.lab = lab = np.full((h, w), SKY, np.int32)
        self._skyline(x0)
        self._ground()
        self._plane("back_r", s.back_r, s.back_lots_r)
        self._plane("back_l", s.back_l, s.back_lots_l)
        actors = self._visible()
        for zc, a in actors:  # trees in the strip behind the walls and fences
            if a.p.get("behind"):
                self._draw(a, zc)
        self._plane("front_r", s.front_r, s.front_lots_r)
        self._plane("front_l", s.front_l, s.front_lots_l)
        for zc, a in actors:
            if not a.p.get("behind"):
                self._draw(a, zc)
        bt = self.bonnet_top
        np.copyto(img[bt:], self.bonnet_rgb, where=self.bonnet_m[..., None])
        lab[bt:][self.bonnet_m] = EGO
        # The camera: optics blur, tone curve, vignetting, sensor grain.
        img = cv2.GaussianBlur(img, (3, 3), 0.65)
        img = cv2.LUT(img, self.lut)
        img = cv2.multiply(img, self.vignette, scale=1.0 / 255.0)
        oy, ox = (int(v) for v in self.rng.integers(0, 16, 2))
        img = cv2.add(img, self.grain_pos[oy : oy + h, ox : ox + w])
        img = cv2.subtract(img, self.grain_neg[15 - oy : 15 - oy + h, 15 - ox : 15 - ox + w])
        label_ids = np.where(lab >= 1000, lab // 1000, lab).astype(np.uint8)
        return SynthFrame(img, label_ids, lab)

    def _blend_haze(self, band: np.ndarray, a: np.ndarray, axis: int) -> None:
        """In place: band = band * (1 - a) + haze * a, with a per row (axis 0) or column (axis 1)."""
        shape = (-1, 1, 1) if axis == 0 else (1, -1, 1)
        a = np.clip(a, 0, 1).astype(np.float32).reshape(shape)
        keep = np.empty(band.shape, np.uint8)
        keep[:] = np.round((1 - a) * 255).astype(np.uint8)
        add = np.empty(band.shape, np.uint8)
        add[:] = np.round(a * np.asarray(self.haze, np.float32)).astype(np.uint8)
        cv2.multiply(band, keep, dst=band, scale=1.0 / 255.0)
        cv2.add(band, add, dst=band)

    # ---- far background --------------------------------------------------------------
    def _skyline(self, x0: int) -> None:
        hh = self.skyline_h[x0 : x0 + self.w]
        top = self.cy - hh
        r0 = max(0, int(math.floor(top.min())))
        r1 = min(self.h, int(math.floor(self.cy)) + 1)
        if r1 <= r0:
            return
        m = self.rows[r0:r1, None] >= top[None, :]
        self.lab[r0:r1] = np.where(m, self.skyline_lab[x0 : x0 + self.w][None, :], self.lab[r0:r1])
        np.copyto(self.img[r0:r1], self.skyline_col[x0 : x0 + self.w][None, :, :], where=m[..., None])

    # ---- facade planes ---------------------------------------------------------------
    def _plane(self, name: str, xplane: float, lots: _Lots) -> None:
        s, f = self.s, self.f
        atlas = self.atlas[name]
        xr = xplane - self.cam[0]
        den = self.u * self.cos + self.sin
        with np.errstate(divide="ignore", invalid="ignore"):
            tcol = xr / den  # ray length (camera z) to the plane, per column
        ok = np.isfinite(tcol) & (tcol > 0.5)
        idx = np.flatnonzero(ok)
        if idx.size == 0:
            return
        c0, c1 = int(idx[0]), int(idx[-1]) + 1
        tcol = tcol[c0:c1]
        zr = tcol * (self.cos - self.u[c0:c1] * self.sin)
        zw = zr + self.cam[1]
        li = np.clip(np.searchsorted(lots.z, zw, side="right") - 1, 0, len(lots.z) - 1)
        kind = lots.kind[li]
        p = lots.p[li]
        height = lots.height[li]
        wavy = (kind == _TREELINE) | (kind == _HEDGE)
        height = np.where(
            wavy, height * (1 + 0.12 * np.sin(zw * 0.9 + p[:, 0]) + 0.06 * np.sin(zw * 2.7 + p[:, 1])), height
        )
        drawn = (kind != _NONE) & (zr > 1.0)
        if not drawn.any():
            return
        top = self.cy + f * (s.hc - height) / tcol
        bot = self.cy + f * s.hc / tcol
        r0 = max(0, int(math.floor(top[drawn].min())))
        r1 = min(self.h, int(math.ceil(bot[drawn].max())) + 1)
        if r1 <= r0:
            return
        # Which atlas column each image column samples.
        V = _VARIANTS
        bld, fen = kind == _BUILDING, kind == _FENCE
        pitch = np.where(bld | fen, p[:, 0], np.where(wavy, 0.15, 0.35))  # leaves vary faster than stone
        pos = (zw - lots.z[li]) / pitch
        cell = np.floor(pos)
        fr = pos - cell
        is_win = np.where(bld, np.abs(fr - 0.5) < p[:, 1] / 2, fen & (fr > p[:, 1]))
        hsh = ((cell.astype(np.int64) * 2654435761) >> 11) & 0xFFFF
        sub = np.where(bld | fen, np.where(is_win, V + hsh % V, hsh % V), hsh % (2 * V))
        step = np.abs(np.gradient(zw)) if zw.size > 1 else np.zeros_like(zw)
        sub = np.where(step > 0.5 * pitch, 2 * V, sub)  # columns wider than half a window: the average
        level = np.searchsorted(np.array([1.5, 3.0, 6.0]), tcol / (f * atlas.ry))
        ax = (level * atlas.ncols + li * _Atlas.CPL + sub).astype(np.float32)
        rows = self.rows[r0:r1] - np.float32(self.cy)
        map_x = np.empty((r1 - r0, c1 - c0), np.float32)
        map_x[:] = ax
        map_y = (rows[:, None] * (tcol / (f * atlas.ry))[None, :] + (atlas.hmax - s.hc) / atlas.ry).astype(np.float32)
        band = cv2.remap(atlas.img, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        self._blend_haze(band, 1.0 - np.exp(-zr / s.style.haze_dist), axis=1)
        rr = self.rows[r0:r1, None]
        inside = (rr >= top[None, :]) & (rr < bot[None, :]) & drawn[None, :]
        lab = self.lab[r0:r1, c0:c1]
        lab[...] = np.where(inside, _KIND_LABEL[kind][None, :], lab)
        np.copyto(self.img[r0:r1, c0:c1], band, where=inside[..., None])

    # ---- objects ---------------------------------------------------------------------
    def _visible(self) -> list[tuple[float, _Actor]]:
        """Actors in front of the camera and roughly in view, far to near."""
        out = []
        cx, cz = self.cam
        t, c, sn = self.t, self.cos, self.sin
        half = 0.5 * self.w / self.f + 0.1
        for a in self.s.actors:
            xr = a.x + a.vx * t - cx
            zr = a.z + a.vz * t - cz
            length = a.size[2] if a.kind in _BOXES else 0.0
            if zr + length < 1.0 or zr > 300.0:
                continue
            zc = xr * sn + max(zr, 1.0) * c
            if zc <= 0.5:
                continue
            if abs(xr * c - zr * sn) > (half * zc + 6.0 + length * half):
                continue
            out.append((zc, a))
        out.sort(key=lambda q: -q[0])
        return out

    def _project(self, pts: list[tuple[float, float, float]]) -> np.ndarray | None:
        """A polygon of camera-relative world points (x, height, z) -> pixel coordinates,
        clipped against the near plane; None if nothing is in front of the camera."""
        c, sn, f, cx, cy, hc = self.cos, self.sin, self.f, self.cx, self.cy, self.s.hc
        cam = [(X * c - Z * sn, Y, X * sn + Z * c) for X, Y, Z in pts]
        if min(q[2] for q in cam) < _NEAR:
            out = []
            n = len(cam)
            for i in range(n):  # Sutherland-Hodgman against z = _NEAR
                p0, p1 = cam[i], cam[(i + 1) % n]
                in0, in1 = p0[2] >= _NEAR, p1[2] >= _NEAR
                if in0:
                    out.append(p0)
                if in0 != in1:
                    k = (_NEAR - p0[2]) / (p1[2] - p0[2])
                    out.append(tuple(p0[j] + k * (p1[j] - p0[j]) for j in range(3)))
            if len(out) < 3:
                return None
            cam = out
        return np.array([(cx + f * x / z, cy + f * (hc - y) / z) for x, y, z in cam])

    def _fill(self, pts: np.ndarray, colour, inst: int | None) -> None:
        """A convex polygon (pixel coords) into the image (anti-aliased) and the label map."""
        p = np.round(pts * 16).astype(np.int32)
        fog, hz = self.fog, self.haze
        r, g, b = float(colour[0]), float(colour[1]), float(colour[2])
        col = (
            min(255.0, r + (hz[0] - r) * fog),
            min(255.0, g + (hz[1] - g) * fog),
            min(255.0, b + (hz[2] - b) * fog),
        )
        cv2.fillConvexPoly(self.img, p, col, self.aa, 4)
        if inst is not None:
            cv2.fillConvexPoly(self.lab, p, int(inst), cv2.LINE_8, 4)

    def _disc(self, cxy: tuple[float, float], r: float, colour, inst: int | None) -> None:
        if abs(cxy[0]) > 1e5 or abs(cxy[1]) > 1e5:
            return
        c = (int(round(cxy[0] * 16)), int(round(cxy[1] * 16)))
        rr = max(int(round(r * 16)), 8)
        fog, hz = self.fog, self.haze
        col = tuple(min(255.0, float(colour[i]) + (hz[i] - float(colour[i])) * fog) for i in range(3))
        cv2.circle(self.img, c, rr, col, -1, self.aa, 4)
        if inst is not None:
            cv2.circle(self.lab, c, rr, int(inst), -1, cv2.LINE_8, 4)

    def _draw(self, a: _Actor, zc: float) -> None:
        self.fog = 1.0 - math.exp(-zc / self.s.style.haze_dist)
        k = a.kind
        if k in _BOXES:
            self._vehicle(a, zc)
            return
        # Billboards: a plane facing the camera at the actor's depth.
        xr = a.x + a.vx * self.t - self.cam[0]
        zr = a.z + a.vz * self.t - self.cam[1]
        xc = xr * self.cos - zr * self.sin
        sc = self.f / zc
        bb = _Billboard(self, self.cx + xc * sc, self.cy + self.s.hc * sc, sc)
        lit = self.s.style.lit
        if k == "person":
            _draw_person(bb, a, self.t, lit)
        elif k in ("bike", "moto"):
            _draw_ridden(bb, a, self.t, lit)
        elif k in ("bike_parked", "moto_parked"):
            _draw_parked(bb, a, lit)
        elif k == "tree":
            _draw_tree(bb, a, lit)
        elif k == "lamp":
            _draw_lamp(bb, a, lit)
        elif k == "light":
            _draw_light(bb, a, lit)
        elif k == "sign":
            _draw_sign(bb, a, lit)
        elif k == "bin":
            bb.quad(-0.3, 0.0, 0.3, 0.95, a.col * lit, STATIC)
