"""Training: loss terms, learning, exact resume, distributed replicas, data errors up front."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import socket
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tdnet_cli.cli.app import app
from tdnet_cli.config import DEFAULTS, apply_overrides, dump_toml, load_config
from tdnet_cli.data.clips import _jitter_matrix
from tdnet_cli.data.layout import list_annotated
from tdnet_cli.errors import DataError, OutputExistsError, UsageError
from tdnet_cli.losses import (
    Criterion,
    _pixel_cross_entropy,
    cross_entropy,
    distillation_kl,
    kl_divergence,
    ohem_cross_entropy,
)
from tdnet_cli.models import load_checkpoint, random_model, save_checkpoint
from tdnet_cli.pipeline.train import get_lr, train
from tdnet_cli.pipeline.train_setup import init_from_pspnet, scale_attention_logits


# -- losses on tiny tensors ---------------------------------------------------------------------
def test_kl_divergence_by_hand():
    p = torch.tensor([[[[0.0]], [[math.log(3.0)]]]])  # softmax -> (1/4, 3/4)
    q = torch.zeros(1, 2, 1, 1)  # (1/2, 1/2)
    expected = 0.25 * math.log(0.25 / 0.5) + 0.75 * math.log(0.75 / 0.5)
    assert kl_divergence(p, q).item() == pytest.approx(expected, rel=1e-6)
    assert kl_divergence(q, q).item() == pytest.approx(0.0, abs=1e-7)


def test_ohem_keeps_hard_pixels_or_the_hardest_n():
    # 4 pixels, 2 classes; ground-truth probabilities 0.9, 0.6, 0.2, and one ignored pixel.
    probs = torch.tensor([0.9, 0.6, 0.2, 0.5])
    logits = torch.stack([torch.log(probs), torch.log(1 - probs)]).view(1, 2, 1, 4)
    labels = torch.tensor([[[0, 0, 0, 255]]])
    losses = -torch.log(probs[:3])
    # Threshold 0.7: pixels with p < 0.7 are hard (0.6 and 0.2); min_kept 1 is satisfied.
    assert ohem_cross_entropy(logits, labels, 0.7, 1).item() == pytest.approx(losses[1:].mean().item(), rel=1e-5)
    # min_kept 3 > 2 hard pixels: the 3 hardest valid pixels are averaged.
    assert ohem_cross_entropy(logits, labels, 0.7, 3).item() == pytest.approx(losses.mean().item(), rel=1e-5)


@pytest.mark.parametrize(
    "shape,size", [((2, 19, 32, 64), (256, 512)), ((1, 3, 5, 7), (130, 9)), ((2, 4, 6, 6), (3, 4))]
)
def test_upsampled_cross_entropy_matches_interpolate_then_cross_entropy(shape, size):
    # The banded loss (two matmuls per band, its own backward) against torch's own ops, with
    # ignored pixels, a label size that is not a multiple of the band and a downscale.
    torch.manual_seed(0)
    logits = torch.randn(shape).contiguous(memory_format=torch.channels_last).requires_grad_()
    labels = torch.randint(0, shape[1], (shape[0], *size))
    labels[0, 0, :3] = 255
    ref_logits = logits.detach().clone().requires_grad_()
    ref = F.cross_entropy(
        F.interpolate(ref_logits, size=size, mode="bilinear", align_corners=True),
        labels,
        ignore_index=255,
        reduction="none",
    )
    ours = _pixel_cross_entropy(logits, labels)
    weights = torch.rand(ours.shape)
    (ours * weights).sum().backward()
    (ref * weights).sum().backward()
    assert ours[0, 0, :3].abs().max() == 0
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=2e-5)
    torch.testing.assert_close(logits.grad, ref_logits.grad, rtol=1e-5, atol=1e-4)
    assert cross_entropy(logits, labels).item() == pytest.approx(
        F.cross_entropy(
            F.interpolate(logits.detach(), size=size, mode="bilinear", align_corners=True), labels, ignore_index=255
        ).item(),
        rel=1e-5,
    )


def test_colour_jitter_matrix_equals_the_three_steps():
    # One affine map of BGR pixels must equal saturation, contrast about the image mean and
    # brightness applied one after the other to the RGB pixels.
    rng = np.random.default_rng(0)
    bgr = rng.uniform(0, 255, (50, 3)).astype(np.float64)
    rgb = bgr[:, ::-1]
    bright, contrast, sat = 1.2, 0.8, 1.25
    grey = rgb.mean(1, keepdims=True)
    x = grey + (rgb - grey) * sat
    x = (x - x.mean()) * contrast + x.mean()
    expected = x * bright
    m = _jitter_matrix(bright, contrast, sat, float(bgr.mean())).astype(np.float64)
    np.testing.assert_allclose(bgr @ m[:, :3].T + m[:, 3], expected, rtol=1e-5, atol=1e-3)


def test_criterion_weights_each_term():
    torch.manual_seed(0)
    labels = torch.randint(0, 3, (1, 4, 4))
    out = {"out": torch.randn(1, 3, 4, 4), "sub": torch.randn(1, 3, 4, 4), "aux": torch.randn(1, 3, 4, 4)}
    teacher = {"out": torch.randn(1, 3, 4, 4), "groups": [torch.randn(1, 3, 4, 4) for _ in range(2)]}
    cfg = {**DEFAULTS["loss"], "ohem": False}
    total, terms = Criterion(cfg)(out, labels, teacher, path=1)
    ce = lambda x: F.cross_entropy(x, labels).item()
    assert terms["ce"] == pytest.approx(ce(out["out"]), rel=1e-5)
    assert terms["sub"] == pytest.approx(0.5 * ce(out["sub"]), rel=1e-5)
    assert terms["aux"] == pytest.approx(0.1 * ce(out["aux"]), rel=1e-5)
    # KL(teacher || student), as the authors train (issue 20 item 3; tests/test_losses_kd.py)
    assert terms["kd"] == pytest.approx(distillation_kl(out["out"], teacher["out"]).item(), rel=1e-5)
    assert terms["kd_group"] == pytest.approx(0.5 * distillation_kl(out["sub"], teacher["groups"][1]).item(), rel=1e-5)
    assert total.item() == pytest.approx(sum(terms.values()), rel=1e-5)


def test_lr_schedule():
    o = {
        **DEFAULTS["optim"],
        "warmup": "linear",
        "iterations": 100,
        "lr": 0.01,
        "warmup_iters": 10,
        "warmup_ratio": 0.1,
    }
    assert get_lr(0, o) == pytest.approx(0.001)
    assert get_lr(5, o) == pytest.approx(0.001 + 0.009 * 0.5)
    assert get_lr(10, o) == pytest.approx(0.01 * 0.9**0.9)
    assert get_lr(99, o) < get_lr(50, o)


# -- config ------------------------------------------------------------------------------------
def test_every_preset_has_a_loadable_example_config():
    from pathlib import Path

    from tdnet_cli.models.registry import PRESETS

    examples = Path(__file__).resolve().parent.parent / "examples"
    configs = {p.name: load_config(p) for p in sorted(examples.glob("train-*.toml"))}
    by_run = {c["run"]["name"]: c for c in configs.values()}
    assert {c["model"]["preset"] for c in configs.values()} == {n for n in PRESETS if not n.endswith("-tiny")}
    for name, cfg in configs.items():
        assert name == f"train-{cfg['run']['name']}.toml" and cfg["model"]["preset"] == cfg["run"]["name"]
        # A student's --init and --teacher are the model.pt of another example's run, of the right kind,
        # or files a user has: ImageNet weights (imagenet/) and the authors' released psp101.pkl.
        for key, kind in (("init", "pspnet"), ("teacher", "gpspnet")):
            ref = cfg["model"][key]
            if ref.startswith("imagenet/"):
                assert key == "init" and PRESETS[cfg["model"]["preset"]].kind != "tdnet", name
            elif ref == "checkpoint/psp101.pkl":
                assert key == "teacher" and PRESETS[cfg["model"]["preset"]].kind == "tdnet", name
            elif ref:
                src = by_run[Path(ref).parent.name]
                assert ref == f"runs/{src['run']['name']}/model.pt"
                assert PRESETS[src["model"]["preset"]].kind == kind, (name, key)


def test_config_file_and_overrides(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text('[optim]\nlr = 0.02\n[data]\nroot = "x"\nscale = [1, 2]\n')
    cfg = load_config(path, ["optim.iterations=7", "run.name=abc", "loss.ohem=false"])
    assert cfg["optim"]["lr"] == 0.02 and cfg["optim"]["iterations"] == 7 and cfg["run"]["name"] == "abc"
    assert cfg["data"]["scale"] == [1.0, 2.0] and cfg["loss"]["ohem"] is False
    assert load_config(None, []) == DEFAULTS
    (tmp_path / "again.toml").write_text(dump_toml(cfg))
    assert load_config(tmp_path / "again.toml") == cfg
    for bad in (["optim.nope=1"], ["optim.lr=fast"], ["lr=1"]):
        with pytest.raises(UsageError):
            apply_overrides(cfg, bad)


# -- training runs -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def data_root(synth_data):
    return synth_data((96, 192), train=(2, 1), val=(1, 2))


def tiny_config(data_root, out, name, **over) -> dict:
    sets = [
        f'data.root="{data_root}"',
        f'run.out="{out}"',
        f'run.name="{name}"',
        'model.preset="td4-tiny"',
        "data.batch_size=2",
        "data.workers=0",
        "run.log_every=1",
        "run.save_every=100",
        "run.val_every=0",
        "optim.warmup_iters=0",
        "optim.lr=0.02",
        "loss.ohem=false",
    ]
    sets += [f"{k}={v}" for k, v in over.items()]
    return load_config(None, sets)


def losses(result) -> dict[int, float]:
    return {r["iteration"]: r["loss"] for r in result.history if "loss" in r}


@pytest.mark.slow
def test_a_few_steps_reduce_the_loss(data_root, tmp_path):
    cfg = tiny_config(
        data_root,
        tmp_path,
        "learn",
        **{
            "optim.iterations": "24",
            "data.scale": "[0.75, 0.75]",
            "data.flip": "false",
            "data.rotate": "0.0",
            "data.color_jitter": "0.0",
        },
    )
    result = train(cfg)
    ls = losses(result)
    first, last = sum(ls[i] for i in (1, 2, 3)) / 3, sum(ls[i] for i in (22, 23, 24)) / 3
    assert last < 0.85 * first, ls
    assert (result.run_dir / "model.pt").is_file() and (result.run_dir / "config.toml").is_file()
    loaded = load_checkpoint(result.run_dir / "model.pt")
    assert loaded.preset == "td4-tiny" and not loaded.model.config.aux
    assert loaded.provenance["iterations"] == 24


@pytest.mark.slow
def test_cpu_bf16_autocast_trains(data_root, tmp_path):
    common = {
        "optim.iterations": "24",
        "data.scale": "[0.75, 0.75]",
        "data.flip": "false",
        "data.rotate": "0.0",
        "data.color_jitter": "0.0",
    }
    a = losses(train(tiny_config(data_root, tmp_path, "fp32", **common)))
    b = losses(train(tiny_config(data_root, tmp_path, "bf16", **common, **{"run.amp_cpu": "true"})))
    # Same data and weights: the first loss differs only by the forward's bf16 rounding.
    assert b[1] != a[1] and b[1] == pytest.approx(a[1], rel=0.05)
    assert sum(b[i] for i in (22, 23, 24)) < 0.85 * sum(b[i] for i in (1, 2, 3)), b


@pytest.mark.slow
def test_fp16_loss_scaling_trains_and_resumes(data_root, tmp_path, monkeypatch):
    # The GradScaler path that CUDA takes in fp16, run with CPU fp16 autocast: the scaler is on,
    # its state is checkpointed, and a resumed run continues exactly.
    import tdnet_cli.pipeline.train as train_mod

    monkeypatch.setattr(
        train_mod, "_autocast", lambda device, *a: (torch.autocast("cpu", dtype=torch.float16), torch.float16)
    )
    common = {"optim.iterations": "6"}
    full = train(tiny_config(data_root, tmp_path, "full16", **common))
    scaler = torch.load(tmp_path / "full16" / "last.pt", weights_only=True)["train_state"]["scaler"]
    assert scaler["scale"] > 0 and scaler["_growth_tracker"] >= 0  # enabled: an empty dict otherwise

    def interrupt(done, total, rec):
        if done == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(tiny_config(data_root, tmp_path, "cut16", **common), progress=interrupt)
    from tdnet_cli.config import load_run_config

    resumed = train(load_run_config(tmp_path / "cut16"), resume=str(tmp_path / "cut16"))
    a, b = losses(full), losses(resumed)
    assert all(math.isfinite(v) for v in a.values())
    assert b[4] == pytest.approx(a[4], rel=1e-5, abs=1e-6) and b[6] == pytest.approx(a[6], rel=1e-4)


@pytest.mark.slow
def test_resume_gives_the_same_next_loss(data_root, tmp_path):
    full = train(tiny_config(data_root, tmp_path, "full", **{"optim.iterations": "6"}))

    stop_at = 3

    def interrupt(done, total, rec):
        if done == stop_at:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(tiny_config(data_root, tmp_path, "cut", **{"optim.iterations": "6"}), progress=interrupt)
    state = torch.load(tmp_path / "cut" / "last.pt", weights_only=True)
    assert state["train_state"]["iteration"] == stop_at
    from tdnet_cli.config import load_run_config

    resumed = train(load_run_config(tmp_path / "cut"), resume=str(tmp_path / "cut"))
    a, b = losses(full), losses(resumed)
    assert b[stop_at + 1] == pytest.approx(a[stop_at + 1], rel=1e-5, abs=1e-6)
    assert b[6] == pytest.approx(a[6], rel=1e-4)


@pytest.mark.slow
def test_sigterm_saves_last_and_resumes(data_root, tmp_path):
    """`kill`, `timeout` or a scheduler's SIGTERM stops like Ctrl-C: last.pt first, resumable."""
    import os
    import signal

    before = signal.getsignal(signal.SIGTERM)

    def terminate(done, total, rec):
        if done == 2:
            os.kill(os.getpid(), signal.SIGTERM)

    with pytest.raises(KeyboardInterrupt):
        train(tiny_config(data_root, tmp_path, "term", **{"optim.iterations": "4"}), progress=terminate)
    assert torch.load(tmp_path / "term" / "last.pt", weights_only=True)["train_state"]["iteration"] == 2
    assert signal.getsignal(signal.SIGTERM) is before  # the handler does not outlive training
    from tdnet_cli.config import load_run_config

    resumed = train(load_run_config(tmp_path / "term"), resume=str(tmp_path / "term"))
    assert resumed.iterations == 4 and (tmp_path / "term" / "model.pt").is_file()


