"""Issue 21: `eval --consistency --compare-per-frame` computes the optical flow once per frame pair
and scores both modes with it (the frames are the same; only the labels differ)."""

from __future__ import annotations

from types import SimpleNamespace

import cv2
import numpy as np
import pytest
from media import encode_rgb

from tdnet_cli import consistency
from tdnet_cli.data.cityscapes import CLASSES
from tdnet_cli.pipeline.consistency_eval import consistency_eval

H, W, FRAMES = 64, 128, 6


@pytest.fixture(scope="module")
def pan_clip(tmp_path_factory):
    """A texture panned 2 pixels a frame, losslessly encoded: real motion for the flow."""
    noise = np.random.default_rng(5).random((H // 8, (W + 2 * FRAMES) // 8 + 1, 3)).astype(np.float32)
    big = cv2.resize(noise, ((W + 2 * FRAMES) // 8 * 8 + 8, H), interpolation=cv2.INTER_CUBIC)
    big = np.clip(255 * big, 0, 255).astype(np.uint8)
    frames = [np.ascontiguousarray(big[:, 2 * t : 2 * t + W]) for t in range(FRAMES)]
    return str(encode_rgb(tmp_path_factory.mktemp("pan") / "pan.mp4", frames))


class MemoryPredictor:
    """Labels from the pixels, by a rule that depends on whether TDNet's memory is on (red // 14
    with it, green // 14 without): the two modes' labels differ, and each frame's are fixed."""

    classes = CLASSES
    name = "memory-dependent"
    input_size = (H, W)

    def __init__(self) -> None:
        self.model = SimpleNamespace(use_memory=True)
        self.notes: list[str] = []

    def new_stream(self) -> SimpleNamespace:
        return SimpleNamespace()

    def reset(self, stream: SimpleNamespace) -> None:
        pass

    def segment(self, image: np.ndarray, stream: SimpleNamespace) -> np.ndarray:
        return (image[..., 0 if self.model.use_memory else 1] // 14).astype(np.uint8)


@pytest.fixture
def predictor():
    return MemoryPredictor()


@pytest.fixture
def flow_calls(monkeypatch):
    """Counts the frame pairs whose flow is estimated (FlowWarper.flow: DIS both ways and the check)."""
    calls = []
    real = consistency.FlowWarper.flow

    def counted(self, a, b):
        calls.append(a.shape)
        return real(self, a, b)

    monkeypatch.setattr(consistency.FlowWarper, "flow", counted)
    return calls


def test_compare_per_frame_estimates_each_pair_once(pan_clip, predictor, flow_calls):
    both = consistency_eval([pan_clip], predictor=predictor, modes=("propagation", "per_frame"))
    assert len(flow_calls) == FRAMES - 1  # not once per mode
    flow_calls.clear()
    alone = {m: consistency_eval([pan_clip], predictor=predictor, modes=(m,)) for m in ("propagation", "per_frame")}
    assert len(flow_calls) == 2 * (FRAMES - 1)  # each mode alone estimates its own
    for m, report in alone.items():
        shared, own = both.inputs[0].results[m], report.inputs[0].results[m]
        # the same figures as each mode scored on its own
        assert np.array_equal(shared.confusion, own.confusion) and shared.pairs == own.pairs == FRAMES - 1
        assert shared.pixels > 0
    # the two modes' labels differ (else this test could not tell a shared flow from a shared meter)
    assert not np.array_equal(
        both.inputs[0].results["propagation"].confusion, both.inputs[0].results["per_frame"].confusion
    )
