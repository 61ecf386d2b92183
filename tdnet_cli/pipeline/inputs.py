"""What `segment` reads and where it writes: input lists, globs and shards, output names,
and the checks that keep every output off every input and off what tdnet did not write.

Everything here runs before the first frame is decoded, so a mistake that concerns the
whole run is one usage error and nothing is written.
"""

from __future__ import annotations

import glob
import os
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlparse

import torch

from tdnet_cli.distributed import local_rank, read_dist_env
from tdnet_cli.errors import OutputExistsError, UsageError, few
from tdnet_cli.fileio import is_partial_name, remove_stale_partials
from tdnet_cli.pipeline.options import SegmentOptions
from tdnet_cli.video import (
    IMAGE_EXTENSIONS,
    VIDEO_SUFFIXES,
    is_image_output,
    is_stdin,
    is_stream_spec,
    is_url,
    natural_key,
)
from tdnet_cli.video.png_writer import refuse_foreign

__all__ = [
    "ImageSequence",
    "InputSet",
    "Spec",
    "check_matched",
    "check_outputs",
    "claim_outputs",
    "device_for_rank",
    "expand_inputs",
    "gather_inputs",
    "group_images",
    "is_image_file",
    "is_tool_output",
    "is_video_output",
    "parse_shard",
    "plan_images",
    "plan_outputs",
    "read_list",
    "resolve_shard",
    "select_shard",
]


IMAGE_OUTPUT_SUFFIX = ".png"
T = TypeVar("T")


@dataclass(frozen=True)
class ImageSequence:
    """Image files read as one stream (one model memory carried from each to the next), each
    with outputs under its own name (``a.png`` -> ``a.overlay.png``): see :func:`group_images`."""

    images: tuple[str, ...]  # paths as given, in natural order of their names

    @property
    def label(self) -> str:
        """How reports name it: the image, or the first one, the last one's name and the count."""
        if len(self.images) == 1:
            return self.images[0]
        return f"{self.images[0]} .. {Path(self.images[-1]).name} ({len(self.images)} images)"

    def __str__(self) -> str:
        return self.label


# an input: a path, URL or folder (one stream each), or image files read as one stream
Spec = str | ImageSequence


@dataclass(frozen=True)
class InputSet:
    """The inputs of one run after glob expansion, grouping of images and sharding (:func:`gather_inputs`)."""

    specs: tuple[Spec, ...]
    shard: tuple[int, int] | None = None
    # what the patterns matched that tdnet wrote itself (left out: see expand_inputs)
    skipped: tuple[str, ...] = ()
    # the patterns that matched nothing (kept in specs: see expand_inputs and check_matched)
    unmatched: tuple[str, ...] = ()


def gather_inputs(
    items: Iterable[str | Path], *, shard: tuple[int, int] | None = None, images: str | None = None
) -> InputSet:
    """Expand ``items`` (:func:`expand_inputs`) and take this worker's share of them. ``images``:
    None leaves image files as plain paths; "sequence" or "each" groups them (:func:`group_images`)
    before sharding, so a sequence goes to one worker whole."""
    skipped: list[str] = []
    unmatched: list[str] = []
    expanded: list[Spec] = list(expand_inputs(items, skipped, unmatched))
    if images is not None:
        expanded = group_images(expanded, each=images == "each")
    specs = select_shard(expanded, shard)
    return InputSet(tuple(specs), shard, tuple(skipped), tuple(unmatched))


def is_image_file(spec: Spec) -> bool:
    """An existing image file (png, jpg, ...), not a URL."""
    return (
        isinstance(spec, str)
        and not is_url(spec)
        and Path(spec).suffix.lower() in IMAGE_EXTENSIONS
        and os.path.isfile(spec)
    )


