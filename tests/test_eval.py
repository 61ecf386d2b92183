"""`eval` equals the official Cityscapes evaluation and follows TDNet's temporal protocol."""

from __future__ import annotations

import importlib
import json
import math
import shutil

import cv2
import numpy as np
import pytest
import torch
from official import official_scores

from tdnet_cli.cli.app import app
from tdnet_cli.data.cityscapes import CLASSES, label_id_to_train_id
from tdnet_cli.data.layout import gt_path, list_annotated
from tdnet_cli.errors import DataError, UsageError
from tdnet_cli.inference import Predictor
from tdnet_cli.metrics import ConfusionMatrix, InstanceStats, scores
from tdnet_cli.models import random_model
from tdnet_cli.pipeline.evaluate import evaluate


@pytest.fixture(scope="module")
def dataset(synth_data):
    return synth_data((128, 256), val=(3, 11))


@pytest.fixture(scope="module")
def predictor():
    torch.manual_seed(0)
    return Predictor(random_model("td4-tiny"), device="cpu")


def assert_same_as_official(ours: dict, official: dict) -> None:
    assert ours["miou"] == pytest.approx(official["averageScoreClasses"], abs=1e-6)
    assert ours["miiou"] == pytest.approx(official["averageScoreInstClasses"], abs=1e-6)
    for name in CLASSES:
        theirs = official["classScores"][name]
        mine = ours["iou"][name]
        assert (mine is None) == math.isnan(theirs), name
        if mine is not None:
            assert mine == pytest.approx(theirs, abs=1e-6), name
        if name in ours["iiou"]:
            theirs = official["classInstScores"][name]
            mine = ours["iiou"][name]
            assert (mine is None) == math.isnan(theirs), name
            if mine is not None:
                assert mine == pytest.approx(theirs, abs=1e-6), name


@pytest.mark.slow
def test_model_scores_equal_the_official_evaluation(dataset, predictor, tmp_path):
    report = evaluate(dataset, predictor=predictor, split="val", save_predictions=tmp_path / "pred")
    assert report.evaluated == 3 and report.protocol == "sequence"
    saved = sorted((tmp_path / "pred").rglob("*.png"))
    assert len(saved) == 3 and all(p.name.endswith("_leftImg8bit.png") for p in saved)
    assert_same_as_official(report.scores.to_dict(), official_scores(dataset, "val", tmp_path / "pred"))


def test_perturbed_ground_truth_scores_equal_the_official_evaluation(dataset, tmp_path):
    """Predictions = ground truth with shifted, relabelled and eroded regions."""
    rng = np.random.default_rng(5)
    conf, inst = ConfusionMatrix(), InstanceStats()
    for fid in list_annotated(dataset, "val"):
        base = dataset / "gtFine" / "val" / fid.city / fid.stem
        gt = cv2.imread(f"{base}_gtFine_labelIds.png", cv2.IMREAD_UNCHANGED)
        pred = np.roll(gt, shift=(int(rng.integers(-3, 4)), int(rng.integers(-5, 6))), axis=(0, 1)).copy()
        pred[rng.random(pred.shape) < 0.05] = 26  # speckles of "car"
        pred[label_id_to_train_id(pred) == 255] = 7  # never write ignored ids: make them road
        out = tmp_path / "pred" / fid.city / f"{fid.stem}_leftImg8bit.png"
        out.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(out), pred)
        p_t, g_t = label_id_to_train_id(pred), label_id_to_train_id(gt)
        conf.update(torch.from_numpy(p_t), torch.from_numpy(g_t))
        inst.update(p_t, cv2.imread(f"{base}_gtFine_instanceIds.png", cv2.IMREAD_UNCHANGED))
    ours = scores(conf, inst).to_dict()
    assert 0.3 < ours["miou"] < 0.99
    assert_same_as_official(ours, official_scores(dataset, "val", tmp_path / "pred"))


class Recorder:
    """Wraps a predictor's step to record how full the memory queue is at each frame."""

    def __init__(self, predictor):
        self.predictor = predictor
        self.calls: list[tuple[int, int]] = []
        self._step = predictor.step

    def __enter__(self):
        def step(x, stream):
            self.calls.append((stream.state.frame_index, len(stream.state.memories)))
            return self._step(x, stream)

        self.predictor.step = step
        return self

    def __exit__(self, *exc):
        del self.predictor.step


@pytest.mark.parametrize("warmup", [0, 2])
def test_annotated_frame_sees_a_full_memory_queue(dataset, predictor, warmup):
    with Recorder(predictor) as rec:
        report = evaluate(dataset, predictor=predictor, warmup=warmup, limit=1)
    n = predictor.num_paths
    assert report.frames_per_sample == n + warmup
    assert [c[0] for c in rec.calls] == list(range(n + warmup))  # one fresh stream
    assert rec.calls[-1][1] == n - 1  # the annotated frame is predicted with N-1 memories


