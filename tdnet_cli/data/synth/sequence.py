"""Rendering one sequence: ``render_sequence`` (the generator behind ``tdnet synth`` and the
examples) and the checks on its arguments."""

from __future__ import annotations

from collections.abc import Iterator

from tdnet_cli.data import layout
from tdnet_cli.data.synth.labels import SynthFrame
from tdnet_cli.data.synth.render import _Renderer
from tdnet_cli.data.synth.scene import _Scene
from tdnet_cli.errors import UsageError

FPS = 17.0  # Cityscapes snippets are recorded at 17 Hz
MIN_SIZE = 32


def _check_size(size: tuple[int, int]) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in size)
    except (TypeError, ValueError):
        raise UsageError(f"size must be (height, width), got {size!r}") from None
    if h < MIN_SIZE or w < MIN_SIZE:
        raise UsageError(f"size {h}x{w} is too small", hint=f"use at least {MIN_SIZE}x{MIN_SIZE}")
    return h, w


def render_sequence(
    seed: int, size: tuple[int, int] = (1024, 2048), frames: int = layout.SNIPPET_LENGTH, *, fps: float = FPS
) -> Iterator[SynthFrame]:
    """Render ``frames`` consecutive frames of the street drawn from ``seed``.

    Yields ``SynthFrame(rgb, label_ids, instance_ids)``. The same seed gives the same
    street at any size; frame ``layout.ANNOTATED_INDEX`` shows every one of the 19 classes
    by construction (mostly in the middle distance).
    """
    h, w = _check_size(size)
    if frames < 1:
        raise UsageError(f"frames must be at least 1, got {frames}")
    scene = _Scene(seed, frames, fps)
    renderer = _Renderer(scene, h, w)
    for i in range(frames):
        yield renderer.render(i / fps)
