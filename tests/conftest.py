"""Fixtures shared by the test modules."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="session")
def runner():
    """Runs ``tdnet`` in this process (``result.stdout``/``stderr`` apart): the suite's one CliRunner,
    tests/faults.py's, which its helpers use too."""
    from faults import runner

    return runner


@pytest.fixture
def eager_compile(monkeypatch):
    """Predictor's torch.compile through dynamo's eager backend: traced like the real thing,
    without inductor's minutes of code generation. Gives the path of each function compiled."""
    from tdnet_cli import inference

    real_compile, paths = torch.compile, []

    def compile(fn, **kwargs):
        paths.append(fn.keywords["path"])
        return real_compile(fn, backend="eager", dynamic=False)

    monkeypatch.setattr(inference.torch, "compile", compile)
    return paths


@pytest.fixture
def small_disk(tmp_path):
    """A folder on its own tiny filesystem (a 1 MiB tmpfs): writing past it fails with ENOSPC,
    as a full disk does. Needs root (CI runs as root); skipped where mounting is refused."""
    import subprocess

    mount = tmp_path / "small-disk"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True, check=False
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True, check=False)