@pytest.mark.slow
def test_run_folder_is_not_overwritten(data_root, tmp_path):
    cfg = tiny_config(data_root, tmp_path, "once", **{"optim.iterations": "1"})
    train(cfg)
    with pytest.raises(OutputExistsError, match="--resume"):
        train(cfg)


@pytest.mark.slow
def test_teacher_then_distillation_and_init(data_root, tmp_path):
    teacher = train(
        tiny_config(data_root, tmp_path, "teacher", **{"model.preset": '"gpsp-tiny"', "optim.iterations": "2"})
    )
    psp = random_model("psp-tiny")
    save_checkpoint(tmp_path / "psp.pt", psp)
    student = train(
        tiny_config(
            data_root,
            tmp_path,
            "student",
            **{
                "optim.iterations": "2",
                "model.teacher": f'"{teacher.run_dir / "model.pt"}"',
                "model.init": f'"{tmp_path / "psp.pt"}"',
            },
        )
    )
    rec = [r for r in student.history if "loss" in r][-1]
    assert {"ce", "sub", "aux", "kd", "kd_group"} <= set(rec)
    model = random_model("td4-tiny").model
    assert init_from_pspnet(model, str(tmp_path / "psp.pt")) > 0
    assert torch.equal(model.pretrained3.layer4[0].conv1.weight, psp.model.pretrained.layer4[0].conv1.weight)


