"""Loading our checkpoints and the released state dicts; every bad file gives one clear line."""

from __future__ import annotations

import pytest
import torch
from conformance import key_listing, recipe_weights

from tdnet_cli.cli.app import app
from tdnet_cli.errors import CheckpointError
from tdnet_cli.models import load_checkpoint, random_model, save_checkpoint
from tdnet_cli.models.checkpoint import read_state_dict


@pytest.fixture(scope="module")
def td4_small_sd():
    return recipe_weights(key_listing("td4-psp18", small=True))


@pytest.fixture(scope="module")
def td2_small_sd():
    return recipe_weights(key_listing("td2-psp50", small=True))


@pytest.mark.slow
@pytest.mark.parametrize("zipfile", [True, False], ids=["zip", "legacy"])
def test_released_state_dict_loads_unchanged(tmp_path, td4_small_sd, zipfile):
    """PyTorch 1.1 wrote the released files in the legacy format: both must load."""
    path = tmp_path / "td4-psp18.pkl"
    torch.save(td4_small_sd, path, _use_new_zipfile_serialization=zipfile)
    loaded = load_checkpoint(path)
    assert loaded.preset == "td4-psp18"
    assert loaded.source == "state_dict"
    assert loaded.input_size == (129, 257)  # from the spatial LayerNorm shape (17, 33)
    for k, v in loaded.model.state_dict().items():
        assert torch.equal(v, td4_small_sd[k]), k


@pytest.mark.slow
def test_td2_detected_and_checked_against_preset(tmp_path, td2_small_sd):
    path = tmp_path / "td2.pkl"
    torch.save(td2_small_sd, path)
    assert load_checkpoint(path, preset="td2-psp50").preset == "td2-psp50"
    with pytest.raises(CheckpointError, match=r"holds a td2-psp50 checkpoint, not td4-psp18.*use --model td2-psp50"):
        load_checkpoint(path, preset="td4-psp18")


@pytest.mark.slow
@pytest.mark.parametrize("wrap", ["module", "state_dict", "model", "model_state"])
def test_wrapped_and_prefixed_state_dicts(tmp_path, td4_small_sd, wrap):
    if wrap == "module":
        obj = {f"module.{k}": v for k, v in td4_small_sd.items()}
    else:
        inner = {f"module.{k}": v for k, v in td4_small_sd.items()} if wrap == "model_state" else td4_small_sd
        obj = {wrap: inner, "epoch": 3, "best_iou": 0.5}
    path = tmp_path / "wrapped.pkl"
    torch.save(obj, path)
    assert load_checkpoint(path).preset == "td4-psp18"


def test_psp101_layout_detected(tmp_path):
    sd = random_model("psp-tiny").model.state_dict()
    path = tmp_path / "psp.pkl"
    torch.save(sd, path)
    loaded = load_checkpoint(path)
    assert loaded.preset == "psp-tiny" and loaded.kind == "pspnet"


def test_our_format_round_trip(tmp_path):
    loaded = random_model("td4-tiny")
    loaded.provenance = {"trained_on": "synthetic", "iterations": 10}
    path = save_checkpoint(tmp_path / "m.pt", loaded)
    assert not list(tmp_path.glob(".*partial*")), "temporary file left behind"
    back = load_checkpoint(path)
    assert back.source == "tdnet" and back.preset == "td4-tiny"
    assert back.provenance == {"trained_on": "synthetic", "iterations": 10}
    assert back.classes == loaded.classes and back.palette == loaded.palette
    x = torch.randn(1, 3, 64, 128)
    a, _ = loaded.model.step(x, loaded.model.new_state())
    b, _ = back.model.step(x, back.model.new_state())
    assert torch.equal(a, b)


