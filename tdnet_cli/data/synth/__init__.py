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

The package, by concern: ``labels`` (label ids, the frame record, the colour table),
``world`` (the scene's records and codes), ``textures`` (noise and colour helpers),
``scene`` (street, camera path, lighting) and ``traffic`` (the objects on it), ``render``
with ``ground``, ``atlas`` (facades), ``vehicles`` and ``billboards`` (drawing), ``sequence``
(``render_sequence``) and ``writer`` (``generate_dataset``: the Cityscapes folders).
"""

from __future__ import annotations

from tdnet_cli.data.synth.labels import SynthFrame, label_color_lut
from tdnet_cli.data.synth.sequence import FPS, render_sequence
from tdnet_cli.data.synth.writer import (
    TRAIN_CITIES,
    VAL_CITIES,
    SynthResult,
    generate_dataset,
    sequence_seed,
)

__all__ = [
    "FPS",
    "TRAIN_CITIES",
    "VAL_CITIES",
    "SynthFrame",
    "SynthResult",
    "generate_dataset",
    "label_color_lut",
    "render_sequence",
    "sequence_seed",
]