@pytest.mark.slow
def test_fallback_without_sequences(dataset, predictor, tmp_path):
    root = tmp_path / "noseq"
    shutil.copytree(dataset, root, ignore=shutil.ignore_patterns("leftImg8bit_sequence"))
    report = evaluate(root, predictor=predictor)
    assert report.protocol == "repeat" and any("leftImg8bit_sequence" in n for n in report.notes)
    explicit = evaluate(dataset, predictor=predictor, use_sequence=False)
    assert explicit.protocol == "repeat"
    assert explicit.scores.miou == pytest.approx(report.scores.miou)


def test_flip_averaging_runs_two_streams(dataset, predictor, monkeypatch):
    """--flip scores the mean of the frame's logits and its mirror image's logits mirrored back,
    each from its own stream; this random model's logits change with a flip, so the mean is not
    the plain logits."""
    evaluate_module = importlib.import_module("tdnet_cli.pipeline.evaluate")  # the package's `evaluate` is the function
    batches, scored = [], []
    real_logits, real_upsample = predictor.logits, evaluate_module.upsample_argmax

    def logits(batch, stream):
        batches.append(batch)
        return real_logits(batch, stream)

    def upsample_argmax(logits, size):
        scored.append(logits)
        return real_upsample(logits, size)

    monkeypatch.setattr(predictor, "logits", logits)
    monkeypatch.setattr(evaluate_module, "upsample_argmax", upsample_argmax)
    report = evaluate(dataset, predictor=predictor, flip=True, limit=1)
    assert report.flip and report.evaluated == 1 and 0 <= report.scores.miou <= 1
    assert len(batches) == predictor.num_paths and len(scored) == 1
    # The same frames by hand: one stream on them, another on their mirror images.
    plain, mirrored = predictor.new_stream(), predictor.new_stream()
    for batch in batches:
        assert batch.shape[0] == 2 and np.array_equal(batch[1], batch[0][:, ::-1])
        unflipped = real_logits(batch[:1], plain)
        flipped = real_logits(np.ascontiguousarray(batch[1:]), mirrored)
    expected = (unflipped + flipped.flip(-1)) / 2
    assert scored[0].shape == expected.shape
    assert torch.allclose(scored[0], expected, atol=1e-4)
    assert not torch.allclose(scored[0], unflipped, atol=1e-2)


def test_missing_frames_listed_then_skipped(dataset, predictor, tmp_path):
    root = tmp_path / "broken"
    shutil.copytree(dataset, root)
    fid = list_annotated(root, "val")[1]
    victim = root / "leftImg8bit_sequence" / "val" / fid.city / f"{fid.shifted(-1).stem}_leftImg8bit.png"
    victim.unlink()
    with pytest.raises(DataError, match=r"1 of 3 annotated frames have no matching images: .*--skip-missing"):
        evaluate(root, predictor=predictor)
    report = evaluate(root, predictor=predictor, skip_missing=True)
    assert report.evaluated == 2 and report.skipped[0][0] == fid.stem


def test_unexpected_image_size(dataset, predictor, tmp_path):
    root = tmp_path / "sized"
    shutil.copytree(dataset, root)
    fid = list_annotated(root, "val")[0]
    path = root / "leftImg8bit_sequence" / "val" / fid.city / f"{fid.stem}_leftImg8bit.png"
    cv2.imwrite(str(path), np.zeros((64, 100, 3), np.uint8))
    with pytest.raises(DataError, match="unexpected image size"):
        evaluate(root, predictor=predictor)
    assert evaluate(root, predictor=predictor, skip_missing=True).evaluated == 2


@pytest.mark.parametrize("make_root", ["missing", "no_gt_split"])
def test_missing_folders(tmp_path, predictor, make_root, dataset):
    root = tmp_path / "x"
    if make_root == "no_gt_split":
        shutil.copytree(dataset, root)
        with pytest.raises(DataError, match="not found"):
            evaluate(root, predictor=predictor, split="train")
    else:
        with pytest.raises(DataError, match="not found"):
            evaluate(root, predictor=predictor)


