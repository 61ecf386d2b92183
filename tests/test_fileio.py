"""Atomic writes: the final name only ever holds a complete file."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from tdnet_cli.errors import WriteError
from tdnet_cli.fileio import atomic_path, write_png, write_text


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "report.json"
    write_text(target, "old\n")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("crash mid-write")
    assert target.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]
    write_text(target, "new\n")
    assert target.read_text() == "new\n"


def test_write_png_round_trips_and_creates_folders(tmp_path):
    image = np.arange(6 * 7, dtype=np.uint16).reshape(6, 7) * 1000
    target = tmp_path / "a" / "b" / "ids.png"
    write_png(target, image)
    back = cv2.imread(str(target), cv2.IMREAD_UNCHANGED)
    assert back.dtype == np.uint16 and np.array_equal(back, image)
    assert sorted(p.name for p in target.parent.iterdir()) == ["ids.png"]


def test_write_png_reports_an_unwritable_place(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(WriteError, match="cannot write"):  # the work started and failed: exit 1
        write_png(blocker / "x.png", np.zeros((2, 2), np.uint8))
