"""Issue 21: `eval --consistency` reads image files as `segment` does: the images of one folder,
however named (a glob, a list), are one stream in natural order, so their pairs are scored."""

from __future__ import annotations

import json

import cv2
import numpy as np
from faults import cli

TINY = ("--model", "td4-tiny", "--device", "cpu")


def write_frames(folder, count: int, seed: int) -> None:
    folder.mkdir()
    noise = np.random.default_rng(seed).random((8, 16, 3)).astype(np.float32)
    image = cv2.resize((255 * noise).astype(np.uint8), (128, 64), interpolation=cv2.INTER_CUBIC)
    for i in range(count):  # f2 before f10: natural order
        cv2.imwrite(str(folder / f"f{2 + 8 * i}.png"), image)


def test_a_glob_of_images_is_one_stream_per_folder(tmp_path):
    write_frames(tmp_path / "a", 4, 1)
    write_frames(tmp_path / "b", 3, 2)
    result = cli(
        "eval", "--consistency", tmp_path / "a" / "*.png", tmp_path / "b" / "f2.png", tmp_path / "b" / "f10.png",
        *TINY, "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert [(i["frames"], i["results"]["propagation"]["pairs"]) for i in data["inputs"]] == [(4, 3), (2, 1)]
    first = data["inputs"][0]["input"]
    assert first.startswith(str(tmp_path / "a" / "f2.png")) and "f26.png (4 images)" in first
    assert "single frame" not in result.stderr
