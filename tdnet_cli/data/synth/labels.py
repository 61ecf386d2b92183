"""Cityscapes label ids used while drawing, the frame record and the colour table.

The label map is kept as Cityscapes *instance ids* while drawing (label id, or
label id * 1000 + k for instance classes); label ids are derived from it at the end.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from tdnet_cli.data.cityscapes import LABELS

_ID = {lab.name: lab.id for lab in LABELS}
EGO, STATIC, PARKING, RAIL = _ID["ego vehicle"], _ID["static"], _ID["parking"], _ID["rail track"]
ROAD, SIDEWALK, BUILDING, WALL, FENCE = _ID["road"], _ID["sidewalk"], _ID["building"], _ID["wall"], _ID["fence"]
POLE, LIGHT, SIGN, VEG, TERRAIN, SKY = (
    _ID["pole"],
    _ID["traffic light"],
    _ID["traffic sign"],
    _ID["vegetation"],
    _ID["terrain"],
    _ID["sky"],
)
PERSON, RIDER, CAR, TRUCK, BUS, TRAIN = _ID["person"], _ID["rider"], _ID["car"], _ID["truck"], _ID["bus"], _ID["train"]
MOTO, BIKE = _ID["motorcycle"], _ID["bicycle"]


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
