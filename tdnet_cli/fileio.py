"""Writing files so that a crash, Ctrl-C or SIGTERM never leaves a half-written file under its
final name: the one home for temporary names, atomic and no-clobber commits, PNG writing and
the wording of a failed write.

Every writer works under a hidden temporary beside the target (``.STEM.PID.partial.EXT`` for a
file, ``.NAME.PID.partial.d`` for a PNG folder: same folder, so the final rename is atomic) and
removes it on any failure; after a SIGKILL, :func:`remove_stale_partials` lets a later run
remove it.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

from tdnet_cli.errors import OutputExistsError, TdnetError, UsageError, WriteError

__all__ = [
    "STALE_AFTER_S",
    "atomic_path",
    "check_writable",
    "commit_file",
    "is_partial_name",
    "partial_path",
    "remove_stale_partials",
    "write_error",
    "write_png",
    "write_text",
]


def partial_path(final: Path, *, folder: bool = False) -> Path:
    """The temporary name a writer uses for ``final`` (hidden, same folder, pid-unique)."""
    if folder:
        return final.with_name(f".{final.name}.{os.getpid()}.partial.d")
    return final.with_name(f".{final.stem}.{os.getpid()}.partial{final.suffix}")


# Our temporaries, exactly: ".NAME.PID.partial.d" (PNG folders), ".STEM.PID.partial.EXT" (videos),
# ".STEM.PID.partial-av.EXT" (a video while its audio is added) and ".STEM.PID.partial.png" (an
# image output of an image input).
_PARTIAL = re.compile(
    r"^\.(?P<name>.+)\.(?P<pid>[0-9]+)\.(?:partial\.d|partial\.png|partial(?:-av)?\.(?:mp4|mov|m4v|mkv))$",
    re.IGNORECASE,
)
# A temporary of a dead process is removed only once it has not changed for this long: the
# pid of a writer on another host sharing the folder (NFS, --shard workers on several nodes)
# looks dead here, but its temporary keeps changing while it works.
STALE_AFTER_S = 600.0


def is_partial_name(name: str) -> int | None:
    """The pid in one of our temporary names, or None for any other name."""
    match = _PARTIAL.match(name)
    return int(match["pid"]) if match else None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    except (OverflowError, ValueError):
        return False
    return True


def remove_stale_partials(
    folder: str | Path, *, min_age: float = STALE_AFTER_S, ours: frozenset[str] | set[str] = frozenset()
) -> list[Path]:
    """Remove our temporaries in ``folder`` left by a process that is gone (SIGKILL, power loss).

    Only names of our exact pattern, of a pid that is not running here, untouched for
    ``min_age`` seconds; a ``.d`` one must be a folder and the others plain files. Anything
    else is never touched. Temporaries of the outputs the caller is about to write (``ours``:
    final names, e.g. ``a.overlay.mp4``, ``a.labels``) go at once: a writer elsewhere making
    the same output would collide with this run anyway. Returns what was removed (failures
    to remove are ignored).
    """
    stems = {Path(name).stem for name in ours} | set(ours)
    removed: list[Path] = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    now = time.time()
    for entry in entries:
        pid = is_partial_name(entry.name)
        if pid is None or pid == os.getpid() or _pid_alive(pid):
            continue
        try:
            st = entry.stat(follow_symlinks=False)
            is_dir = entry.is_dir(follow_symlinks=False)
            age = 0.0 if _PARTIAL.match(entry.name)["name"] in stems else min_age
            if now - st.st_mtime < age or is_dir != entry.name.lower().endswith(".partial.d") or entry.is_symlink():
                continue
            if is_dir:
                shutil.rmtree(entry.path)
            else:
                os.unlink(entry.path)
            removed.append(Path(entry.path))
        except OSError:
            continue
    return removed


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path to write (:func:`partial_path`, keeping the suffix for tools that
    pick a format by it); on success it replaces ``path``, on failure it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = partial_path(path)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def commit_file(tmp: Path, final: Path, overwrite: bool) -> None:
    """Move a finished temporary file into place; without overwrite never clobber."""
    if overwrite:
        os.replace(tmp, final)
        return
    try:
        os.link(tmp, final)  # fails if final appeared meanwhile: no clobbering race
    except FileExistsError:
        raise OutputExistsError(f"{final} exists", hint="use --overwrite") from None
    except OSError:  # a filesystem without hard links
        if final.exists():
            raise OutputExistsError(f"{final} exists", hint="use --overwrite") from None
        os.replace(tmp, final)
        return
    tmp.unlink()


def write_error(where: Path, exc: OSError) -> WriteError:
    """One line for a failed write: a full disk says so, and where."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return WriteError(f"disk full writing {where} ({exc.strerror})", hint="free some space or write elsewhere")
    return WriteError(f"cannot write {where}: {exc.strerror or exc}")


def check_writable(path: str | os.PathLike, what: str, *, hint: str) -> None:
    """Raise UsageError unless ``path`` can be written: it, or the nearest folder above it that
    exists, is a writable folder. Creates nothing, so a refusal leaves no trace. (``os.access``
    reports a read-only file system even to root, who ignores permission bits.)"""
    path = Path(path)
    here = path if path.is_dir() else path.parent
    while not here.exists() and not here.is_symlink() and here != here.parent:
        here = here.parent
    if not here.is_dir():
        raise UsageError(f"cannot write {what} {path}: {here} is a file, not a folder", hint=hint)
    if not os.access(here, os.W_OK | os.X_OK):
        try:
            readonly = bool(os.statvfs(here).f_flag & os.ST_RDONLY)
        except OSError:
            readonly = False
        why = "is on a read-only file system" if readonly else "is not writable"
        raise UsageError(f"cannot write {what} {path}: {here} {why}", hint=hint)


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_png(
    path: str | os.PathLike, image: np.ndarray, *, where: str | os.PathLike | None = None, atomic: bool = True
) -> None:
    """Encode ``image`` (BGR, grey or 16-bit) as PNG with OpenCV and write it to ``path``: through
    a temporary renamed into place, or straight (``atomic=False``, for files inside a folder that
    is itself a temporary). A failure is a :class:`WriteError` naming ``where`` (default: the
    folder), saying so when the disk is full."""
    path = Path(path)
    # imencode + a plain write (not imwrite) so a failure says why, and non-ASCII paths work;
    # not ndarray.tofile, whose failure is "6657 requested and 0 written", without the reason
    ok, data = cv2.imencode(".png", image)
    if not ok:
        raise TdnetError(f"{path}: PNG encoding failed")
    try:
        if atomic:
            with atomic_path(path) as tmp:
                tmp.write_bytes(memoryview(data.reshape(-1)))
        else:
            with open(path, "wb") as f:
                f.write(memoryview(data.reshape(-1)))
    except OSError as exc:
        raise write_error(Path(where) if where is not None else path.parent, exc) from None
