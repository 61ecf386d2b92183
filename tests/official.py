"""The official Cityscapes evaluation (cityscapesscripts) as a test oracle."""

from __future__ import annotations

import importlib
import os
from pathlib import Path

import numpy as np


def ground_truths(dataset_root: Path, split: str) -> list[str]:
    """The label-id ground truths of ``split``, sorted: the files the official evaluation scores."""
    return sorted(str(p) for p in (Path(dataset_root) / "gtFine" / split).glob("*/*_gtFine_labelIds.png"))


def official_scores(dataset_root: Path, split: str, prediction_dir: Path) -> dict:
    """Run evalPixelLevelSemanticLabeling on label-id PNGs in ``prediction_dir``.

    Returns its result dict: ``averageScoreClasses`` (mIoU), ``averageScoreInstClasses``
    (iIoU), ``classScores`` / ``classInstScores`` by class name (nan where undefined).
    """
    os.environ["CITYSCAPES_DATASET"] = str(dataset_root)  # read at import time
    if not hasattr(np, "in1d"):  # numpy 2.4 removed in1d; cityscapesscripts 2.3.0 still calls it
        np.in1d = np.isin
    mod = importlib.import_module("cityscapesscripts.evaluation.evalPixelLevelSemanticLabeling")
    args = mod.args
    args.predictionPath = str(prediction_dir)
    args.predictionWalk = None
    args.quiet = True
    args.JSONOutput = False
    args.evalInstLevelScore = True
    gts = ground_truths(dataset_root, split)
    preds = [mod.getPrediction(args, gt) for gt in gts]
    return mod.evaluateImgLists(preds, gts, args)
