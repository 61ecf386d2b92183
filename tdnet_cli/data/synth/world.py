"""The scene's records and codes, in metres: facade lot kinds, ground materials, lots,
actors and the lighting style (shared by the scene builder and the renderer)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from tdnet_cli.data.synth.labels import BUILDING, FENCE, VEG, WALL

# Facade lot kinds -> label id (index = kind code).
_NONE, _BUILDING, _TREELINE, _WALL, _FENCE, _HEDGE = range(6)
_KIND_LABEL = np.array([0, BUILDING, VEG, WALL, FENCE, VEG], dtype=np.int32)

# Ground materials.
_ASPHALT, _PAVER, _GRASS, _GRAVEL, _COBBLE = range(5)

_NEAR = 0.3  # near clipping plane, metres


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
