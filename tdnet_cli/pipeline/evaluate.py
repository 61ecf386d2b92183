"""`eval`: Cityscapes mIoU / iIoU with TDNet's temporal protocol.

For every annotated frame, a fresh stream is fed the frames before it from
``leftImg8bit_sequence`` (N-1, plus ``warmup`` more) and then the annotated frame, whose
prediction is scored at full ground-truth resolution (logits resized bilinearly, then
argmax). Without the sequence folder the annotated frame is repeated as its own history.
Images are read in a background thread; the confusion matrix is accumulated on the device.
With the sequences, the temporal consistency (TC) of the predictions over each sample's frames
is scored too (:mod:`tdnet_cli.pipeline.evaluate_tc`; its optical flow runs in the reader thread).
"""

from __future__ import annotations

import os
import queue
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch

from tdnet_cli.data.cityscapes import label_id_to_train_id, train_id_to_label_id
from tdnet_cli.data.layout import (
    SPLITS,
    FrameId,
    gt_path,
    image_path,
    list_annotated,
    sequence_path,
)
from tdnet_cli.errors import DataError, OutputExistsError, UsageError, few
from tdnet_cli.fileio import check_writable, write_png
from tdnet_cli.inference import Predictor
from tdnet_cli.metrics import ConfusionMatrix, InstanceStats, Scores, scores
from tdnet_cli.pipeline.evaluate_tc import SequenceConsistency
from tdnet_cli.upsample import upsample_argmax

__all__ = ["EvalReport", "Sample", "check_options", "check_outputs", "evaluate", "plan_samples"]

ProgressFn = Callable[[int, int, float], None]  # (done, total, running mIoU)
WarnFn = Callable[[str], None]

# The dataset's input folders: nothing of eval's is ever written inside them.
DATA_FOLDERS = ("leftImg8bit_sequence", "leftImg8bit", "gtFine")
_PREDICTION_SUFFIX = "_leftImg8bit.png"


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
    warnings: list[str] = field(default_factory=list)  # also printed as `warning:` lines by the CLI
    consistency: dict | None = None  # TC over the predicted sequences (SequenceConsistency.to_dict); None: not scored

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
            "warnings": self.warnings,
            "consistency": self.consistency,
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
            notes.append(
                f"no leftImg8bit_sequence/{split} in {root}: per-frame protocol, each annotated frame "
                "repeated as its own history (TDNet's memory sees no motion, so scores differ from the "
                "temporal protocol; --no-sequence chooses this explicitly)"
            )
    elif use_sequence and not has_seq:
        raise DataError(
            f"{root / 'leftImg8bit_sequence' / split} not found", hint="add the sequence frames, or pass --no-sequence"
        )
    samples, skipped = [], []
    for fid in fids:
        if use_sequence:
            frames = (
                [sequence_path(root, split, fid.shifted(d)) for d in range(-history, 1)]
                if fid.frame - history >= 0
                else None
            )
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


def _data_folder_of(path: Path, root: Path) -> Path | None:
    """The dataset input folder (``DATA_FOLDERS``) that ``path`` is or lies in, if any."""
    p, r = path.resolve(), root.resolve()
    for name in DATA_FOLDERS:
        if p == r / name or r / name in p.parents:
            return root / name
    return None


def _same_file(a: Path, b: str | os.PathLike) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _check_json(path: Path, root: Path, weights: str | None, overwrite: bool) -> None:
    if path.is_dir():
        raise UsageError(f"--json-file {path} is a folder", hint=f"name a file, e.g. {path / 'eval.json'}")
    if (folder := _data_folder_of(path, root)) is not None:
        raise UsageError(
            f"--json-file {path} is inside the dataset's input folder {folder}", hint="name a file elsewhere"
        )
    if path.exists() or path.is_symlink():
        if not overwrite:
            raise OutputExistsError(
                f"--json-file {path} exists", hint="pass --overwrite to replace it, or name another file"
            )
        if weights and _same_file(path, weights):
            raise UsageError(
                f"--json-file {path} is the --weights file; --overwrite never replaces an input",
                hint="name another file",
            )
    check_writable(path, "--json-file", hint="name a file in a writable folder")


