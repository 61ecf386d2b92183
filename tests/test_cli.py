"""The CLI shell: version, presets table, module entry point."""

from __future__ import annotations

import json
import math
import re
import shlex
import subprocess
import sys

import pytest
import typer

from tdnet_cli import __version__
from tdnet_cli.cli.app import app


def test_version(runner):
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"tdnet {__version__}"


def test_help_and_version_do_not_load_torch():
    """Commands import torch (and the pipelines) when they run: `tdnet --help`, `--version` and
    option errors answer in a fraction of a second instead of after torch's 1-2 s import."""
    code = (
        "import sys; from tdnet_cli.cli.app import app; from typer.testing import CliRunner; "
        "r = CliRunner().invoke(app, ['segment', '--help']); "
        "print(r.exit_code, sorted(m for m in ('torch', 'cv2', 'tdnet_cli.inference', 'tdnet_cli.pipeline') "
        "if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["0", "[]"]


def td4_psp18_gflops() -> float:
    """td4-psp18's GFLOPs (2 x multiply-adds of its convolutions and matrix products) for one frame
    with a full memory queue, counted by hand from the architecture (TDNet paper and the released
    layout), not by the code under test: one path of a dilated ResNet-18 (output stride 8), the
    pyramid pooling, the query/key/value projections, three chained attentions and the head. Biases,
    norms, pooling and resizing are left out, as torch's FLOP counter leaves them out."""

    def out(n: int, kernel: int, stride: int, pad: int) -> int:  # a convolution's output side
        return (n + 2 * pad - kernel) // stride + 1

    h2, w2 = out(769, 7, 2, 3), out(1537, 7, 2, 3)  # 385 x 769 after the 7x7 stride-2 stem
    h4, w4 = out(h2, 3, 2, 1), out(w2, 3, 2, 1)  # 193 x 385 after the 3x3 stride-2 max pool
    h8, w8 = out(h4, 3, 2, 1), out(w4, 3, 2, 1)  # 97 x 193 from layer2's stride 2 on (dilated after it)
    t = h8 * w8  # 18721 feature positions
    macs = 3 * 64 * 7 * 7 * h2 * w2 + 4 * 64 * 64 * 9 * h4 * w4  # stem; layer1: two blocks of two 3x3 convs
    for cin, c in ((64, 128), (128, 256), (256, 512)):  # layer2-4: 3x3 in, 3x3, 1x1 shortcut, one more block
        macs += (cin * c * 9 + c * c * 9 + cin * c + 2 * c * c * 9) * t
    macs += 512 * 128 * (1 + 2 * 2 + 3 * 3 + 6 * 6)  # pyramid pooling: four 1x1 convs 512 -> 128 on the bins
    z, dk, dv = 512, 64, 512  # this path's pyramid group (2 x 512 / 2 groups), key and value widths
    p = math.ceil(h8 / 4) * math.ceil(w8 / 4)  # memory positions: every 4th row and column, 25 x 49
    macs += (z * dk + dk * dk + z * dv) * t + (z * dk + dk * dk) * p  # queries and values; keys on the memory grid
    for targets in (p, p, t):  # each memory attends to the next frame's queries, the last to this frame's
        macs += targets * p * (dk + dv) + targets * dv * dv  # q k^T, attention x v, the 1x1 output map
    macs += (512 * 128 * 9 + 128 * 19) * t  # head: 3x3 conv 512 -> 128, 1x1 to the 19 classes
    return 2 * macs / 1e9


@pytest.mark.slow
def test_models_table_lists_every_preset(runner):
    result = runner.invoke(app, ["models"], env={"COLUMNS": "160"})
    assert result.exit_code == 0
    for name in ("td4-psp18", "td2-psp50", "td4-mini", "psp18", "psp50", "psp101"):
        assert name in result.output
    assert f"{td4_psp18_gflops():.1f}" in result.output  # 514.2: td4-psp18 GFLOPs per steady frame


@pytest.mark.slow
def test_models_json(runner):
    rows = json.loads(runner.invoke(app, ["models", "--json"]).output)
    by_name = {r["name"]: r for r in rows}
    assert by_name["td4-psp18"]["paths"] == 4 and by_name["td4-psp18"]["input_size"] == [769, 1537]
    assert by_name["td4-psp18"]["gflops_per_frame"] == round(td4_psp18_gflops(), 2)
    assert by_name["td2-psp50"]["paper"]["miou"] == 79.9


def test_python_dash_m():
    out = subprocess.run([sys.executable, "-m", "tdnet_cli", "--version"], capture_output=True, check=False, text=True)
    assert out.returncode == 0 and __version__ in out.stdout


def test_unknown_command_is_a_usage_error(runner):
    result = runner.invoke(app, ["frobnicate"])
    assert result.exit_code == 2


def test_bad_precision_or_device_fail_while_parsing(capsys, tmp_path):
    """Refused before anything loads: the weights named here do not even exist."""
    from tdnet_cli.cli.app import run

    missing = str(tmp_path / "missing.pt")
    for option, needle in (
        ("--precision=fp61", "'fp61' is not one of 'fp32', 'bf16', 'fp16'"),
        ("--device=tpu", "unknown device 'tpu'"),
    ):
        for command in ("segment", "eval", "bench"):
            target = [] if command == "bench" else [str(tmp_path)]
            assert run([command, *target, "--weights", missing, option]) == 2
            err = capsys.readouterr().err
            assert needle in err and "missing.pt" not in err and len(err.strip().splitlines()) == 1, err


# -- issue 25 item 5: --help shows flags as flags, choices as choices, and examples -------------

COMMANDS = sorted(typer.main.get_command(app).commands)
TYPE_TAG = re.compile(r"<(bool|str|int|float|path|list\[)|\{\w+\}")  # typer's own labels


def render_help(runner, *argv: str) -> str:
    result = runner.invoke(app, [*argv, "--help"], env={"COLUMNS": "100"}, terminal_width=100)
    assert result.exit_code == 0, result.output
    return result.stdout


def test_every_command_is_in_this_list():
    assert set(COMMANDS) >= {"segment", "eval", "train", "bench", "synth", "models", "inspect"}


@pytest.mark.parametrize("argv", [[], *([c] for c in COMMANDS)], ids=lambda a: " ".join(a) or "tdnet")
def test_help_shows_no_type_tags(runner, argv):
    text = render_help(runner, *argv)
    assert not TYPE_TAG.search(text), TYPE_TAG.search(text)
    assert re.search(r"--help\s{2,}Show this message", text)  # a flag: no label between name and help


def test_flags_take_no_value_and_choices_show_their_values(runner):
    segment = render_help(runner, "segment")
    for flag, help_start in ((r"--legend\s+--no-legend", "Name"), ("--overwrite", "Replace"), ("--json", "Print")):
        assert re.search(rf"{flag}\s{{2,}}{help_start}", segment), flag
    assert re.search(r"--save\s+-s\s+KIND\s", segment)  # four choices: named, and listed in its help
    for command in ("segment", "eval", "bench"):
        assert "[fp32|bf16|fp16]" in render_help(runner, command), command
    assert re.search(r"--input-size\s+HxW", render_help(runner, "bench"))
    assert "Usage: tdnet synth [OPTIONS] OUT" in render_help(runner, "synth")  # not typer's {out_dir}


def test_every_flag_has_no_label_and_every_value_one(runner):
    """Each option as --help labels it: a flag with nothing, a value with a name (no type tag)."""
    group = typer.main.get_command(app)
    root = group.make_context("tdnet", [], resilient_parsing=True)
    for name in COMMANDS:
        command = group.get_command(root, name)
        for param in command.get_params(command.make_context(name, [], parent=root, resilient_parsing=True)):
            if param.param_type_name != "option":
                continue
            label = param.metavar
            assert (label == "") if param.is_flag else bool(label and not TYPE_TAG.search(label)), (name, param.name)


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_shows_examples_that_parse(runner, command, monkeypatch):
    text = render_help(runner, command)
    examples = [ln.strip() for ln in text.splitlines() if ln.strip().startswith("tdnet ")]
    assert 2 <= len(examples) <= 3, text
    assert "Examples" in text and "# " in text  # each example says what it does
    monkeypatch.setattr("tdnet_cli.inference.resolve_device", lambda name: None)  # cuda in an example
    group = typer.main.get_command(app)
    root = group.make_context("tdnet", [], resilient_parsing=True)
    for line in examples:
        args = shlex.split(line)[1:]
        assert args[0] == command, line
        group.get_command(root, command).make_context(command, args[1:], parent=root).close()
