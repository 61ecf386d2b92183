"""`eval`: Cityscapes mIoU / iIoU with TDNet's temporal protocol.

For every annotated frame, a fresh stream is fed the frames before it from
``leftImg8bit_sequence`` (N-1, plus ``warmup`` more) and then the annotated frame, whose
prediction is scored at full ground-truth resolution (logits resized bilinearly, then
argmax). Without the sequence folder the annotated frame is repeated as its own history.
Images are read in a background thread; the confusion matrix is accumulated on the device.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import cv2
import numpy as np
import torch

from tdnet_cli.data.cityscapes import label_id_to_train_id, train_id_to_label_id
from tdnet_cli.data.layout import FrameId, gt_path, image_path, list_annotated, sequence_path
from tdnet_cli.errors import DataError, OutputExistsError, UsageError, few
from tdnet_cli.fileio import write_png
from tdnet_cli.inference import Predictor
from tdnet_cli.upsample import upsample_argmax
from tdnet_cli.metrics import ConfusionMatrix, InstanceStats, Scores, scores

__all__ = ["EvalReport", "evaluate", "plan_samples", "Sample"]

ProgressFn = Callable[[int, int, float], None]  # (done, total, running mIoU)


@dataclass
class Sample:
    fid: FrameId
    frames: list[Path]  # oldest first; the last is the annotated frame
    gt: Path
    instances: Path | None


@dataclass
class EvalReport:
    scores: Scores
    protocol: str  # "sequence" | "repeat"
    frames_per_sample: int
    evaluated: int
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (frame, reason)
    model: str = ""
    input_size: tuple[int, int] = (0, 0)
    flip: bool = False
    seconds: float = 0.0
    frames_run: int = 0
    predictions_dir: str | None = None
    notes: list[str] = field(default_factory=list)
    propagation: bool = True
    paths_scored: int = 1  # predictions scored per annotated frame (N with all_paths)
    path_miou: list[float] | None = None  # with all_paths: mIoU of each path's predictions alone

    @property
    def fps(self) -> float:
        return self.frames_run / self.seconds if self.seconds else 0.0

    def to_dict(self) -> dict:
        return {
            **self.scores.to_dict(),
            "protocol": self.protocol,
            "frames_per_sample": self.frames_per_sample,
            "evaluated": self.evaluated,
            "skipped": [{"frame": f, "reason": r} for f, r in self.skipped],
            "model": self.model,
            "input_size": list(self.input_size),
            "flip": self.flip,
            "seconds": self.seconds,
            "fps": self.fps,
            "predictions_dir": self.predictions_dir,
            "propagation": self.propagation,
            "paths_scored": self.paths_scored,
            "path_miou": self.path_miou,
            "notes": self.notes,
        }


def plan_samples(
    root: str | os.PathLike,
    split: str,
    *,
    history: int,
    use_sequence: bool | None = None,
    cities: Iterable[str] | None = None,
    limit: int | None = None,
    skip_missing: bool = False,
) -> tuple[list[Sample], str, list[tuple[str, str]], list[str]]:
    """Work out every sample's frame paths before any model work.

    ``history`` frames precede each annotated frame. ``use_sequence`` None means: use
    ``leftImg8bit_sequence`` when it exists. Returns (samples, protocol, skipped, notes).
    """
    root = Path(root)
    fids = list_annotated(root, split, cities)
    if limit is not None:
        fids = fids[:limit]
    notes: list[str] = []
    has_seq = (root / "leftImg8bit_sequence" / split).is_dir()
    if use_sequence is None:
        use_sequence = has_seq
        if not has_seq:
            notes.append(f"no leftImg8bit_sequence/{split}: each annotated frame is repeated as its own history "
                         "(TDNet's memory then sees no motion; scores differ from the temporal protocol)")
    elif use_sequence and not has_seq:
        raise DataError(f"{root / 'leftImg8bit_sequence' / split} not found",
                        hint="add the sequence frames, or pass --no-sequence")
    samples, skipped = [], []
    for fid in fids:
        if use_sequence:
            frames = [sequence_path(root, split, fid.shifted(d)) for d in range(-history, 1)] \
                if fid.frame - history >= 0 else None
        else:
            frames = [image_path(root, split, fid)] * (history + 1)
        missing = [p for p in (frames or []) if not p.is_file()]
        if frames is None or missing:
            reason = f"missing {missing[0]}" if missing else f"fewer than {history} frames before it"
            skipped.append((fid.stem, reason))
            continue
        inst = gt_path(root, split, fid, "instanceIds")
        samples.append(Sample(fid, frames, gt_path(root, split, fid), inst if inst.is_file() else None))
    if skipped and not skip_missing:
        raise DataError(
            f"{len(skipped)} of {len(fids)} annotated frames have no matching images: "
            + few([f"{f} ({r})" for f, r in skipped], 2),
            hint="pass --skip-missing to evaluate the others",
        )
    if not samples:
        raise DataError(f"nothing to evaluate in {root} ({split})", hint="check the folder and --cities")
    return samples, "sequence" if use_sequence else "repeat", skipped, notes


def _read_rgb(path: Path) -> np.ndarray:
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise DataError(f"cannot read image {path}", hint="is the file complete?")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def _read_label(path: Path) -> np.ndarray:
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise DataError(f"cannot read label image {path}", hint="is the file complete?")
    if img.ndim != 2:
        raise DataError(f"{path} is not a single-channel label image")
    return img


def _load(sample: Sample):
    cache: dict[Path, np.ndarray] = {}  # the repeat protocol reads one file many times
    frames = []
    for p in sample.frames:
        if p not in cache:
            cache[p] = _read_rgb(p)
        frames.append(cache[p])
    gt = _read_label(sample.gt)
    inst = _read_label(sample.instances) if sample.instances is not None else None
    return frames, gt, inst


def evaluate(
    root: str | os.PathLike,
    *,
    predictor: Predictor,
    split: str = "val",
    warmup: int = 0,
    use_sequence: bool | None = None,
    cities: Iterable[str] | None = None,
    limit: int | None = None,
    flip: bool = False,
    save_predictions: str | os.PathLike | None = None,
    overwrite: bool = False,
    skip_missing: bool = False,
    propagation: bool = True,
    all_paths: bool = False,
    progress: ProgressFn | None = None,
) -> EvalReport:
    """Score ``predictor`` on ``root`` (Cityscapes layout); see the module docstring.

    ``propagation=False`` scores TDNet's sub-feature output alone (no memory), to show
    what the temporal propagation adds. The annotated frame runs the path that follows
    from the history (the last one without ``warmup``); ``all_paths`` scores it once with
    each of TDNet's N paths, fresh stream each time (N x the work), as a video runs them
    all: one path's score can be several points off the others'.
    """
    if warmup < 0:
        raise UsageError("--warmup must be >= 0")
    if all_paths and save_predictions is not None:
        raise UsageError("--all-paths predicts each frame several times; --save-predictions writes one",
                         hint="drop one of the two options")
    if not propagation:
        if not hasattr(predictor.model, "use_memory"):
            raise UsageError("--no-propagation applies to TDNet models only")
        predictor.model.use_memory = False
    history = predictor.num_paths - 1 + warmup
    # First paths of the fresh streams that put each path on the annotated frame in turn.
    first_paths = [(p - history) % predictor.num_paths for p in range(predictor.num_paths)] if all_paths else [0]
    samples, protocol, skipped, notes = plan_samples(root, split, history=history, use_sequence=use_sequence,
                                                     cities=cities, limit=limit, skip_missing=skip_missing)
    save_dir = Path(save_predictions) if save_predictions is not None else None
    if save_dir is not None and save_dir.exists() and any(save_dir.iterdir()) and not overwrite:
        raise OutputExistsError(f"{save_dir} is not empty", hint="choose another folder or pass --overwrite")
    dev = predictor.device
    conf = ConfusionMatrix(len(predictor.classes), device=dev)
    path_confs = [ConfusionMatrix(len(predictor.classes), device=dev) for _ in first_paths] if all_paths else []
    inst_stats = InstanceStats() if any(s.instances for s in samples) else None
    q: queue.Queue = queue.Queue(maxsize=2)
    stop = threading.Event()

    def reader() -> None:
        for s in samples:
            if stop.is_set():
                return
            try:
                item = (s, _load(s))
            except Exception as exc:  # handed to the main thread, raised there
                item = (s, exc)
            q.put(item)
        q.put(None)

    thread = threading.Thread(target=reader, name="eval-reader", daemon=True)
    thread.start()
    t0 = time.perf_counter()
    frames_run = evaluated = 0
    try:
        while (item := q.get()) is not None:
            sample, loaded = item
            if isinstance(loaded, Exception):
                raise loaded
            frames, gt, inst = loaded
            if frames[-1].shape[:2] != gt.shape:
                reason = f"image {frames[-1].shape[1]}x{frames[-1].shape[0]} vs ground truth {gt.shape[1]}x{gt.shape[0]}"
                if not skip_missing:
                    raise DataError(f"{sample.fid.stem}: unexpected image size ({reason})",
                                    hint="pass --skip-missing to evaluate the others")
                skipped.append((sample.fid.stem, reason))
                if progress:
                    progress(evaluated, len(samples), scores(conf).miou)
                continue
            gt_t = torch.from_numpy(label_id_to_train_id(gt)).to(dev)
            for path, first in enumerate(first_paths):
                stream = predictor.new_stream(2 if flip else 1, first_path=first)
                for frame in frames:
                    batch = np.stack([frame, np.ascontiguousarray(frame[:, ::-1])]) if flip else frame[None]
                    logits = predictor.logits(batch, stream)
                    frames_run += 1
                if flip:
                    # Flip commutes with align_corners=True resizing, so averaging at feature size is exact.
                    logits = (logits[:1] + logits[1:].flip(-1)) / 2
                with torch.inference_mode():
                    labels = upsample_argmax(logits, gt.shape)[0]
                    conf.update(labels, gt_t)
                    if path_confs:
                        path_confs[path].update(labels, gt_t)
                labels_np = labels.cpu().numpy()
                if inst_stats is not None and inst is not None:
                    inst_stats.update(labels_np, inst)
            if save_dir is not None:
                write_png(save_dir / sample.fid.city / f"{sample.fid.stem}_leftImg8bit.png",
                           train_id_to_label_id(labels_np))
            evaluated += 1
            if progress:
                progress(evaluated, len(samples), scores(conf).miou)
    finally:
        if not propagation:
            predictor.model.use_memory = True
        stop.set()
        while thread.is_alive():
            try:
                q.get_nowait()
            except queue.Empty:
                thread.join(0.05)
    if evaluated == 0:
        raise DataError("no annotated frame could be evaluated", hint="see the skipped frames")
    return EvalReport(
        scores=scores(conf, inst_stats, predictor.classes),
        protocol=protocol,
        frames_per_sample=history + 1,
        evaluated=evaluated,
        skipped=skipped,
        model=predictor.name,
        input_size=predictor.input_size,
        flip=flip,
        seconds=time.perf_counter() - t0,
        frames_run=frames_run,
        predictions_dir=str(save_dir) if save_dir is not None else None,
        notes=notes + list(predictor.notes),
        propagation=propagation,
        paths_scored=len(first_paths),
        path_miou=[scores(c).miou for c in path_confs] or None,
    )
