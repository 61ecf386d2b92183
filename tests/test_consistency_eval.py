"""`tdnet eval --consistency INPUT...`: TC and flicker of a model's labels on footage without labels.

The figures are checked through the pipeline function with a fixed-labelling predictor (a
random TDNet runs a different path on each frame, so its labels flicker even on a still clip);
the command is checked with the tiny preset for its shape, keys and exit codes.
"""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
from faults import assert_one_error, cli
from media import encode_rgb

from tdnet_cli.cli.app import run
from tdnet_cli.consistency import DEFAULT_PRESET, DEFAULT_WORK_SIZE
from tdnet_cli.data.cityscapes import CLASSES
from tdnet_cli.errors import EXIT_USAGE, InputError, UsageError
from tdnet_cli.pipeline.consistency_eval import consistency_eval

H, W = 64, 128
TINY = ("--model", "td4-tiny", "--device", "cpu")
RESULT_KEYS = {"tc", "flicker", "per_class", "pairs", "pixels"}


def texture(seed: int, bright: bool = False) -> np.ndarray:
    """A smooth random RGB texture (something for the flow to hold on to)."""
    noise = np.random.default_rng(seed).random((H // 8, W // 8, 3)).astype(np.float32)
    img = cv2.resize(noise, (W, H), interpolation=cv2.INTER_CUBIC)
    lo, hi = (150, 255) if bright else (0, 100)
    return np.clip(lo + (hi - lo) * img, 0, 255).astype(np.uint8)


class FixedPredictor:
    """A predictor whose labels follow the pixels alone (train id = red // 14): the same frame
    always gets the same labels. Records whether TDNet's memory was on at each step."""

    classes = CLASSES
    name = "fixed"
    input_size = (H, W)

    def __init__(self) -> None:
        self.model = SimpleNamespace(use_memory=True)
        self.notes: list[str] = []
        self.memory_at_step: list[bool] = []
        self.resets = 0

    def new_stream(self) -> SimpleNamespace:
        return SimpleNamespace(frames=0)

    def reset(self, stream: SimpleNamespace) -> None:
        self.resets += 1

    def segment(self, image: np.ndarray, stream: SimpleNamespace) -> np.ndarray:
        self.memory_at_step.append(self.model.use_memory)
        stream.frames += 1
        return (image[..., 0] // 14).astype(np.uint8)


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """A still clip (one image, 5 frames), a clip with a hard cut (3 + 3 frames) and a folder of 4 still frames."""
    root = tmp_path_factory.mktemp("consistency")
    still = encode_rgb(root / "still.mp4", [texture(1)] * 5)  # lossless: every frame decodes the same
    cut = encode_rgb(root / "cut.mp4", [texture(2)] * 3 + [texture(3, bright=True)] * 3)
    folder = root / "frames"
    folder.mkdir()
    for i in range(4):
        cv2.imwrite(str(folder / f"f{i}.png"), cv2.cvtColor(texture(4), cv2.COLOR_RGB2BGR))
    return SimpleNamespace(root=root, still=str(still), cut=str(cut), folder=str(folder))


# -- the pipeline function ---------------------------------------------------------------------


def test_still_clip_is_fully_consistent_in_both_modes(clips):
    pred = FixedPredictor()
    report = consistency_eval([clips.still], predictor=pred, modes=("per_frame", "propagation"))
    assert report.modes == ("propagation", "per_frame")  # MODES' order, whatever was asked
    (item,) = report.inputs
    assert (item.frames, item.cuts) == (5, 0)
    for mode, result in report.overall().items():
        assert result.tc == 1.0 and result.flicker == 0.0, mode
        assert result.pairs == 4 and result.pixels > 0.9 * 4 * H * W
        present = result.per_class[~np.isnan(result.per_class)]
        assert present.size and np.all(present == 1.0)
    # per_frame switches TDNet's memory off for its steps only, and it is on again afterwards
    assert pred.memory_at_step == [True, False] * 5
    assert pred.model.use_memory is True


def test_a_hard_cut_restarts_the_stream_and_is_not_scored(clips):
    pred = FixedPredictor()
    report = consistency_eval([clips.cut], predictor=pred)
    (item,) = report.inputs
    assert (item.frames, item.cuts, pred.resets) == (6, 1, 1)
    result = item.results["propagation"]
    assert result.pairs == 4  # 2 + 2: the pair across the cut is left out
    assert result.tc == 1.0 and result.flicker == 0.0


def test_inputs_are_expanded_like_segment_and_merged(clips):
    report = consistency_eval([clips.folder, str(clips.root / "*.mp4")], predictor=FixedPredictor())
    assert [i.input for i in report.inputs] == [clips.folder, clips.cut, clips.still]  # natural order
    overall = report.overall()["propagation"]
    assert overall.pairs == 3 + 4 + 4 and overall.tc == 1.0
    assert report.frames == 4 + 6 + 5


def test_missing_inputs_and_bad_modes_are_refused_before_any_frame(clips, tmp_path):
    pred = FixedPredictor()
    with pytest.raises(InputError, match="no such file or folder"):
        consistency_eval([clips.still, str(tmp_path / "gone.mp4")], predictor=pred)
    with pytest.raises(InputError, match="the pattern matches nothing"):
        consistency_eval([str(tmp_path / "*.mkv")], predictor=pred)
    with pytest.raises(UsageError, match="no inputs"):
        consistency_eval([], predictor=pred)
    with pytest.raises(UsageError, match="modes must be"):
        consistency_eval([clips.still], predictor=pred, modes=("sideways",))
    pred.model = SimpleNamespace()  # a per-frame model has no memory to switch off
    with pytest.raises(UsageError, match="TDNet models only"):
        consistency_eval([clips.still], predictor=pred, modes=("per_frame",))
    assert pred.memory_at_step == []


def test_tc_is_nan_free_on_a_single_frame(tmp_path):
    """One frame: no pair, TC unknown (None in the JSON), and a warning says why."""
    clip = encode_rgb(tmp_path / "one.mp4", [texture(5)])
    report = consistency_eval([str(clip)], predictor=FixedPredictor())
    assert math.isnan(report.overall()["propagation"].tc)
    assert report.to_dict()["overall"]["propagation"]["tc"] is None
    assert any("single frame" in w for w in report.warnings)


# -- the command ---------------------------------------------------------------------------------


def run_json(*args: str) -> dict:
    result = cli("eval", "--consistency", *args, *TINY, "--json")
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def test_json_keys(clips):
    out = run_json(clips.still)
    assert set(out) == {
        "model", "input_size", "modes", "flow", "frames", "seconds", "fps", "overall", "inputs", "notes", "warnings",
    }  # fmt: skip
    assert out["model"] == "td4-tiny" and out["modes"] == ["propagation"] and out["frames"] == 5
    assert out["flow"]["method"] == "opencv-dis"
    assert (out["flow"]["preset"], out["flow"]["work_size"]) == (DEFAULT_PRESET, DEFAULT_WORK_SIZE)
    assert set(out["overall"]) == {"propagation"} and set(out["overall"]["propagation"]) == RESULT_KEYS
    (item,) = out["inputs"]
    assert set(item) == {"input", "frames", "cuts", "seconds", "model_seconds", "flow_seconds", "results"}
    assert item["input"] == clips.still and item["frames"] == 5 and set(item["results"]) == {"propagation"}
    overall = out["overall"]["propagation"]
    assert overall["pairs"] == 4 and set(overall["per_class"]) == set(CLASSES)
    assert 0.0 <= overall["tc"] <= 1.0 and 0.0 <= overall["flicker"] <= 1.0


def test_no_propagation_scores_the_per_frame_baseline(clips):
    out = run_json(clips.still, "--no-propagation")
    assert out["modes"] == ["per_frame"] and set(out["overall"]) == {"per_frame"}


def test_compare_per_frame_reports_both(clips, tmp_path):
    path = tmp_path / "both.json"
    result = cli(
        "eval", "--consistency", clips.still, "--compare-per-frame", *TINY, "--json-file", path, env={"COLUMNS": "200"}
    )
    assert result.exit_code == 0, result.stderr
    # the table on stdout, the figures in the file
    assert "TC (with memory)" in result.stdout and "TC (per frame)" in result.stdout
    assert "TDNet's memory changes TC by" in result.stdout
    out = json.loads(path.read_text())
    assert out["modes"] == ["propagation", "per_frame"]
    assert set(out["overall"]) == set(out["inputs"][0]["results"]) == {"propagation", "per_frame"}
    for result in out["overall"].values():
        assert set(result) == RESULT_KEYS and result["pairs"] == 4


@pytest.mark.slow
def test_json_file_is_written_and_not_replaced_without_overwrite(clips, tmp_path):
    path = tmp_path / "tc.json"
    assert cli("eval", "--consistency", clips.still, *TINY, "--json-file", path, "-q").exit_code == 0
    assert json.loads(path.read_text())["frames"] == 5
    assert_one_error(cli("eval", "--consistency", clips.still, *TINY, "--json-file", path), EXIT_USAGE, "exists")
    assert_one_error(
        cli("eval", "--consistency", clips.still, *TINY, "--json-file", clips.still, "--overwrite"),
        EXIT_USAGE,
        "never replaces an input",
    )


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--consistency", "{root}/missing.mp4"], "missing.mp4: no such file or folder"),
        (["--consistency", "{still}", "{root}/missing.mp4"], "missing.mp4: no such file or folder"),
        (["--consistency"], "no inputs"),
        (["--compare-per-frame", "{still}"], "--compare-per-frame applies to --consistency"),
        (["--consistency", "{still}", "--compare-per-frame", "--no-propagation"], "drop --no-propagation"),
        (["--consistency", "{still}", "--flip", "--limit", "2"], "--limit, --flip apply to eval ROOT"),
        (["{still}", "{still}"], "eval takes one dataset folder"),
    ],
)
def test_usage_errors_are_one_line_exit_2(clips, args, needle):
    argv = [a.format(root=clips.root, still=clips.still) for a in args]
    assert_one_error(cli("eval", *argv, *TINY), EXIT_USAGE, needle)


def test_eval_without_root_is_still_a_missing_argument(capsys):
    code = run(["eval", *TINY])
    line = assert_one_error(SimpleNamespace(exit_code=code, stderr=capsys.readouterr().err), EXIT_USAGE, "Missing")
    assert "'ROOT | INPUT'" in line and "tdnet eval --help" in line


def test_help_states_the_flow_preset_and_working_size():
    """The help cannot import tdnet_cli.consistency (cv2 stays out of `tdnet --help`), so it states
    the values; this keeps them those of consistency.py."""
    text = " ".join(cli("eval", "--help", env={"COLUMNS": "400"}).stdout.split())
    assert f"preset '{DEFAULT_PRESET}'" in text and f"{DEFAULT_WORK_SIZE} px on the long side" in text
    assert "--compare-per-frame" in text and "[ROOT | INPUT]..." in text
