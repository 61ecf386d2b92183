"""What `tdnet segment` tells and gives a user (issue 25 item 9): a summary that stays readable at
80 columns and says why an input failed, output paths as the inputs were given, a colour-map
video that decodes to palette colours only, a legend whose dark swatches show, and a --json
that names the model, weights, device and precision and carries the model's warnings."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from faults import REPO, cli
from media import encode_rgb, make_clip
from test_segment import FakePredictor

from tdnet_cli.cli import segment as segment_cli
from tdnet_cli.data.cityscapes import CLASSES, PALETTE
from tdnet_cli.video import VideoReader


@pytest.fixture
def fake(monkeypatch):
    """The command builds a FakePredictor (train id = red // 14) sized to the frames it meets."""
    from tdnet_cli.inference import Predictor

    made: list[FakePredictor] = []

    def create(**kwargs):
        made.append(FakePredictor())
        return made[-1]

    monkeypatch.setattr(Predictor, "create", staticmethod(create))
    return made


def segment(*args) -> object:
    return cli("segment", *map(str, args))


def test_the_summary_at_80_columns_keeps_every_output_and_says_why_an_input_failed(tmp_path, fake, monkeypatch):
    monkeypatch.setattr(segment_cli.console, "_width", 80)
    out = tmp_path / "a-rather-long-folder-name-for-the-outputs" / "of-this-run"
    a = make_clip(tmp_path / "first-clip-with-a-long-name.mp4", 2)
    c = make_clip(tmp_path / "third-clip-with-a-long-name.mp4", 2)
    (tmp_path / "broken.mp4").write_text("junk")
    result = segment(a, tmp_path / "broken.mp4", c, "-d", out, "-s", "overlay", "-s", "labels")
    assert result.exit_code == 1
    text = result.stdout
    assert max(len(line) for line in text.splitlines() if "━" in line or "│" in line) <= 80  # the table fits
    for clip in (a, c):
        for name in (f"{clip.stem}.overlay.mp4", f"{clip.stem}.labels"):
            assert str(out / name) in text  # whole, on one line, not cut or folded
    failed = [line for line in text.splitlines() if line.startswith("failed:")]
    assert failed == [f"failed: {tmp_path / 'broken.mp4'}: not a video ffmpeg can read (invalid data)"]
    assert "3 inputs, 4 frames" in text


def test_output_paths_are_as_the_inputs_were_given(tmp_path, fake, monkeypatch):
    monkeypatch.chdir(tmp_path)
    make_clip(tmp_path / "clip.mp4", 2)
    (tmp_path / "frames").mkdir()
    cv2.imwrite(str(tmp_path / "frames" / "0.png"), np.zeros((64, 128, 3), np.uint8))
    result = segment("clip.mp4", "frames/", "-s", "labels", "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["outputs"] == ["clip.labels", "frames.labels"]
    (tmp_path / "sub").mkdir()
    monkeypatch.chdir(tmp_path / "frames")
    result = segment(".", "-s", "labels", "-d", "../sub", "--json")
    assert result.exit_code == 0 and json.loads(result.stdout)["outputs"] == ["../sub/frames.labels"]


@pytest.mark.parametrize("size", ["128x64", "47x33"])
def test_the_colour_video_decodes_to_palette_colours_only(tmp_path, fake, size):
    w, h = map(int, size.split("x"))
    if w % 2:  # 4:2:0 H.264 cannot hold an odd size: lossless RGB then
        rng = np.random.default_rng(0)
        clip = encode_rgb(tmp_path / "in.mp4", [rng.integers(0, 255, (h, w, 3), dtype=np.uint8) for _ in range(4)])
    else:
        clip = make_clip(tmp_path / "in.mp4", 4, size=size)
    fake.clear()
    FakePredictor.input_size = (h, w)
    try:
        result = segment(clip, "-s", "color", "-s", "labels", "-d", tmp_path / "o", "-q")
    finally:
        FakePredictor.input_size = (64, 128)
    assert result.exit_code == 0, result.stderr
    palette = {tuple(c) for c in PALETTE}
    with VideoReader(str(tmp_path / "o" / "in.color.mp4")) as reader:
        decoded = [f.image for f in reader]
    assert len(decoded) == 4 and decoded[0].shape == (h, w, 3)
    labels = sorted((tmp_path / "o" / "in.labels").glob("*.png"))
    for frame, label_png in zip(decoded, labels):
        colours = {tuple(c) for c in np.unique(frame.reshape(-1, 3), axis=0)}
        assert colours <= palette, f"{len(colours - palette)} colours that are no class's"
        lut = np.array(PALETTE, np.uint8)
        assert (frame == lut[cv2.imread(str(label_png), cv2.IMREAD_UNCHANGED)]).all()  # maps back to the labels


def test_the_legends_dark_swatches_stand_out_from_its_box(tmp_path, fake):
    """bus, train and truck are dark blues: each swatch is framed in white on the dim box."""
    h, w = 360, 240
    dark = [CLASSES.index(c) for c in ("truck", "bus", "train")]
    image = np.zeros((h, w, 3), np.uint8)
    for k, cls in enumerate(dark):
        image[:, k * w // 3 : (k + 1) * w // 3, 2] = 14 * cls  # BGR: red carries the class
    cv2.imwrite(str(tmp_path / "dark.png"), image)
    FakePredictor.input_size = (h, w)
    try:
        result = segment(tmp_path / "dark.png", "--legend", "-q")
    finally:
        FakePredictor.input_size = (64, 128)
    assert result.exit_code == 0, result.stderr
    overlay = cv2.cvtColor(cv2.imread(str(tmp_path / "dark.overlay.png")), cv2.COLOR_BGR2RGB).astype(int)
    row = max(10, h // 36)
    pad = max(2, row // 4)
    for k, cls in enumerate(sorted(dark)):
        y = pad + k * (row + pad)
        swatch = overlay[y : y + row, pad : pad + row]
        centre = swatch[row // 2, row // 2]
        assert tuple(centre) == PALETTE[cls]
        ring = np.concatenate([swatch[0], swatch[-1], swatch[:, 0], swatch[:, -1]])
        assert ring.min() >= 200  # a white frame around the colour
        box = overlay[y + row // 2, pad + row + 2 : pad + row + 4]  # beside the swatch, left of the name
        assert np.abs(ring.mean(0) - box.mean(0)).sum() > 300  # the frame against the box
        assert np.abs(ring.mean(0) - centre).sum() > 300  # the colour against its frame


def test_the_legend_is_drawn_unless_no_legend(tmp_path, fake):
    """The overlay names its classes by default; --no-legend gives the bare blend (issue 25 item 9)."""
    h, w = 360, 240
    image = np.zeros((h, w, 3), np.uint8)
    image[:, :, 2] = 14 * CLASSES.index("car")
    cv2.imwrite(str(tmp_path / "car.png"), image)
    FakePredictor.input_size = (h, w)
    try:
        overlays = {}
        for flag in ("--legend", "--no-legend"):
            out = tmp_path / flag.strip("-")
            assert (
                segment(tmp_path / "car.png", "-d", out, "-q", *([flag] if flag == "--no-legend" else [])).exit_code
                == 0
            )
            overlays[flag] = cv2.imread(str(out / "car.overlay.png")).astype(int)
    finally:
        FakePredictor.input_size = (64, 128)
    bare, with_legend = overlays["--no-legend"], overlays["--legend"]
    assert (bare == bare[h // 2, w // 2]).all()  # one class, one blend colour everywhere
    differs = np.abs(with_legend - bare).sum(-1) > 0
    assert differs[: h // 4, : w // 2].mean() > 0.02 and not differs[h // 2 :].any()  # a box in the top-left corner


@pytest.mark.slow
def test_json_names_the_model_weights_device_and_precision_and_warns_of_the_demo_model(tmp_path):
    clip = make_clip(tmp_path / "in.mp4", 2)
    result = segment(clip, "--device", "cpu", "--threads", "1", "--json")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["model"] == "td4-mini" and report["device"] == "cpu" and report["precision"] == "fp32"
    assert Path(report["weights"]).resolve() == (REPO / "weights" / "td4-mini-synth.pt").resolve()
    assert any("demo model" in w for w in report["warnings"])
    for key in ("ok", "inputs", "succeeded", "failed", "skipped", "frames", "seconds", "fps", "shard", "outputs"):
        assert key in report  # the keys scripts already read stay
    assert report["outputs"] == [str(tmp_path / "in.overlay.mp4")] == report["results"][0]["outputs"]