@pytest.mark.slow
def test_value_drop_hides_current_values_from_the_full_output_only():
    torch.manual_seed(0)
    model = random_model("td4-tiny").model
    clip = torch.randn(2, 4, 3, 64, 128)
    model.train()
    for mod in model.modules():  # dropout off: the comparison below must see the mask alone
        if isinstance(mod, (torch.nn.Dropout, torch.nn.Dropout2d)):
            mod.p = 0.0
        if hasattr(mod, "use_sdpa"):
            mod.dropout = 0.0
    torch.manual_seed(1)
    plain = model(clip, 3)
    model.value_drop = 1.0
    torch.manual_seed(1)
    dropped = model(clip, 3)
    # BatchNorm uses batch statistics in train mode; both calls see the same batch.
    assert torch.allclose(dropped["sub"], plain["sub"])
    assert not torch.allclose(dropped["out"], plain["out"])
    mask = model._value_mask(torch.zeros(64, 1, 8, 16))
    hidden = 1 - mask.mean((1, 2, 3))
    # every clip loses one block of 30-70% of each side: 9-49% of the map (rounding aside)
    assert hidden.min() > 0.05 and hidden.max() < 0.55
    model.eval()
    with torch.no_grad():
        a = model(clip, 3)["out"]
        model.value_drop = 0.0
        b = model(clip, 3)["out"]
    assert torch.equal(a, b)  # inference never drops


