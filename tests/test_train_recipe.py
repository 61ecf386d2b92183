"""The authors' training recipe (issue 20, phase 2): optimiser and schedule (item 7), the path of each
step (item 4), clips (item 5), the run's model file (item 10), augmentation (item 8), the
training-only memory stride (item 9), and `train --teacher psp101.pkl --init` the authors' way."""

from __future__ import annotations

import inspect
import itertools
import json

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tdnet_cli.cli.app import app
from tdnet_cli.config import DEFAULTS, load_config, toml_string
from tdnet_cli.errors import UsageError
from tdnet_cli.models import load_checkpoint
from tdnet_cli.models.registry import get_preset
from tdnet_cli.pipeline.train import get_lr
from tdnet_cli.pipeline.train_setup import decay_split, make_optimizer

AUTHORS = {**DEFAULTS["optim"], "lr": 0.01, "warmup_iters": 1000, "iterations": 40000}


# -- item 7: optimiser and schedule --------------------------------------------------------------
def test_the_default_schedule_is_the_authors():
    assert DEFAULTS["optim"]["warmup"] == "exp" and DEFAULTS["optim"]["warmup_iters"] == 1000
    assert DEFAULTS["optim"]["momentum"] == 0.9 and DEFAULTS["optim"]["weight_decay"] == 1e-4


def test_exponential_warm_up_then_poly_over_the_rest():
    assert get_lr(0, AUTHORS) == pytest.approx(1e-5, rel=1e-9)
    assert get_lr(500, AUTHORS) == pytest.approx(1e-5 * 1000**0.5, rel=1e-9)  # 3.16e-4: half-way in log space
    assert get_lr(1000, AUTHORS) == pytest.approx(0.01, rel=1e-9)
    assert get_lr(1001, AUTHORS) == pytest.approx(0.01 * (1 - 1 / 39000) ** 0.9, rel=1e-9)
    assert get_lr(40000, AUTHORS) == 0.0
    assert get_lr(20500, AUTHORS) == pytest.approx(0.01 * 0.5**0.9, rel=1e-9)  # poly over the 39000 left
    rates = [get_lr(i, AUTHORS) for i in range(0, 1001, 50)]
    assert rates == sorted(rates)  # rising through the warm-up


def test_the_linear_warm_up_stays_available():
    o = {**AUTHORS, "warmup": "linear", "iterations": 100, "warmup_iters": 10, "warmup_ratio": 0.1}
    assert get_lr(0, o) == pytest.approx(0.001)
    assert get_lr(5, o) == pytest.approx(0.0055)
    assert get_lr(10, o) == pytest.approx(0.01 * 0.9**0.9)  # poly over all iterations, as before
    with pytest.raises(UsageError, match="optim.warmup"):
        from tdnet_cli.config import validate

        validate(load_config(None, ['data.root="x"', 'optim.warmup="cosine"']))


def _names(model: nn.Module, params: list[nn.Parameter]) -> set[str]:
    ids = {id(p) for p in params}
    return {n for n, p in model.named_parameters() if id(p) in ids}


def test_weight_decay_on_conv_and_linear_weights_only():
    model = get_preset("td4-tiny").build(aux=True)
    decay, no_decay = decay_split(model)
    kinds = {n: type(m) for n, m in model.named_modules()}
    for name in _names(model, no_decay):
        owner, _, leaf = name.rpartition(".")
        is_norm = issubclass(kinds[owner], (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm))
        assert leaf == "bias" or is_norm, name
    for name in _names(model, decay):
        owner, _, leaf = name.rpartition(".")
        assert leaf == "weight" and issubclass(kinds[owner], (nn.Conv2d, nn.Linear)), name
    no = _names(model, no_decay)
    assert any("bn" in n or "norm" in n.lower() for n in no)  # BatchNorm weights and biases
    assert any(issubclass(kinds[n.rpartition(".")[0]], nn.LayerNorm) for n in no)  # TDNet's LayerNorm
    assert len(decay) + len(no_decay) == len(list(model.parameters()))

    opt = make_optimizer(model, {**DEFAULTS["optim"]})
    assert [g["weight_decay"] for g in opt.param_groups] == [1e-4, 0.0]
    assert all(g["momentum"] == 0.9 for g in opt.param_groups)
    # A decayed weight shrinks with a zero gradient; a BatchNorm weight does not.
    conv_w, bn_w = decay[0], next(p for p in no_decay if p.dim() == 1)
    before = conv_w.detach().clone(), bn_w.detach().clone()
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    assert not torch.equal(conv_w, before[0]) and torch.equal(bn_w, before[1])