@pytest.mark.slow
def test_cli_json_stdout_and_table(dataset, runner):
    result = runner.invoke(
        app, ["eval", str(dataset), "--model", "td4-tiny", "--device", "cpu", "--json", "--limit", "2"]
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["evaluated"] == 2 and set(data["iou"]) == set(CLASSES) and data["protocol"] == "sequence"
    table = runner.invoke(app, ["eval", str(dataset), "--model", "td4-tiny", "--device", "cpu", "--cities", "nowhere"])
    assert table.exit_code == 2 and "no city 'nowhere'" in table.output


@pytest.mark.slow
def test_compiled_predictor_scores_the_same(dataset, eager_compile, monkeypatch, runner):
    """eval --compile: the same scores, with and without propagation (the ablation flips a
    model attribute between runs, which the compiled graphs must follow). Dynamo's eager
    backend keeps it fast."""
    eager = attentive_predictor()
    compiled = Predictor(eager.loaded, device="cpu", compile=True)
    for propagation in (False, True):
        a = evaluate(dataset, predictor=eager, propagation=propagation, limit=2).scores
        b = evaluate(dataset, predictor=compiled, propagation=propagation, limit=2).scores
        assert b.miou == pytest.approx(a.miou, abs=1e-6) and b.pixel_accuracy == pytest.approx(
            a.pixel_accuracy, abs=1e-6
        )
    # and the command passes --compile / --compile-mode through
    made = []
    monkeypatch.setattr(Predictor, "create", staticmethod(lambda **kw: made.append(kw) or eager))
    for args, want in (((), False), (("--compile",), True), (("--compile-mode", "reduce-overhead"), "reduce-overhead")):
        result = runner.invoke(app, ["eval", str(dataset), "--limit", "1", "-q", *args])
        assert result.exit_code == 0, result.output
        assert made[-1]["compile"] == want


def attentive_predictor() -> Predictor:
    """td4-tiny with random weights whose attention matters. Random attention is
    near-uniform: what it propagates is then one vector per channel, which the spatial
    LayerNorm removes. Scaled-up queries and keys make it matter."""
    torch.manual_seed(0)
    loaded = random_model("td4-tiny")
    with torch.no_grad():
        for name, param in loaded.model.named_parameters():
            if ".w_qs.1.conv." in name or ".w_ks.1.conv." in name:
                param.mul_(8.0)
    return Predictor(loaded, device="cpu")


@pytest.mark.slow
def test_no_propagation_scores_the_sub_features_alone(dataset):
    predictor = attentive_predictor()
    with Recorder(predictor) as rec:
        ablation = evaluate(dataset, predictor=predictor, propagation=False, limit=2)
    full = evaluate(dataset, predictor=predictor, limit=2)
    assert not ablation.propagation and full.propagation
    assert predictor.model.use_memory is True  # restored afterwards
    assert ablation.scores.iou != full.scores.iou
    assert rec.calls[-1][1] == predictor.num_paths - 1  # the stream still runs every frame


@pytest.mark.slow
def test_all_paths_scores_the_frame_once_with_each_path(dataset, tmp_path):
    predictor = attentive_predictor()  # so each path's prediction differs
    n = predictor.num_paths
    with Recorder(predictor) as rec:
        report = evaluate(dataset, predictor=predictor, all_paths=True, limit=2)
    assert report.evaluated == 2 and report.paths_scored == n and report.frames_run == 2 * n * n
    # Per frame, N fresh streams of N frames each; their annotated frames run paths 0..N-1,
    # every one after a full memory queue.
    last = rec.calls[n - 1 :: n]
    assert [idx % n for idx, _ in last] == list(range(n)) * 2
    assert {mems for _, mems in last} == {n - 1}
    # The same as scoring each path alone: --warmup w puts path (N-1+w) mod N on the
    # annotated frame and the memory holds only the last N-1 frames, so the confusion
    # matrices of the N single-path runs add up to the all-path one.
    conf = ConfusionMatrix(len(CLASSES))
    for w in range(n):
        out = tmp_path / f"w{w}"
        single = evaluate(dataset, predictor=predictor, warmup=w, limit=2, save_predictions=out)
        assert single.paths_scored == 1 and single.path_miou is None
        assert report.path_miou[(n - 1 + w) % n] == pytest.approx(single.scores.miou, abs=1e-12)
        for fid in list_annotated(dataset, "val")[:2]:
            pred = cv2.imread(str(out / fid.city / f"{fid.stem}_leftImg8bit.png"), cv2.IMREAD_UNCHANGED)
            gt = cv2.imread(str(gt_path(dataset, "val", fid)), cv2.IMREAD_UNCHANGED)
            conf.update(torch.from_numpy(label_id_to_train_id(pred)), torch.from_numpy(label_id_to_train_id(gt)))
    assert report.scores.iou == pytest.approx(scores(conf).iou, abs=1e-12)
    assert report.scores.pixel_accuracy == pytest.approx(scores(conf).pixel_accuracy, abs=1e-12)
    assert report.scores.iou != evaluate(dataset, predictor=predictor, limit=2).scores.iou
    with pytest.raises(UsageError, match="--save-predictions"):
        evaluate(dataset, predictor=predictor, all_paths=True, save_predictions=tmp_path / "pred")


@pytest.mark.slow
def test_cli_all_paths_reports_each_path(dataset, runner):
    args = ["eval", str(dataset), "--model", "td4-tiny", "--device", "cpu", "--limit", "1", "--all-paths"]
    data = json.loads(runner.invoke(app, args + ["--json"]).stdout)
    assert data["paths_scored"] == 4 and len(data["path_miou"]) == 4
    table = runner.invoke(app, args)
    assert table.exit_code == 0 and "mIoU by path:" in table.output and "all 4 paths" in table.output