def test_attention_logit_scale_multiplies_the_logits():
    torch.manual_seed(0)
    model = random_model("td4-tiny").model.eval()
    z = torch.randn(1, model.path_modules(0)["enc"].w_qs[0].conv.in_channels, 8, 16)

    def logits():
        with torch.no_grad():
            encs = [model.path_modules(p)["enc"] for p in (0, 1)]
            return encs[0].w_qs(z).flatten(2).transpose(1, 2) @ encs[1].w_ks(z).flatten(2)

    before = logits()
    scale_attention_logits(model, 9.0)
    assert torch.allclose(logits(), 9.0 * before, rtol=1e-4, atol=1e-5)
    from tdnet_cli.config import validate

    with pytest.raises(UsageError, match="value_drop"):
        validate(load_config(None, ['data.root="x"', "model.value_drop=1.5"]))


@pytest.mark.slow
def test_memory_stride_is_trained_saved_and_loaded(data_root, tmp_path):
    result = train(tiny_config(data_root, tmp_path, "stride2", **{"optim.iterations": "2", "model.memory_stride": "2"}))
    loaded = load_checkpoint(result.run_dir / "model.pt")
    assert loaded.model.config.memory_stride == 2
    h, w = loaded.model.feature_size
    state = loaded.model.eval().new_state(1)
    with torch.no_grad():
        _, state = loaded.model.step(torch.zeros(1, 3, *loaded.model.input_size), state)
    # every 2nd row and column of the (h, w) feature map: 4x the default stride's positions
    assert state.memories[0].k.shape[1] == ((h + 1) // 2) * ((w + 1) // 2)
    assert random_model("td4-tiny").model.config.memory_stride == 4  # the released models' stride
    from tdnet_cli.config import validate

    with pytest.raises(UsageError, match="memory_stride"):
        validate(load_config(None, ['data.root="x"', "model.memory_stride=-1"]))
    with pytest.raises(UsageError, match="TDNet presets only"):
        train(
            tiny_config(
                data_root,
                tmp_path,
                "psp",
                **{"optim.iterations": "1", "model.preset": '"psp-tiny"', "model.memory_stride": "2"},
            )
        )


@pytest.mark.slow
def test_groups_are_trained_saved_and_loaded(data_root, tmp_path):
    result = train(tiny_config(data_root, tmp_path, "g4", **{"optim.iterations": "2", "model.groups": "4"}))
    model = load_checkpoint(result.run_dir / "model.pt").model
    assert model.config.groups == 4
    c = model.pretrained1.out_channels
    # path p keeps channel group p of 4: a quarter of x and of every pooled branch
    assert [model.path_modules(p)["psp"].group for p in range(4)] == [0, 1, 2, 3]
    assert model.enc1.w_vs[0].conv.in_channels == 2 * c // 4
    from tdnet_cli.config import validate

    with pytest.raises(UsageError, match="groups"):
        validate(load_config(None, ['data.root="x"', "model.groups=-1"]))
    with pytest.raises(UsageError, match="cannot be built"):  # 64 channels are not 3 x 4 branches
        train(tiny_config(data_root, tmp_path, "g3", **{"optim.iterations": "1", "model.groups": "3"}))
    with pytest.raises(UsageError, match="TDNet presets only"):
        train(
            tiny_config(
                data_root,
                tmp_path,
                "psp-g",
                **{"optim.iterations": "1", "model.preset": '"psp-tiny"', "model.groups": "2"},
            )
        )


@pytest.mark.slow
def test_width_is_trained_saved_and_loaded(data_root, tmp_path):
    """model.width narrows any preset (a thinner per-frame init for thinner TDNet paths)."""
    result = train(
        tiny_config(
            data_root, tmp_path, "w4", **{"optim.iterations": "1", "model.preset": '"psp-tiny"', "model.width": "4"}
        )
    )
    model = load_checkpoint(result.run_dir / "model.pt").model
    assert model.config.width == 4 and model.pretrained.out_channels == 8 * 4  # ResNet-18: 8x the width
    from tdnet_cli.config import validate

    with pytest.raises(UsageError, match="width"):
        validate(load_config(None, ['data.root="x"', "model.width=6"]))


def test_narrow_models_train_in_nchw_on_the_cpu():
    """A strided 1x1 convolution with < 8 input channels crashes oneDNN's channels_last
    backward (torch 2.13, AVX2): width 4 has one (layer2's 4 -> 8 downsample), width 8 not."""
    from tdnet_cli.models.registry import build, get_preset
    from tdnet_cli.pipeline.train_setup import channels_last_trains_safely

    narrow = dataclasses.replace(get_preset("psp-tiny").config, width=4)
    assert not channels_last_trains_safely(build(narrow))
    assert channels_last_trains_safely(build(dataclasses.replace(narrow, width=8)))
    assert not channels_last_trains_safely(torch.nn.Conv2d(3, 8, 1, stride=2))
    assert channels_last_trains_safely(torch.nn.Conv2d(3, 8, 3, stride=2))


def test_missing_or_corrupt_data_fails_before_work(tmp_path, data_root):
    with pytest.raises(DataError, match="not found"):
        train(tiny_config(tmp_path / "nowhere", tmp_path, "x", **{"optim.iterations": "1"}))
    broken = tmp_path / "broken"
    shutil.copytree(data_root, broken)
    fid = list_annotated(broken, "train")[0]
    (broken / "leftImg8bit_sequence" / "train" / fid.city / f"{fid.shifted(-1).stem}_leftImg8bit.png").unlink()
    with pytest.raises(DataError, match="1 clip frames missing"):
        train(tiny_config(broken, tmp_path, "y", **{"optim.iterations": "1"}))
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


@pytest.mark.slow
def test_cli_json_result_for_scripts(data_root, tmp_path, runner):
    sets = [
        f'data.root="{data_root}"',
        f'run.out="{tmp_path}"',
        'run.name="js"',
        'model.preset="psp-tiny"',
        "data.batch_size=2",
        "data.workers=0",
        "optim.iterations=2",
        "optim.warmup_iters=0",
        "run.val_every=1",
        "run.val_limit=1",
    ]
    result = runner.invoke(app, ["train", "--json", *[a for s in sets for a in ("--set", s)]])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)  # nothing but the JSON on stdout: no bar, no summary
    run = tmp_path / "js"
    assert out["run_dir"] == str(run) and out["iterations"] == 2 and not out["interrupted"]
    assert out["weights"] == str(run / "model.pt") and (run / "model.pt").is_file()
    assert out["best"] == str(run / "best.pt") and out["last"] == str(run / "last.pt")
    logged = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    vals = [r["val_miou"] for r in logged if "val_miou" in r]
    assert len(vals) == 2 and out["final_val_miou"] == vals[-1] and out["best_val_miou"] == max(vals)
    assert out["final_loss"] == [r["loss"] for r in logged if "loss" in r][-1]


