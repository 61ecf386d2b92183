"""Issue 25 item 2: `--json` means one thing in every command. In `eval` it is the flag (one JSON
document on stdout, nothing else there); the figures go to a file with `--json-file FILE`; the
old `eval --json FILE` form is refused in one line that names the new one."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from faults import assert_one_error, cli, snapshot

from tdnet_cli.errors import EXIT_FAILED, EXIT_OK, EXIT_USAGE

MODEL = ("--model", "td4-tiny", "--device", "cpu")


@pytest.fixture(scope="module")
def dataset(synth_data) -> Path:
    return synth_data((128, 256), val=(2, 11))


@pytest.fixture
def no_model_load(monkeypatch):
    """Fails the test if the command gets as far as loading a model."""
    from tdnet_cli.inference import Predictor

    def refuse(**kwargs):
        raise AssertionError("the model was loaded before the options were checked")

    monkeypatch.setattr(Predictor, "create", staticmethod(refuse))


@pytest.mark.slow
def test_json_flag_with_save_predictions(dataset, tmp_path):
    """The issue's own line: --json no longer swallows --save-predictions as its file."""
    preds = tmp_path / "preds"
    result = cli("eval", dataset, *MODEL, "--limit", "1", "--json", "--save-predictions", preds)
    assert result.exit_code == EXIT_OK, result.stderr
    data = json.loads(result.stdout)  # the whole of stdout is the one document: no table beside it
    assert data["evaluated"] == 1 and "miou" in data
    assert len(list(preds.glob("*/*_leftImg8bit.png"))) == 1
    assert sorted(os.listdir(tmp_path)) == ["preds"]  # no file named after an option


def test_json_file_writes_the_figures_and_shows_the_table(dataset, tmp_path):
    out = tmp_path / "scores.json"
    result = cli("eval", dataset, *MODEL, "--limit", "1", "--json-file", out, env={"COLUMNS": "120"})
    assert result.exit_code == EXIT_OK, result.stderr
    assert json.loads(out.read_text())["evaluated"] == 1
    assert "mIoU" in result.stdout and "{" not in result.stdout  # the table, not the JSON


def test_json_and_json_file_together_give_the_same_document(dataset, tmp_path):
    out = tmp_path / "scores.json"
    result = cli("eval", dataset, *MODEL, "--limit", "1", "--json", "--json-file", out)
    assert result.exit_code == EXIT_OK, result.stderr
    on_stdout, in_file = json.loads(result.stdout), json.loads(out.read_text())
    assert on_stdout == in_file and in_file["evaluated"] == 1


def test_late_failure_with_both_prints_the_document_once(dataset, small_disk):
    """--json already printed the figures: a --json-file that fails late must not print them twice."""
    fd = os.open(small_disk / "filler", os.O_WRONLY | os.O_CREAT)
    try:
        while os.write(fd, b"\0" * 4096):
            pass
    except OSError:
        pass
    finally:
        os.close(fd)
    result = cli("eval", dataset, *MODEL, "--limit", "1", "--json", "--json-file", small_disk / "x.json")
    assert_one_error(result, EXIT_FAILED, "--json-file", "disk is full")
    assert json.loads(result.stdout)["evaluated"] == 1  # one document: json.loads refuses two


@pytest.mark.parametrize(
    ("extra", "needles"),
    [
        (["--json", "{tmp}/scores.json"], ["--json takes no file name", "--json-file {tmp}/scores.json"]),
        (["--json", "-"], ["--json takes no value"]),
        (["--json-file", "-"], ["--json-file", "--json"]),
        (["--json", "{tmp}/other"], ["one dataset folder", "--json-file FILE"]),
    ],
)
def test_the_old_file_form_is_refused_in_one_line(dataset, tmp_path, no_model_load, extra, needles):
    (tmp_path / "other").mkdir()
    before = snapshot(tmp_path)
    args = [a.format(tmp=tmp_path) for a in extra]
    assert_one_error(cli("eval", dataset, *MODEL, *args), EXIT_USAGE, *(n.format(tmp=tmp_path) for n in needles))
    assert snapshot(tmp_path) == before


def test_the_old_file_form_is_refused_with_consistency(dataset, tmp_path, no_model_load):
    """`eval --consistency CLIP --json tc.json`: tc.json is not read as a second video."""
    line = assert_one_error(
        cli("eval", "--consistency", dataset, *MODEL, "--json", tmp_path / "tc.json"), EXIT_USAGE, "--json-file"
    )
    assert "tc.json" in line and not (tmp_path / "tc.json").exists()