def _foreign_entries(folder: Path) -> list[str]:
    """What in ``folder`` eval's --save-predictions would not have written: anything but city
    folders of ``*_leftImg8bit.png`` files (and fileio's hidden temporaries). Links count as foreign."""
    foreign = []
    for entry in sorted(folder.iterdir()):
        if entry.is_symlink() or not entry.is_dir():
            foreign.append(entry.name)
            continue
        for f in sorted(entry.iterdir()):
            ours = f.name.endswith(_PREDICTION_SUFFIX) or (f.name.startswith(".") and ".partial" in f.name)
            if not ours or f.is_symlink() or not f.is_file():
                foreign.append(f"{entry.name}/{f.name}")
    return foreign


def _check_predictions(save_dir: Path, root: Path, overwrite: bool) -> None:
    if (folder := _data_folder_of(save_dir, root)) is not None:
        raise UsageError(
            f"--save-predictions {save_dir} is inside the dataset's input folder {folder}",
            hint="choose a folder outside the dataset's leftImg8bit*/ and gtFine/",
        )
    if save_dir.is_symlink() and not save_dir.exists() or save_dir.exists() and not save_dir.is_dir():
        raise UsageError(
            f"--save-predictions {save_dir} is a file, not a folder", hint="name a folder; it is created if missing"
        )
    if save_dir.is_dir() and any(save_dir.iterdir()):
        if not overwrite:
            raise OutputExistsError(
                f"--save-predictions {save_dir} is not empty", hint="choose another folder or pass --overwrite"
            )
        if foreign := _foreign_entries(save_dir):
            raise OutputExistsError(
                f"--save-predictions {save_dir} holds files eval does not write ({few(foreign)}); --overwrite "
                "replaces only prediction PNGs",
                hint="choose an empty or new folder",
            )
    check_writable(save_dir, "--save-predictions", hint="choose a writable folder")


def check_options(*, split: str, warmup: int, limit: int | None, cities: Iterable[str] | None) -> list[str] | None:
    """Refuse bad options before any work; returns ``cities`` as a list (None: all)."""
    if split not in SPLITS:
        raise UsageError(f"unknown split {split!r}", hint=f"use one of {', '.join(SPLITS)}")
    if warmup < 0:
        raise UsageError(f"--warmup must be >= 0, got {warmup}")
    if limit is not None and limit < 1:
        raise UsageError(f"--limit must be at least 1, got {limit}")
    if cities is not None:
        cities = list(cities)
        if not cities:
            raise UsageError("--cities names no city", hint="e.g. --cities frankfurt,lindau")
    return cities


def check_outputs(
    root: str | os.PathLike,
    *,
    json_path: str | os.PathLike | None = None,
    save_predictions: str | os.PathLike | None = None,
    weights: str | None = None,
    overwrite: bool = False,
) -> None:
    """Refuse, before any work and creating nothing, outputs that cannot be written or would
    replace something: an existing file without ``overwrite``, a folder as --json-file, a file as
    --save-predictions, anything inside the dataset's input folders or the weights file, a
    predictions folder holding files eval does not write, an unwritable place."""
    root = Path(root)
    if json_path is not None and str(json_path) != "-":
        _check_json(Path(json_path), root, weights, overwrite)
        if save_predictions is not None and Path(json_path).resolve() == Path(save_predictions).resolve():
            raise UsageError("--json-file and --save-predictions name the same path", hint="give each its own")
    if save_predictions is not None:
        _check_predictions(Path(save_predictions), root, overwrite)


