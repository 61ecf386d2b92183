"""Issue 25 item 4: `--model PRESET` without `--weights` runs random weights. Every command that
takes --model says so loudly, on stderr, and in the "warnings" of its --json result where it has one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from faults import cli
from media import make_clip

PRESET = "td4-tiny"
LOUD = f"warning: random weights ({PRESET}): its predictions are meaningless; pass --weights FILE or URL"


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    return make_clip(tmp_path_factory.mktemp("clip") / "clip.mp4", frames=2)


def _loud_once(stderr: str) -> None:
    lines = [ln for ln in stderr.splitlines() if ln.startswith(LOUD)]
    assert len(lines) == 1, stderr


@pytest.mark.parametrize("as_json", [False, True], ids=["table", "json"])
def test_segment_says_random_weights(tmp_path, clip, as_json):
    args = ("segment", clip, "--model", PRESET, "-s", "labels", "-d", tmp_path / "out", "--device", "cpu")
    result = cli(*args, *(["--json"] if as_json else []))
    assert result.exit_code == 0, result.output
    _loud_once(result.stderr)
    if as_json:
        assert any(w.startswith(LOUD.removeprefix("warning: ")) for w in json.loads(result.stdout)["warnings"])


@pytest.mark.slow
def test_eval_json_warns_of_random_weights(synth_data):
    root = synth_data((64, 128), val=(1, 5))
    result = cli("eval", root, "--model", PRESET, "--device", "cpu", "--limit", "1", "--json")
    assert result.exit_code == 0, result.output
    _loud_once(result.stderr)
    report = json.loads(result.stdout)
    assert any(w.startswith(LOUD.removeprefix("warning: ")) for w in report["warnings"]), report["warnings"]
    assert not any("random weights" in n for n in report["notes"]), "said twice"


@pytest.mark.slow
def test_eval_consistency_json_warns_of_random_weights(clip):
    result = cli("eval", "--consistency", clip, "--model", PRESET, "--device", "cpu", "--json")
    assert result.exit_code == 0, result.output
    _loud_once(result.stderr)
    assert any(w.startswith(LOUD.removeprefix("warning: ")) for w in json.loads(result.stdout)["warnings"])


@pytest.mark.slow
@pytest.mark.parametrize("as_json", [False, True], ids=["table", "json"])
def test_bench_warns_of_random_weights(as_json):
    args = ("bench", "--model", PRESET, "--device", "cpu", "--frames", "1", "--warmup", "0", "--no-ceiling")
    result = cli(*args, *(["--json"] if as_json else []))
    assert result.exit_code == 0, result.output
    _loud_once(result.stderr)
    if as_json:
        assert any(w.startswith(LOUD.removeprefix("warning: ")) for w in json.loads(result.stdout)["warnings"])


@pytest.mark.slow
def test_trained_weights_give_no_such_warning(tmp_path, clip):
    from tdnet_cli.models.checkpoint import random_model, save_checkpoint

    weights = save_checkpoint(tmp_path / "m.pt", random_model(PRESET))  # a file: the user chose these weights
    args = ("segment", clip, "--weights", weights, "-s", "labels", "-d", tmp_path / "out", "--device", "cpu")
    result = cli(*args)
    assert result.exit_code == 0, result.output
    assert "random weights" not in result.stderr
