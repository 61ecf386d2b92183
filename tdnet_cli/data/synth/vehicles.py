"""Vehicles (cars, trucks, buses, trams) drawn as boxes: shadow, wheels, body, cabin,
windows and lights, far faces first.

``_Vehicles`` is a mixin of ``render._Renderer``.
"""

from __future__ import annotations

from tdnet_cli.data.synth.world import _ASPHALT, _NEAR, _Actor

_BOXES = frozenset({"car", "truck", "bus", "tram"})


class _Vehicles:
    """Box-shaped actors of a ``_Renderer`` (mixin)."""

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
            q = self._project(
                [(xl - 0.1, 0.0, zn - 0.2), (xrr + 0.1, 0.0, zn - 0.2), (xrr + 0.1, 0.0, zf), (xl - 0.1, 0.0, zf)]
            )
            if q is not None:
                self._fill(q, st.materials[_ASPHALT] * 0.35, None)
        if k == "car":
            body_top = 0.28 + 0.45 * hgt
            if not tiny:
                self._wheels(a, xl, xrr, zn, zf, 0.62)
            self._box(xl, xrr, 0.28 if not tiny else 0.0, body_top, zn, zf, col, side, a.inst)
            hood, trunk = (1.2, 0.7) if front else (0.7, 1.2)
            if zf - trunk > zn + hood + 0.5:
                self._box(
                    xl + 0.12,
                    xrr - 0.12,
                    body_top,
                    hgt,
                    zn + hood,
                    zf - trunk,
                    col * 0.95,
                    side * 0.95,
                    a.inst,
                    window=None if tiny else glass,
                )
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
            for (za, zb), y0, y1, c1, c2, win in (cargo_box, cab_box) if front else (cab_box, cargo_box):
                self._box(xl, xrr, y0, y1, za, zb, c1, c2, a.inst, window=None if tiny else win, win_lo=0.55)
            if not tiny:
                self._lights(xl, xrr, zn, 1.0, front)
        elif k == "bus":
            if not tiny:
                self._wheels(a, xl, xrr, zn, zf, 0.9)
            self._box(
                xl,
                xrr,
                0.35,
                hgt,
                zn,
                zf,
                col,
                side,
                a.inst,
                window=None if tiny else glass,
                win_lo=0.4 if front else 0.6,
                side_band=(1.2, hgt - 0.5),
            )
            if not tiny:
                self._lights(xl, xrr, zn, 0.7, front)
        else:  # tram
            self._box(
                xl,
                xrr,
                0.45,
                hgt,
                zn,
                zf,
                col,
                side,
                a.inst,
                window=None if tiny else glass,
                win_lo=0.45,
                side_band=(1.3, hgt - 0.6),
            )
            zm = zn + length * 0.4
            q = self._project(
                [
                    (xr - 0.05, hgt, zm),
                    (xr + 0.05, hgt, zm),
                    (xr + 0.6, hgt + 1.2, zm + 0.8),
                    (xr + 0.5, hgt + 1.2, zm + 0.8),
                ]
            )
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
                    q = self._project(
                        [(xl + inset, wy0, zn), (xr - inset, wy0, zn), (xr - inset, wy1, zn), (xl + inset, wy1, zn)]
                    )
                    if q is not None:
                        self._fill(q, window, None)

    def _wheels(self, a: _Actor, xl, xr, zn, zf, dia) -> None:
        dark = (22.0, 22.0, 24.0)
        for zw in (zf - 0.9, zn + 0.9):
            if zw - dia / 2 < _NEAR:
                continue
            for x0, x1 in ((xl, xl + 0.25), (xr - 0.25, xr)):
                q = self._project(
                    [(x0, 0.0, zw - dia / 2), (x1, 0.0, zw - dia / 2), (x1, dia, zw - dia / 2), (x0, dia, zw - dia / 2)]
                )
                if q is not None:
                    self._fill(q, dark, a.inst)
            xs = xr if xr < 0 else xl  # the wheel side facing us
            q = self._project(
                [(xs, 0.0, zw - dia / 2), (xs, 0.0, zw + dia / 2), (xs, dia, zw + dia / 2), (xs, dia, zw - dia / 2)]
            )
            if q is not None:
                self._fill(q, dark, a.inst)

    def _lights(self, xl, xr, zn, y, front) -> None:
        if zn <= 1.0:
            return
        col = (250.0, 245.0, 215.0) if front else (200.0, 20.0, 20.0)
        for x0, x1 in ((xl + 0.05, xl + 0.3), (xr - 0.3, xr - 0.05)):
            q = self._project(
                [(x0, y - 0.15, zn - 0.01), (x1, y - 0.15, zn - 0.01), (x1, y, zn - 0.01), (x0, y, zn - 0.01)]
            )
            if q is not None:
                self._fill(q, col, None)