def _prediction_path(save_dir: Path, fid: FrameId) -> Path:
    return save_dir / fid.city / f"{fid.stem}{_PREDICTION_SUFFIX}"


def _check_not_inputs(save_dir: Path, samples: list[Sample]) -> list[str]:
    """Refuse predictions that would land on an input file (through a link); return the names of
    prediction PNGs already in ``save_dir`` that this run leaves as they are (another run's)."""

    def key(p: Path) -> tuple[int, int] | None:
        try:
            st = os.stat(p)
        except OSError:
            return None
        return st.st_dev, st.st_ino

    inputs = {key(p) for s in samples for p in {*s.frames, s.gt, *([s.instances] if s.instances else [])}}
    ours = set()
    for s in samples:
        out = _prediction_path(save_dir, s.fid)
        ours.add(out)
        if (k := key(out)) is not None and k in inputs:
            raise UsageError(f"--save-predictions would replace the input {out}", hint="choose another folder")
    if not save_dir.is_dir():
        return []
    return sorted(str(p.relative_to(save_dir)) for p in save_dir.glob(f"*/*{_PREDICTION_SUFFIX}") if p not in ours)


def _read_rgb(path: Path) -> np.ndarray:
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise DataError(f"cannot read image {path}", hint="is the file complete?")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def _read_label(path: Path, *, ids: bool = False) -> np.ndarray:
    """A single-channel label image; ``ids``: Cityscapes label ids, which must fit in 8 bits."""
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise DataError(f"cannot read label image {path}", hint="is the file complete?")
    if img.ndim != 2:
        raise DataError(f"{path} is not a single-channel label image")
    if ids and img.dtype != np.uint8 and img.size and (img.min() < 0 or img.max() > 255):
        raise DataError(f"{path} holds label ids outside 0..255", hint="labelIds images hold Cityscapes label ids")
    return img


