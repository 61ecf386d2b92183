"""`eval --consistency`: how much a model's labels flicker on any footage, without ground truth.

Each input (video, URL, folder of frames, or the image files of one folder, as ``segment`` reads
them) is its own stream:
frames are decoded in order, labelled by the stateful model at the frame's own size, and fed
with their labels to a :class:`~tdnet_cli.consistency.ConsistencyMeter` (TC, per-class TC and
flicker rate, after optical-flow compensation). At a hard scene cut the model's stream and
the meter restart, so the pair across the cut is not scored.

Modes: ``propagation`` runs TDNet as it is (its memory of the previous frames); ``per_frame``
scores each frame's own sub-features without the memory (``--no-propagation``). Both at once
decode each frame once and run it through two streams of the same model, each with its meter;
the optical flow depends on the frames alone, so it is computed once and both meters use it.
This module is core code: progress goes through a callback, nothing is printed.
"""

from __future__ import annotations

import glob
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tdnet_cli.consistency import (
    DEFAULT_PRESET,
    DEFAULT_WORK_SIZE,
    ConsistencyMeter,
    ConsistencyResult,
    FlowTrack,
    merge,
)
from tdnet_cli.errors import InputError, OutputExistsError, UsageError, few
from tdnet_cli.fileio import check_writable
from tdnet_cli.inference import Predictor
from tdnet_cli.pipeline.inputs import ImageSequence, InputSet, Spec, gather_inputs
from tdnet_cli.video import CutDetector, ImageSequenceReader, is_url, open_source

__all__ = [
    "MODES",
    "ConsistencyReport",
    "InputConsistency",
    "check_inputs",
    "check_json",
    "check_modes",
    "consistency_eval",
]

# "propagation": TDNet with its memory of earlier frames; "per_frame": without it (each frame alone).
MODES = ("propagation", "per_frame")

ProgressFn = Callable[[str, int, int, int, int | None], None]  # (input, index, count, frames done, total or None)
WarnFn = Callable[[str], None]


def _scores(result: ConsistencyResult, classes: Sequence[str]) -> dict[str, Any]:
    """A result's figures for the JSON; the flow settings are stated once, at the top."""
    d = result.to_dict(classes)
    del d["flow"]
    return d


@dataclass(frozen=True)
class InputConsistency:
    """One input's figures, per mode."""

    input: str
    frames: int
    cuts: int  # hard scene cuts: the model's memory and the meter restarted there
    seconds: float
    model_seconds: float  # in the model (all modes)
    flow_seconds: float  # in the consistency meter: flow, warping, counting (all modes)
    results: dict[str, ConsistencyResult]  # mode -> result

    def to_dict(self, classes: Sequence[str]) -> dict[str, Any]:
        return {
            "input": self.input, "frames": self.frames, "cuts": self.cuts, "seconds": round(self.seconds, 3),
            "model_seconds": round(self.model_seconds, 3), "flow_seconds": round(self.flow_seconds, 3),
            "results": {m: _scores(r, classes) for m, r in self.results.items()},
        }  # fmt: skip


@dataclass
class ConsistencyReport:
    """Every input of one run, and the figures over all of them (confusion matrices added)."""

    model: str
    input_size: tuple[int, int]
    classes: tuple[str, ...]
    modes: tuple[str, ...]
    preset: str = DEFAULT_PRESET
    work_size: int = DEFAULT_WORK_SIZE
    inputs: list[InputConsistency] = field(default_factory=list)
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # also given to the warn callback as they arise

    @property
    def frames(self) -> int:
        return sum(i.frames for i in self.inputs)

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    def overall(self) -> dict[str, ConsistencyResult]:
        """Mode -> the result over all inputs."""
        if not self.inputs:
            empty = np.zeros((len(self.classes),) * 2, np.int64)
            return {m: ConsistencyResult.from_confusion(empty, 0, self.preset, self.work_size) for m in self.modes}
        return {m: merge(i.results[m] for i in self.inputs) for m in self.modes}

    def to_dict(self) -> dict[str, Any]:
        overall = self.overall()
        flow = next(iter(overall.values())).to_dict()["flow"]
        return {
            "model": self.model,
            "input_size": list(self.input_size),
            "modes": list(self.modes),
            "flow": flow,
            "frames": self.frames,
            "seconds": round(self.seconds, 3),
            "fps": round(self.fps, 2),
            "overall": {m: _scores(r, self.classes) for m, r in overall.items()},
            "inputs": [i.to_dict(self.classes) for i in self.inputs],
            "notes": self.notes,
            "warnings": self.warnings,
        }


