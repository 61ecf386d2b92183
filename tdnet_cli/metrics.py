"""Cityscapes pixel-level metrics, computed the way the official evaluation computes them.

- IoU per class from a confusion matrix over pixels whose ground truth is one of the
  19 evaluated classes; a class absent from both prediction and ground truth has no IoU
  (``None``, shown as n/a), and the mean is over the classes that have one.
- iIoU for the 8 instance classes: true positives and false negatives of each ground-truth
  instance are weighted by (average instance size of its class / its size); false positives
  are plain pixel counts (as in cityscapesscripts' evalPixelLevelSemanticLabeling).
- Pixel accuracy: correct / evaluated pixels.

The confusion matrix is accumulated with ``bincount`` on whatever device the labels are on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from tdnet_cli.data.cityscapes import CLASSES, IGNORE_INDEX, LABELS, NUM_CLASSES, label_id_to_train_id

__all__ = ["AVG_INSTANCE_SIZE", "INSTANCE_CLASSES", "ConfusionMatrix", "InstanceStats", "Scores", "scores"]

# Average instance size (pixels at 1024x2048) per class, the official evaluation's weights.
AVG_INSTANCE_SIZE = {
    "bicycle": 4672.3249222261,
    "caravan": 36771.8241758242,
    "motorcycle": 6298.7200839748,
    "rider": 3930.4788056518,
    "bus": 35732.1511111111,
    "train": 67583.7075812274,
    "car": 12794.0202738185,
    "person": 3462.4756337644,
    "truck": 27855.1264367816,
    "trailer": 16926.9763313609,
}
# Evaluated classes with instances, as train ids.
INSTANCE_CLASSES = tuple(lab.train_id for lab in LABELS if lab.has_instances and lab.train_id != IGNORE_INDEX)
_LABEL_ID_OF = {lab.train_id: lab.id for lab in LABELS if lab.train_id != IGNORE_INDEX}


class ConfusionMatrix:
    """A (C, C) count matrix, rows = ground truth, columns = prediction (train ids)."""

    def __init__(self, num_classes: int = NUM_CLASSES, device: torch.device | str = "cpu") -> None:
        self.num_classes = num_classes
        self.matrix = torch.zeros(num_classes * num_classes, dtype=torch.int64, device=device)

    def update(self, pred: torch.Tensor, gt: torch.Tensor) -> None:
        """Add one image: ``pred`` and ``gt`` are train-id maps of the same shape; gt 255 is skipped."""
        if pred.shape != gt.shape:
            raise ValueError(f"prediction {tuple(pred.shape)} and ground truth {tuple(gt.shape)} differ in size")
        gt = gt.to(self.matrix.device).long().flatten()
        pred = pred.to(self.matrix.device).long().flatten()
        valid = gt < self.num_classes
        idx = gt[valid] * self.num_classes + pred[valid]
        self.matrix += torch.bincount(idx, minlength=self.num_classes**2)

    def numpy(self) -> np.ndarray:
        return self.matrix.view(self.num_classes, self.num_classes).cpu().numpy()


@dataclass
class InstanceStats:
    """Weighted true positives / false negatives per instance class (train id -> float)."""

    tp_weighted: dict[int, float] = field(default_factory=lambda: {c: 0.0 for c in INSTANCE_CLASSES})
    fn_weighted: dict[int, float] = field(default_factory=lambda: {c: 0.0 for c in INSTANCE_CLASSES})

    def update(self, pred_train_ids: np.ndarray, instance_ids: np.ndarray) -> None:
        """Add one image: predicted train ids and the ground truth's ``_gtFine_instanceIds``."""
        inst = np.asarray(instance_ids)
        if inst.shape != pred_train_ids.shape:
            raise ValueError("instance map and prediction differ in size")
        sel = inst > 1000  # instance ids are label_id * 1000 + k; plain label ids are groups/crowds
        ids, inverse = np.unique(inst[sel], return_inverse=True)
        if ids.size == 0:
            return
        sizes = np.bincount(inverse, minlength=ids.size)
        train_ids = label_id_to_train_id((ids // 1000).astype(np.uint8)).astype(np.int64)
        # Per pixel: does the prediction match its instance's class? Summed per instance.
        match = pred_train_ids[sel].astype(np.int64) == train_ids[inverse]
        hits = np.bincount(inverse, weights=match.astype(np.float64), minlength=ids.size)
        for j, tid in enumerate(train_ids):
            tid = int(tid)
            if tid not in self.tp_weighted:
                continue
            name = CLASSES[tid]
            weight = AVG_INSTANCE_SIZE[name] / float(sizes[j])
            tp = int(hits[j])
            self.tp_weighted[tid] += float(tp) * weight
            self.fn_weighted[tid] += float(int(sizes[j]) - tp) * weight


@dataclass
class Scores:
    iou: list[float | None]  # per class; None = n/a (class absent from prediction and ground truth)
    miou: float
    pixel_accuracy: float
    iiou: dict[str, float | None] | None = None  # per instance class name
    miiou: float | None = None
    classes: tuple[str, ...] = CLASSES

    def to_dict(self) -> dict:
        return {
            "miou": self.miou,
            "pixel_accuracy": self.pixel_accuracy,
            "miiou": self.miiou,
            "iou": dict(zip(self.classes, self.iou)),
            "iiou": self.iiou,
        }


def _mean(values) -> float:
    vals = [v for v in values if v is not None]
    return sum(vals) / len(vals) if vals else math.nan


def scores(conf: ConfusionMatrix, inst: InstanceStats | None = None, classes: tuple[str, ...] = CLASSES) -> Scores:
    m = conf.numpy().astype(np.int64)
    tp = np.diag(m)
    fn = m.sum(1) - tp
    fp = m.sum(0) - tp
    iou: list[float | None] = []
    for c in range(conf.num_classes):
        denom = int(tp[c] + fp[c] + fn[c])
        iou.append(float(tp[c]) / denom if denom else None)
    total = int(m.sum())
    result = Scores(
        iou=iou, miou=_mean(iou), pixel_accuracy=float(tp.sum()) / total if total else math.nan, classes=classes
    )
    if inst is not None:
        iiou: dict[str, float | None] = {}
        for c in INSTANCE_CLASSES:
            denom = inst.tp_weighted[c] + float(fp[c]) + inst.fn_weighted[c]
            iiou[classes[c]] = inst.tp_weighted[c] / denom if denom != 0 else None
        result.iiou = iiou
        result.miiou = _mean(iiou.values())
    return result
