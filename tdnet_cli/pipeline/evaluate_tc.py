"""Temporal consistency (TC) of ``eval ROOT``'s predictions over the sequences it reads.

For each annotated frame the evaluation runs a fresh stream over the frames before it and the
annotated frame (``leftImg8bit_sequence``). Every one of those frames has a prediction, so each
sample gives ``frames_per_sample - 1`` consecutive pairs; TC is accumulated over all of them
(the pair that ends on the annotated frame included), with the ETC definition of
:mod:`tdnet_cli.consistency`. The labels are taken at the flow's working size (the frame shrunk
to ``work_size`` on its long side), not at the ground truth's: a cheap argmax, and TC compares
predictions with each other, not with the labels.

The flow depends on the frames only, so it is computed in eval's reader thread while the model
runs (once per sample, shared by every path with ``--all-paths``); the main thread only takes
the labels, warps them and counts. The repeated-frame protocol (no sequence) has no motion to
measure: no TC there.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from tdnet_cli.consistency import (
    DEFAULT_PRESET,
    DEFAULT_WORK_SIZE,
    ConsistencyMeter,
    Flow,
    FlowTrack,
    work_shape,
)
from tdnet_cli.upsample import upsample_argmax

__all__ = ["SequenceConsistency"]


class SequenceConsistency:
    """TC over every stream of an evaluation: ``flows`` in the reader thread, ``start`` and
    ``add`` in the main thread, ``to_dict`` at the end."""

    def __init__(self, num_classes: int, *, work_size: int = DEFAULT_WORK_SIZE, preset: str = DEFAULT_PRESET) -> None:
        self._track = FlowTrack(work_size=work_size, preset=preset)
        self.meter = ConsistencyMeter(num_classes, work_size=work_size, preset=preset)
        self.flow_seconds = 0.0  # reader thread: overlaps the model
        self.scoring_seconds = 0.0  # main thread: labels at the working size, warp, counts
        self.streams = 0
        self.label_shape: tuple[int, int] | None = None

    def flows(self, frames: Sequence[np.ndarray]) -> list[Flow | None]:
        """The flow into each of a sample's frames from the one before (None for the first, and
        where the frame size changes: no pair across it; eval reports a wrong-sized frame itself)."""
        t0 = time.perf_counter()
        out = []
        for i, f in enumerate(frames):
            if i == 0 or f.shape != frames[i - 1].shape:
                self._track.reset()
            out.append(self._track.advance(f))
        self.flow_seconds += time.perf_counter() - t0
        return out

    def start(self) -> None:
        """A new stream: its first frame pairs with nothing before it."""
        self.meter.reset()
        self.streams += 1

    def add(self, logits: torch.Tensor, flow: Flow | None, frame_shape: tuple[int, int]) -> None:
        """One frame's logits (1, C, h, w) and the flow into it from the previous frame."""
        t0 = time.perf_counter()
        shape = work_shape(frame_shape[0], frame_shape[1], self.meter.work_size)
        with torch.inference_mode():
            labels = upsample_argmax(logits, shape)[0].cpu().numpy()
        self.label_shape = shape
        self.meter.add(labels, flow)
        self.scoring_seconds += time.perf_counter() - t0

    def to_dict(self, classes: Sequence[str], frames_per_sample: int) -> dict[str, Any]:
        """TC, flicker, per-class TC and what they were computed over, JSON-ready."""
        d = self.meter.result().to_dict(classes)
        d["over"] = (
            f"consecutive predicted frames of each sample's stream ({frames_per_sample} frames from "
            "leftImg8bit_sequence, ending on the annotated frame)"
        )
        d["streams"] = self.streams
        d["labels_size"] = list(self.label_shape) if self.label_shape else None
        d["flow_seconds"] = round(self.flow_seconds, 3)
        d["scoring_seconds"] = round(self.scoring_seconds, 3)
        return d
