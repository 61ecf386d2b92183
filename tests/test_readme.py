"""README.md's examples are part of the suite: every ``tdnet`` line of its shell blocks parses
against the real command line (command, options, choices, option values), and the examples that
can run here do run: the first line's segment of the bundled clip and the Python API block.

A README line that names an option the CLI no longer has, or a value it refuses, fails here."""

from __future__ import annotations

import re
import shlex

import numpy as np
import pytest
import typer
from faults import REPO, cli

from tdnet_cli.cli.app import app

README = REPO / "README.md"
WEIGHTS = REPO / "weights" / "td4-mini-synth.pt"


def code_blocks(language: str) -> list[str]:
    """The README's fenced blocks tagged ``language`` ("" for untagged ones), in order."""
    blocks, current, tag = [], None, None
    for line in README.read_text().splitlines():
        if line.startswith("```"):
            if current is None:
                current, tag = [], line[3:].strip()
            else:
                if tag == language:
                    blocks.append("\n".join(current) + "\n")
                current = None
        elif current is not None:
            current.append(line)
    return blocks


def tdnet_commands() -> list[list[str]]:
    """The argument list of every ``tdnet ...`` (or ``torchrun ... -m tdnet_cli ...``) command in
    the README's bash blocks; ``a && b`` gives one per part, comments are dropped."""
    commands = []
    for block in code_blocks("bash"):
        for line in block.splitlines():
            words = shlex.split(line, comments=True)
            while words:
                part, words = _until_and(words)
                if part and part[0] == "tdnet":
                    commands.append(part[1:])
                elif part and part[0] == "torchrun" and "tdnet_cli" in part:
                    commands.append(part[part.index("tdnet_cli") + 1 :])
    return commands


def _until_and(words: list[str]) -> tuple[list[str], list[str]]:
    if "&&" in words:
        i = words.index("&&")
        return words[:i], words[i + 1 :]
    return words, []


def parse(args: list[str]) -> None:
    """Parse ``tdnet ARGS`` exactly as the CLI would (types, choices and callbacks included)
    without running the command."""
    group = typer.main.get_command(app)
    root = group.make_context("tdnet", [], resilient_parsing=True)
    command = group.get_command(root, args[0])
    assert command is not None, f"README names a command tdnet does not have: {args[0]}"
    command.make_context(args[0], args[1:], parent=root).close()


def test_readme_has_the_commands_it_documents():
    names = {args[0] for args in tdnet_commands()}
    # the commands a user meets first are shown with an example
    assert {"segment", "eval", "train", "bench", "synth"} <= names


@pytest.mark.parametrize("args", tdnet_commands(), ids=lambda a: " ".join(a)[:60])
def test_every_readme_command_parses(args, monkeypatch):
    # the README shows GPU commands; whether this machine has the GPU is not the README's concern
    monkeypatch.setattr("tdnet_cli.inference.resolve_device", lambda name: None)
    parse(args)


def test_parse_refuses_what_the_cli_refuses():
    # the check above can fail: an unknown option and a bad choice are refused while parsing
    with pytest.raises(Exception, match="--no-such-option"):
        parse(["segment", "x.mp4", "--no-such-option"])
    with pytest.raises(Exception, match="fp61"):
        parse(["segment", "x.mp4", "--precision", "fp61"])


@pytest.mark.slow
def test_first_readme_line_segments_the_bundled_clip(tmp_path):
    """The install-and-run line: its ``tdnet`` part, run as written except that outputs go to a
    temporary folder (-d) instead of beside the example in the checkout."""
    first = code_blocks("bash")[0].splitlines()[0]
    args = next(a for a in tdnet_commands() if " ".join(a) in first)
    assert args[0] == "segment"
    result = cli(*args, "-d", tmp_path, "--json")
    assert result.exit_code == 0, result.stderr
    out = tmp_path / "street.overlay.mp4"
    assert out.is_file() and out.stat().st_size > 10_000


@pytest.mark.slow
def test_python_api_block_runs(monkeypatch):
    """The README's Python API block, run as written on three frames, with the bundled
    weights in place of the released checkpoint it names."""
    (block,) = code_blocks("python")
    assert 'weights="td4-psp18.pkl"' in block
    code = block.replace('weights="td4-psp18.pkl"', f"weights={str(WEIGHTS)!r}").replace(
        'device="auto"', 'device="cpu"'
    )
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (64, 128, 3), dtype=np.uint8) for _ in range(3)]
    scope: dict = {"frames": frames}
    exec(compile(code, str(README), "exec"), scope)  # noqa: S102 (our own README)
    labels = scope["labels"]
    assert labels.shape == (64, 128) and labels.dtype == np.uint8 and labels.max() < 19


def test_readme_layout_names_real_files():
    (layout,) = [b for b in code_blocks("") if b.startswith("tdnet_cli/")]
    named = []
    for line in layout.splitlines()[1:]:
        for word in line.split():  # the leading names of each line, up to its description
            if not re.fullmatch(r"\w+/|\w+\.py,?", word):
                break
            named.append(word.rstrip(","))
    assert len(named) >= 9
    for name in named:
        assert (REPO / "tdnet_cli" / name).exists(), f"README's layout names tdnet_cli/{name}"


def test_readme_first_lines_are_the_two_commands():
    first = code_blocks("bash")[0].strip().splitlines()
    assert len(first) == 2
    assert "tdnet segment" in first[0] and "pytest" in first[1]
    assert "pytest" in (REPO / ".ci" / "run").read_text()
