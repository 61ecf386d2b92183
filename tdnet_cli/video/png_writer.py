"""Label and colour-map PNG sequences: one PNG per frame in a folder made under a temporary
name, with a hidden manifest of the files tdnet wrote there (what lets ``--overwrite`` replace
a folder of ours and refuse anyone else's); and PNG files each under its own name, the
outputs of image inputs."""

from __future__ import annotations

import json
import os
import shutil
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np

from tdnet_cli.errors import OutputExistsError
from tdnet_cli.fileio import commit_file, partial_path, write_error, write_png
from tdnet_cli.video.writer import check_target, unlink_quietly

__all__ = ["MANIFEST", "PngFilesWriter", "PngSequenceWriter", "foreign_entry", "refuse_foreign"]

# The hidden list of the files a PNG folder of ours holds (see PngSequenceWriter(manifest=True)).
MANIFEST = ".tdnet-output.json"
_TOOL = "tdnet"


def _read_manifest(folder: Path) -> set[str] | None:
    """The file names our manifest in ``folder`` records, or None (no manifest, or not ours)."""
    path = folder / MANIFEST
    try:
        if path.is_symlink() or not path.is_file() or path.stat().st_size > 64 << 20:
            return None
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("tool") != _TOOL or not isinstance(data.get("files"), list):
        return None
    return {f for f in data["files"] if isinstance(f, str) and "/" not in f and f not in ("", ".", "..")}


def _write_manifest(folder: Path, names: set[str]) -> None:
    text = json.dumps({"tool": _TOOL, "note": "files written here by tdnet segment", "files": sorted(names)})
    tmp = folder / f"{MANIFEST}.{os.getpid()}.tmp"
    try:
        tmp.write_text(text + "\n", encoding="utf-8")
        os.replace(tmp, folder / MANIFEST)
    except OSError as exc:
        unlink_quietly(tmp)
        raise write_error(folder, exc) from None
    except BaseException:  # Ctrl-C, SIGTERM: no stray file left in the user's folder
        unlink_quietly(tmp)
        raise


def foreign_entry(folder: str | Path) -> str | None:
    """None when every entry of ``folder`` is a file our manifest there records (a folder
    ``--overwrite`` may replace); else the name of one entry that is not (``name/`` for a folder)."""
    folder = Path(folder)
    ours = _read_manifest(folder)
    for entry in sorted(os.scandir(folder), key=lambda e: e.name):
        if entry.name == MANIFEST and ours is not None:
            continue
        if entry.is_dir(follow_symlinks=False):
            return f"{entry.name}/"
        if ours is None or entry.name not in ours or not entry.is_file(follow_symlinks=False):
            return entry.name
    return None


def refuse_foreign(folder: str | Path) -> None:
    """OutputExistsError (one line naming one foreign entry and the way on) unless
    :func:`foreign_entry` finds the folder all ours."""
    foreign = foreign_entry(folder)
    if foreign is not None:
        raise OutputExistsError(
            f"{folder} holds {foreign}, which tdnet has no record of writing there: --overwrite replaces only "
            f"folders of its own", hint="pass --into-folder to add the PNGs to it, replacing only same-named "
            "files; or choose another output")  # fmt: skip


def _write_frame_png(target: Path, image: np.ndarray, rgb: bool, where: Path) -> None:
    """One frame's PNG inside the writer's temporary folder (which is the atomic part)."""
    write_png(target, cv2.cvtColor(image, cv2.COLOR_RGB2BGR) if rgb else image, where=where, atomic=False)


