"""Camera-facing billboards: people, riders on bicycles and motorcycles, parked two-wheelers,
trees, lamps, traffic lights and signs, drawn as convex polygons and discs in metres."""

from __future__ import annotations

import math
from typing import Protocol

import numpy as np

from tdnet_cli.data.synth.labels import LIGHT, POLE, SIGN, VEG
from tdnet_cli.data.synth.world import _Actor

# Billboard shapes in metres (x to the right, y up), drawn as convex polygons.
_PERSON_TORSO = np.array([(-0.2, 0.86), (0.2, 0.86), (0.23, 1.45), (-0.23, 1.45)])
_SIGN_SHAPES = {
    "round": np.array([(math.cos(a), math.sin(a)) for a in np.linspace(0, 2 * math.pi, 16, endpoint=False)]) * 0.5,
    "triangle": np.array([(-0.55, -0.4), (0.55, -0.4), (0.0, 0.55)]),
    "square": np.array([(-0.45, -0.45), (0.45, -0.45), (0.45, 0.45), (-0.45, 0.45)]),
    "diamond": np.array([(0.0, -0.55), (0.55, 0.0), (0.0, 0.55), (-0.55, 0.0)]),
}


class _Canvas(Protocol):
    """What a billboard draws on (the renderer): filled polygons and discs in pixels."""

    def _fill(self, pts: np.ndarray, colour, inst: int | None) -> None: ...

    def _disc(self, cxy: tuple[float, float], r: float, colour, inst: int | None) -> None: ...


class _Billboard:
    """Draw shapes given in metres on a camera-facing plane at one depth."""

    def __init__(self, r: _Canvas, ox: float, oy: float, scale: float) -> None:
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
        self.poly(
            np.array([(ax + nx, ay + ny), (bx + nx, by + ny), (bx - nx, by - ny), (ax - nx, ay - ny)]), colour, inst
        )

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
