"""Issue 21: `eval ROOT` scores the temporal consistency (TC) of its predictions over the sequences
it reads, beside mIoU: overall and per class, in the table and the JSON; `--no-tc` skips it."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch

from tdnet_cli.cli.app import app
from tdnet_cli.consistency import ConsistencyMeter, work_shape
from tdnet_cli.data.cityscapes import CLASSES
from tdnet_cli.data.layout import list_annotated, sequence_path
from tdnet_cli.inference import Predictor
from tdnet_cli.models import random_model
from tdnet_cli.pipeline.evaluate import evaluate
from tdnet_cli.upsample import upsample_argmax

MODEL = ["--model", "td4-tiny", "--device", "cpu"]
# eval --json's keys before TC was added: all kept, with the same meaning
OLD_KEYS = {
    "miou", "iou", "protocol", "frames_per_sample", "evaluated", "skipped", "model", "input_size", "flip",
    "seconds", "fps", "predictions_dir", "propagation", "paths_scored", "path_miou", "notes", "warnings",
}  # fmt: skip


@pytest.fixture(scope="module")
def dataset(synth_data):
    return synth_data((128, 256), val=(2, 11))


@pytest.fixture(scope="module")
def predictor():
    torch.manual_seed(0)
    return Predictor(random_model("td4-tiny"), device="cpu")


def by_hand(root, fid, history: int, logits: list[torch.Tensor]) -> np.ndarray:
    """The confusion of one sample's stream: its frames read from disk, each frame's logits
    labelled at the flow's working size, fed to a meter of its own."""
    meter = ConsistencyMeter(len(CLASSES))
    for d, lg in zip(range(-history, 1), logits, strict=True):
        frame = cv2.cvtColor(cv2.imread(str(sequence_path(root, "val", fid.shifted(d)))), cv2.COLOR_BGR2RGB)
        labels = upsample_argmax(lg, work_shape(*frame.shape[:2], meter.work_size))[0].numpy()
        meter.update(frame, labels)
    return meter.confusion


@pytest.mark.parametrize("all_paths", [False, True])
def test_tc_is_over_each_streams_consecutive_predictions(dataset, predictor, monkeypatch, all_paths):
    """TC pairs every predicted frame of each stream with the next, and no pair spans two
    streams: the totals equal one meter per stream fed the same frames and logits by hand."""
    seen: list[torch.Tensor] = []
    real = predictor.logits

    def logits(batch, stream):
        out = real(batch, stream)
        seen.append(out.clone())
        return out

    monkeypatch.setattr(predictor, "logits", logits)
    report = evaluate(dataset, predictor=predictor, all_paths=all_paths)
    monkeypatch.undo()
    n, streams = report.frames_per_sample, report.evaluated * report.paths_scored
    tc = report.consistency
    assert tc is not None and tc["pairs"] == streams * (n - 1) and tc["streams"] == streams
    fids = list_annotated(dataset, "val")
    expected = sum(
        by_hand(dataset, fids[k // report.paths_scored], n - 1, seen[k * n : (k + 1) * n]) for k in range(streams)
    )
    meter = ConsistencyMeter(len(CLASSES))
    meter.confusion = expected
    assert tc["pixels"] == expected.sum() > 0
    assert tc["tc"] == pytest.approx(meter.result().tc)
    assert tc["labels_size"] == list(work_shape(128, 256, 512))


def test_json_adds_consistency_and_keeps_every_key(dataset, runner):
    result = runner.invoke(app, ["eval", str(dataset), *MODEL, "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert OLD_KEYS <= set(data) and set(data["iou"]) == set(CLASSES)
    tc = data["consistency"]
    assert set(tc["per_class"]) == set(CLASSES) and 0 <= tc["tc"] <= 1 and 0 <= tc["flicker"] <= 1
    assert tc["pairs"] == data["evaluated"] * (data["frames_per_sample"] - 1)
    assert tc["flow"]["preset"] == "ultrafast" and tc["flow"]["work_size"] == 512
    assert "leftImg8bit_sequence" in tc["over"] and tc["flow_seconds"] >= 0 and tc["scoring_seconds"] >= 0
    skipped = runner.invoke(app, ["eval", str(dataset), *MODEL, "--json", "--no-tc"])
    assert skipped.exit_code == 0, skipped.output
    plain = json.loads(skipped.stdout)
    assert plain["consistency"] is None and OLD_KEYS <= set(plain)


def test_tc_does_not_change_the_scores(dataset, predictor):
    with_tc, without = evaluate(dataset, predictor=predictor), evaluate(dataset, predictor=predictor, consistency=False)
    assert without.consistency is None and with_tc.consistency is not None
    assert with_tc.scores.miou == without.scores.miou and with_tc.frames_run == without.frames_run


def test_no_tc_for_the_repeated_frame_protocol(dataset, predictor):
    """Without the sequences each annotated frame is repeated: there is no motion to measure."""
    report = evaluate(dataset, predictor=predictor, use_sequence=False, limit=1)
    assert report.protocol == "repeat" and report.consistency is None


def test_table_shows_tc_per_class_and_overall(dataset, runner):
    result = runner.invoke(app, ["eval", str(dataset), *MODEL], env={"COLUMNS": "160"})
    assert result.exit_code == 0, result.output
    header = next(line for line in result.stdout.splitlines() if "IoU" in line and "class" in line)
    assert "TC" in header
    line = next(line for line in result.stdout.splitlines() if line.startswith("TC "))
    assert "pairs of consecutive predicted frames" in line and "ultrafast" in line and "512 px" in line
    plain = runner.invoke(app, ["eval", str(dataset), *MODEL, "--no-tc"], env={"COLUMNS": "160"})
    assert plain.exit_code == 0 and not any(line.startswith("TC ") for line in plain.stdout.splitlines())
    assert "TC" not in next(line for line in plain.stdout.splitlines() if "IoU" in line and "class" in line)


def test_no_tc_is_refused_with_consistency(dataset, runner, tmp_path):
    result = runner.invoke(app, ["eval", "--consistency", str(tmp_path), *MODEL, "--no-tc"])
    assert result.exit_code == 2 and "--no-tc" in result.output