def group_images(specs: Sequence[Spec], *, each: bool = False) -> list[Spec]:
    """Image files become :class:`ImageSequence` inputs: all those in one folder, however they
    were named (a glob, a list, one by one), form one sequence in natural order of their names,
    placed where the first of them was; with ``each`` every image is a sequence of its own
    (fresh memory). Other inputs are kept as they are."""
    out: list[Spec] = []
    groups: dict[Path, list[str]] = {}
    where: dict[Path, int] = {}
    for spec in specs:
        if not is_image_file(spec):
            out.append(spec)
            continue
        assert isinstance(spec, str)
        if each:
            out.append(ImageSequence((spec,)))
            continue
        folder = Path(spec).parent.resolve()
        if folder not in groups:
            groups[folder] = []
            where[folder] = len(out)
            out.append(spec)  # a placeholder, replaced below
        groups[folder].append(spec)
    for folder, members in groups.items():
        out[where[folder]] = ImageSequence(tuple(sorted(members, key=lambda p: natural_key(Path(p).name))))
    return out


def check_matched(inputs: InputSet) -> None:
    """Refuse the run if a pattern matched nothing: the user mistyped it, so say that before
    any other check of that input (its folder, its outputs) can point elsewhere."""
    if not inputs.unmatched:
        return
    # the folder part before the first wildcard: when it is missing, that is the typo
    fixed = next((p for p in Path(inputs.unmatched[0]).parents if not glob.has_magic(str(p))), Path("."))
    hint = f"there is no folder {fixed}" if len(inputs.unmatched) == 1 and not fixed.is_dir() else None
    raise UsageError(f"no files match {few([repr(p) for p in inputs.unmatched])}", hint=hint)


def read_list(path: str | Path) -> list[str]:
    """Input specs from a file, one per line (``-`` reads stdin); blank lines and ``#`` comments skipped."""
    try:
        text = sys.stdin.read() if str(path) == "-" else Path(path).read_text()
    except OSError as exc:
        raise UsageError(f"cannot read input list {path}: {exc.strerror or exc}") from None
    return [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]


def is_tool_output(path: str | Path) -> bool:
    """Whether ``path`` is named like something ``segment`` writes: ``*.overlay.mp4``,
    ``*.color.mp4`` (any video suffix), ``*.color/``, ``*.labels/``, ``*.labelids/``, the
    images of image inputs (``*.overlay.png``, ``*.color.png``, ``*.labels.png``,
    ``*.labelids.png``), or one of our hidden temporaries."""
    path = Path(path)
    name = path.name.lower()
    if is_partial_name(path.name) is not None:
        return True
    if path.is_dir():
        return name.endswith((".color", ".labels", ".labelids"))
    videos = tuple(f".{kind}{suffix}" for kind in ("overlay", "color") for suffix in VIDEO_SUFFIXES)
    return name.endswith(videos) or is_image_output(name)


def expand_inputs(
    items: Iterable[str | Path], skipped: list[str] | None = None, unmatched: list[str] | None = None
) -> list[str]:
    """Expand globs (natural order), keep URLs and plain paths as given, drop repeats.

    A pattern that matches nothing is kept, so that it is reported as a failed input, and
    appended to ``unmatched`` (the CLI refuses the run instead: :func:`check_matched`). What a
    pattern matches that this tool wrote (:func:`is_tool_output`) is left out, so that a
    second run over ``dir/*.mp4`` does not segment its own overlays; those are appended to
    ``skipped``. A path named one by one is always kept.
    """
    out: list[str] = []
    seen: set[str] = set()
    for item in items:
        text = str(item)
        if not is_url(text) and not os.path.exists(text) and glob.has_magic(text):
            matches = sorted(glob.glob(text, recursive=True), key=natural_key)
            ours = [m for m in matches if is_tool_output(m)]
            if skipped is not None:
                skipped.extend(ours)
            expanded = [m for m in matches if m not in ours] if matches else [text]
            if not matches and unmatched is not None:
                unmatched.append(text)
        else:
            expanded = [text]
        for spec in expanded:
            if spec not in seen:
                seen.add(spec)
                out.append(spec)
    return out


def parse_shard(text: str) -> tuple[int, int]:
    """``"i/n"`` (0-based i) -> (i, n)."""
    hint = "write it as INDEX/COUNT with 0 <= INDEX < COUNT, e.g. 0/4"
    try:
        i_text, n_text = text.split("/")
        i, n = int(i_text), int(n_text)
    except ValueError:
        raise UsageError(f"bad shard {text!r}", hint=hint) from None
    if n < 1 or not 0 <= i < n:
        raise UsageError(f"bad shard {text!r}", hint=hint)
    return i, n


