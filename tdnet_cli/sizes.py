"""Sizes written HEIGHTxWIDTH on the command line: the one home of their syntax and checks.

Nothing here imports torch, so parsing an option never loads it.
"""

from __future__ import annotations

import re

from tdnet_cli.errors import UsageError

__all__ = ["MAX_SIDE", "SIZE_HINT", "parse_hw", "parse_size"]

MAX_SIDE = 1 << 20  # a million pixels a side: beyond any camera or image format
SIZE_HINT = "write it as HEIGHTxWIDTH, e.g. 1024x2048"
_STRICT = re.compile(r"^([0-9]+)x([0-9]+)$")


def parse_hw(text: str, option: str = "--size") -> tuple[int, int]:
    """Strictly ``HxW`` (digits, a lower-case x, digits), e.g. ``1024x2048``: `synth`'s frame size."""
    m = _STRICT.match(text)
    if m is None:
        raise UsageError(f"bad {option} {text!r}", hint=SIZE_HINT)
    return int(m[1]), int(m[2])


def parse_size(text: str | None) -> tuple[int, int] | None:
    """A model input size ``"HxW"`` (also ``HXW`` or ``H,W``) -> (H, W); None stays None. Whether a
    size fits in memory is checked where the model is built for it (``check_memory``), when the
    model is known."""
    if text is None:
        return None
    try:
        h, w = (int(v) for v in text.lower().replace(",", "x").split("x"))
    except ValueError:
        raise UsageError(f"bad size {text!r}", hint=SIZE_HINT) from None
    if h < 16 or w < 16:
        raise UsageError(f"size {text!r} is too small", hint="use at least 16x16")
    if h > MAX_SIDE or w > MAX_SIDE:
        raise UsageError(f"size {text!r} is absurdly large (more than {MAX_SIDE} pixels a side)", hint=SIZE_HINT)
    return h, w
