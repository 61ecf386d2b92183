"""Every preset builds and streams; state is explicit; training forward equals streaming."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tdnet_cli.errors import UsageError
from tdnet_cli.inference import Predictor, resolve_device
from tdnet_cli.models import create_model, list_models, optimize_for_inference, random_model
from tdnet_cli.models.complexity import preset_complexity
from tdnet_cli.models.resnet import feature_size
from tdnet_cli.models.winograd import WinogradConv2d, use_winograd
from tdnet_cli.sizes import parse_size
from tdnet_cli.upsample import argmax_classes, upsample_argmax

torch.manual_seed(0)


@pytest.mark.slow
@pytest.mark.parametrize("name", list_models())
def test_every_preset_streams(name):
    model = create_model(name, input_size=(65, 129)).eval()
    n = model.num_paths
    state = model.new_state()
    x = torch.randn(1, 3, 65, 129)
    with torch.inference_mode():
        for i in range(n + 1):
            logits, state = model.step(x, state)
            assert logits.shape == (1, 19, 9, 17)
            assert state.frame_index == i + 1
            assert len(state.memories) == min(i + 1, n - 1)
    params, gflops = preset_complexity(name)
    assert params > 0 and gflops > 0


def test_feature_size_matches_released_layout():
    assert feature_size((769, 1537)) == (97, 193)
    assert feature_size((129, 257)) == (17, 33)
    assert feature_size((1024, 2048)) == (128, 256)


def test_td4_gflops_match_the_published_cost():
    """Measured for the released layouts: ~515 GFLOP/frame for td4-psp18, ~1103 for td2-psp50 (fma = 2 flops)."""
    assert abs(preset_complexity("td4-psp18")[1] - 515) < 5
    assert abs(preset_complexity("td2-psp50")[1] - 1103) < 10


def test_paths_cycle_and_attention_modules_follow_the_path():
    model = create_model("td4-tiny")
    assert [model._attention_name(1, i) for i in range(3)] == ["atn2_3", "atn2_4", "atn2_1"]
    assert [model._attention_name(3, i) for i in range(3)] == ["atn4_1", "atn4_2", "atn4_3"]
    assert [m.group for m in (model.psp1, model.psp2, model.psp3, model.psp4)] == [0, 1, 0, 1]


@pytest.mark.slow
def test_one_model_serves_interleaved_streams():
    model = create_model("td4-tiny").eval()
    a_frames = torch.randn(6, 1, 3, 64, 128)
    b_frames = torch.randn(6, 1, 3, 64, 128)
    with torch.inference_mode():
        sa, sb = model.new_state(), model.new_state()
        inter = []
        for i in range(6):
            la, sa = model.step(a_frames[i], sa)
            lb, sb = model.step(b_frames[i], sb)
            inter.append((la, lb))
        s = model.new_state()
        for i in range(6):
            la, s = model.step(a_frames[i], s)
            assert torch.equal(la, inter[i][0])


@pytest.mark.slow
def test_training_forward_equals_streaming_for_the_last_frame():
    model = create_model("td4-tiny", aux=True).eval()
    clip = torch.randn(2, 4, 3, 64, 128)
    with torch.no_grad():
        out = model(clip, path=2)
        # Streaming: frames 0..3 on paths 3, 0, 1, 2 (the paths before 2, cyclically).
        from tdnet_cli.models.tdnet import StreamState

        state = StreamState(frame_index=3)
        for i in range(4):
            logits, state = model.step(clip[:, i], state)
    assert set(out) == {"out", "sub", "aux"}
    assert torch.allclose(out["out"], logits, atol=1e-5)
    assert out["aux"].shape == (2, 19, 8, 16)
    assert not torch.allclose(out["out"], out["sub"])


@pytest.mark.slow
def test_training_forward_has_gradients_in_every_path():
    model = create_model("td4-tiny", aux=True).train()
    out = model(torch.randn(2, 4, 3, 64, 128), path=0)
    (out["out"].mean() + out["sub"].mean() + out["aux"].mean()).backward()
    for p in range(1, 5):
        assert getattr(model, f"pretrained{p}").conv1.weight.grad is not None


def test_fast_path_equals_plain_path_on_a_random_model():
    model = create_model("td4-tiny").eval()
    with torch.no_grad():  # running stats away from identity, so folding is really tested
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
    fast = optimize_for_inference(model)
    x = torch.randn(5, 1, 3, 64, 128)
    s1, s2 = model.new_state(), fast.new_state()
    with torch.inference_mode():
        for i in range(5):
            a, s1 = model.step(x[i], s1)
            b, s2 = fast.step(x[i].contiguous(memory_format=torch.channels_last), s2)
            assert torch.allclose(a, b, atol=1e-4), (i, (a - b).abs().max())


@pytest.mark.parametrize(
    "size", [(64, 128), (100, 203), (257, 513), (512, 1024), (1024, 2048), (5, 7), (3, 300), (1, 1)]
)
@pytest.mark.slow
@pytest.mark.parametrize("kind", ["noise", "smooth", "strip", "column", "batch"])
def test_upsample_argmax_equals_full_interpolation(size, kind):
    g = torch.Generator().manual_seed(0)
    if kind == "noise":  # a class boundary in almost every cell
        logits = torch.randn(2, 19, 9, 17, generator=g)
    elif kind == "smooth":  # regions, as real segmentations have (cells get subdivided)
        coarse = torch.randn(2, 19, 4, 8, generator=g) * 3
        logits = torch.nn.functional.interpolate(coarse, size=(32, 64), mode="bilinear", align_corners=True)
    elif kind == "strip":  # one row of features
        logits = torch.randn(1, 19, 1, 9, generator=g)
    elif kind == "column":
        logits = torch.randn(1, 19, 9, 1, generator=g)
    else:  # several images, few classes, channels_last as the CPU model returns them
        logits = torch.randn(3, 5, 6, 6, generator=g).contiguous(memory_format=torch.channels_last)
    ref = torch.nn.functional.interpolate(logits, size=size, mode="bilinear", align_corners=True).argmax(1)
    ours = upsample_argmax(logits, size)
    assert ours.dtype == torch.uint8 and ours.shape == ref.shape
    # Equal up to float rounding at near-ties (a handful of pixels in a million).
    assert (ours.long() != ref).sum().item() <= max(2, ref.numel() // 100_000)


def test_upsample_argmax_ties_inside_a_boundary_cell_pick_the_lowest_class():
    # class 2 wins on the left, 5 on the right; in between 3 and 4 tie above both
    logits = torch.full((1, 19, 2, 2), -5.0)
    logits[0, 2, :, 0], logits[0, 5, :, 1] = 1.0, 1.0
    logits[0, 2, :, 1] = logits[0, 5, :, 0] = 0.0
    logits[0, 3:5] = 0.61
    ref = torch.nn.functional.interpolate(logits, size=(8, 41), mode="bilinear", align_corners=True).argmax(1)
    assert set(ref.unique().tolist()) == {2, 3, 5}
    assert torch.equal(upsample_argmax(logits, (8, 41)).long(), ref)
    # only 2 and 5 left (a two-class cell); they tie exactly on the middle column
    logits[0, 3:5] = -5.0
    ref = torch.nn.functional.interpolate(logits, size=(8, 41), mode="bilinear", align_corners=True).argmax(1)
    assert (ref[0, :, 20] == 2).all() and (ref[0, :, 21] == 5).all()
    assert torch.equal(upsample_argmax(logits, (8, 41)).long(), ref)


def test_argmax_classes_is_numpy_argmax_with_ties_to_the_lowest():
    x = np.random.default_rng(0).standard_normal((19, 5000)).astype(np.float32)
    x[4, :100] = x[11, :100] = 9.0  # ties: the lower index wins, as in np.argmax
    x[:, 100:110] = 0.0
    got = argmax_classes(x)
    assert got.dtype == np.uint8
    np.testing.assert_array_equal(got, x.argmax(0))
    assert (got[:100] == 4).all() and (got[100:110] == 0).all()


def test_upsample_argmax_ties_pick_the_lowest_class():
    logits = torch.zeros(1, 19, 4, 6)
    logits[:, 3:5] = 1.0  # classes 3 and 4 tie everywhere
    assert (upsample_argmax(logits, (40, 61)) == 3).all()


def test_predictor_segments_uint8_frames_of_any_size():
    pred = Predictor(random_model("td4-tiny"), device="cpu")
    stream = pred.new_stream()
    frame = np.random.default_rng(0).integers(0, 256, (90, 160, 3), dtype=np.uint8)
    labels = pred.segment(frame, stream)
    assert labels.shape == (90, 160) and labels.dtype == np.uint8 and labels.max() < 19
    assert stream.frames == 1 and stream.state.frame_index == 1
    stream.reset()
    assert stream.state.frame_index == 0 and stream.resets == 1
    batch = pred.segment(np.stack([frame, frame]), pred.new_stream(2))
    assert batch.shape == (2, 90, 160)
    # Each row of a batch is the single frame's result up to float rounding (oneDNN picks its
    # kernels by batch size: ~1e-6 here), so the labels agree wherever the top two classes
    # are further apart than that; a random model can leave a near-tie somewhere.
    one = pred.logits(frame[None], pred.new_stream())
    two = pred.logits(np.stack([frame, frame]), pred.new_stream(2))
    torch.testing.assert_close(two, one.expand_as(two), atol=1e-5, rtol=0)
    top = F.interpolate(one, size=(90, 160), mode="bilinear", align_corners=True).topk(2, dim=1).values[0]
    clear = (top[0] - top[1] > 1e-4).numpy()
    assert clear.mean() > 0.99
    assert np.array_equal(batch[0][clear], labels[clear]) and np.array_equal(batch[1][clear], labels[clear])


@pytest.mark.slow
def test_predictor_bf16_agrees_with_fp32():
    loaded = random_model("td4-tiny")
    frames = np.random.default_rng(1).integers(0, 256, (5, 64, 128, 3), dtype=np.uint8)
    outs = {}
    for prec in ("fp32", "bf16"):
        pred = Predictor(loaded, device="cpu", precision=prec)
        s = pred.new_stream()
        outs[prec] = np.stack([pred.segment(f, s) for f in frames])
    assert (outs["fp32"] == outs["bf16"]).mean() > 0.8


@pytest.mark.slow
def test_predictor_compile_traces_one_function_per_path(eager_compile):
    """--compile: the tensor work of each path is compiled once (the stream's frame counter is
    no guard) and gives the eager outputs; dynamo's eager backend keeps the test fast."""
    loaded = random_model("td4-tiny")
    frames = np.random.default_rng(2).integers(0, 256, (9, 64, 128, 3), dtype=np.uint8)
    eager, compiled = Predictor(loaded, device="cpu"), Predictor(loaded, device="cpu", compile=True)
    s_e, s_c = eager.new_stream(), compiled.new_stream()
    for f in frames:
        a, b = eager.logits(f, s_e), compiled.logits(f, s_c)
        assert torch.allclose(a, b, atol=1e-5)
    assert eager_compile == [0, 1, 2, 3] and s_c.state.frame_index == 9