# -- item 4: the current path ------------------------------------------------------------------------
def test_the_path_is_the_step_mod_n_on_every_rank():
    from tdnet_cli.pipeline.train_setup import path_for_step

    assert [path_for_step(s, 4) for s in range(9)] == [0, 1, 2, 3, 0, 1, 2, 3, 0]
    assert [path_for_step(s, 2) for s in range(5)] == [0, 1, 0, 1, 0]
    # No seed and no rank: nothing else can make two processes differ.
    assert list(inspect.signature(path_for_step).parameters) == ["step", "num_paths"]


@pytest.fixture(scope="module")
def data_root(synth_data):
    return synth_data((96, 192), train=(2, 1))


def tiny_sets(data_root, out, name, **over) -> list[str]:
    sets = [
        f"data.root={toml_string(str(data_root))}",
        f"run.out={toml_string(str(out))}",
        f'run.name="{name}"',
        'model.preset="td4-tiny"',
        "data.batch_size=2",
        "data.workers=0",
        "run.log_every=1",
        "run.val_every=0",
        "optim.warmup_iters=0",
        "loss.ohem=false",
    ]
    return sets + [f"{k}={v}" for k, v in over.items()]


@pytest.mark.slow  # trains (pyproject.toml: slow)
def test_training_runs_path_iteration_mod_n_and_resumes_on_it(data_root, tmp_path, runner):
    args = ["train", "--json"]
    for s in tiny_sets(data_root, tmp_path, "paths", **{"optim.iterations": "3"}):
        args += ["--set", s]
    assert runner.invoke(app, args).exit_code == 0
    more = ["train", "--resume", str(tmp_path / "paths"), "--set", "optim.iterations=6", "--json"]
    assert runner.invoke(app, more).exit_code == 0
    records = [json.loads(x) for x in (tmp_path / "paths" / "metrics.jsonl").read_text().splitlines()]
    assert [(r["iteration"], r["path"]) for r in records if "loss" in r] == [(i, (i - 1) % 4) for i in range(1, 7)]


# -- item 5: clips -------------------------------------------------------------------------------
def _numbered_frames(root, size=(32, 64), frames=range(20), annotated=19):
    """One snippet whose frame k is a grey image of value 10 * k, annotated at ``annotated``."""
    from tdnet_cli.data.layout import FrameId, gt_path, sequence_path

    for k in frames:
        p = sequence_path(root, "train", FrameId("aachen", 0, k))
        p.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(p), np.full((*size, 3), 10 * k, np.uint8))
    g = gt_path(root, "train", FrameId("aachen", 0, annotated))
    g.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(g), np.full(size, 7, np.uint8))  # label id 7: road


def test_clip_offsets_are_gaps_of_one_or_two_ending_at_the_annotated_frame():
    from tdnet_cli.data.clips import clip_offsets

    seen = set()
    for index in range(200):
        off = clip_offsets(0, index, 4, 2)
        assert len(off) == 4 and off[-1] == 0
        gaps = {b - a for a, b in itertools.pairwise(off)}
        assert gaps <= {1, 2}
        seen |= gaps
    assert seen == {1, 2}  # both drawn
    assert clip_offsets(0, 5, 4, 2) == clip_offsets(0, 5, 4, 2)  # a function of (seed, index): resumable
    assert clip_offsets(0, 5, 4, 1) == [-3, -2, -1, 0]  # max_gap 1: consecutive frames
    assert DEFAULTS["data"]["max_gap"] == 2


def test_a_clip_reads_the_drawn_frames_with_the_annotated_one_last(tmp_path):
    from tdnet_cli.data.clips import AugmentConfig, ClipDataset, clip_offsets
    from tdnet_cli.models.checkpoint import MEAN, STD

    _numbered_frames(tmp_path)
    ds = ClipDataset(tmp_path, "train", clip_len=4, augment=AugmentConfig(crop=(32, 64)), train=False, seed=3)
    for index in range(6):
        sample = ds[index]
        grey = sample["frames"][:, 0, 0, 0] * STD[0] + MEAN[0]  # back to [0, 1] pixels
        numbers = [round(float(v) * 255 / 10) for v in grey]
        assert numbers[-1] == 19  # the annotated frame is last
        assert [n - 19 for n in numbers] == clip_offsets(3, index, 4, 2) == sample["offsets"].tolist()


def test_too_few_frames_before_an_annotated_one_for_the_gap_is_one_line(tmp_path):
    from tdnet_cli.data.clips import AugmentConfig, ClipDataset
    from tdnet_cli.errors import DataError

    _numbered_frames(tmp_path, frames=range(14, 20))  # 5 frames before: enough for gaps of 1 only
    ClipDataset(tmp_path, "train", clip_len=4, augment=AugmentConfig(crop=(32, 64)), max_gap=1)
    with pytest.raises(DataError, match="data.max_gap=1"):
        ClipDataset(tmp_path, "train", clip_len=4, augment=AugmentConfig(crop=(32, 64)), max_gap=2)