def resolve_shard(text: str | None, env: Mapping[str, str] = os.environ) -> tuple[int, int] | None:
    """``--shard`` if given, else torchrun's RANK/WORLD_SIZE when the world has several workers."""
    if text:
        return parse_shard(text)
    world = read_dist_env(env)
    return (world.rank, world.world) if world.distributed else None


def select_shard(items: Sequence[T], shard: tuple[int, int] | None) -> list[T]:
    """Worker i of n takes items i, i+n, i+2n, ...: balanced and needs no coordination."""
    if shard is None:
        return list(items)
    i, n = shard
    return list(items[i::n])


def device_for_rank(device: str, env: Mapping[str, str] = os.environ) -> str:
    """Under torchrun, ``auto``/``cuda`` become ``cuda:LOCAL_RANK`` so each worker gets its own GPU."""
    if device not in ("auto", "cuda") or (device == "auto" and not torch.cuda.is_available()):
        return device
    gpu = local_rank(env)
    return device if gpu is None else f"cuda:{gpu}"


def _input_name(spec: str) -> str:
    if is_stdin(spec):
        return "stdin"
    if is_url(spec):
        last = Path(urlparse(spec).path).stem
        return last or urlparse(spec).netloc.replace(":", "_") or "stream"
    path = Path(spec)
    if path.is_dir():
        return path.resolve().name or "frames"
    return path.stem or path.name


def _folder_of(folder: Path) -> Path:
    """The folder holding the frame folder ``folder``, written as the user wrote it (``frames/``
    -> ``.``; ``runs/a/frames`` -> ``runs/a``); for ``.`` or ``x/..``, which name no folder, the
    real one, relative to the current folder when it is under it (as an absolute path only when not)."""
    if folder.name not in ("", "..") and not folder.is_symlink():
        return folder.parent
    real = folder.resolve().parent
    try:
        return real.relative_to(Path.cwd())
    except ValueError:
        return real


def plan_outputs(
    spec: str,
    save: Sequence[str],
    *,
    out_dir: str | Path | None = None,
    output: str | Path | None = None,
) -> dict[str, Path]:
    """Where each requested output of ``spec`` goes.

    ``NAME.overlay.mp4``, ``NAME.color.mp4`` (a ``NAME.color/`` PNG folder for frame-folder
    inputs), ``NAME.labels/`` and ``NAME.labelids/``, beside the input (URLs: the current
    folder) or under ``out_dir``. With ``output`` the first kind goes exactly there and the
    others beside it, named after it.
    """
    folder_input = not is_stream_spec(spec) and Path(spec).is_dir()
    if output is not None:
        output = Path(output)
        base = output.with_suffix("") if output.suffix.lower() in VIDEO_SUFFIXES else output
    else:
        if out_dir is not None:
            where = Path(out_dir)
        elif is_stream_spec(spec):  # a URL, stdin or a camera: nothing to write beside
            where = Path(".")
        else:
            where = _folder_of(Path(spec)) if folder_input else Path(spec).parent
        base = where / _input_name(spec)
    plans: dict[str, Path] = {}
    for i, kind in enumerate(save):
        is_video = kind == "overlay" or (kind == "color" and not folder_input)
        if output is not None and i == 0:
            path = output
            if is_video and path.suffix.lower() not in VIDEO_SUFFIXES:
                raise UsageError(f"-o {path}: the {kind} video needs a {'/'.join(VIDEO_SUFFIXES)} name")
            if not is_video and path.suffix.lower() in VIDEO_SUFFIXES:
                raise UsageError(f"-o {path}: {kind} is a folder of PNGs, not a video", hint="give a folder name")
        else:
            path = base.with_name(f"{base.name}.{kind}" + (".mp4" if is_video else ""))
        plans[kind] = path
    return plans


