"""A hostile user's view of every command (issue #19): one error line, the documented exit code,
no traceback, and no file lost. The exit-code rule lives in tdnet_cli.errors."""

from __future__ import annotations

import pytest
from faults import assert_one_error, cli

from tdnet_cli.cli.app import EXIT_CODES_HELP, app, run
from tdnet_cli.errors import EXIT_USAGE

COMMANDS = sorted(info.name or info.callback.__name__ for info in app.registered_commands)


class _Captured:
    """run()'s exit code and captured streams, shaped like a CliRunner result."""

    def __init__(self, code: int, captured) -> None:
        self.exit_code, self.stdout, self.stderr = code, captured.out, captured.err


def run_captured(capsys, *argv: str) -> _Captured:
    code = run(list(argv))
    return _Captured(code, capsys.readouterr())


def test_every_command_states_the_exit_codes_in_its_help():
    assert set(COMMANDS) >= {"segment", "eval", "train", "bench", "synth", "models", "inspect"}
    for name in COMMANDS:
        result = cli(name, "--help", env={"COLUMNS": "400"})
        assert result.exit_code == 0
        assert " ".join(EXIT_CODES_HELP.split()) in " ".join(result.stdout.split()), name


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["segment", "--bogus", "x.mp4"], "No such option: --bogus"),
        (["segment", "--alpha", "3", "x.mp4"], "--alpha"),
        (["segment", "--save", "foo", "x.mp4"], "foo"),
        (["eval"], "Missing argument"),
        (["frobnicate"], "frobnicate"),
        (["train", "--resume"], "--resume"),
    ],
)
def test_parse_errors_are_one_line_exit_2(capsys, argv, needle):
    """click's own usage errors (unknown option, bad value) are one line too, not a boxed panel."""
    result = run_captured(capsys, *argv)
    line = assert_one_error(result, EXIT_USAGE, needle)
    assert "--help" in line  # says where to look


def test_bracketed_names_are_printed_as_given(tmp_path):
    """Rich markup must not eat user text: 'clip[red]x.mp4' stays 'clip[red]x.mp4'. A name that
    exists is taken as it is (a failed input, 1); one that does not is a glob matching nothing (2)."""
    (tmp_path / "clip[red]x.mp4").write_bytes(b"not a video")
    for name, code in (("clip[red]x.mp4", 1), ("nofile[b].mp4", 2)):
        result = cli("segment", tmp_path / name, "--weights", "weights/td4-mini-synth.pt")
        assert_one_error(result, code, name)
