"""Helpers for the hostile-user tests (tests/test_faults*.py): run the CLI in process or as a
real process, check that a failure is one line with the documented exit code, and compare
folders byte for byte before and after."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from tdnet_cli.cli.app import app

runner = CliRunner()  # the suite's one; tests get it as the `runner` fixture (conftest.py)
REPO = Path(__file__).resolve().parent.parent


def cli(*args: str | os.PathLike, env: dict[str, str] | None = None, input: str | None = None):
    """``tdnet ARGS`` in this process (fast); ``result.stdout``/``stderr`` are separate."""
    return runner.invoke(app, [str(a) for a in args], env=env, input=input)


def run_tdnet(
    *args: str | os.PathLike,
    cwd: str | os.PathLike | None = None,
    timeout: float = 300,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess:
    """``python -m tdnet_cli ARGS`` as a real process (signals, the kernel, a real traceback)."""
    full_env = {**os.environ, "COLUMNS": "200", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "tdnet_cli", *map(str, args)],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        check=False,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def exit_code(result) -> int:
    return result.exit_code if hasattr(result, "exit_code") else result.returncode


def assert_one_error(result, code: int, *needles: str) -> str:
    """Exit ``code``, no traceback, exactly one ``error:`` line on stderr holding every needle
    (warnings may precede it); returns that line."""
    rc, err = exit_code(result), result.stderr
    assert rc == code, f"exit {rc} != {code}\nstdout: {result.stdout}\nstderr: {err}"
    assert "Traceback" not in err, err
    errors = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1, err
    others = [ln for ln in err.splitlines() if ln.strip() and not ln.startswith(("error:", "warning:"))]
    assert not others, err
    for needle in needles:
        assert needle in errors[0], f"{needle!r} not in {errors[0]!r}"
    return errors[0]


def snapshot(root: str | os.PathLike) -> dict[str, bytes | None]:
    """Every file and folder under ``root`` (relative path -> bytes; None for a folder)."""
    root = Path(root)
    out: dict[str, bytes | None] = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        out[rel] = None if path.is_dir() and not path.is_symlink() else path.read_bytes()
    return out


def final_names(root: str | os.PathLike) -> list[str]:
    """Files and folders under ``root`` that are not hidden temporaries (what a user would take as output)."""
    return sorted(
        str(p.relative_to(root))
        for p in Path(root).rglob("*")
        if not any(part.startswith(".") for part in p.relative_to(root).parts)
    )
