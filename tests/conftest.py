"""Fixtures shared by the test modules."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch


@pytest.fixture(scope="session")
def runner():
    """Runs ``tdnet`` in this process (``result.stdout``/``stderr`` apart): the suite's one CliRunner,
    tests/faults.py's, which its helpers use too."""
    from faults import runner

    return runner


@pytest.fixture(scope="session")
def synth_data(tmp_path_factory):
    """Makes a tiny synthetic dataset in the Cityscapes layout (``tdnet synth``'s generator, 20-frame
    snippets): ``synth_data((h, w), val=(sequences, seed), ...)`` gives its root, one split per keyword.
    Each distinct request is made once a session; tests that change a dataset copy it first."""
    from tdnet_cli.data.synth import generate_dataset

    made: dict[tuple, Path] = {}

    def make(size: tuple[int, int], **splits: tuple[int, int]) -> Path:
        key = (size, *sorted(splits.items()))
        if key not in made:
            root = tmp_path_factory.mktemp("synth")
            for split, (sequences, seed) in splits.items():  # a split adds its own folders to the root
                generate_dataset(root, sequences=sequences, split=split, size=size, seed=seed, frames_per_sequence=20)
            made[key] = root
        return made[key]

    return make


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
