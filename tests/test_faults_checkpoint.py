"""Issue 19, items 10, 13 and 16 (weights files): a damaged, hostile or wrong weights file, and an
input size that cannot fit in memory, each end in one error line (exit 2) from both `tdnet inspect`
and `tdnet segment`, before anything large is allocated and before any output is written."""

from __future__ import annotations

import time
import zipfile
from pathlib import Path

import pytest
import torch
from faults import assert_one_error, cli, final_names
from media import make_clip

from tdnet_cli.models import checkpoint as ckpt
from tdnet_cli.models import complexity
from tdnet_cli.models.checkpoint import random_model, save_checkpoint

PRESET = "td4-tiny"  # a real TDNet layout (4 paths, grouped pyramid, attention), built in milliseconds


@pytest.fixture(scope="module")
def good_sd() -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in random_model(PRESET).model.state_dict().items()}


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    return make_clip(tmp_path_factory.mktemp("clip") / "clip.mp4", frames=2)


def _both(path: Path, clip: Path, out: Path, *extra: str):
    """`tdnet inspect PATH` and `tdnet segment CLIP --weights PATH`: both results."""
    return (cli("inspect", path, *extra), cli("segment", clip, "--weights", path, "-s", "labels", "-d", out, *extra))


def _assert_both(results, out: Path, *needles: str) -> None:
    for result in results:
        assert_one_error(result, 2, *needles)
    assert not out.exists() or final_names(out) == [], "segment wrote an output for a refused weights file"


# -- item 10: wrong shapes, NaN/inf, our format without input_size ----------------------------------
def _corrupt(sd: dict, key: str, value: torch.Tensor) -> dict:
    bad = dict(sd)
    bad[key] = value
    return bad