def check_modes(modes: Iterable[str], predictor: Predictor) -> tuple[str, ...]:
    """The modes to run, in MODES' order; ``per_frame`` needs a TDNet (a model with a memory)."""
    given = set(modes)
    if not given or given - set(MODES):
        raise UsageError(f"modes must be some of {', '.join(MODES)}, got {sorted(given) or 'none'}")
    modes = tuple(m for m in MODES if m in given)
    if "per_frame" in modes and not hasattr(getattr(predictor, "model", None), "use_memory"):
        raise UsageError("--no-propagation applies to TDNet models only")
    return modes


def _paths(specs: Sequence[Spec]) -> list[str]:
    """Every path or URL the inputs name (an image sequence's images one by one)."""
    return [p for s in specs for p in (s.images if isinstance(s, ImageSequence) else (s,))]


def check_inputs(specs: Sequence[Spec]) -> None:
    """Refuse, before the model loads, inputs that are not there (URLs are tried when read)."""
    if not specs:
        raise UsageError("no inputs", hint="pass videos, folders of frames, URLs or globs after --consistency")
    for spec in _paths(specs):
        if not is_url(spec) and not os.path.lexists(spec):
            hint = "the pattern matches nothing" if glob.has_magic(spec) else None
            raise InputError(f"{spec}: no such file or folder", hint=hint)


def check_json(path: str | os.PathLike, specs: Sequence[Spec], *, weights: str | None, overwrite: bool) -> None:
    """Refuse, creating nothing, a --json-file that is a folder, exists (without ``overwrite``),
    is an input or the weights, or cannot be written. ``-`` (stdout) is always fine."""
    if str(path) == "-":
        return
    path = Path(path)
    if path.is_dir():
        raise UsageError(f"--json-file {path} is a folder", hint=f"name a file, e.g. {path / 'consistency.json'}")
    if path.exists() or path.is_symlink():
        if not overwrite:
            raise OutputExistsError(
                f"--json-file {path} exists", hint="pass --overwrite to replace it, or name another file"
            )
        for other in [*_paths(specs), *([weights] if weights else [])]:
            if not is_url(other) and _same_file(path, other):
                raise UsageError(f"--json-file {path} is the input {other}; --overwrite never replaces an input")
    check_writable(path, "--json-file", hint="name a file in a writable folder")


