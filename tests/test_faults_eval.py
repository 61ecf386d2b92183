"""Issue 19, items 12, 15, 17 and 18 for `eval`, `synth`, `bench` and `models`: outputs that
cannot be written are refused before any work with one line (exit 2) and nothing written; a
late failure loses no figure; --overwrite never replaces an input or a foreign folder; the
per-frame fallback is a warning; user strings are printed literally."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest
from faults import assert_one_error, cli, final_names, snapshot

from tdnet_cli.errors import EXIT_FAILED, EXIT_OK, EXIT_USAGE

REPO = Path(__file__).resolve().parent.parent
MODEL = ("--model", "td4-tiny", "--device", "cpu")


@pytest.fixture(scope="module")
def dataset(synth_data) -> Path:
    """Two annotated frames in the Cityscapes layout, made by `tdnet synth`'s generator."""
    return synth_data((128, 256), val=(2, 11))


@pytest.fixture
def copy_of(dataset, tmp_path):
    """A private copy of the dataset, for tests that break or watch it."""

    def make(name: str = "ds", *, sequence: bool = True) -> Path:
        ignore = None if sequence else shutil.ignore_patterns("leftImg8bit_sequence")
        return Path(shutil.copytree(dataset, tmp_path / name, ignore=ignore))

    return make


@pytest.fixture
def read_only_dir(tmp_path):
    """A folder on a read-only tmpfs: root ignores permission bits, not a read-only mount."""
    mount = tmp_path / "ro"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(mount)], check=False, capture_output=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a read-only tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False, capture_output=True)


@pytest.fixture
def no_model_load(monkeypatch):
    """Fails the test if the command gets as far as loading a model (the work)."""
    from tdnet_cli.inference import Predictor

    def refuse(**kwargs):
        raise AssertionError("the model was loaded before the outputs were checked")

    monkeypatch.setattr(Predictor, "create", staticmethod(refuse))


def fill(folder: Path) -> None:
    """Fill the file system of ``folder`` until writes fail with ENOSPC."""
    fd = os.open(folder / "filler", os.O_WRONLY | os.O_CREAT)
    try:
        while os.write(fd, b"\0" * 4096):
            pass
    except OSError:
        pass
    finally:
        os.close(fd)


# -- item 12: outputs that cannot be written -----------------------------------------------


def test_save_predictions_naming_a_file_is_refused(dataset, tmp_path, no_model_load):
    afile = tmp_path / "afile"
    afile.write_text("mine")
    for extra in ((), ("--overwrite",)):
        result = cli("eval", dataset, *MODEL, "--save-predictions", afile, *extra)
        assert_one_error(result, EXIT_USAGE, "--save-predictions", "is a file")
    assert afile.read_text() == "mine"


def test_json_on_a_read_only_file_system_is_refused_before_the_work(dataset, read_only_dir, no_model_load):
    result = cli("eval", dataset, *MODEL, "--json-file", read_only_dir / "x.json")
    assert_one_error(result, EXIT_USAGE, "read-only", "x.json")
    assert result.stdout == "" and final_names(read_only_dir) == []


def test_json_under_a_regular_file_is_refused_before_the_work(dataset, tmp_path, no_model_load):
    (tmp_path / "afile").write_text("mine")
    before = snapshot(tmp_path)
    result = cli("eval", dataset, *MODEL, "--json-file", tmp_path / "afile" / "sub" / "x.json")
    assert_one_error(result, EXIT_USAGE, "afile", "not a folder")
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("overwrite", [False, True])
def test_json_naming_a_folder_is_refused(dataset, tmp_path, no_model_load, overwrite):
    folder = tmp_path / "out"
    folder.mkdir()
    (folder / "keep.txt").write_text("mine")
    before = snapshot(tmp_path)
    result = cli("eval", dataset, *MODEL, "--json-file", folder, *(["--overwrite"] if overwrite else []))
    assert_one_error(result, EXIT_USAGE, "is a folder")
    assert snapshot(tmp_path) == before


def test_json_is_replaced_only_with_overwrite_and_never_the_weights(dataset, tmp_path, no_model_load):
    old = tmp_path / "old.json"
    old.write_text("{}")
    weights = Path(shutil.copy(REPO / "weights" / "td4-mini-synth.pt", tmp_path / "w.pt"))
    before = snapshot(tmp_path)
    assert_one_error(cli("eval", dataset, *MODEL, "--json-file", old), EXIT_USAGE, "exists", "--overwrite")
    result = cli("eval", dataset, "--weights", weights, "--device", "cpu", "--json-file", weights, "--overwrite")
    assert_one_error(result, EXIT_USAGE, "--weights")
    inside = dataset / "gtFine" / "results.json"
    assert_one_error(cli("eval", dataset, *MODEL, "--json-file", inside), EXIT_USAGE, "input folder")
    assert snapshot(tmp_path) == before and not inside.exists()


