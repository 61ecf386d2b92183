"""The Cityscapes label set: ids, train ids, names and colours.

Facts from the public Cityscapes label definition. The 19 evaluated classes map to
train ids 0..18; every other label id maps to 255 (ignored).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

__all__ = [
    "CLASSES",
    "IGNORE_INDEX",
    "LABELS",
    "NUM_CLASSES",
    "PALETTE",
    "TRAIN_ID_TO_LABEL_ID",
    "Label",
    "label_id_to_train_id",
    "train_id_to_label_id",
]

IGNORE_INDEX = 255


class Label(NamedTuple):
    name: str
    id: int
    train_id: int
    has_instances: bool
    color: tuple[int, int, int]


LABELS: tuple[Label, ...] = (
    Label("unlabeled", 0, 255, False, (0, 0, 0)),
    Label("ego vehicle", 1, 255, False, (0, 0, 0)),
    Label("rectification border", 2, 255, False, (0, 0, 0)),
    Label("out of roi", 3, 255, False, (0, 0, 0)),
    Label("static", 4, 255, False, (0, 0, 0)),
    Label("dynamic", 5, 255, False, (111, 74, 0)),
    Label("ground", 6, 255, False, (81, 0, 81)),
    Label("road", 7, 0, False, (128, 64, 128)),
    Label("sidewalk", 8, 1, False, (244, 35, 232)),
    Label("parking", 9, 255, False, (250, 170, 160)),
    Label("rail track", 10, 255, False, (230, 150, 140)),
    Label("building", 11, 2, False, (70, 70, 70)),
    Label("wall", 12, 3, False, (102, 102, 156)),
    Label("fence", 13, 4, False, (190, 153, 153)),
    Label("guard rail", 14, 255, False, (180, 165, 180)),
    Label("bridge", 15, 255, False, (150, 100, 100)),
    Label("tunnel", 16, 255, False, (150, 120, 90)),
    Label("pole", 17, 5, False, (153, 153, 153)),
    Label("polegroup", 18, 255, False, (153, 153, 153)),
    Label("traffic light", 19, 6, False, (250, 170, 30)),
    Label("traffic sign", 20, 7, False, (220, 220, 0)),
    Label("vegetation", 21, 8, False, (107, 142, 35)),
    Label("terrain", 22, 9, False, (152, 251, 152)),
    Label("sky", 23, 10, False, (70, 130, 180)),
    Label("person", 24, 11, True, (220, 20, 60)),
    Label("rider", 25, 12, True, (255, 0, 0)),
    Label("car", 26, 13, True, (0, 0, 142)),
    Label("truck", 27, 14, True, (0, 0, 70)),
    Label("bus", 28, 15, True, (0, 60, 100)),
    Label("caravan", 29, 255, True, (0, 0, 90)),
    Label("trailer", 30, 255, True, (0, 0, 110)),
    Label("train", 31, 16, True, (0, 80, 100)),
    Label("motorcycle", 32, 17, True, (0, 0, 230)),
    Label("bicycle", 33, 18, True, (119, 11, 32)),
)

_TRAIN = sorted((lab for lab in LABELS if lab.train_id != IGNORE_INDEX), key=lambda lab: lab.train_id)
CLASSES: tuple[str, ...] = tuple(lab.name for lab in _TRAIN)
NUM_CLASSES = len(CLASSES)
PALETTE: tuple[tuple[int, int, int], ...] = tuple(lab.color for lab in _TRAIN)
TRAIN_ID_TO_LABEL_ID: tuple[int, ...] = tuple(lab.id for lab in _TRAIN)

# 256-entry lookup tables, so conversion is one np.take on uint8 images.
_LABEL_TO_TRAIN = np.full(256, IGNORE_INDEX, dtype=np.uint8)
for _lab in LABELS:
    _LABEL_TO_TRAIN[_lab.id] = _lab.train_id
_TRAIN_TO_LABEL = np.zeros(256, dtype=np.uint8)  # ignore -> 0 ("unlabeled"): never write 255 as a label id
for _tid, _lid in enumerate(TRAIN_ID_TO_LABEL_ID):
    _TRAIN_TO_LABEL[_tid] = _lid


def label_id_to_train_id(label_ids: np.ndarray) -> np.ndarray:
    """Map a uint8 array of Cityscapes label ids to train ids (255 for ignored)."""
    return _LABEL_TO_TRAIN[np.asarray(label_ids, dtype=np.uint8)]


def train_id_to_label_id(train_ids: np.ndarray) -> np.ndarray:
    """Map train ids to label ids; 255 (ignore) becomes 0 (unlabeled)."""
    return _TRAIN_TO_LABEL[np.asarray(train_ids, dtype=np.uint8)]


def palette_lut(palette=PALETTE, ignore_color=(0, 0, 0)) -> np.ndarray:
    """A (256, 3) uint8 RGB lookup table: train id -> colour."""
    lut = np.zeros((256, 3), dtype=np.uint8)
    lut[:] = ignore_color
    lut[: len(palette)] = np.asarray(palette, dtype=np.uint8)
    return lut
