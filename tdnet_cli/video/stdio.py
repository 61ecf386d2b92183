"""This process's standard input and output as ffmpeg's: ``segment -`` decodes a container that
arrives on stdin, ``-o -`` writes a stream to stdout.

ffmpeg gets the real file descriptor when there is one (no copy through Python: a file
redirected with ``<`` stays seekable, which an mp4 with its index at the end needs); where
stdin or stdout is only a Python object (a test runner's), a thread copies the bytes.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import threading
from typing import IO

__all__ = ["StdioLink", "child_stdin", "child_stdout", "drain_child", "feed_child", "stdout_is_terminal"]

_CHUNK = 1 << 16


def _fd(stream: IO | None) -> int | None:
    """The OS file descriptor behind ``stream``, or None when it has none."""
    if stream is None:
        return None
    try:
        return stream.fileno()
    except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation is both
        return None


def stdout_is_terminal() -> bool:
    """Whether stdout is a terminal (no place for video bytes)."""
    return bool(getattr(sys.stdout, "isatty", lambda: False)())


class StdioLink:
    """A copy thread between one of our standard streams and a child's pipe, or nothing when the
    child was handed the descriptor itself. :meth:`join` waits for the last byte."""

    def __init__(self, source: IO[bytes] | None = None, sink: IO[bytes] | None = None, close_sink: bool = False):
        self.thread: threading.Thread | None = None
        self.error: OSError | None = None
        if source is not None and sink is not None:
            self.thread = threading.Thread(
                target=self._copy, args=(source, sink, close_sink), name="tdnet-stdio", daemon=True
            )
            self.thread.start()

    def _copy(self, source: IO[bytes], sink: IO[bytes], close_sink: bool) -> None:
        try:
            while True:
                chunk = source.read(_CHUNK)
                if not chunk:
                    break
                sink.write(chunk)
            sink.flush()
        except (OSError, ValueError) as exc:  # the other side went away: its reader reports that
            self.error = exc if isinstance(exc, OSError) else None
        finally:
            if close_sink:
                with contextlib.suppress(OSError, ValueError):
                    sink.close()

    def join(self, timeout: float | None = None) -> None:
        if self.thread is not None:
            self.thread.join(timeout)


def child_stdin() -> int:
    """What to pass as a child's ``stdin`` so that it reads ours: our descriptor, or a pipe
    (``subprocess.PIPE``) for :func:`feed_child` to fill."""
    fd = _fd(sys.stdin)
    return fd if fd is not None else subprocess.PIPE


def feed_child(proc: subprocess.Popen) -> StdioLink:
    """Copy our stdin into ``proc``'s when it got a pipe (see :func:`child_stdin`)."""
    if proc.stdin is None:
        return StdioLink()
    return StdioLink(getattr(sys.stdin, "buffer", sys.stdin), proc.stdin, close_sink=True)


def child_stdout() -> int:
    """What to pass as a child's ``stdout`` so that it writes ours (see :func:`child_stdin`);
    what Python holds buffered is written out first, so bytes keep their order."""
    with contextlib.suppress(OSError, ValueError):
        sys.stdout.flush()
    fd = _fd(sys.stdout)
    return fd if fd is not None else subprocess.PIPE


def drain_child(proc: subprocess.Popen) -> StdioLink:
    """Copy ``proc``'s stdout into ours when it got a pipe (see :func:`child_stdout`)."""
    if proc.stdout is None:
        return StdioLink()
    return StdioLink(proc.stdout, getattr(sys.stdout, "buffer", sys.stdout))
