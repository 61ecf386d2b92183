"""Starting weights (issue 20, item 6): ImageNet ResNets in both stem layouts into a per-frame
PSPNet, and a per-frame PSPNet into every TDNet path; which weights land where, what stays new."""

from __future__ import annotations

import math

import pytest
import torch

from tdnet_cli.errors import CheckpointError
from tdnet_cli.models import (
    LoadedModel,
    TDNet,
    TDNetConfig,
    create_model,
    init_from_imagenet,
    init_tdnet_from_pspnet,
    save_checkpoint,
)
from tdnet_cli.models.pspnet import PSPNet, PSPNetConfig

LAYERS = {"resnet18": (2, 2, 2, 2), "resnet50": (3, 4, 6, 3), "resnet101": (3, 4, 23, 3)}


def _bn(sd: dict, name: str, c: int, g: torch.Generator) -> None:
    sd[f"{name}.weight"] = torch.rand(c, generator=g) + 0.5
    sd[f"{name}.bias"] = torch.randn(c, generator=g)
    sd[f"{name}.running_mean"] = torch.randn(c, generator=g)
    sd[f"{name}.running_var"] = torch.rand(c, generator=g) + 0.5
    sd[f"{name}.num_batches_tracked"] = torch.tensor(7)


def imagenet_state_dict(depth: str, *, deep_stem: bool, width: int = 64, seed: int = 0) -> dict:
    """A ResNet state dict written out from the published layouts, not from our model: torchvision's
    (one 7x7 conv1) or the deep-stem one (conv1.0/.3/.6 3x3 convs, widths w, w, 2w)."""
    g = torch.Generator().manual_seed(seed)
    sd: dict[str, torch.Tensor] = {}

    def conv(name: str, cout: int, cin: int, k: int) -> None:
        sd[f"{name}.weight"] = torch.randn(cout, cin, k, k, generator=g)

    if deep_stem:
        conv("conv1.0", width, 3, 3)
        _bn(sd, "conv1.1", width, g)
        conv("conv1.3", width, width, 3)
        _bn(sd, "conv1.4", width, g)
        conv("conv1.6", 2 * width, width, 3)
        inplanes = 2 * width
    else:
        conv("conv1", width, 3, 7)
        inplanes = width
    _bn(sd, "bn1", inplanes, g)
    bottleneck = depth != "resnet18"
    exp = 4 if bottleneck else 1
    for stage, blocks in enumerate(LAYERS[depth]):
        planes = width * 2**stage
        for b in range(blocks):
            pre = f"layer{stage + 1}.{b}"
            if bottleneck:
                conv(f"{pre}.conv1", planes, inplanes, 1)
                conv(f"{pre}.conv2", planes, planes, 3)
                conv(f"{pre}.conv3", planes * 4, planes, 1)
                for i, c in ((1, planes), (2, planes), (3, planes * 4)):
                    _bn(sd, f"{pre}.bn{i}", c, g)
            else:
                conv(f"{pre}.conv1", planes, inplanes, 3)
                conv(f"{pre}.conv2", planes, planes, 3)
                _bn(sd, f"{pre}.bn1", planes, g)
                _bn(sd, f"{pre}.bn2", planes, g)
            if b == 0 and (stage > 0 or inplanes != planes * exp):
                conv(f"{pre}.downsample.0", planes * exp, inplanes, 1)
                _bn(sd, f"{pre}.downsample.1", planes * exp, g)
            inplanes = planes * exp
    sd["fc.weight"] = torch.randn(1000, inplanes, generator=g)
    sd["fc.bias"] = torch.randn(1000, generator=g)
    return sd


def _is_kaiming(conv: torch.nn.Module) -> bool:
    """Kaiming normal with a=1: std sqrt(2 / (1 + a^2) / fan_in) = 1/sqrt(fan_in); bias 0."""
    w = conv.weight
    std = 1 / math.sqrt(w[0].numel())
    return abs(w.std().item() / std - 1) < 0.2 and (conv.bias is None or not conv.bias.any())


