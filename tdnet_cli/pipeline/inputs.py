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
from urllib.parse import urlparse

import torch

from tdnet_cli.distributed import local_rank, read_dist_env
from tdnet_cli.errors import OutputExistsError, UsageError, few
from tdnet_cli.fileio import is_partial_name, remove_stale_partials
from tdnet_cli.pipeline.options import SegmentOptions
from tdnet_cli.video import VIDEO_SUFFIXES, is_url, natural_key
from tdnet_cli.video.png_writer import refuse_foreign

__all__ = [
    "InputSet",
    "check_matched",
    "check_outputs",
    "claim_outputs",
    "device_for_rank",
    "expand_inputs",
    "gather_inputs",
    "is_tool_output",
    "is_video_output",
    "parse_shard",
    "plan_outputs",
    "read_list",
    "resolve_shard",
    "select_shard",
]


@dataclass(frozen=True)
class InputSet:
    """The inputs of one run after glob expansion and sharding (:func:`gather_inputs`)."""

    specs: tuple[str, ...]
    shard: tuple[int, int] | None = None
    # what the patterns matched that tdnet wrote itself (left out: see expand_inputs)
    skipped: tuple[str, ...] = ()
    # the patterns that matched nothing (kept in specs: see expand_inputs and check_matched)
    unmatched: tuple[str, ...] = ()


def gather_inputs(items: Iterable[str | Path], *, shard: tuple[int, int] | None = None) -> InputSet:
    """Expand ``items`` (:func:`expand_inputs`) and take this worker's share of them."""
    skipped: list[str] = []
    unmatched: list[str] = []
    specs = select_shard(expand_inputs(items, skipped, unmatched), shard)
    return InputSet(tuple(specs), shard, tuple(skipped), tuple(unmatched))


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
    ``*.color.mp4`` (any video suffix), ``*.color/``, ``*.labels/``, ``*.labelids/``, or one
    of our hidden temporaries."""
    path = Path(path)
    name = path.name.lower()
    if is_partial_name(path.name) is not None:
        return True
    if path.is_dir():
        return name.endswith((".color", ".labels", ".labelids"))
    return name.endswith(tuple(f".{kind}{suffix}" for kind in ("overlay", "color") for suffix in VIDEO_SUFFIXES))


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


def select_shard(items: Sequence[str], shard: tuple[int, int] | None) -> list[str]:
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
    if is_url(spec):
        last = Path(urlparse(spec).path).stem
        return last or urlparse(spec).netloc.replace(":", "_") or "stream"
    path = Path(spec)
    if path.is_dir():
        return path.resolve().name or "frames"
    return path.stem or path.name


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
    folder_input = not is_url(spec) and Path(spec).is_dir()
    if output is not None:
        output = Path(output)
        base = output.with_suffix("") if output.suffix.lower() in VIDEO_SUFFIXES else output
    else:
        if out_dir is not None:
            where = Path(out_dir)
        elif is_url(spec):
            where = Path.cwd()
        else:
            where = Path(spec).resolve().parent if folder_input else Path(spec).parent
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


def _check_plans(specs: Sequence[str], options: SegmentOptions) -> dict[Path, set[str]]:
    """Refuse, before anything is written, an output that is an input (same path, a symlink or
    hard link to it, the input frame folder, or a PNG folder holding an input: a usage error
    with or without --overwrite), and an --overwrite that would replace what tdnet did not
    write. Returns the folders the outputs go to, with the output names in each."""
    inputs: dict[tuple[int, int], str] = {}
    parents: dict[Path, str] = {}
    for spec in specs:
        if is_url(spec):
            continue
        try:
            st = os.stat(spec)
        except OSError:
            continue  # a missing input fails on its own
        inputs[(st.st_dev, st.st_ino)] = spec
        parents[Path(spec).resolve().parent] = spec
    folders: dict[Path, set[str]] = {}
    for spec in specs:
        for kind, path in plan_outputs(spec, options.save, out_dir=options.out_dir, output=options.output).items():
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
            if is_video_output(kind, path):
                if options.overwrite and path.is_dir():
                    raise OutputExistsError(
                        f"{path} is a folder, not a video: --overwrite replaces only files",
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
    if output is not None and len(specs) > 1:
        raise UsageError("-o names the output of a single input", hint="use --out-dir for several inputs")
    if options.out_dir is not None:
        _check_out_dir(options.out_dir)
    if output is not None:
        if specs:
            plan_outputs(specs[0], options.save, output=output)  # a bad -o is a usage error, not a failed input
        _check_out_dir(output.parent, "-o")
    for folder, names in sorted(_check_plans(specs, options).items()):
        remove_stale_partials(folder, ours=names)  # left by a run killed with SIGKILL: its process is gone


def claim_outputs(spec: str, options: SegmentOptions, claimed: dict[Path, str]) -> dict[str, Path]:
    """The outputs of ``spec`` to write (existing ones left out with ``skip_existing``),
    recorded in ``claimed`` (resolved path -> input) so no two inputs of a run write the
    same file. Raises OutputExistsError for an output that exists or another input claimed."""
    plans = plan_outputs(spec, options.save, out_dir=options.out_dir, output=options.output)
    for kind, path in list(plans.items()):
        other = claimed.get(path.resolve())
        if other is not None:
            raise OutputExistsError(
                f"{path} is also the output of {other}", hint="inputs with the same name need -o or separate runs"
            )
        if path.exists() or path.is_symlink():
            if options.skip_existing:
                del plans[kind]
            elif not (options.overwrite or (options.into_folder and not is_video_output(kind, path))):
                raise OutputExistsError(f"{path} exists", hint="use --overwrite, or --skip-existing to keep it")
    for path in plans.values():
        claimed[path.resolve()] = spec
    # beside a missing input there is nothing to check: reading it says that it is missing
    if plans and options.output is None and options.out_dir is None and not is_url(spec) and os.path.exists(spec):
        parent = next(iter(plans.values())).parent
        if not os.access(parent, os.W_OK | os.X_OK):
            raise UsageError(f"{spec}: cannot write beside the input ({parent} is not writable)", hint="use --out-dir")
    return plans
