"""Writing a generated split in the Cityscapes layout: leftImg8bit_sequence/ for every
frame, leftImg8bit/ and gtFine/ (labelIds, color, instanceIds) for the annotated one."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from tdnet_cli.data import layout
from tdnet_cli.data.synth.labels import SynthFrame, label_color_lut
from tdnet_cli.data.synth.sequence import _check_size, render_sequence
from tdnet_cli.errors import OutputExistsError, UsageError
from tdnet_cli.fileio import check_writable, write_png

TRAIN_CITIES: tuple[str, ...] = ("synthburg", "synthdorf", "synthhafen")
VAL_CITIES: tuple[str, ...] = ("synthstadt",)
_CITIES = {"train": TRAIN_CITIES, "val": VAL_CITIES}
_SPLIT_CODE = {"train": 1, "val": 2}


def sequence_seed(seed: int, split: str, index: int) -> int:
    """The seed of sequence ``index`` of ``split`` in a dataset generated with ``seed``."""
    if seed < 0:
        raise UsageError(f"seed must be >= 0, got {seed}")
    state = np.random.SeedSequence([int(seed), _SPLIT_CODE[split], int(index)]).generate_state(2, np.uint32)
    return int(state[0]) << 32 | int(state[1])


@dataclass(frozen=True)
class SynthResult:
    """What ``generate_dataset`` wrote."""

    out_dir: Path
    split: str
    size: tuple[int, int]
    seed: int
    sequences: int
    frames: int  # images written to leftImg8bit_sequence
    annotated: tuple[layout.FrameId, ...]
    seconds: float

    @property
    def fps(self) -> float:
        """Frames generated and written per second."""
        return self.frames / self.seconds if self.seconds > 0 else float("inf")

    def to_dict(self) -> dict:
        return {
            "out_dir": str(self.out_dir),
            "split": self.split,
            "size": list(self.size),
            "seed": self.seed,
            "sequences": self.sequences,
            "frames": self.frames,
            "annotated": len(self.annotated),
            "cities": sorted({f.city for f in self.annotated}),
            "seconds": round(self.seconds, 3),
            "fps": round(self.fps, 2),
        }


def _check_args(
    size: tuple[int, int], split: str, sequences: int, frames_per_sequence: int, seed: int
) -> tuple[int, int]:
    """Validate ``generate_dataset``'s arguments (before anything is written); returns (h, w)."""
    h, w = _check_size(size)
    if split not in _CITIES:
        raise UsageError(f"unknown split {split!r}", hint="use train or val")
    if sequences < 1:
        raise UsageError(f"sequences must be at least 1, got {sequences}")
    if frames_per_sequence <= layout.ANNOTATED_INDEX:
        raise UsageError(
            f"frames per sequence must be at least {layout.ANNOTATED_INDEX + 1}, got {frames_per_sequence}",
            hint=f"the annotated frame is number {layout.ANNOTATED_INDEX + 1} of each snippet, as in Cityscapes",
        )
    if seed < 0:
        raise UsageError(f"seed must be >= 0, got {seed}")
    return h, w


def _split_folders(out: Path, split: str) -> list[Path]:
    """The folders a split is written under (leftImg8bit_sequence/{split}, ...), from the same
    path functions _write_frame uses."""
    fid = layout.FrameId("x", 0, 0)
    paths = (layout.sequence_path(out, split, fid), layout.image_path(out, split, fid), layout.gt_path(out, split, fid))
    return [q.parents[1] for q in paths]  # {top}/{split}/{city}/{file} -> {top}/{split}


def _check_output(out: Path, split: str, overwrite: bool) -> None:
    """The output folder must be a writable folder without ``split`` in it, unless ``overwrite``.
    Adding a split to a dataset needs no flag: only the split's own folders are written to."""
    if out.exists() and not out.is_dir():
        raise OutputExistsError(f"{out} exists and is not a folder", hint="choose another output folder")
    there = [str(f.relative_to(out)) for f in _split_folders(out, split) if f.exists()]
    if there and not overwrite:
        raise OutputExistsError(
            f"{out} already holds the {split} split ({', '.join(there)})",
            hint="pass --overwrite to write over it (same-named files are replaced), or choose another folder",
        )
    check_writable(out, "output folder", hint="choose another output folder")  # before any file is made


def _parent(path: Path, made: set[Path]) -> Path:
    """``path``, with its folder created (once per folder: ``made`` remembers them)."""
    if path.parent not in made:
        path.parent.mkdir(parents=True, exist_ok=True)
        made.add(path.parent)
    return path


def _write_frame(
    out: Path, split: str, fid: layout.FrameId, fr: SynthFrame, annotated: bool, lut: np.ndarray, made: set[Path]
) -> None:
    """One snippet frame to leftImg8bit_sequence; the annotated one also to leftImg8bit and gtFine."""
    bgr = cv2.cvtColor(fr.rgb, cv2.COLOR_RGB2BGR)
    write_png(_parent(layout.sequence_path(out, split, fid), made), bgr)
    if annotated:
        paths = [layout.image_path(out, split, fid)] + [layout.gt_path(out, split, fid, k) for k in layout.GT_KINDS]
        for q in paths:
            _parent(q, made)
        write_png(paths[0], bgr)
        write_png(paths[1], fr.label_ids)
        write_png(paths[2], cv2.cvtColor(lut[fr.label_ids], cv2.COLOR_RGB2BGR))
        write_png(paths[3], fr.instance_ids.astype(np.uint16))


def generate_dataset(
    out_dir: str | Path,
    *,
    sequences: int,
    split: str = "train",
    size: tuple[int, int] = (1024, 2048),
    seed: int = 0,
    frames_per_sequence: int = layout.SNIPPET_LENGTH,
    overwrite: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> SynthResult:
    """Write ``sequences`` synthetic snippets in the Cityscapes layout under ``out_dir``.

    Every snippet frame goes to ``leftImg8bit_sequence``; frame ``layout.ANNOTATED_INDEX``
    of each also to ``leftImg8bit`` and ``gtFine`` (labelIds, color, instanceIds).
    ``progress(done, total)`` is called after every frame. A split already under ``out_dir`` is
    written over only with ``overwrite``; another split is added beside it without.
    """
    h, w = _check_args(size, split, sequences, frames_per_sequence, seed)
    out = Path(out_dir)
    _check_output(out, split, overwrite)
    cities = _CITIES[split]
    lut = label_color_lut()
    total = sequences * frames_per_sequence
    done = 0
    annotated: list[layout.FrameId] = []
    made: set[Path] = set()
    t0 = time.perf_counter()
    for i in range(sequences):
        city, seq_no = cities[i % len(cities)], i // len(cities)
        sseed = sequence_seed(seed, split, i)
        # Snippet frame numbers: consecutive, starting somewhere arbitrary, as in Cityscapes.
        start = int(np.random.SeedSequence([int(seed), _SPLIT_CODE[split], i, 7]).generate_state(1)[0] % 3000)
        for j, fr in enumerate(render_sequence(sseed, (h, w), frames_per_sequence)):
            fid = layout.FrameId(city, seq_no, start + j)
            _write_frame(out, split, fid, fr, j == layout.ANNOTATED_INDEX, lut, made)
            if j == layout.ANNOTATED_INDEX:
                annotated.append(fid)
            done += 1
            if progress is not None:
                progress(done, total)
    return SynthResult(
        out_dir=out,
        split=split,
        size=(h, w),
        seed=seed,
        sequences=sequences,
        frames=done,
        annotated=tuple(annotated),
        seconds=time.perf_counter() - t0,
    )