def plan_images(
    seq: ImageSequence,
    save: Sequence[str],
    *,
    out_dir: str | Path | None = None,
    output: str | Path | None = None,
) -> dict[str, dict[str, Path]]:
    """Where each requested output of each image of ``seq`` goes, by kind and then by the
    image's stem (its frame's name): ``NAME.KIND.png`` beside the image or under ``out_dir``.
    With ``output`` (a sequence of one image) the first kind goes exactly there and the others
    beside it, named after it."""
    if output is not None and len(seq.images) > 1:
        raise UsageError(
            f"-o names the output of a single input; {seq.label} are one sequence, each image with "
            "outputs under its own name",
            hint="use --out-dir for them, or name one image",
        )
    plans: dict[str, dict[str, Path]] = {kind: {} for kind in save}
    for image in seq.images:
        stem = Path(image).stem
        if stem in plans[save[0]]:
            raise UsageError(
                f"{image} and another image of {seq.label} share the name {stem}, so their outputs would too",
                hint="rename one, or segment them in separate runs",
            )
        if output is not None:
            output = Path(output)
            if output.suffix.lower() != IMAGE_OUTPUT_SUFFIX:
                raise UsageError(f"-o {output}: the outputs of an image are PNG images", hint="give a .png name")
            base = output.with_suffix("")
        else:
            base = (Path(out_dir) if out_dir is not None else Path(image).parent) / stem
        for i, kind in enumerate(save):
            path = output if output is not None and i == 0 else base.with_name(f"{base.name}.{kind}.png")
            plans[kind][stem] = path
    return plans


def _planned(spec: Spec, options: SegmentOptions) -> list[tuple[str, Path]]:
    """Every (kind, path) ``spec`` would write under ``options``."""
    if isinstance(spec, ImageSequence):
        plans = plan_images(spec, options.save, out_dir=options.out_dir, output=options.output)
        return [(kind, path) for kind, paths in plans.items() for path in paths.values()]
    return list(plan_outputs(spec, options.save, out_dir=options.out_dir, output=options.output).items())


def _check_out_dir(out_dir: Path, option: str = "--out-dir") -> None:
    """``out_dir`` exists (made if needed) and is writable; ``option`` is what the user passed."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(
            f"cannot create output folder {out_dir} (of {option}): {exc.strerror or exc}",
            hint=f"choose a writable {option}",
        ) from None
    if not os.access(out_dir, os.W_OK | os.X_OK):
        raise UsageError(f"output folder {out_dir} (of {option}) is not writable", hint=f"choose a writable {option}")


def is_video_output(kind: str, path: Path) -> bool:
    """Whether the ``kind`` output at ``path`` is a video file (else a folder of PNGs)."""
    return kind in ("overlay", "color") and path.suffix.lower() in VIDEO_SUFFIXES


def _check_plans(specs: Sequence[Spec], options: SegmentOptions) -> dict[Path, set[str]]:
    """Refuse, before anything is written, an output that is an input (same path, a symlink or
    hard link to it, the input frame folder, or a PNG folder holding an input: a usage error
    with or without --overwrite), and an --overwrite that would replace what tdnet did not
    write. Returns the folders the outputs go to, with the output names in each."""
    inputs: dict[tuple[int, int], str] = {}
    parents: dict[Path, str] = {}
    for spec in specs:
        for path in spec.images if isinstance(spec, ImageSequence) else (spec,):
            if is_stream_spec(path):
                continue
            try:
                st = os.stat(path)
            except OSError:
                continue  # a missing input fails on its own
            inputs[(st.st_dev, st.st_ino)] = path
            parents[Path(path).resolve().parent] = path
    folders: dict[Path, set[str]] = {}
    for spec in specs:
        for kind, path in _planned(spec, options):
            folders.setdefault(path.parent, set()).add(path.name)
            try:
                st = os.stat(path)
            except OSError:
                st = None
            if st is not None and (st.st_dev, st.st_ino) in inputs:
                raise UsageError(
                    f"the {kind} output {path} is the input {inputs[(st.st_dev, st.st_ino)]}",
                    hint="choose another output: an input is never written over",
                )
            if is_video_output(kind, path) or isinstance(spec, ImageSequence):
                if options.overwrite and path.is_dir():
                    what = "an image" if isinstance(spec, ImageSequence) else "a video"
                    raise OutputExistsError(
                        f"{path} is a folder, not {what}: --overwrite replaces only files",
                        hint="choose another output name",
                    )
                continue
            holder = parents.get(path.resolve())
            if holder is not None:
                raise UsageError(
                    f"the {kind} folder {path} holds the input {holder}", hint="write the PNGs to a folder of their own"
                )
            if options.overwrite and not options.into_folder and path.is_dir():
                refuse_foreign(path)
    return folders


def check_outputs(inputs: InputSet, options: SegmentOptions) -> None:
    """Every check of the outputs that concerns the whole run, before anything is written:
    ``-o`` names one input's output and a good name for its kind, the output folders can be
    made and written, no output is an input, and ``--overwrite`` replaces only our folders.
    Then the temporaries a killed run left of these outputs are removed."""
    specs, output = inputs.specs, options.output
    if options.stream is not None:  # no file to check: what is written is sent
        _check_stream_input(specs, options.stream)
        return
    if output is not None and len(specs) > 1:
        raise UsageError("-o names the output of a single input", hint="use --out-dir for several inputs")
    if options.out_dir is not None:
        _check_out_dir(options.out_dir)
    if output is not None:
        if specs:
            _planned(specs[0], options)  # a bad -o is a usage error, not a failed input
        _check_out_dir(output.parent, "-o")
    for folder, names in sorted(_check_plans(specs, options).items()):
        remove_stale_partials(folder, ours=names)  # left by a run killed with SIGKILL: its process is gone


def _check_stream_input(specs: Sequence[Spec], target: str) -> None:
    """A stream output (``-o -``, ``-o URL``) carries one video's frames."""
    if len(specs) > 1:
        raise UsageError(f"-o {target} carries the stream of a single input", hint="pass one input")
    if specs and isinstance(specs[0], ImageSequence):
        raise UsageError(
            f"-o {target}: image files give an image each", hint="stream a video, a URL or a folder of frames"
        )