@pytest.mark.slow
@pytest.mark.parametrize("preset", ["td4-tiny", "psp-tiny"])
def test_cuda_graph_modes_copy_what_the_stream_keeps(monkeypatch, preset):
    """Under reduce-overhead, each replay writes its outputs into the same pooled buffers; the
    stream keeps earlier frames' memories, so they must be copies. A fake compile that returns
    one shared set of output buffers for every path (as a CUDA graph pool can) checks it."""
    from tdnet_cli import inference

    pool: dict[int, torch.Tensor] = {}

    def replayed(fn):
        def run(x, memories):
            logits, memory = fn(x, memories)
            flat = [logits, *(memory if memory is not None else ())]
            out = []
            for i, t in enumerate(flat):  # the "graph's" static outputs, overwritten by every call
                buf = pool.get(i)
                if buf is None or buf.shape != t.shape:
                    buf = pool[i] = torch.empty_like(t)
                out.append(buf.copy_(t))
            return out[0], (type(memory)(*out[1:]) if memory is not None else None)

        return run

    monkeypatch.setattr(inference.torch, "compile", lambda fn, **kw: replayed(fn))
    loaded = random_model(preset)
    frames = np.random.default_rng(3).integers(0, 256, (7, 64, 128, 3), dtype=np.uint8)
    eager = Predictor(loaded, device="cpu")
    graphed = Predictor(loaded, device="cpu", compile="reduce-overhead")
    s_e, s_g = eager.new_stream(), graphed.new_stream()
    kept = []
    for f in frames:
        a, b = eager.logits(f, s_e), graphed.logits(f, s_g)
        kept.append(b)
        torch.testing.assert_close(b, a, atol=1e-5, rtol=0)
        for m_e, m_g in zip(s_e.state.memories, s_g.state.memories, strict=True):  # each earlier frame's own
            for t_e, t_g in zip(m_e, m_g):
                torch.testing.assert_close(t_g, t_e, atol=1e-5, rtol=0)
    assert all(k.data_ptr() != pool[0].data_ptr() for k in kept)  # the caller's logits are copies too


