"""The Cityscapes folder layout and file naming, shared by ``synth``, ``eval`` and ``train``.

A Cityscapes frame is named ``{city}_{seq:06d}_{frame:06d}``. The layout under a root:

- ``leftImg8bit_sequence/{split}/{city}/{stem}_leftImg8bit.png``: 30-frame snippets with
  consecutive frame numbers; the annotated frame is the 20th (index 19) of its snippet.
- ``leftImg8bit/{split}/{city}/{stem}_leftImg8bit.png``: the annotated frames only.
- ``gtFine/{split}/{city}/{stem}_gtFine_{labelIds,color,instanceIds}.png``: their labels.

Everything here is path arithmetic plus a few directory listings; errors are ``DataError``
with the path that is missing and what was expected there.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from tdnet_cli.errors import DataError

__all__ = [
    "ANNOTATED_INDEX",
    "GT_KINDS",
    "SNIPPET_LENGTH",
    "SPLITS",
    "FrameId",
    "gt_path",
    "image_path",
    "list_annotated",
    "list_images",
    "sequence_frames",
    "sequence_path",
]

SPLITS: tuple[str, ...] = ("train", "val", "test")
SNIPPET_LENGTH = 30  # frames per leftImg8bit_sequence snippet
ANNOTATED_INDEX = 19  # the annotated frame is the 20th of its snippet
GT_KINDS: tuple[str, ...] = ("labelIds", "color", "instanceIds")

# City names may contain letters, digits and '-' (e.g. "bad-honnef") but never '_',
# because the official tools split file names on '_'.
_NAME_RE = re.compile(r"^(?P<city>[A-Za-z0-9-]+)_(?P<seq>\d{6})_(?P<frame>\d{6})(?:_[^/]*)?(?:\.[A-Za-z0-9]+)?$")
_CITY_RE = re.compile(r"^[A-Za-z0-9-]+$")


@dataclass(frozen=True, order=True)
class FrameId:
    """One Cityscapes frame: city, sequence number and frame number."""

    city: str
    seq: int
    frame: int

    def __post_init__(self) -> None:
        if not _CITY_RE.match(self.city):
            raise DataError(f"invalid city name {self.city!r}", hint="use letters, digits and '-' only, no '_'")
        if not (0 <= self.seq <= 999_999 and 0 <= self.frame <= 999_999):
            raise DataError(f"sequence and frame numbers must be 0..999999, got {self.seq} and {self.frame}")

    @property
    def stem(self) -> str:
        """``{city}_{seq:06d}_{frame:06d}``, the part shared by all files of this frame."""
        return f"{self.city}_{self.seq:06d}_{self.frame:06d}"

    @classmethod
    def parse(cls, name: str | Path) -> FrameId:
        """Parse any Cityscapes file name (or path), e.g. ``aachen_000000_000019_leftImg8bit.png``."""
        base = Path(name).name
        m = _NAME_RE.match(base)
        if m is None:
            raise DataError(
                f"{base!r} is not a Cityscapes file name",
                hint="expected {city}_{seq:06d}_{frame:06d}_<kind>.png, e.g. aachen_000000_000019_leftImg8bit.png",
            )
        return cls(m["city"], int(m["seq"]), int(m["frame"]))

    def shifted(self, delta: int) -> FrameId:
        """The frame ``delta`` frames later (earlier if negative) in the same sequence."""
        return FrameId(self.city, self.seq, self.frame + delta)

    def __str__(self) -> str:
        return self.stem


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}", hint=f"use one of {', '.join(SPLITS)}")


def image_path(root: str | Path, split: str, fid: FrameId) -> Path:
    """``leftImg8bit/{split}/{city}/{stem}_leftImg8bit.png`` (annotated frames)."""
    return Path(root) / "leftImg8bit" / split / fid.city / f"{fid.stem}_leftImg8bit.png"


def sequence_path(root: str | Path, split: str, fid: FrameId) -> Path:
    """``leftImg8bit_sequence/{split}/{city}/{stem}_leftImg8bit.png`` (every snippet frame)."""
    return Path(root) / "leftImg8bit_sequence" / split / fid.city / f"{fid.stem}_leftImg8bit.png"


def gt_path(root: str | Path, split: str, fid: FrameId, kind: str = "labelIds") -> Path:
    """``gtFine/{split}/{city}/{stem}_gtFine_{kind}.png`` with kind labelIds, color or instanceIds."""
    if kind not in GT_KINDS:
        raise DataError(f"unknown ground-truth kind {kind!r}", hint=f"use one of {', '.join(GT_KINDS)}")
    return Path(root) / "gtFine" / split / fid.city / f"{fid.stem}_gtFine_{kind}.png"


def _list(root: str | Path, top: str, split: str, suffix: str, cities: Iterable[str] | None) -> list[FrameId]:
    _check_split(split)
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"dataset folder {root} not found", hint="pass the folder that holds gtFine/ and leftImg8bit/")
    base = root / top / split
    if not base.is_dir():
        raise DataError(
            f"{base} not found",
            hint=f"expected the Cityscapes layout {top}/{split}/<city>/*{suffix} under {root}",
        )
    present = sorted(p.name for p in base.iterdir() if p.is_dir())
    wanted = present if cities is None else list(cities)
    missing = [c for c in wanted if c not in present]
    if missing:
        raise DataError(
            f"no city {missing[0]!r} in {base}",
            hint=f"available: {', '.join(present) or 'none'}",
        )
    found: list[FrameId] = []
    for city in wanted:
        for p in (base / city).glob(f"*{suffix}"):
            fid = FrameId.parse(p.name)
            if fid.city != city:  # a file filed under the wrong city folder would never be found by its path
                raise DataError(f"{p} is filed under city {city!r} but named for {fid.city!r}")
            found.append(fid)
    if not found:
        raise DataError(f"no *{suffix} files under {base}", hint="is the dataset unpacked completely?")
    return sorted(found)


def list_annotated(root: str | Path, split: str, cities: Iterable[str] | None = None) -> list[FrameId]:
    """All frames with ``gtFine/{split}/*/*_gtFine_labelIds.png``, sorted; optionally only ``cities``."""
    return _list(root, "gtFine", split, "_gtFine_labelIds.png", cities)


def list_images(root: str | Path, split: str, cities: Iterable[str] | None = None) -> list[FrameId]:
    """All frames with ``leftImg8bit/{split}/*/*_leftImg8bit.png``, sorted (labels not required)."""
    return _list(root, "leftImg8bit", split, "_leftImg8bit.png", cities)


def sequence_frames(root: str | Path, split: str, fid: FrameId, count: int) -> list[Path]:
    """The ``count`` snippet frames ending at ``fid`` (oldest first), from ``leftImg8bit_sequence``."""
    _check_split(split)
    if count < 1:
        raise DataError(f"need at least one frame, got count={count}")
    if fid.frame - count + 1 < 0:
        raise DataError(f"{fid.stem} has only {fid.frame + 1} frame number(s) before it, {count} requested")
    paths = [sequence_path(root, split, fid.shifted(d)) for d in range(1 - count, 1)]
    for p in paths:
        if not p.is_file():
            raise DataError(
                f"missing sequence frame {p}",
                hint="temporal models need leftImg8bit_sequence/ (the 30-frame snippets) next to gtFine/",
            )
    return paths