@pytest.mark.slow
def test_other_input_size_resizes_layernorm(tmp_path, td4_small_sd):
    path = tmp_path / "td4.pkl"
    torch.save(td4_small_sd, path)
    loaded = load_checkpoint(path, input_size=(257, 513))
    assert loaded.input_size == (257, 513)
    ln = loaded.model.layer_norm1.ln
    assert tuple(ln.weight.shape) == (33, 65)
    # Bilinear with align_corners=True keeps the corners exactly.
    src = td4_small_sd["layer_norm1.ln.weight"]
    assert torch.allclose(ln.weight[0, 0], src[0, 0]) and torch.allclose(ln.weight[-1, -1], src[-1, -1])
    logits, _ = loaded.model.step(torch.randn(1, 3, 257, 513), loaded.model.new_state())
    assert logits.shape == (1, 19, 33, 65)


# -- bad files: one line naming the problem ------------------------------------------------
def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "nope.pkl")


def test_truncated_file(tmp_path, td4_small_sd):
    path = tmp_path / "t.pkl"
    torch.save(td4_small_sd, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="is truncated"):
        load_checkpoint(path)


def test_not_a_checkpoint(tmp_path):
    path = tmp_path / "video.mp4"
    path.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(200))
    with pytest.raises(CheckpointError):
        load_checkpoint(path)


class Evil:
    def __reduce__(self):
        return (print, ("owned",))


def test_pickled_code_is_refused(tmp_path):
    path = tmp_path / "evil.pkl"
    torch.save({"x": Evil()}, path)
    with pytest.raises(CheckpointError, match="refusing to unpickle"):
        load_checkpoint(path)


def test_other_architecture(tmp_path):
    path = tmp_path / "x.pt"
    torch.save({"conv.weight": torch.zeros(3, 3, 1, 1), "fc.bias": torch.zeros(3)}, path)
    with pytest.raises(CheckpointError, match="not a TDNet or PSPNet state dict"):
        load_checkpoint(path)


def test_other_class_count(tmp_path, td4_small_sd):
    sd = dict(td4_small_sd)
    for p in range(1, 5):
        sd[f"head{p}.conv5.4.weight"] = torch.zeros(21, 128, 1, 1)
        sd[f"head{p}.conv5.4.bias"] = torch.zeros(21)
    path = tmp_path / "c21.pkl"
    torch.save(sd, path)
    assert load_checkpoint(path).model.config.num_classes == 21  # fine on its own
    with pytest.raises(CheckpointError, match=r"not td4-psp18 \(num_classes 21 vs 19\)"):
        load_checkpoint(path, preset="td4-psp18")


def test_missing_and_misshapen_keys_listed_briefly(tmp_path, td4_small_sd):
    sd = dict(td4_small_sd)
    for k in [k for k in sd if k.startswith("atn3_")]:
        del sd[k]
    sd["psp2.conv1.0.weight"] = torch.zeros(64, 512, 1, 1)
    path = tmp_path / "broken.pkl"
    torch.save(sd, path)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    msg = str(info.value)
    assert "missing keys: atn3_1.fc.0.conv.weight" in msg and "(+3 more)" in msg
    assert "psp2.conv1.0.weight (64, 512, 1, 1) vs (128, 512, 1, 1)" in msg
    assert "\n" not in msg


def test_read_state_dict_strips_prefix(tmp_path):
    path = tmp_path / "p.pt"
    torch.save({"module.a": torch.ones(1)}, path)
    assert list(read_state_dict(path)) == ["a"]


# -- the CLI ---------------------------------------------------------------------------------


@pytest.mark.slow
def test_inspect_cli(tmp_path, td4_small_sd, runner):
    path = tmp_path / "td4.pkl"
    torch.save(td4_small_sd, path, _use_new_zipfile_serialization=False)
    result = runner.invoke(app, ["inspect", str(path), "--json"])
    assert result.exit_code == 0, result.output
    assert '"preset": "td4-psp18"' in result.output and '"input_size": [\n    129,\n    257\n  ]' in result.output


@pytest.mark.parametrize("content", [b"", b"garbage" * 10])
def test_bad_checkpoint_cli_one_line_exit_2(tmp_path, content, runner):
    path = tmp_path / "bad.pkl"
    path.write_bytes(content)
    result = runner.invoke(app, ["inspect", str(path)])
    assert result.exit_code == 2
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), result.output