# -- item 10: the run's model is the best validated one ----------------------------------------------
def _cli_train(runner, sets: list[str]) -> dict:
    args = ["train", "--json"]
    for s in sets:
        args += ["--set", s]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def _weights(path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


@pytest.mark.slow  # trains (pyproject.toml: slow)
def test_model_pt_is_the_best_validated_weights(synth_data, tmp_path, runner):
    root = synth_data((96, 192), train=(2, 1), val=(1, 2))
    over = {"optim.iterations": "4", "run.val_every": "1", "run.val_limit": "1", "optim.lr": "0.05"}
    out = _cli_train(runner, tiny_sets(root, tmp_path, "best", **over))
    run = tmp_path / "best"
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    scores = [(r["val_miou"], -r["iteration"]) for r in records if "val_miou" in r]
    assert len(scores) == 4
    best_it = -max(scores)[1]  # the first of the highest scores
    assert out["weights_from"] == "best" and out["weights_iteration"] == best_it
    assert out["best_val_miou"] == max(scores)[0]
    model, best = _weights(run / "model.pt"), _weights(run / "best.pt")
    assert model.keys() == best.keys() and all(torch.equal(model[k], best[k]) for k in model)
    said = [r for r in records if "model_from" in r]
    assert said == [
        {"iteration": 4, "model_from": "best", "model_iteration": best_it, "model_val_miou": max(scores)[0]}
    ]
    assert load_checkpoint(run / "model.pt").provenance["model_from"] == "best"
    assert (run / "last.pt").is_file()  # kept for --resume


@pytest.mark.slow  # trains (pyproject.toml: slow)
def test_without_validation_model_pt_is_the_last_iteration(data_root, tmp_path, runner):
    out = _cli_train(runner, tiny_sets(data_root, tmp_path, "last", **{"optim.iterations": "2"}))
    assert out["weights_from"] == "last" and out["weights_iteration"] == 2 and out["best"] is None
    model, last = _weights(tmp_path / "last" / "model.pt"), _weights(tmp_path / "last" / "last.pt")
    assert model and all(torch.equal(model[k], last[k]) for k in model)
    assert DEFAULTS["run"]["val_every"] == 500


# -- item 8: augmentation, one draw per clip ---------------------------------------------------------
def _textured_clip(root, size=(48, 96)):
    """One snippet of 20 identical textured frames, labelled road (7) left and car (26) right."""
    from tdnet_cli.data.layout import FrameId, gt_path, sequence_path

    img = np.random.default_rng(0).integers(0, 256, (*size, 3), dtype=np.uint8)
    for k in range(20):
        p = sequence_path(root, "train", FrameId("aachen", 0, k))
        p.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(p), img)
    labels = np.full(size, 7, np.uint8)
    labels[:, size[1] // 2 :] = 26
    g = gt_path(root, "train", FrameId("aachen", 0, 19))
    g.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(g), labels)


def test_augmentation_is_one_draw_for_the_whole_clip(tmp_path):
    from tdnet_cli.data.clips import AugmentConfig, ClipDataset

    _textured_clip(tmp_path)
    ds = ClipDataset(tmp_path, "train", clip_len=4, augment=AugmentConfig(crop=(32, 64)), seed=0)
    firsts = []
    for index in range(8):
        frames = ds[index]["frames"]
        for f in frames[1:]:  # identical frames stay identical: the same rotation, scale, crop, flip, colour
            assert torch.equal(f, frames[0]), index
        firsts.append(frames[0])
    assert len({f.numpy().tobytes() for f in firsts}) == 8  # a fresh draw per clip


def test_scales_come_from_the_set_and_never_leave_the_crop_uncovered(tmp_path):
    from tdnet_cli.data.clips import AugmentConfig, ClipDataset

    _textured_clip(tmp_path)
    ds = ClipDataset(tmp_path, "train", clip_len=1, augment=AugmentConfig(crop=(32, 64)), seed=0)
    assert ds.augment.scale == tuple(DEFAULTS["data"]["scale"]) == (0.75, 1.0, 1.25, 1.5, 1.75, 2.0)
    cover = max(32 / 48, 64 / 96)
    seen = set()
    for index in range(200):
        m, _ = ds._affine(np.random.default_rng([0, 11, index]), 48, 96)
        seen.add(round(float(np.sqrt(abs(np.linalg.det(m[:, :2])))) / cover, 6))
    assert seen == {1.0, 1.25, 1.5, 1.75, 2.0}  # 0.75 would be smaller than the crop: resized up to it