class PngSequenceWriter:
    """One PNG per frame into a folder: 8-bit grey (label maps) or RGB (colour images).

    Files go to a temporary folder that is renamed to ``path`` by :meth:`close`.

    ``manifest=True`` (what ``tdnet segment`` uses) records the files written in a hidden
    :data:`MANIFEST`, and ``overwrite`` then replaces an existing folder only if every entry
    in it is a file such a manifest records (:func:`foreign_entry`), deleting only those.
    ``into=True`` writes into an existing folder instead: same-named files are replaced,
    every other entry is left alone.
    """

    def __init__(
        self, path: str | Path, *, overwrite: bool = False, workers: int = 0, manifest: bool = False, into: bool = False
    ) -> None:
        self.path = Path(path)
        check_target(self.path, overwrite or into)
        if self.path.exists() and not self.path.is_dir():
            raise OutputExistsError(f"{self.path} exists and is not a folder")
        self.overwrite, self.manifest, self.into = overwrite, manifest, into
        if manifest and overwrite and not into and self.path.is_dir():
            refuse_foreign(self.path)
        self.frames = 0
        self.warnings: list[str] = []
        self._names: set[str] = set()
        self._tmp = partial_path(self.path, folder=True)
        self._closed = False
        if self._tmp.exists():  # left by an earlier process with our pid: ours to replace
            shutil.rmtree(self._tmp)
        self._tmp.mkdir()
        # PNG encoding (~6 ms at 2048x1024) releases the GIL: with spare cores a few
        # threads keep it off the critical path; a bounded backlog keeps memory flat.
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="png") if workers > 0 else None
        self._pending: deque[Future] = deque()
        self._backlog = 2 * workers

    def write(self, name: str, image: np.ndarray, *, rgb: bool = False) -> None:
        """Write ``name``.png; ``image`` is (H, W) uint8, or (H, W, 3) RGB with ``rgb=True``.

        With workers the write is asynchronous: do not modify ``image`` afterwards. Errors
        surface in a later ``write`` or in ``close``.
        """
        target = self._tmp / f"{name}.png"
        self._names.add(target.name)
        self.frames += 1
        if self._pool is None:
            _write_frame_png(target, image, rgb, self.path)
            return
        while len(self._pending) >= self._backlog:
            self._pending.popleft().result()
        self._pending.append(self._pool.submit(_write_frame_png, target, image, rgb, self.path))

    def _finish_pending(self) -> None:
        while self._pending:
            self._pending.popleft().result()
        if self._pool is not None:
            self._pool.shutdown()

    def close(self) -> Path:
        """Move the finished folder to its final name (or its files into it, with ``into``)."""
        if self._closed:
            return self.path
        try:
            self._finish_pending()
            if self.into and self.path.is_dir():
                self._merge()
            elif self.path.exists() or self.path.is_symlink():
                if not self.overwrite:
                    raise OutputExistsError(f"{self.path} exists", hint="use --overwrite")
                self._replace()
            else:
                if self.manifest:
                    _write_manifest(self._tmp, self._names)
                os.replace(self._tmp, self.path)
        except BaseException:
            self.abort()
            raise
        self._closed = True
        return self.path

    def _replace(self) -> None:
        """Swap the new folder in for the old one; the window without any output is one rename."""
        if not self.manifest:
            old = self.path.with_name(f".{self.path.name}.{os.getpid()}.old")
            os.replace(self.path, old)
            os.replace(self._tmp, self.path)
            shutil.rmtree(old, ignore_errors=True)
            return
        refuse_foreign(self.path)  # again: something may have been added since the start
        _write_manifest(self._tmp, self._names)
        old = self.path.with_name(f".{self.path.name}.{os.getpid()}.old")
        listed = _read_manifest(self.path) or set()
        os.replace(self.path, old)
        os.replace(self._tmp, self.path)
        for name in listed | {MANIFEST}:  # delete only what our manifest named, then the empty folder
            entry = old / name
            if entry.is_file() and not entry.is_symlink():
                unlink_quietly(entry)
        try:
            old.rmdir()
        except OSError:  # something appeared there meanwhile: keep it, and say where
            self.warnings.append(
                f"{self.path.name}: files added to the old folder while it was replaced were kept in {old}"
            )

    def _merge(self) -> None:
        """Move our files into the existing folder, replacing only same-named files."""
        for name in sorted(self._names):
            target = self.path / name
            if target.is_dir() and not target.is_symlink():
                raise OutputExistsError(f"{target} is a folder; the PNG of that frame cannot replace it")
        ours = _read_manifest(self.path)
        for name in sorted(self._names):
            os.replace(self._tmp / name, self.path / name)
        if ours is not None or not (self.path / MANIFEST).exists():
            _write_manifest(self.path, (ours or set()) | self._names)  # never over a file of that name not ours
        shutil.rmtree(self._tmp, ignore_errors=True)

    def abort(self) -> None:
        """Delete the temporary folder (idempotent)."""
        if self._closed:
            return
        self._closed = True
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
        self._pending.clear()
        shutil.rmtree(self._tmp, ignore_errors=True)

    def __enter__(self) -> PngSequenceWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


class PngFilesWriter:
    """One PNG file per frame, each under its own final name (``targets``: frame name -> path),
    as `segment` writes the outputs of image inputs (``a.png`` -> ``a.labels.png``).

    Each PNG is written under a hidden temporary beside its target; :meth:`close` renames them
    all into place once the whole sequence is done, so an interrupted or failed run leaves no
    finished-looking file. Frames not in ``targets`` (outputs kept by ``--skip-existing``) are
    not written. An existing target is an :class:`OutputExistsError` unless ``overwrite``, and
    a folder in a target's place is refused even then.
    """

    def __init__(self, targets: dict[str, Path], *, overwrite: bool = False) -> None:
        self.targets = {name: Path(p) for name, p in targets.items()}
        for final in self.targets.values():
            check_target(final, overwrite)
            if final.is_dir() and not final.is_symlink():
                raise OutputExistsError(f"{final} is a folder, not an image: --overwrite replaces only files")
        self.overwrite = overwrite
        self.frames = 0
        self.warnings: list[str] = []
        self._written: dict[Path, Path] = {}  # temporary -> final, in frame order
        self._committed: list[Path] = []
        self._closed = False

    def write(self, name: str, image: np.ndarray, *, rgb: bool = False) -> None:
        """Write frame ``name``'s PNG (see :meth:`PngSequenceWriter.write`) to its temporary."""
        self.frames += 1
        final = self.targets.get(name)
        if final is None:
            return
        tmp = partial_path(final)
        self._written[tmp] = final  # before writing: abort() removes a half-written one too
        _write_frame_png(tmp, image, rgb, final.parent)

    def close(self) -> list[Path]:
        """Rename every finished PNG to its final name; the final paths, in frame order."""
        if self._closed:
            return list(self._committed)
        try:
            for tmp, final in list(self._written.items()):
                commit_file(tmp, final, self.overwrite)
                del self._written[tmp]
                self._committed.append(final)
        except BaseException:
            self.abort()
            raise
        self._closed = True
        return list(self._committed)

    def abort(self) -> None:
        """Delete every temporary not yet renamed (idempotent)."""
        if self._closed:
            return
        self._closed = True
        for tmp in self._written:
            unlink_quietly(tmp)
        self._written.clear()

    def __enter__(self) -> PngFilesWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
