"""A live source that is opened again when it ends (``segment --reconnect N``).

A stream that drops (the sender stops, the network fails) ends its decoder; with tries
left, :class:`ReconnectingSource` waits (0.2 s, doubling up to 2 s between tries) and opens
it again, so that one run, and its outputs, span the outage. Frames are numbered on across
reconnects, and :attr:`ReconnectingSource.reconnects` counts them: the pipeline resets the
model's memory at the first frame after each, as at a scene cut.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator

from tdnet_cli.errors import InputError
from tdnet_cli.video.frames import Frame, SourceInfo
from tdnet_cli.video.reader import VideoReader

__all__ = ["ReconnectingSource"]

FIRST_WAIT_S = 0.2
MAX_WAIT_S = 2.0


class ReconnectingSource:
    """Frames of ``open_reader()``, opened again up to ``tries`` times each time it ends.

    The first open fails as a plain reader does (InputError). A stream that comes back at
    another frame size ends the run with an InputError: its outputs have one size. ``problems``
    are those of the last connection, so a stream that ended with an error and did not come
    back fails the input with that line, its outputs kept.
    """

    def __init__(self, open_reader: Callable[[], VideoReader], tries: int) -> None:
        self._open = open_reader
        self.tries = tries
        self.reader = open_reader()
        self.info: SourceInfo = self.reader.info
        self.reconnects = 0
        self._closed = threading.Event()

    @property
    def problems(self) -> list[str]:
        return self.reader.problems

    def __iter__(self) -> Iterator[Frame]:
        index = 0
        while True:
            for frame in self.reader:
                frame.index, frame.name = index, f"{index:06d}"  # numbered on across connections
                index += 1
                yield frame
            reader = self._reopen()
            if reader is None:
                return
            self.reader.close()
            self.reader = reader
            self.reconnects += 1

    def _reopen(self) -> VideoReader | None:
        """The stream opened again, or None when it did not come back within the tries (or we were closed)."""
        wait = FIRST_WAIT_S
        for _ in range(self.tries):
            if self._closed.wait(wait):
                return None
            wait = min(2 * wait, MAX_WAIT_S)
            try:
                reader = self._open()
            except InputError:
                continue
            got, want = (reader.info.width, reader.info.height), (self.info.width, self.info.height)
            if got != want:
                reader.close()
                raise InputError(
                    f"{self.info.uri}: came back at {got[0]}x{got[1]}, not the {want[0]}x{want[1]} it started with"
                )
            return reader
        return None

    def close(self) -> None:
        """Stop reading and stop trying (from any thread)."""
        self._closed.set()
        self.reader.close()
