"""The conformance recipe (tdnet_cli.conformance) bound to this folder's fixtures, and the assertion."""

from __future__ import annotations

from functools import partial
from pathlib import Path

from tdnet_cli import conformance
from tdnet_cli.conformance import check_frame, normalise, recipe_weights

__all__ = ["FIXTURES", "assert_conforms", "check_frame", "expected", "key_listing", "normalise", "recipe_weights"]

FIXTURES = Path(__file__).parent / "fixtures" / "conformance"
key_listing = partial(conformance.key_listing, FIXTURES)
expected = partial(conformance.expected, FIXTURES)


def assert_conforms(fig: dict, i: int) -> None:
    assert fig["agree"] >= 0.999, f"frame {i}: argmax agrees on {fig['agree']:.4%}"
    assert fig["logit_err"] <= 1e-3, f"frame {i}: sampled logits off by {fig['logit_err']:.2e}"
    assert fig["mean_err"] <= 1e-4 and fig["std_err"] <= 1e-4, f"frame {i}: {fig}"
