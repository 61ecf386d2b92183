"""The distillation teacher: the released PSPNet-101 converted exactly, split into path groups
(issue 20, items 1 and 2)."""

from __future__ import annotations

import pytest
import torch
from conformance import key_listing, recipe_weights

from tdnet_cli.errors import CheckpointError
from tdnet_cli.models import LoadedModel, create_model, load_teacher, random_model, save_checkpoint
from tdnet_cli.models.pspnet import PSPNet, PSPNetConfig
from tdnet_cli.models.teacher import (
    GROUP_SCALE,
    TEACHER_ORDER,
    Teacher,
    group_channels,
    split_head_weight,
    teacher_from_pspnet,
)

SIZE = (65, 129)  # -> 9x17 features: psp101 runs in ~1.5 s on one core


@pytest.fixture(scope="module")
def psp101(tmp_path_factory):
    """PSPNet-101 with the conformance recipe's weights (realistic BN statistics), and the same
    weights written as the authors release them: a raw state dict, legacy serialisation."""
    sd = recipe_weights(key_listing("psp101"))
    with torch.device("meta"):
        model = create_model("psp101")
    model = model.to_empty(device="cpu")
    model.load_state_dict(sd, strict=True)
    path = tmp_path_factory.mktemp("psp101") / "psp101.pkl"
    torch.save(sd, path, _use_new_zipfile_serialization=False)
    return model.eval(), path


@pytest.fixture(scope="module")
def batch():
    return torch.randn(1, 3, *SIZE, generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def reference(psp101, batch):
    model, _ = psp101
    with torch.no_grad():
        c4 = model.pretrained(batch)
        unsplit = model.head.conv5[1](model.head.conv5[0](c4))
        return {"logits": model(batch)["out"], "c4": c4, "unsplit": unsplit}


def _close(got: torch.Tensor, want: torch.Tensor) -> None:
    assert got.shape == want.shape
    err = (got - want).abs().max().item()
    assert err <= 1e-4 * want.abs().max().item(), f"max error {err:.3g} of {want.abs().max().item():.3g}"


def _group_logits(model: PSPNet, feats: list[torch.Tensor], scale: float) -> list[torch.Tensor]:
    """PSPNet's own BN, ReLU and classifier on ``scale`` times each group feature."""
    conv5 = model.head.conv5
    with torch.no_grad():
        return [conv5[5](conv5[2](scale * f).relu()) for f in feats]


@pytest.mark.slow
def test_released_psp101_file_converts_exactly_to_a_frozen_td4_teacher(psp101, batch, reference):
    model, path = psp101
    teacher = load_teacher(path, paths=4)
    assert isinstance(teacher, Teacher) and not teacher.training
    assert not any(p.requires_grad for p in teacher.parameters())
    teacher.train()  # a frozen teacher never leaves eval mode
    assert not any(m.training for m in teacher.modules())
    sd = teacher.state_dict()
    assert [tuple(sd[f"group_convs.{g}.weight"].shape) for g in range(4)] == [(512, 1024, 3, 3)] * 4
    assert tuple(sd["classifier.3.weight"].shape) == (19, 512, 1, 1)
    out = teacher(batch)
    assert out["out"].shape == (1, 19, 9, 17) and not out["out"].requires_grad
    _close(out["out"], reference["logits"])
    with torch.no_grad():
        feats = teacher.group_features(reference["c4"])
    _close(torch.stack(feats).sum(0), reference["unsplit"])
    by_group = _group_logits(model, feats, 4.0)  # td4: head(4 * g)
    assert isinstance(out["groups"], tuple) and len(out["groups"]) == 4
    for p, g in enumerate((0, 2, 1, 3)):  # paths 1, 2, 3, 4 <- groups 1, 3, 2, 4
        _close(out["groups"][p], by_group[g])


@pytest.mark.slow
def test_td2_teacher_groups_are_unscaled_in_path_order(psp101, batch, reference):
    model, _ = psp101
    teacher = teacher_from_pspnet(model, 2)
    out = teacher(batch)
    _close(out["out"], reference["logits"])
    with torch.no_grad():
        feats = teacher.group_features(reference["c4"])
    assert len(feats) == 2 and tuple(feats[0].shape) == (1, 512, 9, 17)
    _close(torch.stack(feats).sum(0), reference["unsplit"])
    by_group = _group_logits(model, feats, 1.0)  # td2: head(g)
    for p in range(2):
        _close(out["groups"][p], by_group[p])
    assert GROUP_SCALE == {4: 4.0, 2: 1.0}


def test_each_td4_path_learns_from_a_group_inside_its_own_pyramid_slice():
    # Path p keeps pyramid group p % 2 of 2; the teacher group it learns from must be made of
    # channels that path keeps (psp101: 2048 backbone channels).
    for p, g in enumerate(TEACHER_ORDER[4]):
        teacher_channels = set(group_channels(2048, 4, g).tolist())
        path_channels = set(group_channels(2048, 2, p % 2).tolist())
        assert teacher_channels < path_channels
    assert TEACHER_ORDER[2] == (0, 1)


def test_group_channels_and_weight_split_by_hand():
    # C = 16: x has 16 channels, each pyramid level 4 (at 16, 20, 24, 28); 2 groups.
    assert group_channels(16, 2, 1).tolist() == [*range(8, 16), 18, 19, 22, 23, 26, 27, 30, 31]
    weight = torch.randn(3, 32, 3, 3)
    parts = split_head_weight(weight, 4)
    assert [tuple(w.shape) for w in parts] == [(3, 8, 3, 3)] * 4
    x = torch.randn(1, 32, 5, 5)
    full = torch.nn.functional.conv2d(x, weight, padding=1)
    summed = sum(torch.nn.functional.conv2d(x[:, group_channels(16, 4, g)], w, padding=1) for g, w in enumerate(parts))
    torch.testing.assert_close(summed, full, rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_our_own_pspnet_checkpoint_and_a_grouped_teacher_load(tmp_path):
    torch.manual_seed(0)
    psp = PSPNet(PSPNetConfig(backbone="resnet101", width=8, aux=True, input_size=(64, 128))).eval()
    save_checkpoint(tmp_path / "psp.pt", LoadedModel(model=psp, preset="custom"))
    x = torch.randn(1, 3, 64, 128)
    teacher = load_teacher(tmp_path / "psp.pt", paths=2)
    with torch.no_grad():
        _close(teacher(x)["out"], psp(x)["out"])
    grouped = random_model("gpsp-tiny")
    save_checkpoint(tmp_path / "gpsp.pt", grouped)
    teacher = load_teacher(tmp_path / "gpsp.pt", paths=4)
    want = grouped.model(x)
    got = teacher(x[None])  # a clip: the last frame
    _close(got["out"], want["out"])
    for p in range(4):  # a grouped teacher trained by tdnet keeps path p <- group p
        _close(got["groups"][p], want["groups"][p])


def test_refusals_are_one_line(tmp_path):
    save_checkpoint(tmp_path / "td.pt", random_model("td4-tiny"))
    save_checkpoint(tmp_path / "gpsp.pt", random_model("gpsp-tiny"))
    save_checkpoint(tmp_path / "psp.pt", random_model("psp-tiny"))
    cases = [
        (tmp_path / "td.pt", 4, "not a PSPNet teacher"),
        (tmp_path / "gpsp.pt", 2, "4 groups"),
        (tmp_path / "psp.pt", 3, "2 or 4 student paths"),
    ]
    for path, paths, words in cases:
        with pytest.raises(CheckpointError, match=words) as info:
            load_teacher(path, paths=paths)
        assert "\n" not in str(info.value)
