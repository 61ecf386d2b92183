"""Placing the objects of a scene: the cast of the annotated frame (one of every class,
where it is seen at that moment) and random traffic, parked vehicles, street furniture,
trees and pedestrians along the whole street, never colliding.

``_Traffic`` is a mixin of ``scene._Scene``: it reads the street the scene has built.
"""

from __future__ import annotations

import numpy as np

from tdnet_cli.data.synth.labels import (
    BIKE,
    BUS,
    CAR,
    MOTO,
    PERSON,
    RIDER,
    TRAIN,
    TRUCK,
)
from tdnet_cli.data.synth.textures import _CAR_COLOURS, _jitter
from tdnet_cli.data.synth.world import _Actor


class _Traffic:
    """Builds ``self.actors`` for a ``_Scene`` (mixin)."""

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
            col = _jitter(
                rng, [(230, 200, 40), (225, 225, 225), (200, 40, 40), (40, 90, 170)][int(rng.integers(4))], 0.08
            )
            label = BUS
        else:  # tram
            size = (2.4, float(rng.uniform(3.3, 3.6)), float(rng.uniform(24.0, 32.0)))
            col = _jitter(
                rng, [(210, 40, 40), (235, 235, 230), (240, 200, 30), (60, 110, 170)][int(rng.integers(4))], 0.08
            )
            label = TRAIN
        cab = _jitter(rng, (230, 230, 225), 0.1) if kind == "truck" else col
        return _Actor(
            kind,
            x,
            self._z_at(d, vz),
            vz=vz,
            size=size,
            col=np.clip(col, 0, 255).astype(np.float32),
            inst=self._inst(label),
            p={"facing": facing, "cab": cab.astype(np.float32)},
        )

    def _person(self, rng: np.random.Generator, x: float, d: float, vz: float) -> _Actor:
        shirt = _jitter(rng, tuple(rng.uniform(20, 230, 3)), 0.1)
        pants = _jitter(rng, [(40, 45, 70), (30, 30, 32), (110, 100, 85), (70, 70, 75)][int(rng.integers(4))], 0.15)
        skin = _jitter(rng, [(235, 195, 165), (200, 150, 110), (140, 95, 65), (95, 65, 45)][int(rng.integers(4))], 0.05)
        hair = _jitter(rng, [(30, 25, 20), (90, 60, 30), (200, 170, 110), (130, 130, 130)][int(rng.integers(4))], 0.1)
        return _Actor(
            "person",
            x,
            self._z_at(d, vz),
            vz=vz,
            size=(float(rng.uniform(1.55, 1.95)),),
            col=shirt,
            inst=self._inst(PERSON),
            p={"pants": pants, "skin": skin, "hair": hair, "phase": float(rng.uniform(0, 6.28))},
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
        """All the objects of the scene: the annotated frame's cast first, then the fill."""
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

        self._place_cast(rng, za, ego, kerb_lane)
        # --- random fill along the whole street, never colliding with anything ---
        self._fill_traffic(rng, kerb_lane)
        self._fill_roadside(rng, za, z_lo, z_hi)

    def _place_cast(self, rng: np.random.Generator, za: float, ego: str, kerb_lane: str) -> None:
        """The cast of the annotated frame (distances ahead of the camera, metres)."""
        acts = self.actors
        nr = len(self.right_lanes)
        # Laid out so that no one hides another: a motorcycle and then a car ahead in our
        # lane, a cyclist at the kerb, a tram on the median, one truck or bus oncoming and
        # the other in the next lane or far ahead of us, traffic lights at a crossing,
        # signs and pedestrians on both sidewalks.
        d_cross = max(float(rng.uniform(22.0, 38.0)), self.d_view(self.sidewalk_r[0]) + 3.0)
        self.crossing_z = za + d_cross
        for s in (1, -1):
            xs = (self.sidewalk_r[0] + 0.4) if s > 0 else (self.sidewalk_l[1] - 0.4)
            acts.append(
                _Actor("light", xs, self.crossing_z - 1.0, p={"side": s, "mast": s > 0, "state": int(rng.integers(3))})
            )
        for s in (1, -1):
            xs = (self.sidewalk_r[0] + 0.35) if s > 0 else (self.sidewalk_l[1] - 0.35)
            acts.append(self._sign(rng, xs, za + self.d_view(xs) + float(rng.uniform(1.0, 8.0)), s))
        vz_t = -float(rng.uniform(6.0, 11.0)) if rng.random() < 0.65 else float(rng.uniform(0.0, 4.0))
        tram = self._vehicle(rng, "tram", 0.0, float(rng.uniform(18.0, 30.0)), vz_t)
        self._occupy("T", tram, tram.size[2])
        heavy = ["truck", "bus"] if rng.random() < 0.5 else ["bus", "truck"]
        a = self._vehicle(
            rng, heavy[0], self.left_lanes[0], float(rng.uniform(16.0, 26.0)), -float(rng.uniform(7.0, 12.0))
        )
        self._occupy("L0", a, a.size[2])
        # The motorcycle rides off-centre so it does not hide what is straight ahead.
        off = -float(rng.uniform(0.8, 1.05))  # towards the median: the kerb side is the cyclist's
        moto = self._two_wheeler(
            rng,
            "moto",
            self.lane_x + off,
            float(rng.uniform(11.0, 16.0)),
            self.speed + float(rng.uniform(-0.3, 0.5)),
            True,
        )
        self._occupy(ego, moto, 2.2)
        lead = self._vehicle(
            rng,
            "car",
            self.lane_x + float(rng.uniform(-0.2, 0.2)),
            float(rng.uniform(24.0, 34.0)),
            self.speed + float(rng.uniform(-0.3, 0.8)),
        )
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

    def _fill_traffic(self, rng: np.random.Generator, kerb_lane: str) -> None:
        """Random traffic in every lane and cyclists at the kerb, never colliding."""
        xk = self.road_r[1] - 0.7  # cyclists keep to the kerb
        for i, x in enumerate(self.right_lanes):
            self._fill_lane(
                rng,
                f"R{i}",
                x,
                float(rng.uniform(-40.0, 10.0)),
                260.0,
                [0.8, 0.08, 0.05, 0.07],
                lambda: self.speed + float(rng.uniform(-1.0, 1.5)),
                (10.0, 45.0),
            )
        for i, x in enumerate(self.left_lanes):
            self._fill_lane(
                rng,
                f"L{i}",
                x,
                float(rng.uniform(-10.0, 30.0)),
                300.0,
                [0.82, 0.08, 0.05, 0.05],
                lambda: -float(rng.uniform(7.0, 13.0)),
                (15.0, 60.0),
            )
        d = float(rng.uniform(40.0, 80.0))
        while d < 250.0:
            vz = float(rng.uniform(3.5, 6.0))
            a = self._two_wheeler(rng, "bike", xk, d, vz, True)
            if self._free(kerb_lane, a.z, vz, 1.8):
                self._occupy(kerb_lane, a, 1.8)
            d += float(rng.uniform(40.0, 120.0))

    def _fill_roadside(self, rng: np.random.Generator, za: float, z_lo: float, z_hi: float) -> None:
        """Parked cars, then what stands along each side of the street (``_fill_side``)."""
        acts = self.actors
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
            self._fill_side(rng, s, z_lo, z_hi, clear)

    def _fill_side(
        self, rng: np.random.Generator, s: int, z_lo: float, z_hi: float, clear: tuple[float, float]
    ) -> None:
        """Lamps, signs, trees, bins, parked two-wheelers and pedestrians along one side (s: +1 right)."""
        acts = self.actors
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
                acts.append(
                    _Actor("bin", x, z, col=_jitter(rng, (60, 90, 70) if rng.random() < 0.5 else (90, 90, 95), 0.2))
                )
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

    def _fill_lane(
        self,
        rng: np.random.Generator,
        lane: str,
        x: float,
        d: float,
        d_max: float,
        probs: list[float],
        speed,
        gap: tuple[float, float],
    ) -> None:
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
            "sign",
            x,
            z,
            size=(float(rng.uniform(2.0, 2.7)), float(rng.uniform(0.55, 0.85))),
            p={"shape": shape, "side": side, "blue": bool(rng.random() < 0.5)},
        )

    def _tree(self, rng: np.random.Generator, x: float, z: float) -> _Actor:
        trunk = float(rng.uniform(1.8, 3.2))
        crown = float(rng.uniform(1.4, 3.0))
        blobs = [
            (
                float(rng.uniform(-0.6, 0.6)) * crown,
                float(rng.uniform(-0.4, 0.5)) * crown,
                float(rng.uniform(0.45, 0.75)) * crown,
            )
            for _ in range(5)
        ]
        greens = [_jitter(rng, (60, 95, 40), 0.3) for _ in range(5)]
        return _Actor(
            "tree", x, z, size=(trunk, crown), col=_jitter(rng, (85, 65, 50), 0.2), p={"blobs": blobs, "greens": greens}
        )
