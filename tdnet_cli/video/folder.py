"""Images as a stream: the images of one folder in natural order, or a list of image files,
read with OpenCV as uint8 RGB frames."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import cv2
import numpy as np

from tdnet_cli.errors import InputError
from tdnet_cli.video.frames import IMAGE_EXTENSIONS, Frame, SourceInfo, is_image_output, natural_key

__all__ = ["FrameFolderReader", "ImageSequenceReader", "to_rgb8"]


def to_rgb8(image: np.ndarray) -> np.ndarray:
    """Any OpenCV-decoded image (grey, grey+alpha, BGR, BGRA; 8 or 16 bit) -> uint8 RGB.

    Alpha is dropped (the stored colours are shown); 16-bit samples are scaled to 8 bits.
    """
    if image.dtype == np.uint16:
        image = cv2.convertScaleAbs(image, alpha=255.0 / 65535.0)
    elif image.dtype != np.uint8:
        raise InputError(f"unsupported sample type {image.dtype} (use 8- or 16-bit images)")
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    channels = image.shape[2]
    if channels == 1:
        return cv2.cvtColor(image[:, :, 0], cv2.COLOR_GRAY2RGB)
    if channels == 2:  # grey + alpha
        return cv2.cvtColor(np.ascontiguousarray(image[:, :, 0]), cv2.COLOR_GRAY2RGB)
    if channels == 3:
        return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    if channels == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2RGB)
    raise InputError(f"unsupported image with {channels} channels")


def _read_image(path: Path) -> np.ndarray:
    # imdecode of the bytes (not imread) so non-ASCII paths work and errors are ours
    try:
        data = np.fromfile(str(path), dtype=np.uint8)
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror or exc})") from None
    image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if image is None:
        raise InputError(f"{path}: not a readable image")
    try:
        return to_rgb8(image)
    except InputError as exc:
        raise InputError(f"{path}: {exc.message}") from None


class ImageSequenceReader:
    """Frames of image files (png/jpg/...) read in the order given, as one stream; output names
    keep the files' stems.

    With ``same_size`` every frame must have the first frame's size (a different one raises
    InputError when it is reached); without, sizes may change from one image to the next (the
    pipeline starts a new shot there: see :func:`tdnet_cli.pipeline.stream.run_stream`).
    """

    def __init__(self, files: Sequence[str | Path], *, uri: str, same_size: bool = False) -> None:
        self.files = [Path(f) for f in files]
        self.problems: list[str] = []
        self.same_size = same_size
        if not self.files:
            raise InputError(f"{uri}: no images")
        self._first = _read_image(self.files[0])
        h, w = self._first.shape[:2]
        self.info = SourceInfo(uri=uri, kind="frames", width=w, height=h, fps=None, frame_count=len(self.files))

    def __iter__(self) -> Iterator[Frame]:
        w, h = self.info.width, self.info.height
        for index, path in enumerate(self.files):
            image = self._first if index == 0 else _read_image(path)
            if self.same_size and image.shape[:2] != (h, w):
                raise InputError(
                    f"{path}: frame size {image.shape[1]}x{image.shape[0]} differs from the first frame's {w}x{h}",
                    hint="all frames of a folder must have one size",
                )
            yield Frame(index, path.stem, image)
        self._first = None  # type: ignore[assignment]

    def close(self) -> None:
        pass

    def __enter__(self) -> ImageSequenceReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class FrameFolderReader(ImageSequenceReader):
    """Frames of a folder of images (png/jpg/...), in natural order (``f2`` before ``f10``),
    all of the first frame's size. Hidden files and the images `segment` wrote there for image
    inputs (``a.overlay.png``, ...: see :func:`is_image_output`) are no frames; the latter are
    listed in ``left_out``."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        try:
            entries = [
                p
                for p in self.folder.iterdir()
                if p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".") and p.is_file()
            ]
        except OSError as exc:
            raise InputError(f"{folder}: cannot list folder ({exc.strerror or exc})") from None
        self.left_out = sorted((p.name for p in entries if is_image_output(p.name)), key=natural_key)
        entries = [p for p in entries if not is_image_output(p.name)]
        if not entries:
            raise InputError(
                f"{folder}: no frames (png/jpg) in this folder", hint="point at the folder that holds the images"
            )
        files = sorted(entries, key=lambda p: natural_key(p.name))
        stems = [p.stem for p in files]
        if len(set(stems)) != len(stems):
            # a.png and a.jpg would write the same output name
            raise InputError(f"{folder}: two frames share a name stem (e.g. a.png and a.jpg)")
        super().__init__(files, uri=str(folder), same_size=True)