def test_cli_errors_are_one_line(tmp_path, runner):
    result = runner.invoke(app, ["train", "--data", str(tmp_path / "none"), "--set", f'run.out="{tmp_path}"'])
    assert result.exit_code == 2 and "Traceback" not in result.output and "not found" in result.output
    result = runner.invoke(app, ["train", "--config", str(tmp_path / "missing.toml")])
    assert result.exit_code == 2 and "config file not found" in result.output


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(args: list[str], tmp_path) -> subprocess.CompletedProcess:
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc-per-node",
        "2",
        "--master-addr",
        "127.0.0.1",
        "--master-port",
        str(_free_port()),
        "-m",
        "tdnet_cli",
        "train",
        "--quiet",
        *args,
    ]
    # This checkout's tdnet_cli, not whichever one is installed (the processes start in tmp_path).
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    path = os.pathsep.join(p for p in (repo, os.environ.get("PYTHONPATH", "")) if p)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": path}
    return subprocess.run(cmd, capture_output=True, check=False, text=True, env=env, timeout=600, cwd=tmp_path)


@pytest.mark.slow
def test_two_process_gloo_replicas_stay_identical_and_resume(data_root, tmp_path):
    common = [
        "--data",
        str(data_root),
        "--model",
        "td4-tiny",
        "--set",
        f'run.out="{tmp_path}"',
        "--set",
        "data.batch_size=2",
        "--set",
        "data.workers=0",
        "--set",
        "run.val_every=0",
        "--set",
        "run.log_every=1",
    ]
    first = _torchrun([*common, "--name", "ddp", "--set", "optim.iterations=3"], tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    records = [json.loads(line) for line in (tmp_path / "ddp" / "metrics.jsonl").read_text().splitlines()]
    sync = [r for r in records if "ranks_in_sync" in r]
    assert sync and sync[-1]["ranks_in_sync"] and len(sync[-1]["weights_sha256"]) == 2
    # Both ranks ran the same path at every step (issue 20 item 4): p = iteration mod 4.
    assert sync[-1]["paths_in_sync"] and sync[-1]["paths_run"] == 3
    assert [r["path"] for r in records if "loss" in r] == [0, 1, 2]
    second = _torchrun(["--resume", str(tmp_path / "ddp"), "--set", "optim.iterations=5"], tmp_path)
    assert second.returncode == 0, second.stderr[-3000:]
    records = [json.loads(line) for line in (tmp_path / "ddp" / "metrics.jsonl").read_text().splitlines()]
    assert max(r["iteration"] for r in records if "loss" in r) == 5
    assert [r for r in records if "ranks_in_sync" in r][-1]["ranks_in_sync"]
    assert [r for r in records if "ranks_in_sync" in r][-1]["paths_in_sync"]
    assert [r["path"] for r in records if "loss" in r] == [0, 1, 2, 3, 0]
    assert torch.load(tmp_path / "ddp" / "last.pt", weights_only=True)["train_state"]["iteration"] == 5