def _load(sample: Sample):
    cache: dict[Path, np.ndarray] = {}  # the repeat protocol reads one file many times
    frames = []
    for p in sample.frames:
        if p not in cache:
            cache[p] = _read_rgb(p)
        frames.append(cache[p])
    gt = _read_label(sample.gt, ids=True)
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
    consistency: bool = True,
    progress: ProgressFn | None = None,
    warn: WarnFn | None = None,
) -> EvalReport:
    """Score ``predictor`` on ``root`` (Cityscapes layout); see the module docstring.

    ``propagation=False`` scores TDNet's sub-feature output alone (no memory), to show
    what the temporal propagation adds. The annotated frame runs the path that follows
    from the history (the last one without ``warmup``); ``all_paths`` scores it once with
    each of TDNet's N paths, fresh stream each time (N x the work), as a video runs them
    all: one path's score can be several points off the others'.

    ``consistency``: also score the TC of the predictions over each sample's frames (temporal
    protocol only; ``report.consistency``, None when not scored).

    ``save_predictions`` is checked as :func:`check_outputs` does before any work. ``warn`` is
    called with each warning (also in ``report.warnings``) as soon as it is known.
    """
    cities = check_options(split=split, warmup=warmup, limit=limit, cities=cities)
    if all_paths and save_predictions is not None:
        raise UsageError(
            "--all-paths predicts each frame several times; --save-predictions writes one",
            hint="drop one of the two options",
        )
    save_dir = Path(save_predictions) if save_predictions is not None else None
    if save_dir is not None:
        _check_predictions(save_dir, Path(root), overwrite)
    if not propagation:
        if not hasattr(predictor.model, "use_memory"):
            raise UsageError("--no-propagation applies to TDNet models only")
        predictor.model.use_memory = False
    history = predictor.num_paths - 1 + warmup
    # First paths of the fresh streams that put each path on the annotated frame in turn.
    first_paths = [(p - history) % predictor.num_paths for p in range(predictor.num_paths)] if all_paths else [0]
    samples, protocol, skipped, notes = plan_samples(
        root, split, history=history, use_sequence=use_sequence, cities=cities, limit=limit, skip_missing=skip_missing
    )
    # plan_samples' only note is the fallback to the per-frame protocol: a warning, not a footnote;
    # so is the model's random weights (Predictor.warnings)
    model_warnings = list(getattr(predictor, "warnings", []))
    warnings = model_warnings + notes
    if save_dir is not None and (others := _check_not_inputs(save_dir, samples)):
        warnings.append(
            f"{save_dir} keeps {len(others)} prediction PNGs this run does not write ({few(others, 2)}); "
            "cityscapesscripts would score them too"
        )
    for w in warnings:
        if warn is not None:
            warn(w)
    dev = predictor.device
    conf = ConfusionMatrix(len(predictor.classes), device=dev)
    path_confs = [ConfusionMatrix(len(predictor.classes), device=dev) for _ in first_paths] if all_paths else []
    inst_stats = InstanceStats() if any(s.instances for s in samples) else None
    tc = SequenceConsistency(len(predictor.classes)) if consistency and protocol == "sequence" else None
    q: queue.Queue = queue.Queue(maxsize=2)
    stop = threading.Event()

    def reader() -> None:
        for s in samples:
            if stop.is_set():
                return
            try:
                loaded = _load(s)
                # The flow needs the frames only: computed here, while the model runs on the previous sample.
                item = (s, (*loaded, tc.flows(loaded[0]) if tc is not None else None))
            except Exception as exc:  # noqa: BLE001 - handed to the main thread, raised there
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
            frames, gt, inst, flows = loaded
            if frames[-1].shape[:2] != gt.shape or (inst is not None and inst.shape != gt.shape):
                other, what = (frames[-1], "image") if frames[-1].shape[:2] != gt.shape else (inst, "instanceIds")
                reason = f"{what} {other.shape[1]}x{other.shape[0]} vs ground truth {gt.shape[1]}x{gt.shape[0]}"
                if not skip_missing:
                    raise DataError(
                        f"{sample.fid.stem}: unexpected image size ({reason})",
                        hint="pass --skip-missing to evaluate the others",
                    )
                skipped.append((sample.fid.stem, reason))
                if progress:
                    progress(evaluated, len(samples), scores(conf).miou)
                continue
            gt_t = torch.from_numpy(label_id_to_train_id(gt)).to(dev)
            for path, first in enumerate(first_paths):
                stream = predictor.new_stream(2 if flip else 1, first_path=first)
                if tc is not None:
                    tc.start()
                for i, frame in enumerate(frames):
                    batch = np.stack([frame, np.ascontiguousarray(frame[:, ::-1])]) if flip else frame[None]
                    logits = predictor.logits(batch, stream)
                    frames_run += 1
                    if flip and (tc is not None or i == len(frames) - 1):
                        # Flip commutes with align_corners=True resizing, so averaging at feature size is exact.
                        logits = (logits[:1] + logits[1:].flip(-1)) / 2
                    if tc is not None:
                        tc.add(logits, flows[i], frame.shape[:2])
                with torch.inference_mode():
                    labels = upsample_argmax(logits, gt.shape)[0]
                    conf.update(labels, gt_t)
                    if path_confs:
                        path_confs[path].update(labels, gt_t)
                labels_np = labels.cpu().numpy()
                if inst_stats is not None and inst is not None:
                    inst_stats.update(labels_np, inst)
            if save_dir is not None:
                write_png(
                    save_dir / sample.fid.city / f"{sample.fid.stem}_leftImg8bit.png", train_id_to_label_id(labels_np)
                )
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
        notes=notes + [n for n in predictor.notes if n not in model_warnings],
        propagation=propagation,
        paths_scored=len(first_paths),
        path_miou=[scores(c).miou for c in path_confs] or None,
        warnings=warnings,
        consistency=tc.to_dict(predictor.classes, history + 1) if tc is not None else None,
    )
