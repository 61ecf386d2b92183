"""The CLI shell: version, presets table, module entry point."""

from __future__ import annotations

import json
import subprocess
import sys

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


def test_models_table_lists_every_preset(runner):
    result = runner.invoke(app, ["models"], env={"COLUMNS": "160"})
    assert result.exit_code == 0
    for name in ("td4-psp18", "td2-psp50", "td4-mini", "psp18", "psp50", "psp101"):
        assert name in result.output
    assert "514.2" in result.output  # td4-psp18 GFLOPs per steady frame


def test_models_json(runner):
    rows = json.loads(runner.invoke(app, ["models", "--json"]).output)
    by_name = {r["name"]: r for r in rows}
    assert by_name["td4-psp18"]["paths"] == 4 and by_name["td4-psp18"]["input_size"] == [769, 1537]
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