def _claim(kind: str, path: Path, spec: Spec, options: SegmentOptions, claimed: dict[Path, str]) -> bool:
    """Whether to write ``path`` (False: it exists and ``skip_existing`` keeps it). Raises
    OutputExistsError for an output that exists (without --overwrite) or another input claimed."""
    other = claimed.get(path.resolve())
    if other is not None:
        raise OutputExistsError(
            f"{path} is also the output of {other}", hint="inputs with the same name need -o or separate runs"
        )
    if path.exists() or path.is_symlink():
        if options.skip_existing:
            return False
        folder_ok = options.into_folder and not is_video_output(kind, path) and not isinstance(spec, ImageSequence)
        if not (options.overwrite or folder_ok):
            raise OutputExistsError(f"{path} exists", hint="use --overwrite, or --skip-existing to keep it")
    return True


def claim_outputs(
    spec: Spec, options: SegmentOptions, claimed: dict[Path, str]
) -> dict[str, Path] | dict[str, dict[str, Path]]:
    """The outputs of ``spec`` to write (existing ones left out with ``skip_existing``),
    recorded in ``claimed`` (resolved path -> input) so no two inputs of a run write the
    same file: by kind (:func:`plan_outputs`), or for an image sequence by kind and then by
    image stem (:func:`plan_images`; kinds with nothing left to write are dropped). Raises
    OutputExistsError for an output that exists or another input claimed."""
    plans: dict = (
        plan_images(spec, options.save, out_dir=options.out_dir, output=options.output)
        if isinstance(spec, ImageSequence)
        else plan_outputs(spec, options.save, out_dir=options.out_dir, output=options.output)
    )
    paths: list[Path] = []
    for kind, value in list(plans.items()):
        if isinstance(value, dict):
            for stem, path in list(value.items()):
                if not _claim(kind, path, spec, options, claimed):
                    del value[stem]
            if not value:
                del plans[kind]
            paths.extend(value.values())
        elif _claim(kind, value, spec, options, claimed):
            paths.append(value)
        else:
            del plans[kind]
    for path in paths:
        claimed[path.resolve()] = str(spec)
    first = spec.images[0] if isinstance(spec, ImageSequence) else spec
    # beside a missing input there is nothing to check: reading it says that it is missing
    if (
        paths
        and options.output is None
        and options.out_dir is None
        and not is_stream_spec(first)
        and os.path.exists(first)
    ):
        parent = paths[0].parent
        if not os.access(parent, os.W_OK | os.X_OK):
            raise UsageError(f"{spec}: cannot write beside the input ({parent} is not writable)", hint="use --out-dir")
    return plans
