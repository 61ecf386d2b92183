"""Procedural driving scenes with exact Cityscapes labels, written in the Cityscapes layout.

A pinhole camera drives along a straight street. Everything that is a plane is drawn by
resampling a texture with OpenCV, so textures stay glued to the world and scroll with the
camera: the ground (road, markings, tram bed, verges, sidewalks) is one homography of a
world-space texture that repeats along the street (``cv2.warpPerspective``), and each row
of facades (buildings, tree lines, walls, fences, hedges) is, column by column, a scaled
vertical profile (``cv2.remap`` from a per-lot atlas). Everything else (vehicles as boxes;
people, bicycles, poles, lights, signs and trees as camera-facing billboards) is a handful
of convex polygons drawn far to near: anti-aliased into the image, hard-edged (LINE_8)
into the label map so labels stay clean. The ground's labels are polygons too.

The label map is kept as Cityscapes *instance ids* while drawing (label id, or
label id * 1000 + k for instance classes); label ids are derived from it at the end.

Everything random comes from one ``numpy.random.Generator`` seed per sequence (child
streams per part of the scene), so the same seed gives the same bytes. The scene is
defined in metres, independent of the output size: a seed rendered at 128x256 and at
1024x2048 shows the same street. Frame 19 of every snippet (the annotated one) shows all
19 evaluated classes by construction: that cast is placed where it is seen at that moment.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, NamedTuple

import cv2
import numpy as np

from tdnet_cli.data import layout
from tdnet_cli.data.cityscapes import LABELS
from tdnet_cli.errors import OutputExistsError, UsageError
from tdnet_cli.fileio import check_writable, write_png

__all__ = [
    "FPS",
    "TRAIN_CITIES",
    "VAL_CITIES",
    "SynthFrame",
    "SynthResult",
    "render_sequence",
    "sequence_seed",
    "generate_dataset",
    "label_color_lut",
]

FPS = 17.0  # Cityscapes snippets are recorded at 17 Hz
TRAIN_CITIES: tuple[str, ...] = ("synthburg", "synthdorf", "synthhafen")
VAL_CITIES: tuple[str, ...] = ("synthstadt",)
_CITIES = {"train": TRAIN_CITIES, "val": VAL_CITIES}
_SPLIT_CODE = {"train": 1, "val": 2}
MIN_SIZE = 32

_ID = {lab.name: lab.id for lab in LABELS}
EGO, STATIC, PARKING, RAIL = _ID["ego vehicle"], _ID["static"], _ID["parking"], _ID["rail track"]
ROAD, SIDEWALK, BUILDING, WALL, FENCE = _ID["road"], _ID["sidewalk"], _ID["building"], _ID["wall"], _ID["fence"]
POLE, LIGHT, SIGN, VEG, TERRAIN, SKY = (
    _ID["pole"], _ID["traffic light"], _ID["traffic sign"], _ID["vegetation"], _ID["terrain"], _ID["sky"]
)
PERSON, RIDER, CAR, TRUCK, BUS, TRAIN = _ID["person"], _ID["rider"], _ID["car"], _ID["truck"], _ID["bus"], _ID["train"]
MOTO, BIKE = _ID["motorcycle"], _ID["bicycle"]

# Facade lot kinds -> label id (index = kind code).
_NONE, _BUILDING, _TREELINE, _WALL, _FENCE, _HEDGE = range(6)
_KIND_LABEL = np.array([0, BUILDING, VEG, WALL, FENCE, VEG], dtype=np.int32)

# Ground materials.
_ASPHALT, _PAVER, _GRASS, _GRAVEL, _COBBLE = range(5)

_NOISE_N = 256  # texture tile size (power of two: coordinates wrap with & (N - 1))


class SynthFrame(NamedTuple):
    """One rendered frame: RGB image, Cityscapes label ids, Cityscapes instance ids."""

    rgb: np.ndarray  # (H, W, 3) uint8, RGB
    label_ids: np.ndarray  # (H, W) uint8
    instance_ids: np.ndarray  # (H, W) int32: label id, or label id * 1000 + k for instance classes


def label_color_lut() -> np.ndarray:
    """(256, 3) uint8 RGB: label id -> the Cityscapes colour (as in ``*_gtFine_color.png``)."""
    lut = np.zeros((256, 3), dtype=np.uint8)
    for lab in LABELS:
        lut[lab.id] = lab.color
    return lut


# --------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------


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


_CAR_COLOURS = np.array(
    [
        (235, 235, 232), (25, 25, 28), (160, 163, 168), (95, 98, 104), (40, 55, 95),
        (150, 25, 30), (30, 70, 45), (190, 190, 180), (110, 20, 25), (70, 110, 160),
        (200, 160, 40), (120, 90, 60),
    ],
    np.float32,
)


# --------------------------------------------------------------------------------------
# The scene: everything in metres, independent of the output size
# --------------------------------------------------------------------------------------


@dataclass
class _Lots:
    """Facade lots along the street on one plane: lot i covers z in [z[i], z[i+1])."""

    z: np.ndarray  # (n,) float64 start of each lot, ascending
    kind: np.ndarray  # (n,) int32 lot kind code
    height: np.ndarray  # (n,) float32 metres
    col: np.ndarray  # (n, 3) float32 base RGB
    p: np.ndarray  # (n, 4) float32 kind-specific parameters


@dataclass
class _Actor:
    """A drawable object. Position at time t is (x + vx t, z + vz t); z is its near end."""

    kind: str
    x: float
    z: float
    vz: float = 0.0
    vx: float = 0.0
    size: tuple[float, ...] = ()
    col: np.ndarray = field(default_factory=lambda: np.zeros(3, np.float32))
    inst: int = 0  # value drawn into the instance map
    inst2: int = 0  # second instance (the bicycle under a rider)
    p: dict = field(default_factory=dict)


@dataclass
class _Style:
    weather: str
    sky_top: np.ndarray
    sky_horizon: np.ndarray
    haze: np.ndarray
    haze_dist: float
    sun: float  # +1: right facades lit, -1: left ones
    lit: float
    shaded: float
    materials: np.ndarray  # (5, 3) ground material colours
    marking: np.ndarray
    exposure: float
    gamma: float
    white: np.ndarray
    contrast: float
    grain: float
    bonnet: np.ndarray
    clouds: float


class _Scene:
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

    # ---- objects ---------------------------------------------------------------------
    def _inst(self, label: int) -> int:
        """Next instance id (label * 1000 + k) for an instance class."""
        k = self._counts.get(label, 0)
        self._counts[label] = k + 1
        if k >= 1000:  # cannot happen with the densities below; guards the id convention
            raise RuntimeError("more than 1000 instances of one class in a sequence")
        return label * 1000 + k

    def _z_at(self, d: float, vz: float) -> float:
        """World z at t=0 of something that is d metres ahead of the camera at the annotated frame."""
        return self.camera(self.t_a)[1] + d - vz * self.t_a

    def _vehicle(self, rng: np.random.Generator, kind: str, x: float, d: float, vz: float) -> _Actor:
        facing = "rear" if vz >= 0 else "front"
        if kind == "car":
            size = (float(rng.uniform(1.7, 1.95)), float(rng.uniform(1.4, 1.65)), float(rng.uniform(4.0, 4.9)))
            col = _CAR_COLOURS[int(rng.integers(len(_CAR_COLOURS)))] * float(rng.uniform(0.85, 1.1))
            label = CAR
        elif kind == "truck":
            size = (2.45, float(rng.uniform(3.0, 3.8)), float(rng.uniform(7.0, 10.0)))
            col = _jitter(rng, (220, 220, 215) if rng.random() < 0.6 else (60, 90, 150), 0.2)
            label = TRUCK
        elif kind == "bus":
            size = (2.55, float(rng.uniform(3.0, 3.3)), float(rng.uniform(11.0, 13.0)))
            col = _jitter(rng, [(230, 200, 40), (225, 225, 225), (200, 40, 40), (40, 90, 170)][int(rng.integers(4))], 0.08)
            label = BUS
        else:  # tram
            size = (2.4, float(rng.uniform(3.3, 3.6)), float(rng.uniform(24.0, 32.0)))
            col = _jitter(rng, [(210, 40, 40), (235, 235, 230), (240, 200, 30), (60, 110, 170)][int(rng.integers(4))], 0.08)
            label = TRAIN
        cab = _jitter(rng, (230, 230, 225), 0.1) if kind == "truck" else col
        return _Actor(
            kind, x, self._z_at(d, vz), vz=vz, size=size, col=np.clip(col, 0, 255).astype(np.float32),
            inst=self._inst(label), p={"facing": facing, "cab": cab.astype(np.float32)},
        )

    def _person(self, rng: np.random.Generator, x: float, d: float, vz: float) -> _Actor:
        shirt = _jitter(rng, tuple(rng.uniform(20, 230, 3)), 0.1)
        pants = _jitter(rng, [(40, 45, 70), (30, 30, 32), (110, 100, 85), (70, 70, 75)][int(rng.integers(4))], 0.15)
        skin = _jitter(rng, [(235, 195, 165), (200, 150, 110), (140, 95, 65), (95, 65, 45)][int(rng.integers(4))], 0.05)
        hair = _jitter(rng, [(30, 25, 20), (90, 60, 30), (200, 170, 110), (130, 130, 130)][int(rng.integers(4))], 0.1)
        return _Actor(
            "person", x, self._z_at(d, vz), vz=vz, size=(float(rng.uniform(1.55, 1.95)),), col=shirt,
            inst=self._inst(PERSON), p={"pants": pants, "skin": skin, "hair": hair, "phase": float(rng.uniform(0, 6.28))},
        )

    def _two_wheeler(self, rng: np.random.Generator, kind: str, x: float, d: float, vz: float, ridden: bool) -> _Actor:
        label = BIKE if kind.startswith("bike") else MOTO
        col = _jitter(rng, tuple(rng.uniform(20, 220, 3)), 0.1)
        a = _Actor(kind, x, self._z_at(d, vz), vz=vz, col=col, inst=self._inst(label))
        if ridden:
            a.inst2 = a.inst
            a.inst = self._inst(RIDER)
            a.p["shirt"] = _jitter(rng, tuple(rng.uniform(20, 230, 3)), 0.1)
            a.p["pants"] = _jitter(rng, (40, 45, 60), 0.3)
            a.p["skin"] = _jitter(rng, (210, 165, 130), 0.25)
            a.p["phase"] = float(rng.uniform(0, 6.28))
        return a

    def _free(self, lane: str, z0: float, vz: float, length: float, margin: float = 6.0) -> bool:
        """True if something at world z0 (at t=0) moving at vz never comes within ``margin``
        metres of anything already in ``lane`` during the clip (motion is linear in time)."""
        for z1, v1, l1 in self._lanes.setdefault(lane, []):
            d0 = z1 - z0
            d1 = d0 + (v1 - vz) * self.t_end
            if max(d0, d1) > -(l1 + margin) and min(d0, d1) < length + margin:
                return False
        return True

    def _occupy(self, lane: str, a: _Actor, length: float) -> _Actor:
        self._lanes.setdefault(lane, []).append((a.z, a.vz, length))
        self.actors.append(a)
        return a

    def _build_actors(self, rng: np.random.Generator) -> None:
        acts = self.actors
        self._lanes: dict[str, list[tuple[float, float, float]]] = {}
        za = self.camera(self.t_a)[1]
        z_lo, z_hi = -30.0, self.speed * self.t_end + 260.0  # world z range worth populating
        nr = len(self.right_lanes)
        ego = f"R{self.ego_lane}"
        kerb_lane = f"R{nr - 1}"
        # Our own car keeps 8 m clear ahead of it, and the lanes to our right stay clear
        # near us at the annotated frame: they are our view of the sidewalk and the walls.
        self._lanes[ego] = [(-5.0, self.speed, 13.0)]
        for i in range(self.ego_lane + 1, nr):
            self._lanes[f"R{i}"] = [(za - 3.0 - self.speed * self.t_a, self.speed, 28.0)]

        # --- the cast of the annotated frame (distances ahead of the camera, metres) ---
        # Laid out so that no one hides another: a motorcycle and then a car ahead in our
        # lane, a cyclist at the kerb, a tram on the median, one truck or bus oncoming and
        # the other in the next lane or far ahead of us, traffic lights at a crossing,
        # signs and pedestrians on both sidewalks.
        d_cross = max(float(rng.uniform(22.0, 38.0)), self.d_view(self.sidewalk_r[0]) + 3.0)
        self.crossing_z = za + d_cross
        for s in (1, -1):
            xs = (self.sidewalk_r[0] + 0.4) if s > 0 else (self.sidewalk_l[1] - 0.4)
            acts.append(_Actor("light", xs, self.crossing_z - 1.0, p={"side": s, "mast": s > 0, "state": int(rng.integers(3))}))
        for s in (1, -1):
            xs = (self.sidewalk_r[0] + 0.35) if s > 0 else (self.sidewalk_l[1] - 0.35)
            acts.append(self._sign(rng, xs, za + self.d_view(xs) + float(rng.uniform(1.0, 8.0)), s))
        vz_t = -float(rng.uniform(6.0, 11.0)) if rng.random() < 0.65 else float(rng.uniform(0.0, 4.0))
        tram = self._vehicle(rng, "tram", 0.0, float(rng.uniform(18.0, 30.0)), vz_t)
        self._occupy("T", tram, tram.size[2])
        heavy = ["truck", "bus"] if rng.random() < 0.5 else ["bus", "truck"]
        a = self._vehicle(rng, heavy[0], self.left_lanes[0], float(rng.uniform(16.0, 26.0)), -float(rng.uniform(7.0, 12.0)))
        self._occupy("L0", a, a.size[2])
        # The motorcycle rides off-centre so it does not hide what is straight ahead.
        off = -float(rng.uniform(0.8, 1.05))  # towards the median: the kerb side is the cyclist's
        moto = self._two_wheeler(rng, "moto", self.lane_x + off, float(rng.uniform(11.0, 16.0)),
                                 self.speed + float(rng.uniform(-0.3, 0.5)), True)
        self._occupy(ego, moto, 2.2)
        lead = self._vehicle(rng, "car", self.lane_x + float(rng.uniform(-0.2, 0.2)), float(rng.uniform(24.0, 34.0)),
                             self.speed + float(rng.uniform(-0.3, 0.8)))
        self._occupy(ego, lead, lead.size[2])
        other = [i for i in range(nr) if i != self.ego_lane]
        if other:
            lane, x, d = f"R{other[0]}", self.right_lanes[other[0]], float(rng.uniform(35.0, 50.0))
        else:
            lane, x, d = ego, self.lane_x, float(rng.uniform(50.0, 65.0))
        a = self._vehicle(rng, heavy[1], x, d, self.speed + float(rng.uniform(-0.3, 0.8)))
        self._occupy(lane, a, a.size[2])
        # Random traffic stays out of our lane's first 72 m: the cast above is seen there.
        self._lanes[ego].append((za - self.speed * self.t_a, self.speed, 72.0))
        xk = self.road_r[1] - 0.7  # cyclists keep to the kerb
        bike = self._two_wheeler(rng, "bike", xk, float(rng.uniform(14.0, 24.0)), float(rng.uniform(3.5, 6.0)), True)
        self._occupy(kerb_lane, bike, 1.8)
        for s in (1, -1):
            lo, hi = self.sidewalk_r if s > 0 else self.sidewalk_l
            for _ in range(2):
                vz = float(rng.choice([-1, 1]) * rng.uniform(0.8, 1.6))
                x = float(rng.uniform(lo + 0.5, hi - 0.4))
                acts.append(self._person(rng, x, self.d_view(x) + float(rng.uniform(1.0, 15.0)), vz))
        verge = self.verge_r if self.verge_r else self.verge_l
        acts.append(self._tree(rng, (verge[0] + verge[1]) / 2, self.clear_z[1] + float(rng.uniform(4.0, 12.0))))

        # --- random fill along the whole street, never colliding with anything ---
        for i, x in enumerate(self.right_lanes):
            self._fill_lane(rng, f"R{i}", x, float(rng.uniform(-40.0, 10.0)), 260.0, [0.8, 0.08, 0.05, 0.07],
                            lambda: self.speed + float(rng.uniform(-1.0, 1.5)), (10.0, 45.0))
        for i, x in enumerate(self.left_lanes):
            self._fill_lane(rng, f"L{i}", x, float(rng.uniform(-10.0, 30.0)), 300.0, [0.82, 0.08, 0.05, 0.05],
                            lambda: -float(rng.uniform(7.0, 13.0)), (15.0, 60.0))
        d = float(rng.uniform(40.0, 80.0))
        while d < 250.0:
            vz = float(rng.uniform(3.5, 6.0))
            a = self._two_wheeler(rng, "bike", xk, d, vz, True)
            if self._free(kerb_lane, a.z, vz, 1.8):
                self._occupy(kerb_lane, a, 1.8)
            d += float(rng.uniform(40.0, 120.0))
        # The showcase stretch at the annotated frame stays free of parked cars and trees
        # that would hide the sidewalks, walls and fences behind them.
        clear = (za + 4.0, self.clear_z[1] + 4.0)
        if self.parking_x is not None:
            z = z_lo
            while z < z_hi:
                if rng.random() < 0.55 and not clear[0] - 5.0 < z < clear[1]:
                    a = self._vehicle(rng, "car", self.parking_x, 0.0, 0.0)
                    a.z = z
                    acts.append(a)
                z += float(rng.uniform(5.5, 12.0))
        for s in (1, -1):
            kerb = self.sidewalk_r[0] if s > 0 else self.sidewalk_l[1]
            lo, hi = self.sidewalk_r if s > 0 else self.sidewalk_l
            verge = self.verge_r if s > 0 else self.verge_l
            strip = self.strip_r if s > 0 else self.strip_l
            z = z_lo + float(rng.uniform(0, 30))
            while z < z_hi:
                acts.append(_Actor("lamp", kerb + 0.35 * s, z, size=(float(rng.uniform(6.0, 9.0)),), p={"side": s}))
                z += float(rng.uniform(22.0, 38.0))
            z = z_lo + float(rng.uniform(0, 40))
            while z < z_hi:
                acts.append(self._sign(rng, kerb + 0.3 * s, z, s))
                z += float(rng.uniform(30.0, 70.0))
            if verge is not None:
                z = z_lo + float(rng.uniform(0, 10))
                while z < z_hi:
                    if not clear[0] - 3.0 < z < clear[1]:
                        acts.append(self._tree(rng, (verge[0] + verge[1]) / 2, z))
                    z += float(rng.uniform(8.0, 16.0))
            if strip[1] - strip[0] > 1.5:
                z = z_lo + float(rng.uniform(0, 20))
                while z < z_hi:
                    if rng.random() < 0.5 and not clear[0] - 3.0 < z < clear[1]:
                        t = self._tree(rng, float(rng.uniform(strip[0] + 0.5, strip[1] - 0.5)), z)
                        t.p["behind"] = True  # behind the walls and fences of the front plane
                        acts.append(t)
                    z += float(rng.uniform(6.0, 20.0))
            z = z_lo + float(rng.uniform(0, 15))
            while z < z_hi:
                r = rng.random()
                x = float(rng.uniform(lo + 0.4, hi - 0.4))
                if r < 0.18:
                    acts.append(_Actor("bin", x, z, col=_jitter(rng, (60, 90, 70) if rng.random() < 0.5 else (90, 90, 95), 0.2)))
                elif r < 0.32:
                    kind = "bike_parked" if rng.random() < 0.7 else "moto_parked"
                    a = self._two_wheeler(rng, kind, hi - 0.8 if s > 0 else lo + 0.8, 0.0, 0.0, False)
                    a.z = z
                    acts.append(a)
                else:
                    vz = float(rng.choice([-1, 1]) * rng.uniform(0.7, 1.6))
                    if rng.random() < 0.15:
                        vz = 0.0
                    a = self._person(rng, x, 0.0, vz)
                    a.z = z
                    acts.append(a)
                z += float(rng.uniform(4.0, 14.0))

    def _fill_lane(self, rng: np.random.Generator, lane: str, x: float, d: float, d_max: float,
                   probs: list[float], speed, gap: tuple[float, float]) -> None:
        """Random traffic along one lane from distance ``d`` to ``d_max``, never colliding."""
        while d < d_max:
            kind = str(rng.choice(["car", "truck", "bus", "moto"], p=probs))
            vz = speed()
            if kind == "moto":
                a = self._two_wheeler(rng, "moto", x + float(rng.uniform(-0.5, 0.5)), d, vz, True)
                length = 2.2
            else:
                a = self._vehicle(rng, kind, x + float(rng.uniform(-0.25, 0.25)), d, vz)
                length = a.size[2]
            if self._free(lane, a.z, vz, length):
                self._occupy(lane, a, length)
            d += length + float(rng.uniform(*gap))

    def _sign(self, rng: np.random.Generator, x: float, z: float, side: int) -> _Actor:
        shape = str(rng.choice(["round", "triangle", "square", "diamond"]))
        return _Actor(
            "sign", x, z, size=(float(rng.uniform(2.0, 2.7)), float(rng.uniform(0.55, 0.85))),
            p={"shape": shape, "side": side, "blue": bool(rng.random() < 0.5)},
        )

    def _tree(self, rng: np.random.Generator, x: float, z: float) -> _Actor:
        trunk = float(rng.uniform(1.8, 3.2))
        crown = float(rng.uniform(1.4, 3.0))
        blobs = [(float(rng.uniform(-0.6, 0.6)) * crown, float(rng.uniform(-0.4, 0.5)) * crown, float(rng.uniform(0.45, 0.75)) * crown) for _ in range(5)]
        greens = [_jitter(rng, (60, 95, 40), 0.3) for _ in range(5)]
        return _Actor("tree", x, z, size=(trunk, crown), col=_jitter(rng, (85, 65, 50), 0.2), p={"blobs": blobs, "greens": greens})


# --------------------------------------------------------------------------------------
# The renderer: one scene at one output size
# --------------------------------------------------------------------------------------

# Billboard shapes in metres (x to the right, y up), drawn as convex polygons.
_PERSON_TORSO = np.array([(-0.2, 0.86), (0.2, 0.86), (0.23, 1.45), (-0.23, 1.45)])
_SIGN_SHAPES = {
    "round": np.array([(math.cos(a), math.sin(a)) for a in np.linspace(0, 2 * math.pi, 16, endpoint=False)]) * 0.5,
    "triangle": np.array([(-0.55, -0.4), (0.55, -0.4), (0.0, 0.55)]),
    "square": np.array([(-0.45, -0.45), (0.45, -0.45), (0.45, 0.45), (-0.45, 0.45)]),
    "diamond": np.array([(0.0, -0.55), (0.55, 0.0), (0.0, 0.55), (-0.55, 0.0)]),
}
_NEAR = 0.3  # near clipping plane, metres
_VARIANTS = 6  # texture variants per facade lot (see _Atlas)
_GROUND_BANDS = (0.0, 9.0, 18.0, 35.0, 70.0, 140.0, 1e9)  # depth bands with their own texture blur


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
        ao = (1.0 - 0.3 * np.exp(-np.clip(Y, 0, None) * 1.5))  # darker near the ground
        for i in range(n):
            kind, H, col, p = int(lots.kind[i]), float(lots.height[i]), lots.col[i], lots.p[i]
            if kind == _NONE:
                continue
            noise = _noise1d(rng, ny, max(2, int(ny * ry / 0.6)), 2 * V)
            fine = _noise1d(rng, ny, max(2, int(ny * ry / 0.12)), 2 * V)
            blk = np.empty((ny, 2 * V, 3), np.float32)
            if kind == _BUILDING:
                pitch, wf, fh, gf = (float(v) for v in p)
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


class _Renderer:
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
        for za, zb in zip(_GROUND_BANDS[:-1], _GROUND_BANDS[1:]):
            zrep = min(zb, 2.5 * za if za > 0 else zb)
            fz = zrep * zrep / (self.f * s.hc)  # metres along the street per image row
            fx = zrep / self.f
            kz, kx = int(round(0.7 * fz / rz)), int(round(0.7 * fx / rx))
            if kz >= nz:  # footprint longer than the repeat: the average along z
                levels.append(_wrap_blur(g0, kx, 1).mean(axis=0, keepdims=True).astype(np.uint8))
            else:
                levels.append(_wrap_blur(g0, kx, kz))
        self.g_levels = levels

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
            ra = max(r0, int(math.ceil(self.cy + f * hc / _GROUND_BANDS[k + 1]))) if k + 1 < len(_GROUND_BANDS) - 1 else r0
            if rb <= ra:
                continue
            Mb = M @ np.array([[1.0, 0.0, 0.0], [0.0, 1.0, ra], [0.0, 0.0, 1.0]])
            cv2.warpPerspective(
                tex, Mb, (w, rb - ra), dst=self.img[ra:rb],
                flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_WRAP,
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
                    q = self._project([(x - self.cam[0], 0.0, dz), (x + 0.5 - self.cam[0], 0.0, dz),
                                       (x + 0.5 - self.cam[0], 0.0, dz + 4.0), (x - self.cam[0], 0.0, dz + 4.0)])
                    if q is not None:
                        self._fill(q, paint, None)
                    x += 1.0
            x0, x1 = s.road_r[0] - self.cam[0], s.road_r[1] - self.cam[0]
            q = self._project([(x0, 0.0, dz - 1.0), (x1, 0.0, dz - 1.0), (x1, 0.0, dz - 0.6), (x0, 0.0, dz - 0.6)])
            if q is not None:
                self._fill(q, paint, None)

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

    def _vehicle(self, a: _Actor, zc: float) -> None:
        wdt, hgt, length = a.size
        xr = a.x + a.vx * self.t - self.cam[0]
        zn = a.z + a.vz * self.t - self.cam[1]
        zf = zn + length
        xl, xrr = xr - wdt / 2, xr + wdt / 2
        front = a.p["facing"] == "front"
        st = self.s.style
        lit = st.lit
        side_lit = self.lit_side[1 if xr < 0 else -1]  # we see the side facing the road centre
        col, side = a.col * lit, a.col * side_lit * 0.9
        glass = self.glass * 0.8
        tiny = self.f * hgt / zc < 16.0  # a few pixels tall: silhouette only
        k = a.kind
        if not tiny:  # shadow on the road (image only)
            q = self._project([(xl - 0.1, 0.0, zn - 0.2), (xrr + 0.1, 0.0, zn - 0.2), (xrr + 0.1, 0.0, zf), (xl - 0.1, 0.0, zf)])
            if q is not None:
                self._fill(q, st.materials[_ASPHALT] * 0.35, None)
        if k == "car":
            body_top = 0.28 + 0.45 * hgt
            if not tiny:
                self._wheels(a, xl, xrr, zn, zf, 0.62)
            self._box(xl, xrr, 0.28 if not tiny else 0.0, body_top, zn, zf, col, side, a.inst)
            hood, trunk = (1.2, 0.7) if front else (0.7, 1.2)
            if zf - trunk > zn + hood + 0.5:
                self._box(xl + 0.12, xrr - 0.12, body_top, hgt, zn + hood, zf - trunk, col * 0.95, side * 0.95, a.inst,
                          window=None if tiny else glass)
            if not tiny:
                self._lights(xl, xrr, zn, body_top, front)
        elif k == "truck":
            cab_len, cab = 2.3, a.p["cab"]
            if not tiny:
                self._wheels(a, xl, xrr, zn, zf, 0.95)
            cargo = (zn + cab_len + 0.2, zf) if front else (zn, zf - cab_len - 0.2)
            cabz = (zn, zn + cab_len) if front else (zf - cab_len, zf)
            cargo_box = (cargo, 0.9, hgt, col, side, None)
            cab_box = (cabz, 0.5, 2.9, cab * lit, cab * side_lit * 0.9, glass)
            for (za, zb), y0, y1, c1, c2, win in ((cargo_box, cab_box) if front else (cab_box, cargo_box)):
                self._box(xl, xrr, y0, y1, za, zb, c1, c2, a.inst, window=None if tiny else win, win_lo=0.55)
            if not tiny:
                self._lights(xl, xrr, zn, 1.0, front)
        elif k == "bus":
            if not tiny:
                self._wheels(a, xl, xrr, zn, zf, 0.9)
            self._box(xl, xrr, 0.35, hgt, zn, zf, col, side, a.inst, window=None if tiny else glass,
                      win_lo=0.4 if front else 0.6, side_band=(1.2, hgt - 0.5))
            if not tiny:
                self._lights(xl, xrr, zn, 0.7, front)
        else:  # tram
            self._box(xl, xrr, 0.45, hgt, zn, zf, col, side, a.inst, window=None if tiny else glass,
                      win_lo=0.45, side_band=(1.3, hgt - 0.6))
            zm = zn + length * 0.4
            q = self._project([(xr - 0.05, hgt, zm), (xr + 0.05, hgt, zm), (xr + 0.6, hgt + 1.2, zm + 0.8), (xr + 0.5, hgt + 1.2, zm + 0.8)])
            if q is not None:
                self._fill(q, (50.0, 50.0, 50.0), a.inst)

    def _box(self, xl, xr, y0, y1, zn, zf, col, side_col, inst, window=None, win_lo=0.0, side_band=None) -> None:
        """A box seen from behind or ahead: the side facing us, its top, its near face."""
        if zf <= _NEAR:
            return
        if xr < 0 or xl > 0:
            xs = xr if xr < 0 else xl
            q = self._project([(xs, y0, zn), (xs, y0, zf), (xs, y1, zf), (xs, y1, zn)])
            if q is not None:
                self._fill(q, side_col, inst)
                if side_band is not None and window is not None:
                    b0, b1 = side_band
                    q = self._project([(xs, b0, zn + 0.4), (xs, b0, zf - 0.4), (xs, b1, zf - 0.4), (xs, b1, zn + 0.4)])
                    if q is not None:
                        self._fill(q, window * 0.9, None)
        if y1 < self.s.hc:
            q = self._project([(xl, y1, zn), (xr, y1, zn), (xr, y1, zf), (xl, y1, zf)])
            if q is not None:
                self._fill(q, col * 1.08, inst)
        if zn > _NEAR:
            q = self._project([(xl, y0, zn), (xr, y0, zn), (xr, y1, zn), (xl, y1, zn)])
            if q is not None:
                self._fill(q, col, inst)
                if window is not None:
                    hh = y1 - y0
                    wy0, wy1 = y0 + max(win_lo, 0.08) * hh, y1 - 0.08 * hh
                    inset = 0.12 * (xr - xl)
                    q = self._project([(xl + inset, wy0, zn), (xr - inset, wy0, zn), (xr - inset, wy1, zn), (xl + inset, wy1, zn)])
                    if q is not None:
                        self._fill(q, window, None)

    def _wheels(self, a: _Actor, xl, xr, zn, zf, dia) -> None:
        dark = (22.0, 22.0, 24.0)
        for zw in (zf - 0.9, zn + 0.9):
            if zw - dia / 2 < _NEAR:
                continue
            for x0, x1 in ((xl, xl + 0.25), (xr - 0.25, xr)):
                q = self._project([(x0, 0.0, zw - dia / 2), (x1, 0.0, zw - dia / 2), (x1, dia, zw - dia / 2), (x0, dia, zw - dia / 2)])
                if q is not None:
                    self._fill(q, dark, a.inst)
            xs = xr if xr < 0 else xl  # the wheel side facing us
            q = self._project([(xs, 0.0, zw - dia / 2), (xs, 0.0, zw + dia / 2), (xs, dia, zw + dia / 2), (xs, dia, zw - dia / 2)])
            if q is not None:
                self._fill(q, dark, a.inst)

    def _lights(self, xl, xr, zn, y, front) -> None:
        if zn <= 1.0:
            return
        col = (250.0, 245.0, 215.0) if front else (200.0, 20.0, 20.0)
        for x0, x1 in ((xl + 0.05, xl + 0.3), (xr - 0.3, xr - 0.05)):
            q = self._project([(x0, y - 0.15, zn - 0.01), (x1, y - 0.15, zn - 0.01), (x1, y, zn - 0.01), (x0, y, zn - 0.01)])
            if q is not None:
                self._fill(q, col, None)


_BOXES = frozenset({"car", "truck", "bus", "tram"})


class _Billboard:
    """Draw shapes given in metres on a camera-facing plane at one depth."""

    def __init__(self, r: _Renderer, ox: float, oy: float, scale: float) -> None:
        self.r, self.ox, self.oy, self.sc = r, ox, oy, scale

    def poly(self, pts: np.ndarray, colour, inst: int | None) -> None:
        p = np.empty_like(pts, dtype=np.float64)
        p[:, 0] = self.ox + pts[:, 0] * self.sc
        p[:, 1] = self.oy - pts[:, 1] * self.sc
        self.r._fill(p, colour, inst)

    def quad(self, x0: float, y0: float, x1: float, y1: float, colour, inst: int | None) -> None:
        self.poly(np.array([(x0, y0), (x1, y0), (x1, y1), (x0, y1)], np.float64), colour, inst)

    def limb(self, a: tuple[float, float], b: tuple[float, float], width: float, colour, inst: int | None) -> None:
        """A segment of the given width from a to b (a leg, an arm, a bar)."""
        ax, ay = a
        bx, by = b
        dx, dy = bx - ax, by - ay
        n = math.hypot(dx, dy) or 1.0
        nx, ny = -dy / n * width / 2, dx / n * width / 2
        self.poly(np.array([(ax + nx, ay + ny), (bx + nx, by + ny), (bx - nx, by - ny), (ax - nx, ay - ny)]), colour, inst)

    def disc(self, x: float, y: float, r: float, colour, inst: int | None) -> None:
        self.r._disc((self.ox + x * self.sc, self.oy - y * self.sc), r * self.sc, colour, inst)

    @property
    def tiny(self) -> bool:
        """True when a person-sized object is only a few pixels tall: draw a silhouette."""
        return self.sc * 1.7 < 16.0


def _draw_person(bb: _Billboard, a: _Actor, t: float, lit: float) -> None:
    s = a.size[0] / 1.75
    inst = a.inst
    if bb.tiny:  # a silhouette is all that shows at this size
        bb.quad(-0.2 * s, 0.0, 0.2 * s, 1.45 * s, a.col * lit, inst)
        bb.quad(-0.09 * s, 1.45 * s, 0.09 * s, 1.73 * s, a.p["skin"] * lit, inst)
        return
    ph = a.p["phase"] + t * 7.0 * (abs(a.vz) > 0)
    lift_l, lift_r = 0.08 * max(0.0, math.sin(ph)), 0.08 * max(0.0, -math.sin(ph))
    pants, skin, hair = a.p["pants"] * lit, a.p["skin"] * lit, a.p["hair"] * lit
    bb.limb((-0.1 * s, 0.9 * s), (-0.11 * s, lift_l * s), 0.15 * s, pants, inst)
    bb.limb((0.1 * s, 0.9 * s), (0.11 * s, lift_r * s), 0.15 * s, pants, inst)
    bb.poly(_PERSON_TORSO * s, a.col * lit, inst)
    sw = 0.03 * math.sin(ph)
    bb.limb((-0.25 * s, 1.42 * s), ((-0.3 + sw) * s, 0.85 * s), 0.09 * s, a.col * lit * 0.9, inst)
    bb.limb((0.25 * s, 1.42 * s), ((0.3 - sw) * s, 0.85 * s), 0.09 * s, a.col * lit * 0.9, inst)
    bb.quad(-0.05 * s, 1.42 * s, 0.05 * s, 1.52 * s, skin, inst)
    bb.disc(0.0, 1.62 * s, 0.11 * s, skin, inst)
    bb.poly(np.array([(-0.11, 1.63), (0.11, 1.63), (0.09, 1.73), (-0.09, 1.73)]) * s, hair, inst)


def _draw_ridden(bb: _Billboard, a: _Actor, t: float, lit: float) -> None:
    """A bicycle or motorcycle with its rider, seen from behind or ahead."""
    moto = a.kind == "moto"
    veh, rider = a.inst2, a.inst
    dark = np.array([25, 25, 28], np.float32)
    if bb.tiny:
        bb.quad(-0.05, 0.0, 0.05, 0.7, dark, veh)
        bb.quad(-0.2, 0.7, 0.2, 1.7, a.p["shirt"] * lit, rider)
        return
    ww = 0.09 if moto else 0.035
    bb.quad(-ww, 0.0, ww, 0.65, dark, veh)
    if moto:
        bb.quad(-0.3, 0.35, 0.3, 0.9, a.col * lit, veh)
        bb.quad(-0.08, 0.6, 0.08, 0.7, np.array([200, 20, 20]), veh)
    bb.limb((-0.3, 1.05), (0.3, 1.05), 0.04, dark, veh)
    ph = a.p["phase"] + t * 6.0
    pedal = 0.12 * math.sin(ph)
    pants, shirt, skin = a.p["pants"] * lit, a.p["shirt"] * lit, a.p["skin"] * lit
    hip = 1.0 if not moto else 0.95
    bb.limb((-0.12, hip), (-0.15, 0.35 + pedal if not moto else 0.45), 0.14, pants, rider)
    bb.limb((0.12, hip), (0.15, 0.35 - pedal if not moto else 0.45), 0.14, pants, rider)
    bb.poly(np.array([(-0.2, hip - 0.05), (0.2, hip - 0.05), (0.23, hip + 0.5), (-0.23, hip + 0.5)]), shirt, rider)
    bb.limb((-0.24, hip + 0.47), (-0.3, 1.05), 0.09, shirt, rider)
    bb.limb((0.24, hip + 0.47), (0.3, 1.05), 0.09, shirt, rider)
    head = np.array([40, 40, 45], np.float32) if moto else skin
    bb.disc(0.0, hip + 0.65, 0.14 if moto else 0.11, head, rider)


def _draw_parked(bb: _Billboard, a: _Actor, lit: float) -> None:
    """A parked bicycle or motorcycle, side on (parked across the kerb)."""
    moto = a.kind == "moto_parked"
    inst = a.inst
    dark = np.array([25, 25, 28], np.float32)
    r, wx = (0.3, 0.7) if moto else (0.34, 0.52)
    if bb.tiny:
        bb.quad(-wx - r, 0.0, wx + r, 2 * r, dark, inst)
        return
    for x in (-wx, wx):
        bb.disc(x, r, r, dark, inst)
        bb.disc(x, r, r * 0.8, np.array([110, 110, 110]) * lit, None)
    if moto:
        bb.poly(np.array([(-0.6, 0.4), (0.55, 0.4), (0.45, 0.85), (-0.5, 0.8)]), a.col * lit, inst)
        bb.quad(-0.6, 0.8, 0.1, 0.9, dark, inst)
    else:
        col = a.col * lit
        bb.limb((-wx, r), (0.0, r), 0.05, col, inst)
        bb.limb((0.0, r), (-0.15, 0.85), 0.05, col, inst)
        bb.limb((-0.15, 0.85), (0.4, 0.85), 0.05, col, inst)
        bb.limb((0.4, 0.85), (wx, r), 0.05, col, inst)
        bb.limb((0.0, r), (0.4, 0.85), 0.05, col, inst)
        bb.quad(-0.25, 0.88, -0.05, 0.94, dark, inst)
        bb.limb((0.4, 0.85), (0.45, 1.02), 0.04, dark, inst)


def _draw_tree(bb: _Billboard, a: _Actor, lit: float) -> None:
    trunk, crown = a.size
    bb.quad(-0.15, 0.0, 0.15, trunk + 0.3 * crown, a.col * lit, VEG)
    cy = trunk + 0.6 * crown
    if bb.sc * crown < 8.0:
        bb.disc(0.0, cy, 0.9 * crown, a.p["greens"][0] * lit, VEG)
        return
    for (dx, dy, r), g in zip(a.p["blobs"], a.p["greens"]):
        bb.disc(dx, cy + dy, r, g * lit, VEG)
        # Sunlit upper side of each clump (image only; the label is the clump).
        bb.disc(dx - 0.15 * r, cy + dy + 0.3 * r, 0.6 * r, g * lit * 1.18, None)


def _draw_lamp(bb: _Billboard, a: _Actor, lit: float) -> None:
    h = a.size[0]
    grey = np.array([95, 98, 100], np.float32) * lit
    bb.quad(-0.08, 0.0, 0.08, h, grey, POLE)
    toward_road = -a.p["side"]
    bb.limb((0.0, h - 0.05), (toward_road * 1.4, h + 0.15), 0.08, grey, POLE)
    bb.quad(toward_road * 1.4 - 0.25, h, toward_road * 1.4 + 0.25, h + 0.2, grey * 0.8, POLE)


def _draw_light(bb: _Billboard, a: _Actor, lit: float) -> None:
    grey = np.array([80, 82, 85], np.float32) * lit
    box = np.array([30, 32, 30], np.float32)
    lamps = [np.array([220, 30, 20]), np.array([240, 170, 20]), np.array([40, 210, 90])]
    state = a.p["state"]

    def head(x: float, y: float) -> None:
        bb.quad(x - 0.17, y, x + 0.17, y + 0.8, box, LIGHT)
        for i, c in enumerate(lamps):
            on = i == state
            bb.disc(x, y + 0.67 - i * 0.25, 0.09, c if on else c * 0.25, None)

    bb.quad(-0.07, 0.0, 0.07, 3.1, grey, POLE)
    head(0.0, 2.3)
    if a.p["mast"]:
        x_end = -a.p["side"] * 5.0
        bb.quad(-0.1 if x_end > 0 else x_end, 5.25, x_end if x_end > 0 else 0.1, 5.4, grey, POLE)
        bb.quad(-0.09, 3.1, 0.09, 5.4, grey, POLE)
        head(x_end * 0.8, 4.35)


def _draw_sign(bb: _Billboard, a: _Actor, lit: float) -> None:
    h, size = a.size
    grey = np.array([150, 150, 150], np.float32) * lit
    bb.quad(-0.035, 0.0, 0.035, h, grey, POLE)
    shape = _SIGN_SHAPES[a.p["shape"]] * size
    centre = np.array([0.0, h + 0.45 * size])
    if a.p["shape"] == "round":
        outer, inner = np.array([200, 30, 30]), np.array([235, 235, 235])
        if a.p["blue"]:
            outer, inner = np.array([30, 70, 170]), np.array([30, 70, 170])
    elif a.p["shape"] == "triangle":
        outer, inner = np.array([200, 30, 30]), np.array([235, 235, 235])
    elif a.p["shape"] == "diamond":
        outer, inner = np.array([235, 235, 235]), np.array([240, 190, 20])
    else:
        outer, inner = np.array([235, 235, 235]), np.array([30, 70, 170])
    bb.poly(shape + centre, outer * lit, SIGN)
    bb.poly(shape * 0.75 + centre, inner * lit, None)


# --------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------


def _check_size(size: tuple[int, int]) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in size)
    except (TypeError, ValueError):
        raise UsageError(f"size must be (height, width), got {size!r}") from None
    if h < MIN_SIZE or w < MIN_SIZE:
        raise UsageError(f"size {h}x{w} is too small", hint=f"use at least {MIN_SIZE}x{MIN_SIZE}")
    return h, w


def render_sequence(
    seed: int, size: tuple[int, int] = (1024, 2048), frames: int = layout.SNIPPET_LENGTH, *, fps: float = FPS
) -> Iterator[SynthFrame]:
    """Render ``frames`` consecutive frames of the street drawn from ``seed``.

    Yields ``SynthFrame(rgb, label_ids, instance_ids)``. The same seed gives the same
    street at any size; frame ``layout.ANNOTATED_INDEX`` shows every one of the 19 classes
    by construction (mostly in the middle distance).
    """
    h, w = _check_size(size)
    if frames < 1:
        raise UsageError(f"frames must be at least 1, got {frames}")
    scene = _Scene(seed, frames, fps)
    renderer = _Renderer(scene, h, w)
    for i in range(frames):
        yield renderer.render(i / fps)


def sequence_seed(seed: int, split: str, index: int) -> int:
    """The seed of sequence ``index`` of ``split`` in a dataset generated with ``seed``."""
    if seed < 0:
        raise UsageError(f"seed must be >= 0, got {seed}")
    state = np.random.SeedSequence([int(seed), _SPLIT_CODE[split], int(index)]).generate_state(2, np.uint32)
    return int(state[0]) << 32 | int(state[1])


@dataclass(frozen=True)
class SynthResult:
    """What ``generate_dataset`` wrote."""

    out_dir: Path
    split: str
    size: tuple[int, int]
    seed: int
    sequences: int
    frames: int  # images written to leftImg8bit_sequence
    annotated: tuple[layout.FrameId, ...]
    seconds: float

    @property
    def fps(self) -> float:
        """Frames generated and written per second."""
        return self.frames / self.seconds if self.seconds > 0 else float("inf")

    def to_dict(self) -> dict:
        return {
            "out_dir": str(self.out_dir),
            "split": self.split,
            "size": list(self.size),
            "seed": self.seed,
            "sequences": self.sequences,
            "frames": self.frames,
            "annotated": len(self.annotated),
            "cities": sorted({f.city for f in self.annotated}),
            "seconds": round(self.seconds, 3),
            "fps": round(self.fps, 2),
        }


def generate_dataset(
    out_dir: str | Path,
    *,
    sequences: int,
    split: str = "train",
    size: tuple[int, int] = (1024, 2048),
    seed: int = 0,
    frames_per_sequence: int = layout.SNIPPET_LENGTH,
    overwrite: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> SynthResult:
    """Write ``sequences`` synthetic snippets in the Cityscapes layout under ``out_dir``.

    Every snippet frame goes to ``leftImg8bit_sequence``; frame ``layout.ANNOTATED_INDEX``
    of each also to ``leftImg8bit`` and ``gtFine`` (labelIds, color, instanceIds).
    ``progress(done, total)`` is called after every frame.
    """
    h, w = _check_size(size)
    if split not in _CITIES:
        raise UsageError(f"unknown split {split!r}", hint="use train or val")
    if sequences < 1:
        raise UsageError(f"sequences must be at least 1, got {sequences}")
    if frames_per_sequence <= layout.ANNOTATED_INDEX:
        raise UsageError(
            f"frames per sequence must be at least {layout.ANNOTATED_INDEX + 1}, got {frames_per_sequence}",
            hint=f"the annotated frame is number {layout.ANNOTATED_INDEX + 1} of each snippet, as in Cityscapes",
        )
    if seed < 0:
        raise UsageError(f"seed must be >= 0, got {seed}")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise OutputExistsError(f"{out} exists and is not a folder", hint="choose another output folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise OutputExistsError(
            f"output folder {out} is not empty", hint="choose an empty folder, or pass --overwrite to write into it"
        )
    check_writable(out, "output folder", hint="choose another output folder")  # before any file is made
    cities = _CITIES[split]
    lut = label_color_lut()
    total = sequences * frames_per_sequence
    done = 0
    annotated: list[layout.FrameId] = []
    made: set[Path] = set()
    t0 = time.perf_counter()
    for i in range(sequences):
        city, seq_no = cities[i % len(cities)], i // len(cities)
        sseed = sequence_seed(seed, split, i)
        # Snippet frame numbers: consecutive, starting somewhere arbitrary, as in Cityscapes.
        start = int(np.random.SeedSequence([int(seed), _SPLIT_CODE[split], i, 7]).generate_state(1)[0] % 3000)
        for j, fr in enumerate(render_sequence(sseed, (h, w), frames_per_sequence)):
            fid = layout.FrameId(city, seq_no, start + j)
            bgr = cv2.cvtColor(fr.rgb, cv2.COLOR_RGB2BGR)
            p = layout.sequence_path(out, split, fid)
            if p.parent not in made:
                p.parent.mkdir(parents=True, exist_ok=True)
                made.add(p.parent)
            write_png(p, bgr)
            if j == layout.ANNOTATED_INDEX:
                annotated.append(fid)
                paths = [layout.image_path(out, split, fid)] + [layout.gt_path(out, split, fid, k) for k in layout.GT_KINDS]
                for q in paths:
                    if q.parent not in made:
                        q.parent.mkdir(parents=True, exist_ok=True)
                        made.add(q.parent)
                write_png(paths[0], bgr)
                write_png(paths[1], fr.label_ids)
                write_png(paths[2], cv2.cvtColor(lut[fr.label_ids], cv2.COLOR_RGB2BGR))
                write_png(paths[3], fr.instance_ids.astype(np.uint16))
            done += 1
            if progress is not None:
                progress(done, total)
    return SynthResult(
        out_dir=out,
        split=split,
        size=(h, w),
        seed=seed,
        sequences=sequences,
        frames=done,
        annotated=tuple(annotated),
        seconds=time.perf_counter() - t0,
    )
