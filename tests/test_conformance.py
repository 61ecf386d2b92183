"""Our models reproduce the authors' reference outputs, frame by frame, warm-up included."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conformance import assert_conforms, check_frame, expected, key_listing, normalise, recipe_weights

from tdnet_cli.inference import Predictor
from tdnet_cli.models import LoadedModel, create_model, optimize_for_inference
from tdnet_cli.models.tdnet import TDNet
from tdnet_cli.models.winograd import WinogradConv2d

PRESETS = ["td4-psp18", "td2-psp50"]


@pytest.fixture(scope="module", params=PRESETS)
def small_model(request):
    preset = request.param
    model = create_model(preset, input_size=(129, 257)).eval()
    model.load_state_dict(recipe_weights(key_listing(preset, small=True)), strict=True)
    return preset, model


def run_stream(model, frames: np.ndarray, *, channels_last: bool = False) -> list[torch.Tensor]:
    state = model.new_state(frames.shape[0] if frames.ndim == 5 else 1)
    outs = []
    with torch.inference_mode():
        for i in range(frames.shape[-4]):
            x = normalise(frames[:, i] if frames.ndim == 5 else frames[i : i + 1])
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            logits, state = model.step(x, state)
            outs.append(F.interpolate(logits, size=(129, 257), mode="bilinear", align_corners=True))
    return outs


@pytest.mark.slow
def test_reference_path_reproduces_authors_outputs(small_model):
    preset, model = small_model
    ref = expected(preset)
    outs = run_stream(model, ref["inputs"])
    for i, up in enumerate(outs):
        assert_conforms(check_frame(up[0], ref, i), i)


@pytest.mark.slow
@pytest.mark.parametrize("winograd", [False, True], ids=["direct", "winograd"])
def test_fast_path_reproduces_authors_outputs(small_model, winograd):
    preset, model = small_model
    ref = expected(preset)
    # min_channels=0: every 3x3 stride-1 conv of the model runs as Winograd products
    fast = optimize_for_inference(model, winograd=winograd, winograd_min_channels=0)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fast.modules()), "BN left unfolded"
    swapped = sum(isinstance(m, WinogradConv2d) for m in fast.modules())
    assert (swapped >= 10) if winograd else swapped == 0
    outs = run_stream(fast, ref["inputs"], channels_last=True)
    for i, up in enumerate(outs):
        assert_conforms(check_frame(up[0], ref, i), i)


@pytest.mark.slow
def test_two_streams_batched_in_lockstep(small_model):
    """Batch dim = streams: stream 0 gets the reference frames, stream 1 them reversed."""
    preset, model = small_model
    ref = expected(preset)
    frames = ref["inputs"]
    both = np.stack([frames, frames[::-1]])
    outs = run_stream(optimize_for_inference(model, winograd=True, winograd_min_channels=0), both, channels_last=True)
    alone = run_stream(model, np.ascontiguousarray(frames[::-1]))
    for i, up in enumerate(outs):
        assert_conforms(check_frame(up[0], ref, i), i)
        assert torch.allclose(up[1], alone[i][0], atol=1e-3)


@pytest.mark.slow
def test_predictor_reproduces_authors_outputs(small_model):
    """The user-facing Predictor (fast path, uint8 in) on frames already at the input size."""
    preset, model = small_model
    ref = expected(preset)
    pred = Predictor(LoadedModel(model=model, preset=preset), device="cpu")
    stream = pred.new_stream()
    for i in range(len(ref["inputs"])):
        logits = pred.logits(ref["inputs"][i], stream)
        up = F.interpolate(logits, size=(129, 257), mode="bilinear", align_corners=True)[0]
        assert_conforms(check_frame(up, ref, i), i)
        labels = pred.segment(ref["inputs"][i], pred.new_stream()) if i == 0 else None
        if labels is not None:
            assert labels.shape == (129, 257) and labels.dtype == np.uint8


@pytest.mark.slow
def test_dropping_propagation_breaks_conformance(small_model):
    """The checks are sharp: without the memory the first full-queue frame disagrees."""
    preset, model = small_model
    ref = expected(preset)
    n = model.num_paths
    state = model.new_state()
    with torch.inference_mode():
        for i in range(n):
            x = normalise(ref["inputs"][i : i + 1])
            logits, state = model.step(x, state if i < n - 1 else model.new_state().__class__(frame_index=i))
    up = F.interpolate(logits, size=(129, 257), mode="bilinear", align_corners=True)[0]
    assert check_frame(up, ref, n - 1)["agree"] < 0.95


@pytest.mark.parametrize("preset", ["td4-psp18", "td2-psp50", "psp101"])
def test_full_size_layout_is_key_for_key(preset):
    """The released state dicts' keys, order and shapes, at the released input size."""
    with torch.device("meta"):
        model = create_model(preset)
    listing = key_listing(preset)
    ours = [(k, list(v.shape)) for k, v in model.state_dict().items()]
    assert ours == [(k, s) for k, s, _ in listing]
    if isinstance(model, TDNet):
        assert model.input_size == (769, 1537) and model.feature_size == (97, 193)
