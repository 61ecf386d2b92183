"""The scene: a street, its camera path and its lighting, everything in metres and
independent of the output size (the traffic on it is placed by ``traffic._Traffic``)."""

from __future__ import annotations

import math

import numpy as np

from tdnet_cli.data import layout
from tdnet_cli.data.synth.labels import PARKING, RAIL, ROAD, SIDEWALK, TERRAIN
from tdnet_cli.data.synth.textures import _CAR_COLOURS, _jitter, _mix
from tdnet_cli.data.synth.traffic import _Traffic
from tdnet_cli.data.synth.world import (
    _ASPHALT,
    _BUILDING,
    _COBBLE,
    _FENCE,
    _GRASS,
    _GRAVEL,
    _HEDGE,
    _NONE,
    _PAVER,
    _TREELINE,
    _WALL,
    _Actor,
    _Lots,
    _Style,
)


class _Scene(_Traffic):
    """A street, its traffic and its lighting, drawn from one seed."""

    def __init__(self, seed: int, frames: int, fps: float) -> None:
        ss = np.random.SeedSequence(int(seed))
        r_cam, r_road, r_lots, r_act, r_style, self.r_render = (np.random.default_rng(s) for s in ss.spawn(6))
        self.fps = fps
        self.t_end = max(frames - 1, layout.ANNOTATED_INDEX) / fps
        # Objects the tests and users rely on (one of every class) are placed by where
        # they are at the annotated frame, so that frame shows all 19 classes.
        self.t_a = layout.ANNOTATED_INDEX / fps

        # Camera
        self.hc = float(r_cam.uniform(1.15, 1.4))
        self.focal = float(r_cam.uniform(1.02, 1.15))  # focal length / image width (Cityscapes: ~1.1)
        self.horizon = float(r_cam.uniform(0.40, 0.47))  # horizon row / image height
        self.speed = float(r_cam.uniform(7.0, 13.0))
        self.acc = float(r_cam.uniform(-0.6, 0.6))
        self.sway = float(r_cam.uniform(0.05, 0.35))
        self.sway_w = float(r_cam.uniform(0.6, 1.8))
        self.sway_ph = float(r_cam.uniform(0, 2 * math.pi))
        self.yaw0 = float(r_cam.uniform(-0.015, 0.015))
        self.bump = float(r_cam.uniform(0.0, 0.004))
        self.bump_w = float(r_cam.uniform(4.0, 9.0))
        self.bump_ph = float(r_cam.uniform(0, 2 * math.pi))
        self.cx_off = float(r_cam.uniform(-0.01, 0.01))

        self._build_road(r_road)
        self.style = self._build_style(r_style)
        self._build_lots(r_lots)
        self.actors: list[_Actor] = []
        self._counts: dict[int, int] = {}
        self._build_actors(r_act)

    # ---- camera ----------------------------------------------------------------------
    def camera(self, t: float) -> tuple[float, float, float, float]:
        """(x, z, yaw, horizon fraction) of the camera at time t seconds."""
        z = self.speed * t + 0.5 * self.acc * t * t
        ph = self.sway_w * t + self.sway_ph
        x = self.lane_x + self.sway * math.sin(ph)
        # Heading follows the lateral drift, as a car's does.
        yaw = self.yaw0 + self.sway * self.sway_w * math.cos(ph) / max(self.speed, 1.0)
        hor = self.horizon + self.bump * math.sin(self.bump_w * t + self.bump_ph)
        return x, z, yaw, hor

    # ---- road cross-section ----------------------------------------------------------
    def _build_road(self, rng: np.random.Generator) -> None:
        lw = float(rng.uniform(3.0, 3.5))
        nr, nl = int(rng.integers(1, 3)), int(rng.integers(1, 3))
        med = float(rng.uniform(2.8, 3.4))  # tram bed between the two directions
        self.bed_grass = bool(rng.random() < 0.4)
        r0, r1 = med / 2, med / 2 + nr * lw  # right carriageway
        l1, l0 = -med / 2, -med / 2 - nl * lw  # left carriageway
        ego_lane = int(rng.integers(0, nr))  # 0 = next to the median
        self.lane_x = r0 + (ego_lane + 0.5) * lw
        self.ego_lane = ego_lane
        self.right_lanes = [r0 + (i + 0.5) * lw for i in range(nr)]
        self.left_lanes = [l1 - (i + 0.5) * lw for i in range(nl)]
        parking = bool(rng.random() < 0.4)
        # A grass verge on our side always (terrain in every annotated frame), the other side
        # sometimes.
        verge_l = bool(rng.random() < 0.5)
        sw_l, sw_r = float(rng.uniform(2.0, 4.5)), float(rng.uniform(2.0, 4.5))
        vw_l, vw_r = float(rng.uniform(0.9, 2.2)), float(rng.uniform(0.9, 2.2))
        tw_l, tw_r = float(rng.uniform(0.8, 5.0)), float(rng.uniform(0.8, 5.0))
        # Zones from left to right: (start x, label, material); each runs to the next start.
        # Left of the carriageway, going outwards: [verge], sidewalk, then terrain up to
        # the building plane and beyond (the facades hide most of it).
        xl = l0 - vw_l if verge_l else l0
        self.verge_l = (xl, l0) if verge_l else None
        self.sidewalk_l = (xl - sw_l, xl)
        self.front_l = xl - sw_l  # front facade plane (walls, fences, hedges)
        self.back_l = self.front_l - tw_l  # building plane
        zones: list[tuple[float, int, int]] = [(-1e9, TERRAIN, _GRASS), (self.sidewalk_l[0], SIDEWALK, _PAVER)]
        if verge_l:
            zones.append((xl, TERRAIN, _GRASS))
        zones.append((l0, ROAD, _ASPHALT))
        zones.append((l1, RAIL, _GRASS if self.bed_grass else _GRAVEL))
        zones.append((r0, ROAD, _ASPHALT))
        xr = r1
        self.parking_x = None
        if parking:
            zones.append((xr, PARKING, _COBBLE))
            self.parking_x = xr + 1.1
            xr += 2.2
        zones.append((xr, TERRAIN, _GRASS))
        self.verge_r = (xr, xr + vw_r)
        xr += vw_r
        zones.append((xr, SIDEWALK, _PAVER))
        self.sidewalk_r = (xr, xr + sw_r)
        xr += sw_r
        self.front_r = xr
        zones.append((xr, TERRAIN, _GRASS))
        self.back_r = xr + tw_r
        self.strip_r = (self.front_r, self.back_r)
        self.strip_l = (self.back_l, self.front_l)
        self.road_r, self.road_l = (r0, r1), (l0, l1)
        self.zone_x = np.array([z[0] for z in zones], np.float64)
        self.zone_label = np.array([z[1] for z in zones], np.int32)
        self.zone_mat = np.array([z[2] for z in zones], np.int32)
        self._build_lines(rng, lw, parking)

    def _build_lines(self, rng: np.random.Generator, lw: float, parking: bool) -> None:
        """The painted lines and the rails of the cross-section built by ``_build_road``."""
        (l0, l1), (r0, r1) = self.road_l, self.road_r
        nl, nr = len(self.left_lanes), len(self.right_lanes)
        # Lane lines: (x, half width, dash period, dash duty, is rail). Solid lines: duty 1.
        lines: list[tuple[float, float, float, float, float]] = []
        dash_p, dash_d = float(rng.uniform(9.0, 12.0)), float(rng.uniform(0.3, 0.45))
        self.dash_period = dash_p
        lines.append((l0 + 0.25, 0.06, 1.0, 1.0, 0.0))
        for i in range(1, nl):
            lines.append((l1 - i * lw, 0.06, dash_p, dash_d, 0.0))
        lines.append((l1 - 0.15, 0.07, 1.0, 1.0, 0.0))
        for c in (-0.72, 0.72):  # rails of the tram track
            lines.append((c, 0.04, 1.0, 1.0, 1.0))
        lines.append((r0 + 0.15, 0.07, 1.0, 1.0, 0.0))
        for i in range(1, nr):
            lines.append((r0 + i * lw, 0.06, dash_p, dash_d, 0.0))
        if not parking:
            lines.append((r1 - 0.25, 0.06, 1.0, 1.0, 0.0))
        lines.sort()
        arr = np.array(lines, np.float64)
        self.line_x = arr[:, 0]
        self.line_hw = arr[:, 1].astype(np.float32)
        self.line_period = arr[:, 2]
        self.line_duty = arr[:, 3]
        self.line_rail = arr[:, 4].astype(np.float32)

    # ---- colours and light -----------------------------------------------------------
    def _build_style(self, rng: np.random.Generator) -> _Style:
        weather = str(rng.choice(["sunny", "overcast", "dusk"], p=[0.45, 0.4, 0.15]))
        if weather == "sunny":
            top, hor = _jitter(rng, (70, 125, 200), 0.12), _jitter(rng, (185, 210, 235), 0.06)
            lit, shaded, clouds = 1.05, float(rng.uniform(0.55, 0.7)), float(rng.uniform(0.0, 0.5))
        elif weather == "overcast":
            g = float(rng.uniform(150, 205))
            top, hor = _jitter(rng, (g - 10, g - 5, g + 5), 0.04), _jitter(rng, (g + 25, g + 25, g + 28), 0.03)
            lit, shaded, clouds = 0.95, float(rng.uniform(0.8, 0.9)), float(rng.uniform(0.4, 1.0))
        else:
            top, hor = _jitter(rng, (60, 70, 125), 0.15), _jitter(rng, (235, 165, 115), 0.08)
            lit, shaded, clouds = 0.9, float(rng.uniform(0.6, 0.75)), float(rng.uniform(0.1, 0.6))
        asphalt = float(rng.uniform(70, 115))
        paver = _jitter(rng, (150, 145, 140) if rng.random() < 0.6 else (160, 120, 110), 0.12)
        grass = _jitter(rng, (95, 125, 55), 0.2)
        gravel = _jitter(rng, (130, 120, 105), 0.1)
        mats = np.stack(
            [
                _jitter(rng, (asphalt, asphalt, asphalt * 1.03), 0.04),
                paver,
                grass,
                gravel,
                _jitter(rng, (asphalt * 1.25, asphalt * 1.2, asphalt * 1.15), 0.08),
            ]
        )
        return _Style(
            weather=weather,
            sky_top=top,
            sky_horizon=hor,
            haze=_mix(hor, (200, 200, 200), 0.3),
            haze_dist=float(rng.uniform(150, 400)),
            sun=1.0 if rng.random() < 0.5 else -1.0,
            lit=lit,
            shaded=shaded,
            materials=mats.astype(np.float32),
            marking=_jitter(rng, (225, 225, 220), 0.05),
            exposure=float(rng.uniform(0.85, 1.15)) * (0.85 if weather == "dusk" else 1.0),
            gamma=float(rng.uniform(0.85, 1.15)),
            white=(1.0 + rng.uniform(-0.06, 0.06, 3)).astype(np.float32),
            contrast=float(rng.uniform(0.85, 1.15)),
            grain=float(rng.uniform(1.5, 5.0)),
            bonnet=_CAR_COLOURS[int(rng.integers(len(_CAR_COLOURS)))] * 0.8,
            clouds=clouds,
        )

    # ---- facades ---------------------------------------------------------------------
    def _lot_row(self, rng: np.random.Generator, kind: int) -> tuple[float, np.ndarray, np.ndarray]:
        """Height, colour and parameters of one lot of the given kind."""
        p = np.zeros(4, np.float32)
        if kind == _BUILDING:
            h = float(rng.uniform(7.0, 28.0))
            if rng.random() < 0.7:
                col = _jitter(rng, (200, 190, 170), 0.18)  # plaster
            else:
                col = _jitter(rng, (150, 85, 65) if rng.random() < 0.5 else (110, 110, 115), 0.15)
            p[:] = (rng.uniform(2.2, 3.6), rng.uniform(0.35, 0.6), rng.uniform(2.8, 3.4), rng.uniform(3.2, 4.5))
        elif kind == _TREELINE:
            h = float(rng.uniform(5.0, 11.0))
            col = _jitter(rng, (70, 100, 45), 0.25)
            p[:2] = rng.uniform(0, 6.28, 2)
        elif kind == _WALL:
            h = float(rng.uniform(0.9, 2.6))
            col = _jitter(rng, (165, 160, 150) if rng.random() < 0.6 else (150, 90, 70), 0.15)
            p[0] = rng.uniform(0.2, 0.35)  # course height
        elif kind == _FENCE:
            h = float(rng.uniform(1.0, 2.0))
            col = _jitter(rng, [(120, 125, 120), (60, 85, 65), (130, 100, 70)][int(rng.integers(3))], 0.15)
            p[0] = rng.uniform(0.1, 0.25)  # slat pitch
            p[1] = rng.uniform(0.3, 0.7)  # slat fraction
        elif kind == _HEDGE:
            h = float(rng.uniform(0.8, 1.8))
            col = _jitter(rng, (60, 95, 40), 0.25)
            p[:2] = rng.uniform(0, 6.28, 2)
        else:
            h, col = 0.0, np.zeros(3, np.float32)
        return h, col.astype(np.float32), p

    def _lots(
        self,
        rng: np.random.Generator,
        kinds: list[int],
        probs: list[float],
        length: tuple[float, float],
        forced: list[tuple[float, float, int]],
    ) -> _Lots:
        """Random lots from behind the camera to well past the last frame, with forced spans."""
        z, z_end = -40.0, self.speed * self.t_end + 0.5 * abs(self.acc) * self.t_end**2 + 400.0
        spans: list[tuple[float, int]] = []
        while z < z_end:
            spans.append((z, int(rng.choice(kinds, p=probs))))
            z += float(rng.uniform(*length))
        for lo, hi, kind in forced:  # cut [lo, hi) out and give it the forced kind
            after = [s for s in spans if s[0] <= hi]
            resume = after[-1][1] if after else _NONE
            spans = [s for s in spans if s[0] < lo or s[0] > hi] + [(lo, kind), (hi, resume)]
            spans.sort()
        n = len(spans)
        out = _Lots(
            z=np.array([s[0] for s in spans], np.float64),
            kind=np.array([s[1] for s in spans], np.int32),
            height=np.zeros(n, np.float32),
            col=np.zeros((n, 3), np.float32),
            p=np.zeros((n, 4), np.float32),
        )
        for i, (_z, kind) in enumerate(spans):
            out.height[i], out.col[i], out.p[i] = self._lot_row(rng, kind)
        return out

    def _build_lots(self, rng: np.random.Generator) -> None:
        za = self.camera(self.t_a)[1]
        # At the annotated frame: a building on each side and, on our side, a wall next to
        # a fence, just beyond the edge of the field of view, so they are neither cut off
        # nor tiny (the far side is easily hidden by oncoming traffic).
        d0 = self.d_view(self.front_r) + float(rng.uniform(1.0, 4.0))
        l1, l2 = float(rng.uniform(8.0, 12.0)), float(rng.uniform(8.0, 12.0))
        first, second = (_WALL, _FENCE) if rng.random() < 0.5 else (_FENCE, _WALL)
        forced = [(za + d0, za + d0 + l1, first), (za + d0 + l1, za + d0 + l1 + l2, second)]
        self.clear_z = (za + d0, za + d0 + l1 + l2)
        br, bl = self.d_view(self.back_r), self.d_view(self.back_l)
        self.back_lots_r = self._lots(
            rng, [_BUILDING, _TREELINE], [0.78, 0.22], (9.0, 32.0), [(za + br, za + br + 40.0, _BUILDING)]
        )
        self.back_lots_l = self._lots(
            rng, [_BUILDING, _TREELINE], [0.78, 0.22], (9.0, 32.0), [(za + bl, za + bl + 40.0, _BUILDING)]
        )
        front = [_NONE, _WALL, _FENCE, _HEDGE]
        probs = [0.4, 0.2, 0.25, 0.15]
        self.front_lots_r = self._lots(rng, front, probs, (6.0, 25.0), forced)
        self.front_lots_l = self._lots(rng, front, probs, (6.0, 25.0), [])

    def d_view(self, x: float) -> float:
        """Depth (m) from which something at world x enters the field of view, from our lane."""
        return abs(x - self.lane_x) * 2.0 * self.focal * 1.1 + 1.0
