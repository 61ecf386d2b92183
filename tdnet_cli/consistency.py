"""Temporal consistency (TC) of label maps over video, measured with optical flow.

TC follows the ETC paper (Liu et al., "Efficient Semantic Video Segmentation with
Per-frame Inference") as scripted for VSPW: for consecutive frames t, t+1, the flow from t
to t+1 is estimated on the *input frames*, the labels of t+1 are warped back to t with
nearest-neighbour sampling, and a confusion matrix between P_t and the warped P_{t+1} is
accumulated over all pairs. TC is the mIoU of that matrix over the classes present in
either side; the flicker rate is the fraction of compared pixels whose label differs.
No ground truth is needed.

Flow: OpenCV's DIS (``cv2.DISOpticalFlow``), both ways, on grey frames resized so that
their long side is ``work_size`` pixels (never enlarged). A pixel of frame t is compared
only when
  - its forward flow f and the backward flow b at its landing point agree:
    |f + b|^2 < 0.01 (|f|^2 + |b|^2) + 0.5, in working-size pixels (the usual check of
    Sundaram et al. 2010, also used by the ETC/VSPW scripts), and
  - the nearest label sample it lands on lies inside frame t+1, and
  - neither label is the ignore label (any value >= num_classes, e.g. 255).
The flow is scaled to the label maps' own size (which need not be the frames' size).

Fractions everywhere (TC 1.0 = perfectly consistent), like ``metrics.Scores.miou``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

__all__ = [
    "DEFAULT_PRESET",
    "DEFAULT_WORK_SIZE",
    "FB_ABS",
    "FB_REL",
    "PRESETS",
    "ConsistencyMeter",
    "ConsistencyResult",
    "Flow",
    "FlowTrack",
    "FlowWarper",
    "merge",
    "pair_confusion",
    "to_grey",
    "work_shape",
]

PRESETS = {
    "ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST,
    "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
    "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM,
}
# Chosen from the measurements in docs/benchmarks.md ("Temporal consistency: cost"):
# at most about a third of the bundled model's time per frame on a 2-core CPU.
DEFAULT_PRESET = "ultrafast"
DEFAULT_WORK_SIZE = 512  # long side in pixels: 1024x512 frames are compared at 512x256
# Forward-backward check: |f + b|^2 < FB_REL (|f|^2 + |b|^2) + FB_ABS (working-size pixels).
FB_REL = 0.01
FB_ABS = 0.5
IGNORE = 255  # warped pixels that are not compared are set to this label

_grids: dict[tuple[int, int], np.ndarray] = {}


def _grid(h: int, w: int) -> np.ndarray:
    """(h, w, 2) float32 pixel coordinates (x, y); cached, never written to."""
    g = _grids.get((h, w))
    if g is None:
        if len(_grids) >= 8:  # a long-running process may see many sizes: keep a few
            _grids.clear()
        ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
        g = np.ascontiguousarray(np.stack([xs, ys], axis=-1))
        g.flags.writeable = False
        _grids[(h, w)] = g
    return g


def work_shape(h: int, w: int, work_size: int) -> tuple[int, int]:
    """(height, width) of a frame of h x w with its long side shrunk to ``work_size``."""
    scale = min(1.0, work_size / max(h, w))
    return max(1, round(h * scale)), max(1, round(w * scale))


def to_grey(frame: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """An RGB (H, W, 3) or grey (H, W) uint8 frame as a grey uint8 image of ``shape``."""
    if frame.dtype != np.uint8:
        raise ValueError(f"frames must be uint8, got {frame.dtype}")
    h, w = shape
    # Shrinking before converting touches 3 channels at the small size only once.
    small = cv2.resize(frame, (w, h), interpolation=cv2.INTER_AREA) if frame.shape[:2] != (h, w) else frame
    if small.ndim == 3:
        return cv2.cvtColor(small, cv2.COLOR_RGB2GRAY)
    # a new array either way: it is kept for the next pair, and callers may reuse buffers
    return small.copy() if small is frame else small


class FlowWarper:
    """DIS flow between two grey working-size frames, checked both ways, applied to labels."""

    def __init__(self, preset: str = DEFAULT_PRESET) -> None:
        if preset not in PRESETS:
            raise ValueError(f"unknown DIS preset {preset!r}; choose one of {', '.join(PRESETS)}")
        self.preset = preset
        self._dis = cv2.DISOpticalFlow_create(PRESETS[preset])

    def flow(self, a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Forward flow a->b (h, w, 2) and a uint8 mask (1 = passes the forward-backward check)."""
        fwd = self._dis.calc(a, b, None)
        bwd = self._dis.calc(b, a, None)
        h, w = a.shape
        land = cv2.add(fwd, _grid(h, w))
        # Backward flow where each pixel lands (replicated at the border: pixels landing
        # outside are dropped later, at the labels' size).
        b_at = cv2.remap(bwd, land, None, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        # Per channel (x, y) views: numpy reductions over a trailing axis of 2 are ~10x slower.
        fx, fy, bx, by = fwd[..., 0], fwd[..., 1], b_at[..., 0], b_at[..., 1]
        err = np.square(fx + bx) + np.square(fy + by)
        mag = fx * fx + fy * fy + bx * bx + by * by
        ok = (err < FB_REL * mag + FB_ABS).astype(np.uint8)
        return fwd, ok

    @staticmethod
    def warp_back(labels: np.ndarray, fwd: np.ndarray, ok: np.ndarray) -> np.ndarray:
        """Labels of frame t+1 sampled where frame t's pixels land; IGNORE where not compared.

        ``labels`` is uint8 at its own size; ``fwd`` and ``ok`` are at the working size.
        """
        H, W = labels.shape
        h, w = ok.shape
        if (h, w) != (H, W):
            # Working-size pixels -> label pixels, scaled before enlarging (fewer pixels);
            # cv2 arithmetic, as numpy broadcasting over a trailing (x, y) axis is slow.
            flow = cv2.resize(cv2.multiply(fwd, (W / w, H / h, 0.0, 0.0)), (W, H), interpolation=cv2.INTER_LINEAR)
            ok = cv2.resize(ok, (W, H), interpolation=cv2.INTER_NEAREST)
        else:
            flow = fwd
        flow = cv2.add(flow, _grid(H, W))
        # Nearest sampling; whatever lands outside the frame reads the border value IGNORE.
        warped = cv2.remap(labels, flow, None, cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT, borderValue=IGNORE)
        # ok is 0/1: (ok - 1) is 255 where the check failed, 0 where it passed.
        return cv2.bitwise_or(warped, ok - np.uint8(1))


def pair_confusion(prev: np.ndarray, warped: np.ndarray, num_classes: int) -> np.ndarray:
    """(C, C) int64 counts, rows = P_t, columns = warped P_{t+1}; labels >= C are skipped."""
    if prev.size < 1 << 24:
        # A 2-D byte histogram; float32 counts are exact below 2**24 per bin. Classes >= C
        # (ignore) fall outside [:C, :C].
        hist = cv2.calcHist([prev, warped], [0, 1], None, [256, 256], [0, 256, 0, 256])
        return hist[:num_classes, :num_classes].astype(np.int64)
    code = (prev.astype(np.uint16) << 8) | warped
    counts = np.bincount(code.ravel(), minlength=1 << 16)
    return counts.reshape(256, 256)[:num_classes, :num_classes].astype(np.int64)


@dataclass(frozen=True)
class ConsistencyResult:
    """TC over the scored pairs. ``tc`` and ``per_class`` are IoU fractions (1.0 = stable)."""

    tc: float  # mean of per_class over classes present on either side; NaN if nothing scored
    per_class: np.ndarray  # (C,) float64, NaN for classes absent from both sides
    flicker: float  # fraction of compared pixels whose label changed; NaN if none compared
    pairs: int  # consecutive frame pairs scored
    pixels: int  # pixels compared, over all pairs
    preset: str
    work_size: int  # long side of the frames the flow is estimated on
    confusion: np.ndarray = field(repr=False)  # (C, C) int64 counts, rows = P_t, columns = warped P_{t+1}

    @classmethod
    def from_confusion(cls, confusion: np.ndarray, pairs: int, preset: str, work_size: int) -> ConsistencyResult:
        """Scores from an accumulated confusion matrix."""
        m = np.asarray(confusion)
        # counts stay exact integers; a float matrix (e.g. an expectation) is kept as it is
        m = m.astype(np.int64) if np.issubdtype(m.dtype, np.integer) else m.astype(np.float64)
        tp = np.diag(m).astype(np.float64)
        union = m.sum(0) + m.sum(1) - tp
        with np.errstate(invalid="ignore", divide="ignore"):
            per_class = np.where(union > 0, tp / union, np.nan)
        total = m.sum()
        present = per_class[~np.isnan(per_class)]
        return cls(
            tc=float(present.mean()) if present.size else math.nan,
            per_class=per_class,
            flicker=1.0 - float(tp.sum() / total) if total else math.nan,
            pairs=pairs,
            pixels=int(np.rint(total)),
            preset=preset,
            work_size=work_size,
            confusion=m,
        )

    def to_dict(self, class_names: Iterable[str] | None = None) -> dict[str, Any]:
        """JSON-ready: NaN becomes None; per class keyed by name when names are given."""

        def num(x: float) -> float | None:
            return None if math.isnan(x) else float(x)

        names = list(class_names) if class_names is not None else [str(i) for i in range(len(self.per_class))]
        return {
            "tc": num(self.tc),
            "flicker": num(self.flicker),
            "per_class": {n: num(v) for n, v in zip(names, self.per_class)},
            "pairs": self.pairs,
            "pixels": self.pixels,
            "flow": {
                "method": "opencv-dis",
                "preset": self.preset,
                "work_size": self.work_size,
                "fb_check": f"|f+b|^2 < {FB_REL}(|f|^2+|b|^2) + {FB_ABS}",
            },
        }


Flow = tuple[np.ndarray, np.ndarray]  # forward flow (h, w, 2) at the working size, and its check mask (h, w)


class FlowTrack:
    """Frames fed in order; ``advance`` gives the checked flow from the previous frame to this one.

    Only the previous grey working-size frame is kept. Several meters scoring labels of the same
    frames (e.g. a model with and without its memory) share one track: the flow is computed once.
    """

    def __init__(self, *, work_size: int = DEFAULT_WORK_SIZE, preset: str = DEFAULT_PRESET) -> None:
        if work_size < 8:
            raise ValueError(f"work_size must be at least 8 pixels, got {work_size}")
        self.work_size = work_size
        self.preset = preset
        self._warper = FlowWarper(preset)
        self._prev: tuple[np.ndarray, tuple[int, ...]] | None = None  # grey, frame shape

    def reset(self) -> None:
        """Forget the previous frame: the next one starts a new stream (no flow)."""
        self._prev = None

    def advance(self, frame: np.ndarray) -> Flow | None:
        """Add a frame (RGB or grey uint8); the flow from the previous one to it, None for a first frame."""
        grey = to_grey(frame, work_shape(frame.shape[0], frame.shape[1], self.work_size))
        prev, self._prev = self._prev, (grey, frame.shape)
        if prev is None:
            return None
        if prev[1] != frame.shape:
            self._prev = prev  # left as it was: the caller forgot a reset()
            raise ValueError(f"frame size changed ({prev[1]} -> {frame.shape}) without reset()")
        return self._warper.flow(prev[0], grey)


class ConsistencyMeter:
    """Feed frames and their label maps one by one; ``result()`` gives TC over the pairs so far.

    Only the previous grey working-size frame and its labels are kept. ``reset()`` at a scene
    cut or a new stream: the pair across it is not scored, totals are kept. ``add`` takes labels
    with a flow computed elsewhere (a shared :class:`FlowTrack`) instead of a frame.
    """

    def __init__(self, num_classes: int, *, work_size: int = DEFAULT_WORK_SIZE, preset: str = DEFAULT_PRESET) -> None:
        if not 1 <= num_classes < IGNORE:
            raise ValueError(f"num_classes must be 1..{IGNORE - 1}, got {num_classes}")
        self.num_classes = num_classes
        self.work_size = work_size
        self.preset = preset
        self._track = FlowTrack(work_size=work_size, preset=preset)
        self.confusion = np.zeros((num_classes, num_classes), np.int64)
        self.pairs = 0
        self._prev: np.ndarray | None = None  # the previous frame's labels

    def reset(self) -> None:
        """Forget the previous frame: the next update starts a new stream."""
        self._prev = None
        self._track.reset()

    def update(self, frame: np.ndarray, labels: np.ndarray) -> np.ndarray | None:
        """Add a frame (RGB or grey uint8) and its label map; return this pair's confusion (or None).

        Labels are class indices; values >= num_classes (255 = ignore) are not compared.
        Frame and label sizes may differ, but must stay the same until ``reset()``.
        """
        labels = self._as_labels(labels)
        self._check_shape(labels)  # before the track moves on: a refused update changes nothing
        return self.add(labels, self._track.advance(frame))

    def add(self, labels: np.ndarray, flow: Flow | None) -> np.ndarray | None:
        """Add the next frame's labels with the flow from the previous frame to it (a
        :class:`FlowTrack`'s ``advance``); None starts a new stream. Returns the pair's confusion."""
        labels = self._as_labels(labels)
        if flow is not None:
            self._check_shape(labels)
        prev, self._prev = self._prev, labels.copy()  # a copy: a pipeline may reuse its label buffer
        if prev is None or flow is None:
            return None
        fwd, ok = flow
        warped = FlowWarper.warp_back(labels, fwd, ok)
        conf = pair_confusion(prev, warped, self.num_classes)
        self.confusion += conf
        self.pairs += 1
        return conf

    def _check_shape(self, labels: np.ndarray) -> None:
        if self._prev is not None and self._prev.shape != labels.shape:
            raise ValueError(f"label size changed ({self._prev.shape} -> {labels.shape}) without reset()")

    def _as_labels(self, labels: np.ndarray) -> np.ndarray:
        labels = np.asarray(labels)
        if labels.ndim != 2:
            raise ValueError(f"labels must be a 2-D map, got shape {labels.shape}")
        if labels.dtype != np.uint8:
            # Anything that is not a class becomes IGNORE before narrowing to bytes.
            labels = np.where((labels >= 0) & (labels < self.num_classes), labels, IGNORE).astype(np.uint8)
        return np.ascontiguousarray(labels)

    def result(self) -> ConsistencyResult:
        """TC, per-class TC and flicker over every pair scored so far."""
        return ConsistencyResult.from_confusion(self.confusion, self.pairs, self.preset, self.work_size)


def merge(items: Iterable[ConsistencyMeter | ConsistencyResult]) -> ConsistencyResult:
    """One result over several meters or results (e.g. all inputs): confusion matrices add."""
    items = list(items)
    if not items:
        raise ValueError("nothing to merge")
    first = items[0]
    settings = {(i.confusion.shape, i.preset, i.work_size) for i in items}
    if len(settings) > 1:
        raise ValueError(f"cannot merge meters with different classes, preset or work size: {sorted(settings)}")
    total = np.sum([i.confusion for i in items], axis=0)
    return ConsistencyResult.from_confusion(total, sum(i.pairs for i in items), first.preset, first.work_size)