def _same_file(a: Path, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _set_memory(predictor: Predictor, on: bool) -> None:
    """TDNet's memory on or off for the next steps (models without one have nothing to switch)."""
    model = getattr(predictor, "model", None)
    if model is not None and hasattr(model, "use_memory"):
        model.use_memory = on


def consistency_eval(
    inputs: InputSet | Sequence[str | Path],
    *,
    predictor: Predictor,
    modes: Iterable[str] = ("propagation",),
    work_size: int = DEFAULT_WORK_SIZE,
    preset: str = DEFAULT_PRESET,
    cut_detect: bool = True,
    progress: ProgressFn | None = None,
    warn: WarnFn | None = None,
) -> ConsistencyReport:
    """TC, per-class TC and flicker rate of ``predictor``'s labels on each input and over all.

    ``inputs``: an :class:`InputSet`, or paths, globs, URLs and frame folders, expanded here as
    ``segment`` expands them (the image files of one folder are one stream). Every input is checked before the first frame; a read error
    later raises (a run scores all its inputs or reports nothing)."""
    modes = check_modes(modes, predictor)
    if not isinstance(inputs, InputSet):
        inputs = gather_inputs(inputs, images="sequence")
    check_inputs(inputs.specs)
    report = ConsistencyReport(
        model=predictor.name, input_size=tuple(predictor.input_size), classes=tuple(predictor.classes),  # type: ignore[arg-type]
        modes=modes, preset=preset, work_size=work_size, notes=list(getattr(predictor, "notes", [])),
    )  # fmt: skip

    def warned(message: str) -> None:
        report.warnings.append(message)
        if warn is not None:
            warn(message)

    for message in getattr(predictor, "warnings", []):  # random weights: a warning of the result, not a note
        report.notes = [n for n in report.notes if n != message]
        warned(message)

    if inputs.skipped:
        warned(
            f"left out {len(inputs.skipped)} of tdnet's own outputs that the patterns matched "
            f"({few(list(inputs.skipped))}); name them one by one to score them"
        )
    t0 = time.perf_counter()
    try:
        for index, spec in enumerate(inputs.specs):
            item = _score_input(
                spec, index, len(inputs.specs), predictor=predictor, modes=modes, work_size=work_size,
                preset=preset, cut_detect=cut_detect, progress=progress, warn=warned,
            )  # fmt: skip
            report.inputs.append(item)
    finally:
        _set_memory(predictor, True)  # as the predictor came
        report.seconds = time.perf_counter() - t0
    return report


def _score_input(
    spec: Spec,
    index: int,
    count: int,
    *,
    predictor: Predictor,
    modes: tuple[str, ...],
    work_size: int,
    preset: str,
    cut_detect: bool,
    progress: ProgressFn | None,
    warn: WarnFn,
) -> InputConsistency:
    """One input through a fresh stream and meter per mode; one flow per frame pair for all modes."""
    name = str(spec)  # an image sequence's label: its first image, the last one's name and the count
    # RGB frames (videos too): the flow reads them
    source = ImageSequenceReader(spec.images, uri=name) if isinstance(spec, ImageSequence) else open_source(spec)
    streams = {m: predictor.new_stream() for m in modes}
    meters = {m: ConsistencyMeter(len(predictor.classes), work_size=work_size, preset=preset) for m in modes}
    track = FlowTrack(work_size=work_size, preset=preset)
    cuts = CutDetector() if cut_detect else None
    frames = n_cuts = 0
    model_s = flow_s = 0.0
    t0 = time.perf_counter()
    try:
        total = source.info.frame_count
        if progress is not None:
            progress(name, index, count, 0, total)
        shape = None
        for frame in source:
            cut = cuts is not None and cuts(frame) and frames
            n_cuts += bool(cut)
            # images of one folder may change size: a new shot there, as in segment (not a cut)
            if cut or frames and frame.image.shape != shape:
                track.reset()
                for m in modes:  # the memory must not carry over a hard cut, nor the flow pair span it
                    predictor.reset(streams[m])
                    meters[m].reset()
            image, shape = frame.image, frame.image.shape
            t1 = time.perf_counter()
            flow = track.advance(image)  # the frames are the same in every mode: the flow too
            flow_s += time.perf_counter() - t1
            for m in modes:
                t1 = time.perf_counter()
                _set_memory(predictor, m == "propagation")
                labels = predictor.segment(image, streams[m])
                t2 = time.perf_counter()
                meters[m].add(labels, flow)
                model_s, flow_s = model_s + t2 - t1, flow_s + time.perf_counter() - t2
            frames += 1
            if progress is not None:
                progress(name, index, count, frames, total)
    finally:
        source.close()
    if frames == 0:
        raise InputError(f"{spec}: no frames (an empty or unreadable video)")
    if source.problems:
        warn(f"{spec}: corrupt or truncated video, scored the {frames} frames decoded ({source.problems[0]})")
    if frames == 1:
        warn(f"{spec}: a single frame, no pair to score")
    return InputConsistency(
        input=name, frames=frames, cuts=n_cuts, seconds=time.perf_counter() - t0, model_seconds=model_s,
        flow_seconds=flow_s, results={m: meters[m].result() for m in modes},
    )  # fmt: skip