def test_labels_are_nearest_neighbour_and_the_rotation_fills_255_and_black(tmp_path):
    from tdnet_cli.data.clips import AugmentConfig, ClipDataset
    from tdnet_cli.models.checkpoint import MEAN, STD

    _textured_clip(tmp_path)
    aug = AugmentConfig(crop=(32, 64), scale=(1.0,), rotate=5.0, color_jitter=0.0, flip=False)
    ds = ClipDataset(tmp_path, "train", clip_len=1, augment=aug, seed=0)
    black = torch.tensor([-m / s for m, s in zip(MEAN, STD)]).view(3, 1)
    filled = 0
    for index in range(20):
        sample = ds[index]
        label, frame = sample["label"], sample["frames"][0]
        assert set(label.unique().tolist()) <= {0, 13, 255}  # road, car, fill: no blends of class ids
        out = label == 255
        # The rotated-in corners, 2 pixels in from their edge (bilinear blends the edge itself): black.
        inner = ~F.max_pool2d((~out).float()[None], 5, stride=1, padding=2)[0].bool()
        filled += int(inner.sum())
        assert (frame[:, inner] - black).abs().max().item() < 1e-4 if inner.any() else True
    assert filled > 0  # some rotation left corners to fill


# -- item 9: a training-only memory stride -----------------------------------------------------------
@pytest.mark.slow  # trains (pyproject.toml: slow)
def test_train_memory_stride_is_used_in_training_only(synth_data, tmp_path, runner, monkeypatch):
    from tdnet_cli.models import attention

    root = synth_data((96, 192), train=(2, 1), val=(1, 2))
    seen: set[tuple[bool, int]] = set()
    forward = attention.QueryKeyValue.forward

    def spy(self, z):
        seen.add((self.training, self.memory_stride))
        return forward(self, z)

    monkeypatch.setattr(attention.QueryKeyValue, "forward", spy)
    over = {"optim.iterations": "1", "run.val_limit": "1", "model.train_memory_stride": "2"}
    out = _cli_train(runner, tiny_sets(root, tmp_path, "stride", **over))
    assert (True, 2) in seen and (False, 4) in seen  # trained with 2, validated with the model's 4
    assert not {s for t, s in seen if t} - {2} and not {s for t, s in seen if not t} - {4}
    run = tmp_path / "stride"
    for name in ("model.pt", "last.pt", "best.pt"):  # the inference config keeps the model's stride
        assert load_checkpoint(run / name).model.config.memory_stride == 4, name
    assert out["weights_from"] == "best"
    assert "train_memory_stride = 2" in (run / "config.toml").read_text()  # a resume trains with it again
    with pytest.raises(UsageError, match="TDNet presets only"):
        from tdnet_cli.pipeline.train import train

        train(load_config(None, tiny_sets(root, tmp_path, "psp", **{**over, "model.preset": '"psp-tiny"'})))


# -- the recipe's entry points: --teacher takes a released-style PSPNet, model.init the authors' way ---
@pytest.mark.slow  # trains (pyproject.toml: slow)
def test_train_distils_from_a_raw_pspnet_state_dict_and_inits_the_authors_way(data_root, tmp_path, runner):
    from tdnet_cli.models import random_model

    torch.manual_seed(0)
    psp = random_model("psp-tiny").model
    sd = dict(psp.state_dict())  # a raw state dict, as psp101.pkl is
    torch.save(sd, tmp_path / "psp-teacher.pkl", _use_new_zipfile_serialization=False)
    torch.save(sd, tmp_path / "psp-init.pkl")
    args = ["train", "--teacher", str(tmp_path / "psp-teacher.pkl"), "--init", str(tmp_path / "psp-init.pkl")]
    for s in tiny_sets(data_root, tmp_path, "kd", **{"optim.iterations": "1", "optim.lr": "1e-9"}):
        args += ["--set", s]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    rec = next(json.loads(x) for x in (tmp_path / "kd" / "metrics.jsonl").read_text().splitlines() if '"loss"' in x)
    assert rec["kd"] > 0 and rec["kd_group"] > 0
    # Every path's backbone came from the PSPNet (lr 1e-9: one step moves it by next to nothing).
    trained = load_checkpoint(tmp_path / "kd" / "model.pt").model
    for p in (1, 4):
        got = getattr(trained, f"pretrained{p}").layer1[0].conv1.weight
        assert torch.allclose(got, psp.pretrained.layer1[0].conv1.weight, atol=1e-6), p
