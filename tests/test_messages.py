"""Messages that point the right way (issue 25, items 6 and 10), through the real entry point:
a hint names what the user passed, a mistyped pattern says so first, contradicting options are
refused, the model's notices are warnings in every command, and bench says which figure it
compares with, why the model can pass the ceiling, and when its timings are too spread to trust."""

from __future__ import annotations

from faults import assert_one_error, cli

from tdnet_cli.errors import EXIT_USAGE


# -- item 6: hints that name what the user passed --------------------------------------------------
def test_inspect_of_a_missing_file_does_not_speak_of_weights_option(tmp_path):
    line = assert_one_error(cli("inspect", tmp_path / "nope.pt"), EXIT_USAGE, "weights file not found", "nope.pt")
    assert "--weights" not in line and "inspect" in line
