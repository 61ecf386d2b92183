"""Writing files so that a crash or Ctrl-C never leaves a half-written file under its final name.

Every writer here produces a hidden temporary beside the target (``.NAME.partial[SUFFIX]``,
same folder, so the final ``os.replace`` is atomic) and removes it on any failure.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

from tdnet_cli.errors import DataError, WriteError

__all__ = ["atomic_path", "write_text", "write_png"]


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces ``path``, on failure it is removed.

    ``suffix`` is appended to the temporary name for tools that pick a format by extension.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.partial{suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_png(path: str | os.PathLike, image: np.ndarray) -> None:
    """Encode ``image`` (BGR, grey or 16-bit) as PNG with OpenCV and move it into place."""
    path = Path(path)
    ok, buf = cv2.imencode(".png", image)
    if not ok:
        raise DataError(f"could not encode {path.name} as PNG")
    try:
        with atomic_path(path, ".png") as tmp:
            tmp.write_bytes(buf.tobytes())
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):  # the work started and failed: exit 1, and say why
            raise WriteError(f"disk full writing {path.parent} ({exc.strerror})",
                             hint="free some space or write elsewhere") from None
        raise DataError(f"could not write {path}: {exc.strerror or exc}",
                        hint="check the folder is writable and has space") from None