# -- ImageNet into a per-frame PSPNet -------------------------------------------------------------
def test_torchvision_resnet18_fills_psp18_backbone_and_the_head_is_new(tmp_path):
    sd = imagenet_state_dict("resnet18", deep_stem=False)
    torch.save(sd, tmp_path / "resnet18.pth")
    model = create_model("psp18", aux=True)
    report = init_from_imagenet(model, tmp_path / "resnet18.pth")
    own = model.state_dict()
    for key, value in sd.items():
        assert torch.equal(own[f"pretrained.{key}"], value), key
    assert set(report.loaded) == {f"pretrained.{k}" for k in sd}
    head = model.head.conv5
    assert _is_kaiming(head[1]) and _is_kaiming(head[5]) and _is_kaiming(head[0].conv1[0])
    assert _is_kaiming(model.auxlayer.conv5[0])
    assert {"head.conv5.1", "head.conv5.5", "auxlayer.conv5.4"} <= set(report.new)
    assert not any(name.startswith("pretrained.") for name in report.new)
    assert torch.equal(head[2].weight, torch.ones(128))  # BN keeps its defaults


@pytest.mark.parametrize("depth", ["resnet50", "resnet101"])
def test_deep_stem_resnet_fills_a_deep_stem_pspnet(depth):
    sd = imagenet_state_dict(depth, deep_stem=True, width=8)
    model = PSPNet(PSPNetConfig(backbone=depth, width=8))
    report = init_from_imagenet(model, sd)
    own = model.state_dict()
    for key, value in sd.items():
        assert torch.equal(own[f"pretrained.{key}"], value), key
    assert len(report.loaded) == len(sd)
    assert _is_kaiming(model.head.conv5[1])


@pytest.mark.slow
def test_full_size_deep_stem_resnet101_fits_psp101():
    sd = imagenet_state_dict("resnet101", deep_stem=True)
    model = create_model("psp101")
    init_from_imagenet(model, sd)
    assert torch.equal(model.pretrained.conv1[6].weight, sd["conv1.6.weight"])
    assert torch.equal(model.pretrained.layer3[22].bn3.running_var, sd["layer3.22.bn3.running_var"])


@pytest.mark.parametrize(
    "depth,deep,width,words",
    [
        ("resnet50", False, 8, "ResNet-50 with a plain stem .*needs an ImageNet ResNet-50 with a deep stem"),
        ("resnet18", False, 8, "ResNet-18 .*needs an ImageNet ResNet-50"),
        ("resnet50", True, 16, r"does not fit .*width 8: shape mismatch .*conv1\.0\.weight \(16, 3, 3, 3\) vs \(8, "),
    ],
)
def test_a_mismatched_imagenet_file_is_one_line_naming_the_layout(depth, deep, width, words):
    model = PSPNet(PSPNetConfig(backbone="resnet50", width=8))
    with pytest.raises(CheckpointError, match=words) as info:
        init_from_imagenet(model, imagenet_state_dict(depth, deep_stem=deep, width=width))
    assert "\n" not in str(info.value)


def test_a_file_that_is_no_resnet_is_refused():
    model = PSPNet(PSPNetConfig(backbone="resnet18", width=8))
    with pytest.raises(CheckpointError, match="not an ImageNet ResNet state dict .*torchvision"):
        init_from_imagenet(model, {"stem.0.weight": torch.zeros(8, 3, 3, 3)})


# -- a per-frame PSPNet into every TDNet path -----------------------------------------------------
def _psp(width: int = 8, backbone: str = "resnet18") -> PSPNet:
    torch.manual_seed(1)
    model = PSPNet(PSPNetConfig(backbone=backbone, width=width, aux=True, input_size=(64, 128)))
    with torch.no_grad():  # non-default norm values, so a copied BN is told from a new one
        for t in model.state_dict().values():
            if t.is_floating_point():
                t.copy_(torch.randn_like(t))
    return model


def _tdnet(num_paths: int, width: int = 8, value_dim: int = 64, reduction: int = 4) -> TDNet:
    # value_dim = C = 8 * width and reduction 4: the heads have the PSPNet head's halves' shape
    return TDNet(
        TDNetConfig(
            num_paths=num_paths,
            groups=2,
            backbone="resnet18",
            width=width,
            key_dim=16,
            value_dim=value_dim,
            head_reduction=reduction,
            input_size=(64, 128),
            aux=True,
        )
    )