def test_json_with_overwrite_is_replaced_atomically(dataset, tmp_path):
    out = tmp_path / "x.json"
    out.write_text("old")
    result = cli("eval", dataset, *MODEL, "--limit", "1", "-q", "--json-file", out, "--overwrite")
    assert result.exit_code == EXIT_OK, result.stderr
    assert json.loads(out.read_text())["evaluated"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.json"]  # no temporary left


@pytest.mark.slow
def test_a_late_json_failure_loses_no_figure(dataset, small_disk):
    """The disk fills after the check: exit 1, one line, the results on stdout, no file."""
    fill(small_disk)
    out = small_disk / "x.json"
    result = cli("eval", dataset, *MODEL, "--limit", "1", "-q", "--json-file", out)
    assert_one_error(result, EXIT_FAILED, "disk is full", "stdout")
    assert json.loads(result.stdout)["evaluated"] == 1
    assert final_names(small_disk) == ["filler"] and not list(small_disk.glob(".*"))
    shown = cli("eval", dataset, *MODEL, "--limit", "1", "--json-file", out)  # not quiet: the table comes first
    assert shown.exit_code == EXIT_FAILED and "mIoU" in shown.stdout.split("{")[0]


def test_synth_into_a_read_only_folder_is_refused(read_only_dir):
    result = cli("synth", read_only_dir / "s", "-n", "1", "--size", "128x256", "--frames", "20")
    assert_one_error(result, EXIT_USAGE, "read-only")
    assert final_names(read_only_dir) == []


def test_synth_under_a_regular_file_is_refused(tmp_path):
    (tmp_path / "afile").write_text("mine")
    before = snapshot(tmp_path)
    result = cli("synth", tmp_path / "afile" / "s", "-n", "1", "--size", "128x256", "--frames", "20")
    assert_one_error(result, EXIT_USAGE, "afile", "not a folder")
    assert snapshot(tmp_path) == before


# -- item 12: --overwrite never replaces an input or a foreign folder -----------------------


def test_predictions_with_overwrite_refuse_a_foreign_folder(dataset, tmp_path, no_model_load):
    preds = tmp_path / "preds"
    (preds / "sub").mkdir(parents=True)
    (preds / "notes.txt").write_text("mine")
    (preds / "sub" / "x_leftImg8bit.png").write_bytes(b"png")
    before = snapshot(tmp_path)
    assert_one_error(cli("eval", dataset, *MODEL, "--save-predictions", preds), EXIT_USAGE, "not empty")
    result = cli("eval", dataset, *MODEL, "--save-predictions", preds, "--overwrite")
    assert_one_error(result, EXIT_USAGE, "notes.txt", "does not write")
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("where", ["leftImg8bit/val", "leftImg8bit_sequence/val", "gtFine", ""])
def test_predictions_never_replace_the_dataset(copy_of, where, no_model_load):
    root = copy_of()
    before = snapshot(root)
    result = cli("eval", root, *MODEL, "--save-predictions", root / where, "--overwrite")
    assert_one_error(result, EXIT_USAGE, "--save-predictions")
    assert snapshot(root) == before


@pytest.mark.parametrize("link", ["symlink", "hardlink"])
def test_predictions_never_replace_an_input_through_a_link(copy_of, tmp_path, link):
    root = copy_of()
    # the annotated frame as this run reads it (the sequence protocol): the prediction's name
    annotated = next((root / "leftImg8bit" / "val").glob("*/*_leftImg8bit.png"))
    image = root / "leftImg8bit_sequence" / "val" / annotated.parent.name / annotated.name
    preds = tmp_path / "preds"
    if link == "symlink":  # the city folder of the predictions is the dataset's
        preds.mkdir()
        (preds / image.parent.name).symlink_to(image.parent)
    else:  # a prediction PNG is the input image itself
        (preds / image.parent.name).mkdir(parents=True)
        os.link(image, preds / image.parent.name / image.name)
    before = snapshot(root)
    result = cli("eval", root, *MODEL, "--save-predictions", preds, "--overwrite")
    assert_one_error(result, EXIT_USAGE, "--save-predictions")
    assert snapshot(root) == before


def test_predictions_overwrite_replaces_only_their_own_files(dataset, tmp_path):
    preds = tmp_path / "preds"
    first = cli("eval", dataset, *MODEL, "-q", "--save-predictions", preds)
    assert first.exit_code == EXIT_OK, first.stderr
    names = final_names(preds)
    stale = preds / names[0].split("/")[0] / "other_000000_000019_leftImg8bit.png"
    stale.write_bytes(b"an earlier run's")
    again = cli("eval", dataset, *MODEL, "--limit", "1", "--save-predictions", preds, "--overwrite")
    assert again.exit_code == EXIT_OK, again.stderr
    assert stale.read_bytes() == b"an earlier run's" and set(names) <= set(final_names(preds))
    assert "warning:" in again.stderr and "this run does not write" in again.stderr


# -- item 18: the per-frame fallback is said -----------------------------------------------


def test_fallback_to_the_per_frame_protocol_is_a_warning(copy_of):
    root = copy_of("noseq", sequence=False)
    result = cli("eval", root, *MODEL, "--limit", "1", "--json")
    assert result.exit_code == EXIT_OK, result.stderr
    warnings = [ln for ln in result.stderr.splitlines() if ln.startswith("warning:") and "random weights" not in ln]
    assert len(warnings) == 1 and "leftImg8bit_sequence" in warnings[0] and "per-frame" in warnings[0]
    data = json.loads(result.stdout)
    protocol = [w for w in data["warnings"] if not w.startswith("random weights")]  # td4-tiny is random
    assert data["protocol"] == "repeat" and len(protocol) == 1 and "per-frame" in protocol[0]


def test_no_warning_with_the_sequence(dataset):
    result = cli("eval", dataset, *MODEL, "--limit", "1", "--json")
    # the one warning is the model's notice (td4-tiny is random), on stderr even with --json
    warnings = [ln for ln in result.stderr.splitlines() if ln.startswith("warning:")]
    assert result.exit_code == EXIT_OK and len(warnings) == 1 and "random weights" in warnings[0]
    assert [w for w in json.loads(result.stdout)["warnings"] if not w.startswith("random weights")] == []


# -- item 17: every error a user can cause in eval is one line and exit 2 -------------------


@pytest.mark.parametrize(
    "args, needle",
    [
        (("--limit", "-3"), "--limit"),
        (("--limit", "0"), "--limit"),
        (("--cities", ","), "--cities"),
        (("--warmup", "-1"), "--warmup"),
        (("--split", "bogus"), "split"),
    ],
)
def test_eval_bad_options(dataset, no_model_load, args, needle):
    assert_one_error(cli("eval", dataset, *MODEL, *args), EXIT_USAGE, needle)


@pytest.mark.slow
@pytest.mark.parametrize("broken", ["instance_size", "label_ids_16bit"])
def test_eval_broken_ground_truth(copy_of, broken):
    root = copy_of()
    gt = next((root / "gtFine" / "val").glob("*/*_gtFine_labelIds.png"))
    if broken == "instance_size":
        inst = gt.with_name(gt.name.replace("labelIds", "instanceIds"))
        cv2.imwrite(str(inst), np.zeros((10, 10), np.uint16))
        needle = "instanceIds 10x10"
    else:
        cv2.imwrite(str(gt), cv2.imread(str(gt), cv2.IMREAD_UNCHANGED).astype(np.uint16) + 256)
        needle = "outside 0..255"
    assert_one_error(cli("eval", root, *MODEL, "-q"), EXIT_USAGE, needle)


# -- item 15: user strings are printed literally -------------------------------------------


def test_bracketed_names_are_printed_literally(copy_of, tmp_path):
    root = copy_of("d[red]x", sequence=False)
    preds = tmp_path / "p[b]x"
    result = cli("eval", root, *MODEL, "--limit", "1", "--save-predictions", preds)
    assert result.exit_code == EXIT_OK, result.stderr
    assert f"predictions: {preds}" in result.stdout.replace("\n", "")
    assert "d[red]x" in result.stderr  # in the fallback warning
    made = cli("synth", tmp_path / "s[red]x", "-n", "1", "--size", "128x256", "--frames", "20")
    assert made.exit_code == EXIT_OK and "s[red]x" in made.stdout


@pytest.mark.slow
def test_bench_prints_the_input_literally(tmp_path):
    from media import make_clip

    clip = make_clip(tmp_path / "c[red]x.mp4", frames=6)
    result = cli(
        "bench",
        *MODEL,
        "--size",
        "64x128",
        "--frames",
        "1",
        "--warmup",
        "0",
        "--no-ceiling",
        "--input",
        clip,
        env={"COLUMNS": "300"},
    )
    assert result.exit_code == EXIT_OK, result.stderr
    assert "end to end (" + str(clip) in result.stdout