def test_winograd_scratch_serves_inference_mode_and_no_grad_alike():
    """The per-thread scratch outlives the call that made it: made under inference_mode (as a
    Predictor runs), it must still take writes under no_grad, and the other way round."""
    import threading

    conv = torch.nn.Conv2d(8, 8, 3, padding=1)
    wino, x = WinogradConv2d.from_conv(conv).eval(), torch.randn(1, 8, 16, 24)
    with torch.no_grad():
        want = conv(x)
    got = []

    def run():  # a fresh thread: its scratch is made by the first call below
        with torch.inference_mode():
            got.append(wino(x).clone())
        with torch.no_grad():
            got.append(wino(x))

    t = threading.Thread(target=run)
    t.start()
    t.join()
    assert len(got) == 2 and all(torch.allclose(g, want, atol=1e-4) for g in got)


def test_compiled_graphs_run_winograd_layers_eagerly_between_them():
    """keep_out_of_compiled_graphs (what a compiling Predictor calls; not done at import, where
    it would load dynamo, ~1 s): dynamo breaks the graph at a Winograd layer instead of tracing
    its gathers and products (which took inductor over 20 min for one td4-psp18 path)."""
    from tdnet_cli.models.winograd import keep_out_of_compiled_graphs

    conv = torch.nn.Conv2d(8, 8, 3, padding=2, dilation=2)

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.w, self.b = torch.nn.Conv2d(8, 8, 1), WinogradConv2d.from_conv(conv), torch.nn.Conv2d(8, 8, 1)

        def forward(self, x):
            return self.b(self.w(self.a(x).relu())).relu()

    graphs = []

    def backend(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    keep_out_of_compiled_graphs()
    keep_out_of_compiled_graphs()  # idempotent
    net, x = Net().eval(), torch.randn(1, 8, 13, 21)
    with torch.no_grad():
        torch.testing.assert_close(torch.compile(net, backend=backend)(x), net(x), atol=1e-5, rtol=0)
    traced = [str(n.target) for g in graphs for n in g.graph.nodes if n.op == "call_function"]
    assert len(graphs) == 2 and sum("conv2d" in t for t in traced) == 2  # the 1x1 convs, either side
    assert not any("mm" in t for t in traced)  # nothing of the Winograd layer


@pytest.mark.slow
def test_predictor_defaults_and_errors(monkeypatch, tmp_path):
    monkeypatch.setenv("TDNET_WEIGHTS", str(tmp_path / "none.pt"))
    pred = Predictor.create(model="td4-tiny", device="cpu")
    assert pred.name == "td4-tiny" and "random weights" in pred.notes[0]
    with pytest.raises(UsageError, match="unknown model"):
        Predictor.create(model="td9-nope")
    with pytest.raises(UsageError, match="fp16 needs a CUDA device"):
        Predictor.create(model="td4-tiny", device="cpu", precision="fp16")
    with pytest.raises(UsageError, match="unknown precision"):
        Predictor.create(model="td4-tiny", device="cpu", precision="int3")
    with pytest.raises(UsageError, match="unknown compile mode"):
        Predictor.create(model="td4-tiny", device="cpu", compile="fastest")
    compiled = Predictor.create(model="td4-tiny", device="cpu", compile="default")
    assert compiled.compiled and "4 path(s) compiles on its first frame" in compiled.notes[-1]


def test_device_and_size_parsing():
    assert resolve_device("cpu").type == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(UsageError, match="CUDA is not available"):
            resolve_device("cuda")
    with pytest.raises(UsageError):
        resolve_device("tpu")
    assert parse_size("1024x2048") == (1024, 2048)
    assert parse_size(None) is None
    for bad in ("1024", "axb", "8x8"):
        with pytest.raises(UsageError):
            parse_size(bad)


def test_spatial_layer_norm_channels_last_equals_layer_norm():
    from tdnet_cli.models.heads import SpatialLayerNorm

    torch.manual_seed(0)
    ln = SpatialLayerNorm((9, 13))
    with torch.no_grad():
        ln.ln.weight.uniform_(0.5, 1.5)
        ln.ln.bias.uniform_(-0.1, 0.1)
    x = torch.randn(2, 5, 9, 13) * 3 + 1
    ref = torch.nn.functional.layer_norm(x, (9, 13), ln.ln.weight, ln.ln.bias, 1e-5)
    fast = ln(x.contiguous(memory_format=torch.channels_last))
    assert fast.is_contiguous(memory_format=torch.channels_last)
    assert torch.allclose(fast, ref, atol=1e-5)
    xg = x.contiguous(memory_format=torch.channels_last).requires_grad_()
    ln(xg).sum().backward()  # the autograd branch (no in-place) works too
    assert xg.grad is not None and torch.isfinite(xg.grad).all()


def _assert_matches_float64_conv(out: torch.Tensor, conv: torch.nn.Conv2d, x: torch.Tensor) -> None:
    """Within 2e-5 of the output's range of the same conv in float64 (direct fp32: ~2e-6)."""
    exact = torch.nn.functional.conv2d(
        x.double(),
        conv.weight.double(),
        None if conv.bias is None else conv.bias.double(),
        padding=conv.padding,
        dilation=conv.dilation,
    )
    assert out.shape == exact.shape
    assert (out.double() - exact).abs().max() <= 2e-5 * exact.abs().max()


@pytest.mark.parametrize(
    "cin, cout, dilation, size, batch, bias",
    [
        (16, 24, 1, (13, 21), 1, True),  # several blocks, ragged edges
        (8, 8, 2, (3, 5), 2, False),  # smaller than one block, batch of two, no bias
        (12, 20, 4, (37, 50), 1, True),  # dilated as layer4, blocks d rows apart
        (6, 10, 3, (1, 1), 1, True),  # a single pixel: every tap but the centre is padding
    ],
)
def test_winograd_conv_equals_the_direct_conv(cin, cout, dilation, size, batch, bias):
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(cin, cout, 3, padding=dilation, dilation=dilation, bias=bias)
    wino = WinogradConv2d.from_conv(conv)
    x = torch.randn(batch, cin, *size)
    with torch.inference_mode():
        for inp in (x, x.contiguous(memory_format=torch.channels_last)):
            out = wino(inp)
            assert out.is_contiguous(memory_format=torch.channels_last)
            _assert_matches_float64_conv(out, conv, x)


@pytest.mark.parametrize("chunk_values", [1, 36 * 4 * 4 * 6 * 2])  # 1 block row at a time; 2 rows
def test_winograd_conv_in_chunks_of_block_rows_equals_the_direct_conv(monkeypatch, chunk_values):
    from tdnet_cli.models import winograd

    monkeypatch.setattr(winograd, "_CHUNK_VALUES", chunk_values)
    torch.manual_seed(1)
    conv = torch.nn.Conv2d(6, 5, 3, padding=2, dilation=2)
    x = torch.randn(1, 6, 43, 29)  # 6 block rows of 8, the last one ragged
    with torch.inference_mode():
        _assert_matches_float64_conv(WinogradConv2d.from_conv(conv)(x), conv, x)


def test_winograd_conv_takes_the_direct_conv_outside_cpu_fp32_inference():
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(8, 8, 3, padding=2, dilation=2)
    wino = WinogradConv2d.from_conv(conv)
    x = torch.randn(1, 8, 9, 11)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.equal(wino(x), conv(x))  # bf16 autocast: oneDNN's kernels, bit for bit
    xg = x.clone().requires_grad_()
    wino(xg).sum().backward()  # training: an ordinary, differentiable convolution
    assert xg.grad is not None and xg.grad.abs().sum() > 0


def test_use_winograd_accepts_only_wide_same_padded_3x3_convs():
    c = torch.nn.Conv2d
    assert use_winograd(c(256, 256, 3, padding=2, dilation=2))
    assert not use_winograd(c(128, 256, 3, padding=1))  # too narrow to pay
    assert use_winograd(c(128, 256, 3, padding=1), min_channels=128)
    assert not use_winograd(c(256, 256, 3, stride=2, padding=1))
    assert not use_winograd(c(256, 256, 1))
    assert not use_winograd(c(256, 256, 3, padding=1, groups=2))
    assert not use_winograd(c(256, 256, 3, padding=1, dilation=2))  # not 'same' padding
    assert not use_winograd(c(256, 256, 3, padding=1, padding_mode="reflect"))


@pytest.mark.slow
def test_predictor_uses_winograd_for_cpu_fp32(eager_compile):
    """Eager and compiled (the Winograd layers run eagerly between compiled graphs; dynamo's
    eager backend keeps the test fast), not for bf16, not on the reference path."""
    loaded = random_model("td4-psp18", input_size=(65, 129))

    def swapped(pred):
        return sum(isinstance(m, WinogradConv2d) for m in pred.model.modules())

    eager, compiled = Predictor(loaded, device="cpu"), Predictor(loaded, device="cpu", compile=True)
    assert eager.winograd and compiled.winograd and swapped(eager) == swapped(compiled) > 0
    without = {
        name: Predictor(loaded, device="cpu", **kwargs)
        for name, kwargs in (
            ("bf16", {"precision": "bf16"}),
            ("off", {"winograd": False}),
            ("reference", {"optimize": False}),
        )
    }
    for name, pred in without.items():
        assert not pred.winograd and swapped(pred) == 0, name
    plain = without["off"]
    frames = np.random.default_rng(3).integers(0, 256, (5, 65, 129, 3), dtype=np.uint8)
    streams = [p.new_stream() for p in (eager, compiled, plain)]
    for f in frames:
        a, b, c = (p.logits(f, s) for p, s in zip((eager, compiled, plain), streams))
        assert torch.allclose(a, c, atol=1e-4) and torch.allclose(a, b, atol=1e-5)


@pytest.mark.slow
def test_winograd_frames_encoded_on_several_threads_at_once_equal_one_at_a_time():
    """Pipelines encode frames ahead on a pool: each thread has its own Winograd scratch."""
    from concurrent.futures import ThreadPoolExecutor

    pred = Predictor(random_model("td4-psp18", input_size=(97, 161)), device="cpu")
    assert pred.winograd and pred.encodes_ahead
    rng = np.random.default_rng(4)
    xs = [pred.prepare(rng.integers(0, 256, (97, 161, 3), dtype=np.uint8)) for _ in range(8)]
    alone = [pred.encode(x, i % 4).values for i, x in enumerate(xs)]
    with ThreadPoolExecutor(2) as pool:
        together = list(pool.map(lambda i: pred.encode(xs[i], i % 4).values, range(8)))
    for a, b in zip(alone, together):
        assert torch.allclose(a, b, atol=1e-5, rtol=0)
