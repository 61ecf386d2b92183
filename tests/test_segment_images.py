"""`tdnet segment` on image files (issue 25 item 1): an image in gives PNGs out under its own
name, the images of one folder are one sequence (one stream, memory carried) unless --each,
and the file-safety rules of issue 19 hold for them as for videos."""

from __future__ import annotations

import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from faults import assert_one_error, cli, snapshot
from test_segment import FakePredictor, read_pngs

from tdnet_cli.data.cityscapes import PALETTE, train_id_to_label_id
from tdnet_cli.pipeline.inputs import ImageSequence, gather_inputs, is_tool_output

H, W = 32, 48
KINDS = ("overlay", "color", "labels", "labelids")


def image(value: int, h: int = H, w: int = W) -> np.ndarray:
    """BGR (what cv2.imwrite takes) whose red channel is ``value``: FakePredictor labels it value // 14."""
    out = np.zeros((h, w, 3), np.uint8)
    out[..., 2] = value
    out[:, : w // 2, 0] = 60
    return out


def frames(folder: Path, count: int = 3, *, start: int = 1) -> list[Path]:
    """``count`` tiny PNGs named f1.png, f2.png, ... f10.png (natural order differs from the string order)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(start, start + count):
        cv2.imwrite(str(folder / f"f{i}.png"), image(14 * i))
        paths.append(folder / f"f{i}.png")
    return paths


@pytest.fixture
def fake(monkeypatch):
    """The command builds a FakePredictor (train id = red // 14); the list of those made."""
    from tdnet_cli.inference import Predictor

    made: list[FakePredictor] = []

    def create(**kwargs):
        made.append(FakePredictor())
        made[-1].input_size = (H, W)
        return made[-1]

    monkeypatch.setattr(Predictor, "create", staticmethod(create))
    return made


def segment(*args) -> object:
    return cli("segment", *map(str, args))


def outputs_of(result) -> list[str]:
    return json.loads(result.stdout)["outputs"]


# --------------------------------------------------------------------------- images in, images out


def test_a_glob_of_images_is_one_sequence_with_png_outputs_under_each_name(tmp_path, fake):
    paths = frames(tmp_path / "frames", 10)
    result = segment(f"{tmp_path}/frames/*.png", *sum((("-s", k) for k in KINDS), ()), "--json")
    assert result.exit_code == 0, result.stderr
    assert len(fake[0].streams) == 1 and fake[0].streams[0].frames == 10  # one stream, memory carried
    report = json.loads(result.stdout)
    (entry,) = report["results"]
    assert entry["images"] == [str(p) for p in paths]  # natural order: f2 before f10
    assert entry["frames"] == 10
    want = [str(p.with_name(f"{p.stem}.{kind}.png")) for kind in KINDS for p in paths]
    assert sorted(report["outputs"]) == sorted(want) and entry["outputs"] == report["outputs"]
    assert all(Path(o).is_file() for o in report["outputs"])  # the real files, single PNGs
    for i, p in enumerate(paths, start=1):
        labels = cv2.imread(str(p.with_name(f"{p.stem}.labels.png")), cv2.IMREAD_UNCHANGED)
        assert labels.shape == (H, W) and (labels == i).all()
        ids = cv2.imread(str(p.with_name(f"{p.stem}.labelids.png")), cv2.IMREAD_UNCHANGED)
        assert (ids == train_id_to_label_id(labels)).all()
        color = cv2.imread(str(p.with_name(f"{p.stem}.color.png")))
        assert (color == PALETTE[i][::-1]).all()
        overlay = cv2.imread(str(p.with_name(f"{p.stem}.overlay.png")))
        assert overlay.shape == (H, W, 3)
    hidden = [p.name for p in (tmp_path / "frames").iterdir() if p.name.startswith(".")]
    assert hidden == []  # no temporary left


def test_each_makes_every_image_its_own_input(tmp_path, fake):
    frames(tmp_path / "frames", 3)
    result = segment(f"{tmp_path}/frames/*.png", "--each", "-s", "labels", "--json")
    assert result.exit_code == 0, result.stderr
    assert [s.frames for s in fake[0].streams] == [1, 1, 1]  # a fresh memory per image
    assert [r["input"] for r in json.loads(result.stdout)["results"]] == [
        str(tmp_path / "frames" / f"f{i}.png") for i in (1, 2, 3)
    ]
    assert sorted(p.name for p in (tmp_path / "frames").glob("*.labels.png")) == [f"f{i}.labels.png" for i in (1, 2, 3)]


@pytest.mark.slow
def test_a_sequence_equals_the_frame_folder_route(tmp_path, monkeypatch):
    """With the real model: the images of a folder given as a glob run as one stream, label for
    label what the frame-folder input gives (and --each does not: every image is a first frame)."""
    from tdnet_cli.inference import Predictor

    torch.manual_seed(0)
    tiny = Predictor.create(model="td4-tiny", device="cpu")
    monkeypatch.setattr(Predictor, "create", staticmethod(lambda **kw: tiny))
    rng = np.random.default_rng(0)
    folder = tmp_path / "frames"
    folder.mkdir()
    base = rng.integers(0, 255, (64, 128, 3), dtype=np.uint8)
    for i in range(6):  # a slow pan, no cut
        cv2.imwrite(str(folder / f"{i}.png"), np.roll(base, 3 * i, axis=1))
    assert segment(folder, "-s", "labels", "-d", tmp_path / "folder", "-q").exit_code == 0
    assert segment(f"{folder}/*.png", "-s", "labels", "-d", tmp_path / "seq", "-q").exit_code == 0
    assert segment(f"{folder}/*.png", "-s", "labels", "-d", tmp_path / "each", "--each", "-q").exit_code == 0
    by_folder = read_pngs(tmp_path / "folder" / "frames.labels")
    seq = {p.name.split(".")[0]: cv2.imread(str(p), cv2.IMREAD_UNCHANGED) for p in (tmp_path / "seq").iterdir()}
    each = {p.name.split(".")[0]: cv2.imread(str(p), cv2.IMREAD_UNCHANGED) for p in (tmp_path / "each").iterdir()}
    assert sorted(seq) == sorted(by_folder) == [str(i) for i in range(6)]
    assert all((seq[k] == by_folder[k]).all() for k in seq)
    assert (each["0"] == seq["0"]).all()  # the first frame has no memory either way
    assert any((each[k] != seq[k]).any() for k in seq if k != "0")


def test_images_of_other_sizes_start_a_new_shot(tmp_path, fake):
    folder = tmp_path / "photos"
    folder.mkdir()
    for name, (h, w) in (("a", (H, W)), ("b", (H, W)), ("c", (2 * H, W)), ("d", (2 * H, W))):
        cv2.imwrite(str(folder / f"{name}.png"), image(28, h, w))
    result = segment(f"{folder}/*.png", "-s", "labels", "--no-cut-detect", "-q")
    assert result.exit_code == 0, result.stderr
    (stream,) = fake[0].streams
    assert stream.frames == 4 and stream.reset_at == [2]
    assert cv2.imread(str(folder / "c.labels.png"), cv2.IMREAD_UNCHANGED).shape == (2 * H, W)


def test_images_of_two_folders_and_a_list_are_two_sequences(tmp_path, fake):
    a, b = frames(tmp_path / "a", 2), frames(tmp_path / "b", 2)
    listing = tmp_path / "list.txt"
    listing.write_text("\n".join(map(str, [b[1], a[1], a[0], b[0]])) + "\n")
    result = segment("--list", listing, "-s", "labels", "-d", tmp_path / "out", "--json")
    assert result.exit_code == 1  # the same names under one -d: the second sequence fails, the first is written
    report = json.loads(result.stdout)
    assert [r["images"] for r in report["results"]] == [[str(b[0]), str(b[1])], [str(a[0]), str(a[1])]]
    assert "is also the output of" in report["results"][1]["error"]
    result = segment("--list", listing, "-s", "labels", "--json")  # beside each: no clash
    assert result.exit_code == 0 and len(outputs_of(result)) == 4


def test_inputs_group_images_by_folder():
    specs = gather_inputs(["README.md", "tests/fixtures"], images="sequence").specs
    assert specs == ("README.md", "tests/fixtures")  # not images: kept as they are
    assert str(ImageSequence(("d/f1.png", "d/f2.png"))) == "d/f1.png .. f2.png (2 images)"
    assert is_tool_output("x/a.overlay.png") and is_tool_output("a.labelids.png") and not is_tool_output("a.png")
    assert is_tool_output(".a.overlay.123.partial.png")


def test_help_says_how_images_are_read(fake):
    result = segment("--help")
    text = " ".join(result.stdout.split())
    assert "--each" in text and "one sequence" in text.lower() and "a.overlay.png" in text


# --------------------------------------------------------------------------- the file-safety rules


def test_a_second_glob_does_not_take_its_own_outputs(tmp_path, fake):
    frames(tmp_path / "frames", 3)
    args = (f"{tmp_path}/frames/*", "-s", "overlay", "-s", "labels")
    assert segment(*args, "-q").exit_code == 0
    before = snapshot(tmp_path)
    result = segment(*args, "--skip-existing", "--json")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["inputs"] == 1 and report["skipped"] == 1 and report["frames"] == 0
    assert snapshot(tmp_path) == before
    result = segment(*args, "--skip-existing")
    assert "left out 6 of tdnet's own outputs" in result.stderr


def test_existing_outputs_need_overwrite_and_skip_existing_writes_the_missing(tmp_path, fake):
    paths = frames(tmp_path / "frames", 3)
    assert segment(f"{tmp_path}/frames/*.png", "-s", "labels", "-q").exit_code == 0
    before = snapshot(tmp_path)
    result = segment(f"{tmp_path}/frames/*.png", "-s", "labels")
    assert_one_error(result, 1, "f1.labels.png exists", "--overwrite")
    assert snapshot(tmp_path) == before
    # new pixels, so a replaced output shows it
    for p in paths:
        cv2.imwrite(str(p), image(14 * 5))
    assert segment(f"{tmp_path}/frames/*.png", "-s", "labels", "--overwrite", "-q").exit_code == 0
    assert all((v == 5).all() for v in read_pngs(tmp_path / "frames").values() if v.ndim == 2)
    # --skip-existing keeps what exists and writes only the missing file
    (tmp_path / "frames" / "f2.labels.png").unlink()
    kept = (tmp_path / "frames" / "f1.labels.png").read_bytes()
    result = segment(f"{tmp_path}/frames/*.png", "-s", "labels", "--skip-existing", "--json")
    assert result.exit_code == 0 and outputs_of(result) == [str(tmp_path / "frames" / "f2.labels.png")]
    assert (tmp_path / "frames" / "f1.labels.png").read_bytes() == kept


def test_o_and_d_for_images(tmp_path, fake):
    paths = frames(tmp_path / "frames", 2)
    result = segment(paths[0], "-o", tmp_path / "one.png", "-s", "overlay", "-s", "labels", "--json")
    assert result.exit_code == 0, result.stderr
    assert outputs_of(result) == [str(tmp_path / "one.png"), str(tmp_path / "one.labels.png")]
    assert cv2.imread(str(tmp_path / "one.png")).shape == (H, W, 3)
    before = snapshot(tmp_path)
    assert_one_error(segment(f"{tmp_path}/frames/*.png", "-o", tmp_path / "x.png"), 2, "-o", "--out-dir")
    assert_one_error(segment(paths[0], "-o", tmp_path / "x.mp4"), 2, "PNG", ".png")
    assert_one_error(segment(paths[0], "-o", tmp_path / "x.png", "-d", tmp_path / "d"), 2, "-o", "-d")
    assert snapshot(tmp_path) == before
    result = segment(f"{tmp_path}/frames/*.png", "-d", tmp_path / "out", "-s", "color", "--json")
    assert result.exit_code == 0
    assert outputs_of(result) == [str(tmp_path / "out" / f"f{i}.color.png") for i in (1, 2)]
    assert sorted(os.listdir(tmp_path / "frames")) == ["f1.png", "f2.png"]


def test_an_output_that_is_an_input_image_is_refused(tmp_path, fake):
    paths = frames(tmp_path / "frames", 2)
    (tmp_path / "link.png").symlink_to(paths[0])
    os.link(paths[0], tmp_path / "hard.png")
    cv2.imwrite(str(tmp_path / "frames" / "f1.overlay.png"), image(200))
    before = snapshot(tmp_path)
    for target in (paths[0], tmp_path / "link.png", tmp_path / "hard.png"):
        for extra in ((), ("--overwrite",)):
            assert_one_error(segment(paths[0], "-o", target, *extra), 2, "is the input")
    # named one by one, f1.overlay.png is an input of the sequence, and f1's overlay would be it
    assert_one_error(segment(paths[0], tmp_path / "frames" / "f1.overlay.png", "--overwrite"), 2, "is the input")
    (tmp_path / "frames" / "f1.overlay.png").unlink()
    (tmp_path / "frames" / "f2.labels.png").mkdir()
    assert_one_error(segment(f"{tmp_path}/frames/f?.png", "-s", "labels", "--overwrite"), 2, "is a folder")
    assert snapshot(tmp_path) == {k: v for k, v in before.items() if k != "frames/f1.overlay.png"} | {
        "frames/f2.labels.png": None
    }


def test_a_bad_image_fails_the_sequence_and_writes_nothing(tmp_path, fake):
    frames(tmp_path / "frames", 4)
    (tmp_path / "frames" / "f3.png").write_bytes(b"not a png")
    before = snapshot(tmp_path)
    result = segment(f"{tmp_path}/frames/*.png", "-s", "overlay", "-s", "labels")
    assert_one_error(result, 1, "f3.png: not a readable image")
    assert snapshot(tmp_path) == before  # no output of f1, f2 under a final name, no temporary


def test_a_frame_folder_does_not_read_the_outputs_of_an_images_run_as_frames(tmp_path, fake):
    frames(tmp_path / "frames", 3)
    assert segment(f"{tmp_path}/frames/*.png", "-s", "overlay", "-s", "labels", "-q").exit_code == 0
    (tmp_path / "frames" / ".hidden.png").write_bytes(b"not a frame")
    result = segment(tmp_path / "frames", "-s", "labels", "-d", tmp_path / "out", "--json")
    assert result.exit_code == 0, result.stderr
    assert sorted(read_pngs(tmp_path / "out" / "frames.labels")) == ["f1", "f2", "f3"]
    (warning,) = json.loads(result.stdout)["warnings"]
    assert "left out 6 of tdnet's own outputs" in warning and "f1.labels.png" in warning