SHAPE_CASES = {
    # key, replacement, what the one line must name (the key and what was expected)
    "stem_3x3x3x3": (
        "pretrained1.conv1.weight",
        lambda t: torch.zeros(3, 3, 3, 3),
        ("pretrained1.conv1.weight (3, 3, 3, 3) vs (8, 3, 7, 7)",),
    ),
    "layer_norm_1d": (
        "layer_norm1.ln.weight",
        lambda t: torch.ones(t.numel()),
        ("layer_norm1.ln.weight has shape (128,)", "expected (feature height, feature width)"),
    ),
    "w_vs_1d": (
        "enc1.w_vs.0.conv.weight",
        lambda t: torch.zeros(t.numel()),
        ("enc1.w_vs.0.conv.weight has shape (2048,)", "expected (value_dim, channels, 1, 1)"),
    ),
    "w_vs_channels": (
        "enc1.w_vs.0.conv.weight",
        lambda t: torch.zeros(t.shape[0], 48, 1, 1),
        ("enc1.w_vs.0.conv.weight takes 48 channels", "for a group count G dividing"),
    ),
    "head_0_channels": (
        "head1.conv5.0.weight",
        lambda t: torch.zeros(0, *t.shape[1:]),
        ("head1.conv5.0.weight has shape (0, 32, 3, 3)",),
    ),
    "classifier_extra_dim": (
        "head1.conv5.4.weight",
        lambda t: t[..., None],
        ("head1.conv5.4.weight has shape (19, 16, 1, 1, 1)", "expected (classes, channels, 1, 1)"),
    ),
    "nan": (
        "head1.conv5.4.weight",
        lambda t: t.flatten().index_fill(0, torch.tensor([3]), float("nan")).view_as(t),
        ("head1.conv5.4.weight holds 1 NaN value(s) of 304",),
    ),
    "inf_buffer": (
        "pretrained2.layer1.0.bn1.running_var",
        lambda t: t.index_fill(0, torch.tensor([0]), float("inf")),
        ("pretrained2.layer1.0.bn1.running_var holds 1 infinite value(s)",),
    ),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", list(SHAPE_CASES))
def test_raw_state_dict_with_a_wrong_tensor_is_one_line(tmp_path, good_sd, clip, case):
    key, make, needles = SHAPE_CASES[case]
    path = tmp_path / "bad.pkl"
    torch.save(_corrupt(good_sd, key, make(good_sd[key])), path)
    _assert_both(_both(path, clip, tmp_path / "out"), tmp_path / "out", str(path), *needles)


def _our_format(tmp_path: Path, edit) -> Path:
    """A checkpoint of our own format, its metadata edited by ``edit(payload)``."""
    path = save_checkpoint(tmp_path / "ours.pt", random_model(PRESET))
    payload = torch.load(path, weights_only=True)
    edit(payload)
    torch.save(payload, path)
    return path


META_CASES = {
    "no_input_size": (lambda p: p["config"].pop("input_size"), ("config has no input_size", "[height, width]")),
    "bad_input_size": (lambda p: p["config"].update(input_size=[64]), ("config input_size is [64]",)),
    "zero_width": (lambda p: p["config"].update(width=0), ("config width is 0; expected a positive integer",)),
    "unknown_kind": (lambda p: p.update(kind="yolo"), ("'kind' is 'yolo'",)),
    "no_config": (lambda p: p.pop("config"), ("'config' is missing",)),
    "few_classes": (lambda p: p.update(classes=["road"]), ("classes is ['road']; expected a list of 19",)),
    "nan_weight": (
        lambda p: p["state_dict"]["enc2.w_qs.1.conv.bias"].fill_(float("nan")),
        ("enc2.w_qs.1.conv.bias holds 16 NaN",),
    ),
    "newer_format": (
        lambda p: p.update(format_version=99),
        ("written by a newer tdnet (format version 99", "upgrade tdnet"),
    ),
    "groups_do_not_divide": (lambda p: p["config"].update(groups=3), ("groups 3 (expected a divisor of 16",)),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", list(META_CASES))
def test_our_format_with_bad_metadata_is_one_line(tmp_path, clip, case):
    edit, needles = META_CASES[case]
    path = _our_format(tmp_path, edit)
    _assert_both(_both(path, clip, tmp_path / "out"), tmp_path / "out", str(path), *needles)


@pytest.mark.slow
def test_good_files_still_load(tmp_path, good_sd):
    """The checks refuse only what is wrong: an intact raw state dict and our format both load."""
    raw = tmp_path / "raw.pkl"
    torch.save(good_sd, raw)
    assert ckpt.load_checkpoint(raw).preset == PRESET
    ours = save_checkpoint(tmp_path / "ours.pt", random_model(PRESET))
    assert cli("inspect", ours).exit_code == 0


# -- item 16: files that are not checkpoints at all ----------------------------------------------------
class _RunsCode:
    def __reduce__(self):
        return (print, ("this ran",))


def _make_file(kind: str, tmp_path: Path, good: bytes) -> Path:
    path = tmp_path / "weights.pt"
    if kind == "random_bytes":
        path.write_bytes(bytes(range(7, 256)) * 20)  # deterministic, no known magic
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "text":
        path.write_text("hello, these are not weights\n")
    elif kind == "html":
        path.write_text("<!DOCTYPE html><html><body>404</body></html>")
    elif kind == "lfs_pointer":
        path.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:ab\nsize 123\n")
    elif kind == "truncated_zip":
        path.write_bytes(good[: len(good) // 2])
    elif kind == "truncated_legacy":
        buf = tmp_path / "legacy.pt"
        torch.save({"a": torch.zeros(100)}, buf, _use_new_zipfile_serialization=False)
        path.write_bytes(buf.read_bytes()[:60])
    elif kind == "foreign_zip":
        with zipfile.ZipFile(path, "w") as z:
            z.writestr("notes.txt", "hi")
    elif kind == "plain_pickle":
        import pickle

        path.write_bytes(pickle.dumps({"a": 1}, protocol=4))
    elif kind == "needs_code":
        torch.save({"weights": _RunsCode()}, path)
    elif kind == "folder":
        path.mkdir()
    return path


FILE_CASES = {
    "random_bytes": ("is not a PyTorch checkpoint: it is unknown binary data", "07 08 09 0a"),
    "empty": ("is empty (0 bytes), not a checkpoint", "download the weights again"),
    "text": ("it is a text file (it starts with 'hello, these are not weights')",),
    "html": ("an HTML page",),
    "lfs_pointer": ("a Git LFS pointer", "git lfs pull"),
    "truncated_zip": ("is truncated: a zip archive without its end", "download the weights again"),
    "truncated_legacy": ("is truncated: the file ends before the checkpoint does",),
    "foreign_zip": ("a zip archive that torch.save did not write (it holds notes.txt)",),
    "plain_pickle": ("a Python pickle that torch.save did not write",),
    "needs_code": (
        "needs code to unpickle (it refers to the Python object print)",
        "never code from a weights file",
        "torch.save(obj.state_dict()",
    ),
    "folder": ("is a folder, not a weights file",),
}


@pytest.mark.slow
@pytest.mark.parametrize("kind", list(FILE_CASES))
def test_not_a_checkpoint_says_what_the_file_is(tmp_path, clip, capfd, kind):
    good = save_checkpoint(tmp_path / "good.pt", random_model(PRESET)).read_bytes()
    path = _make_file(kind, tmp_path, good)
    results = _both(path, clip, tmp_path / "out")
    _assert_both(results, tmp_path / "out", str(path), *FILE_CASES[kind])
    line = results[0].stderr
    assert "pickled Python objects" not in line  # the old, wrong diagnosis of random bytes
    assert "this ran" not in capfd.readouterr().out  # the pickle's code never ran


# -- item 13: an input size that cannot fit in memory -----------------------------------------------
def _forbid_building(monkeypatch) -> None:
    """From now on, fail the test if a model is built anywhere but on the meta device (shapes only)."""
    real = ckpt.build

    def build(config):
        if torch.empty(0).device.type != "meta":
            raise AssertionError("a model was built (memory allocated) before the size was refused")
        return real(config)

    monkeypatch.setattr(ckpt, "build", build)


@pytest.mark.parametrize("how", ["model", "weights", "bundled"])
def test_huge_input_size_is_refused_before_allocating(tmp_path, clip, monkeypatch, how):
    args = {"model": ["--model", "td4-psp18"], "bundled": []}.get(how)
    if how == "weights":
        args = ["--weights", save_checkpoint(tmp_path / "m.pt", random_model(PRESET))]
    _forbid_building(monkeypatch)
    t0 = time.perf_counter()
    result = cli("segment", clip, *args, "--input-size", "99999x99999", "-s", "labels", "-d", tmp_path / "out")
    line = assert_one_error(
        result,
        2,
        "at 99999x99999 needs about",
        "PB for its weights and activations",
        "available",
        "choose a smaller --input-size",
    )
    assert time.perf_counter() - t0 < 30, "the refusal took long: something large ran first"
    assert not (tmp_path / "out").exists() or final_names(tmp_path / "out") == []
    if how == "model":
        assert "td4-psp18 at 99999x99999" in line


def test_inspect_refuses_a_huge_input_size(tmp_path, monkeypatch):
    path = save_checkpoint(tmp_path / "m.pt", random_model(PRESET))
    _forbid_building(monkeypatch)
    assert_one_error(cli("inspect", path, "--input-size", "99999x99999"), 2, "needs about", "available")


@pytest.mark.parametrize(
    "size, needle",
    [
        ("0x0", "too small"),
        ("-64x128", "too small"),
        ("64x", "bad size"),
        ("2000000x64", "absurdly large"),
        ("64x128x3", "bad size"),
    ],
)
def test_bad_sizes_are_refused_at_parsing(tmp_path, clip, size, needle):
    result = cli("segment", clip, "--model", PRESET, f"--input-size={size}", "-s", "labels", "-d", tmp_path / "out")
    assert_one_error(result, 2, needle)


def test_a_size_that_fits_elsewhere_is_refused_on_a_small_machine(monkeypatch):
    """The estimate, not a fixed limit, decides: 1024x2048 is refused with 100 MB available."""
    config = ckpt.get_preset("td4-psp18").config
    monkeypatch.setattr(
        complexity, "available_memory", lambda device: (100_000_000, "this machine has 100 MB available")
    )
    with pytest.raises(complexity.UsageError, match=r"td4-psp18 at 1024x2048 needs about [\d.]+ GB .*100 MB available"):
        complexity.check_memory(config, (1024, 2048), 50_000_000, torch.device("cpu"), name="td4-psp18")


def test_estimate_grows_with_the_size_and_normal_sizes_run(tmp_path, clip):
    config = ckpt.get_preset("td4-psp18").config
    sizes = [(256, 512), (769, 1537), (1024, 2048), (2048, 4096)]
    needs = [complexity.memory_needed(config, s, 200_000_000, torch.device("cpu")) for s in sizes]
    assert needs == sorted(needs) and needs[2] < 20e9 < needs[-1] * 10
    result = cli("segment", clip, "--model", PRESET, "--input-size", "64x128", "-s", "labels", "-d", tmp_path / "o")
    assert result.exit_code == 0, result.stderr
    assert final_names(tmp_path / "o") != []
