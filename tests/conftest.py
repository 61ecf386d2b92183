"""Fixtures shared by the test modules."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture
def eager_compile(monkeypatch):
    """Predictor's torch.compile through dynamo's eager backend: traced like the real thing,
    without inductor's minutes of code generation. Gives the path of each function compiled."""
    import tdnet_cli.inference as inference

    real_compile, paths = torch.compile, []

    def compile(fn, **kwargs):
        paths.append(fn.keywords["path"])
        return real_compile(fn, backend="eager", dynamic=False)

    monkeypatch.setattr(inference.torch, "compile", compile)
    return paths
