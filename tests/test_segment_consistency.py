"""`tdnet segment --consistency`: TC of the labels written, scored in the writer thread."""

from __future__ import annotations

import json

import numpy as np
import pytest
from media import encode_rgb
from test_segment import FakePredictor, run, scene

from tdnet_cli.cli.app import run as cli_run


def _still(n: int, red: int = 140) -> list[np.ndarray]:
    """A textured still image (FakePredictor labels pixels by red // 14), repeated."""
    yy, xx = np.mgrid[0:64, 0:128]
    img = np.stack([np.where((xx // 16 + yy // 16) % 2 == 0, red, 20), xx * 2, yy * 3], -1).astype(np.uint8)
    return [img.copy() for _ in range(n)]


def test_a_still_clip_has_tc_100_and_no_flicker(tmp_path):
    clip = encode_rgb(tmp_path / "still.mp4", _still(8))
    report = run([str(clip)], predictor=FakePredictor(), out_dir=tmp_path / "out", consistency=True)
    (result,) = report.results
    assert result.status == "ok" and result.consistency["pairs"] == 7
    assert result.consistency["tc"] == pytest.approx(1.0) and result.consistency["flicker"] == 0.0
    assert report.consistency["tc"] == pytest.approx(1.0) and report.consistency["pairs"] == 7


class Blinking(FakePredictor):
    """FakePredictor's labels, shifted by 5 classes on every other frame."""

    def logits(self, x, stream):
        labels = super().logits(x, stream)
        return (labels + 5 * (stream.frames % 2)) % 19


def test_labels_that_alternate_every_frame_have_tc_0(tmp_path):
    """A still clip (the flow is exact) whose labels change class on every pixel each frame."""
    clip = encode_rgb(tmp_path / "still.mp4", _still(8))
    report = run([str(clip)], predictor=Blinking(), out_dir=tmp_path / "out", consistency=True)
    tc = report.consistency
    assert tc["pairs"] == 7 and tc["pixels"] > 0
    assert tc["flicker"] == pytest.approx(1.0) and tc["tc"] == pytest.approx(0.0)
    assert {v for v in tc["per_class"].values() if v is not None} == {0.0}


def test_no_pair_spans_a_scene_cut(tmp_path):
    clip = encode_rgb(tmp_path / "cut.mp4", scene(5, 0) + scene(5, 1))
    report = run([str(clip)], predictor=FakePredictor(), out_dir=tmp_path / "out", consistency=True)
    assert report.results[0].cuts == 1 and report.consistency["pairs"] == 8
    off = run([str(clip)], predictor=FakePredictor(), out_dir=tmp_path / "off", consistency=True, cut_detect=False)
    assert off.consistency["pairs"] == 9


def test_inputs_merge_and_the_report_sums_pairs(tmp_path):
    clips = [str(encode_rgb(tmp_path / f"s{i}.mp4", _still(n))) for i, n in enumerate((5, 7))]
    report = run(clips, predictor=FakePredictor(), out_dir=tmp_path / "out", consistency=True)
    assert [r.consistency["pairs"] for r in report.results] == [4, 6] and report.consistency["pairs"] == 10


@pytest.mark.slow
def test_cli_json_has_consistency_only_when_asked(tmp_path, capsys):
    clip = encode_rgb(tmp_path / "still.mp4", _still(6))
    args = ["segment", str(clip), "--model", "td4-tiny", "--device", "cpu", "-d", str(tmp_path / "o"), "--json"]
    assert cli_run(args) == 0
    plain = json.loads(capsys.readouterr().out)
    assert "consistency" not in plain and "consistency" not in plain["results"][0]
    assert cli_run([*args, "--overwrite", "--consistency"]) == 0
    measured = json.loads(capsys.readouterr().out)
    tc = measured["consistency"]
    assert tc["pairs"] == 5 and 0.0 <= tc["tc"] <= 1.0 and tc["flow"]["preset"] == "ultrafast"
    assert measured["results"][0]["consistency"]["pairs"] == 5 and "seconds" in measured["results"][0]["consistency"]


def test_cli_prints_a_tc_line(tmp_path, capsys):
    clip = encode_rgb(tmp_path / "still.mp4", _still(4))
    assert cli_run(["segment", str(clip), "--model", "td4-tiny", "--device", "cpu", "-d", str(tmp_path / "o"),
                    "--consistency"]) == 0  # fmt: skip
    assert "temporal consistency: TC " in capsys.readouterr().out