def _half(c: int, half: int) -> list[int]:
    """Input channels of half ``half`` of a PSP head conv over (x: c, 4 levels of c/4), by hand."""
    x = list(range(half * c // 2, (half + 1) * c // 2))
    return x + [c + level * c // 4 + j for level in range(4) for j in range(half * c // 8, (half + 1) * c // 8)]


def test_td4_paths_get_backbone_pyramid_head_halves_and_aux(tmp_path):
    psp, model = _psp(), _tdnet(4)
    save_checkpoint(tmp_path / "psp.pt", LoadedModel(model=psp, preset="custom"))
    report = init_tdnet_from_pspnet(model, tmp_path / "psp.pt")
    assert report.notes == []
    src, own = psp.state_dict(), model.state_dict()
    for p in range(1, 5):
        for key, value in src.items():
            if key.startswith("pretrained."):
                assert torch.equal(own[f"pretrained{p}.{key[11:]}"], value), key
            elif key.startswith("head.conv5.0."):
                assert torch.equal(own[f"psp{p}.{key[13:]}"], value), key
            elif key.startswith("auxlayer."):
                assert torch.equal(own[f"aux{p}.{key[9:]}"], value), key
        half = src["head.conv5.1.weight"][:, _half(64, 0 if p in (1, 3) else 1)]
        assert torch.equal(own[f"head{p}.conv5.0.weight"], half)
        for mine, theirs in (("conv5.1", "conv5.2"), ("conv5.4", "conv5.5")):
            for leaf in ("weight", "bias") + (("running_mean", "running_var") if mine == "conv5.1" else ()):
                assert torch.equal(own[f"head{p}.{mine}.{leaf}"], src[f"head.{theirs}.{leaf}"])
        # new: the spatial LayerNorm (defaults), the encoding and the attention (kaiming, bias 0)
        assert torch.equal(own[f"layer_norm{p}.ln.weight"], torch.ones(8, 16))
        assert f"layer_norm{p}.ln.weight" not in report.loaded
        enc = model.path_modules(p - 1)["enc"]
        assert _is_kaiming(enc.w_qs[0].conv) and _is_kaiming(enc.w_vs[0].conv)
    assert _is_kaiming(model.atn1_2.fc[0].conv)
    assert "enc1.w_ks.1.conv" in report.new and not any(n.startswith(("pretrained", "psp", "head")) for n in report.new)


def test_td2_leaves_heads_new_and_raw_state_dicts_load(tmp_path):
    psp, model = _psp(), _tdnet(2)
    torch.save(psp.state_dict(), tmp_path / "psp.pkl", _use_new_zipfile_serialization=False)
    report = init_tdnet_from_pspnet(model, tmp_path / "psp.pkl")
    assert torch.equal(model.pretrained2.layer4[1].conv2.weight, psp.pretrained.layer4[1].conv2.weight)
    assert torch.equal(model.psp2.conv4[1].running_var, psp.head.conv5[0].conv4[1].running_var)
    for p in (1, 2):
        head = getattr(model, f"head{p}").conv5
        assert _is_kaiming(head[0]) and _is_kaiming(head[4]) and torch.equal(head[1].weight, torch.ones(16))
    assert report.notes == ["heads new (2 paths)"]


def test_heads_that_do_not_fit_stay_new_unless_asked_for():
    psp = _psp()
    model = _tdnet(4, value_dim=32, reduction=2)  # heads (16, 32): the halves are (16, 64)
    report = init_tdnet_from_pspnet(model, psp.state_dict())
    assert report.notes and report.notes[0].startswith("heads new: the PSPNet head's halves do not fit")
    assert _is_kaiming(model.head3.conv5[0])
    assert torch.equal(model.pretrained4.conv1.weight, psp.pretrained.conv1.weight)
    with pytest.raises(CheckpointError, match="halves do not fit"):
        init_tdnet_from_pspnet(_tdnet(4, value_dim=32, reduction=2), psp.state_dict(), heads=True)


def test_the_source_must_be_a_pspnet_of_the_same_backbone():
    with pytest.raises(CheckpointError, match="ResNet-18 of width 16; this TDNet needs a ResNet-18 of width 8"):
        init_tdnet_from_pspnet(_tdnet(4), _psp(width=16).state_dict())
    with pytest.raises(CheckpointError, match="not a per-frame PSPNet"):
        init_tdnet_from_pspnet(_tdnet(4), _tdnet(2).state_dict())


def test_psp18_fits_td4_psp18_heads_and_all():
    psp = create_model("psp18", aux=True)
    model = create_model("td4-psp18", aux=True)
    report = init_tdnet_from_pspnet(model, psp.state_dict())
    assert report.notes == [] and "head4.conv5.4.weight" in report.loaded
    assert torch.equal(model.head2.conv5[0].weight, psp.head.conv5[1].weight[:, _half(512, 1)])
    assert "loaded" in report.summary() and "kaiming" in report.summary()
