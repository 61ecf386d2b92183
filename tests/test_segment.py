"""`tdnet segment`: the pipeline and the command, on tiny generated clips (no network)."""

from __future__ import annotations

import importlib
import json
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from faults import cli
from media import H, W, encode_rgb, ffmpeg, make_clip, probe

from tdnet_cli.cli.app import app
from tdnet_cli.data.cityscapes import CLASSES, PALETTE, train_id_to_label_id
from tdnet_cli.errors import TdnetError, UsageError
from tdnet_cli.pipeline import (
    ProgressHook,
    SegmentOptions,
    StreamPredictor,
    device_for_rank,
    expand_inputs,
    plan_outputs,
    resolve_shard,
    segment,
    select_shard,
)
from tdnet_cli.video import CutDetector, Encoding, PngSequenceWriter, VideoReader

# --------------------------------------------------------------------------- helpers


def scene(n: int, kind: int, h: int = H, w: int = W) -> list[np.ndarray]:
    """Smoothly panning synthetic shots: kind 0 dark horizontal ramp, kind 1 bright checker."""
    yy, xx = np.mgrid[0:h, 0:w]
    out = []
    for t in range(n):
        if kind == 0:
            g = ((xx + 2 * t) % w) * 100 // w
            img = np.stack([g, g // 2, g // 3], -1)
        else:
            g = 150 + 100 * ((((xx + 2 * t) // 16) + (yy // 16)) % 2)
            img = np.stack([g, 255 - g // 3, g], -1)
        out.append(np.ascontiguousarray(img.astype(np.uint8)))
    return out


def read_pngs(folder: Path) -> dict[str, np.ndarray]:
    return {p.stem: cv2.imread(str(p), cv2.IMREAD_UNCHANGED) for p in sorted(folder.glob("*.png"))}


class FakeStream:
    def __init__(self) -> None:
        self.frames = 0
        self.resets = 0
        self.reset_at: list[int] = []


class FakePredictor:
    """A :class:`StreamPredictor` with a fixed per-pixel rule: train id = red // 14 (0..18).

    Its "logits" are those labels at the model input size; ``fail_at`` raises a GPU
    out-of-memory error (a failed input), ``bug_at`` a plain RuntimeError (a bug, which
    must propagate) and ``interrupt_at`` Ctrl-C, at that model step."""

    device = torch.device("cpu")
    num_paths = 2
    classes = CLASSES
    palette = PALETTE
    input_size = (H, W)
    encodes_ahead = False

    def __init__(self, fail_at: int | None = None, interrupt_at: int | None = None, bug_at: int | None = None) -> None:
        self.fail_at, self.interrupt_at, self.bug_at = fail_at, interrupt_at, bug_at
        self.calls = 0
        self.streams: list[FakeStream] = []
        self.notes: list[str] = []

    def new_stream(self, batch: int = 1) -> FakeStream:
        self.streams.append(FakeStream())
        return self.streams[-1]

    def reset(self, stream: FakeStream) -> None:
        stream.resets += 1
        stream.reset_at.append(stream.frames)

    def prepare(self, frames: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(frames))

    def logits(self, x: torch.Tensor, stream: FakeStream) -> torch.Tensor:
        if self.calls == self.fail_at:
            raise torch.OutOfMemoryError("model exploded")
        if self.calls == self.bug_at:
            raise RuntimeError("a bug")
        if self.calls == self.interrupt_at:
            raise KeyboardInterrupt
        self.calls += 1
        stream.frames += 1
        return x[..., 0] // 14

    def encode(self, x: torch.Tensor, path: int) -> torch.Tensor:
        raise AssertionError("the pipeline encodes ahead only where encodes_ahead says so")

    def finish(self, encoded: torch.Tensor, stream: FakeStream) -> torch.Tensor:
        raise AssertionError("the pipeline encodes ahead only where encodes_ahead says so")

    def to_labels(self, logits: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
        labels = logits.numpy().astype(np.uint8)
        if labels.shape[1:] != tuple(size):
            labels = np.stack([cv2.resize(a, (size[1], size[0]), interpolation=cv2.INTER_NEAREST) for a in labels])
        return labels


def run(inputs, *, predictor, progress=None, **options):
    """:func:`segment` with its :class:`SegmentOptions` given as keywords."""
    return segment(inputs, predictor=predictor, options=SegmentOptions(**options), progress=progress)


@pytest.fixture(scope="module")
def tiny():
    """The real Predictor with a fixed random td4-tiny (64x128 input)."""
    from tdnet_cli.inference import Predictor

    torch.manual_seed(0)
    return Predictor.create(model="td4-tiny", device="cpu")


@pytest.fixture
def fake_cli(monkeypatch):
    """Make the command build a FakePredictor (fast, deterministic) instead of a model."""
    from tdnet_cli.inference import Predictor

    made: list[FakePredictor] = []

    def create(**kwargs):
        made.append(FakePredictor())
        made[-1].kwargs = kwargs
        return made[-1]

    monkeypatch.setattr(Predictor, "create", staticmethod(create))
    return made


def invoke(*args: str, input: str | None = None):
    return cli("segment", *args, input=input)


def error_lines(result) -> list[str]:
    return [ln for ln in result.stderr.splitlines() if ln.startswith("error:")]


def names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# --------------------------------------------------------------------------- with the real model


def test_overlay_matches_input_frames_fps_size_and_audio(tmp_path, tiny):
    src = make_clip(tmp_path / "in.mp4", 10, audio=True)
    report = run([src], predictor=tiny, out_dir=tmp_path / "out", legend=True)
    assert report.ok and report.frames == 10
    out = tmp_path / "out" / "in.overlay.mp4"
    assert report.outputs == [str(out)]
    assert probe(out) == probe(src) == (10, W, H, 25, True)
    assert names(tmp_path / "out") == ["in.overlay.mp4"]  # no partials left


def test_encoding_options_reach_x264(tmp_path, tiny):
    src = make_clip(tmp_path / "in.mp4", 6)
    run([src], predictor=tiny, out_dir=tmp_path / "a", encoding=Encoding("ultrafast", 40))
    run([src], predictor=tiny, out_dir=tmp_path / "b")
    a, b = ((tmp_path / d / "in.overlay.mp4").read_bytes() for d in "ab")
    # x264 writes its settings into the stream: the options we passed, and no others.
    assert b"crf=40.0" in a and b"crf=20.0" in b
    assert b"subme=0" in a and b"subme=0" not in b  # ultrafast turns sub-pixel refinement off
    for bad in ({"preset": "fastest"}, {"crf": 52}, {"encoder": "h265"}):
        with pytest.raises(UsageError):
            SegmentOptions(encoding=Encoding(**bad))


def test_nvenc_and_nvdec_run_or_are_refused_up_front(tmp_path, tiny):
    from tdnet_cli.video.hw import nvdec_problem, nvenc_problem

    src = make_clip(tmp_path / "in.mp4", 6)
    base = run([src], predictor=tiny, save=["labels"], out_dir=tmp_path / "sw", cut_detect=False)
    assert base.ok
    for kwargs, problem, name in (
        ({"encoding": Encoding(encoder="nvenc")}, nvenc_problem(), "NVENC"),
        ({"hw_decode": True}, nvdec_problem(0), "NVDEC"),
    ):
        out = tmp_path / name
        if problem is None:  # a machine with the engine: the same clip comes out
            report = run([src], predictor=tiny, save=["overlay", "labels"], out_dir=out, cut_detect=False, **kwargs)
            assert report.ok and probe(out / "in.overlay.mp4")[:3] == (6, W, H)
            same, want = read_pngs(out / "in.labels"), read_pngs(tmp_path / "sw" / "in.labels")
            assert same.keys() == want.keys() and all(np.array_equal(same[k], want[k]) for k in want)
            continue
        with pytest.raises(UsageError, match=name) as err:  # before any output folder or file is made
            run([src], predictor=tiny, out_dir=out, **kwargs)
        assert problem in str(err.value) and not out.exists()


@pytest.mark.slow
def test_label_pngs_equal_model_argmax(tmp_path, tiny):
    src = make_clip(tmp_path / "in.mp4", 6)
    report = run([src], predictor=tiny, save=["labels", "labelids", "color"], out_dir=tmp_path, cut_detect=False)
    assert report.ok
    # Videos are decoded to YUV 4:2:0 and the model's input is converted from the planes
    # at its own size: the labels are exactly what the predictor gives for that input.
    stream = tiny.new_stream()
    expected = {
        f.name: tiny.segment(f.rgb(tiny.input_size), stream, size=f.size) for f in VideoReader(str(src), yuv=True)
    }
    labels = read_pngs(tmp_path / "in.labels")
    ids = read_pngs(tmp_path / "in.labelids")
    assert list(labels) == ["000000", "000001", "000002", "000003", "000004", "000005"] == list(expected)
    for name, want in expected.items():
        assert labels[name].dtype == np.uint8 and labels[name].shape == (H, W)
        assert np.array_equal(labels[name], want)
        assert np.array_equal(ids[name], train_id_to_label_id(want))
    assert probe(tmp_path / "in.color.mp4")[:3] == (6, W, H)
    # The RGB route (decode_yuv=False) gives the predictor ffmpeg's RGB frames unchanged.
    report = run([src], predictor=tiny, save=["labels"], out_dir=tmp_path / "rgb", cut_detect=False, decode_yuv=False)
    stream = tiny.new_stream()
    rgb_labels = read_pngs(tmp_path / "rgb" / "in.labels")
    agree = []
    for f in VideoReader(str(src)):
        want = tiny.segment(f.image, stream)
        assert np.array_equal(rgb_labels[f.name], want)
        agree.append(float((want == labels[f.name]).mean()))
    # the two routes' inputs differ by rounding and chroma filtering only (a few levels)
    assert min(agree) > 0.9, agree


def test_folder_and_lossless_video_give_the_same_labels(tmp_path, tiny):
    frames = scene(5, 0)
    folder = tmp_path / "seq"
    folder.mkdir()
    for i, f in enumerate(frames):
        cv2.imwrite(str(folder / f"seq_{i:06d}_leftImg8bit.png"), cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    video = encode_rgb(tmp_path / "seq.mkv", frames)
    out_f, out_v = tmp_path / "of", tmp_path / "ov"
    assert run([folder], predictor=tiny, save=["labels", "color", "overlay"], out_dir=out_f).ok
    assert run([video], predictor=tiny, save=["labels"], out_dir=out_v).ok
    from_folder, from_video = read_pngs(out_f / "seq.labels"), read_pngs(out_v / "seq.labels")
    assert list(from_folder) == [f"seq_{i:06d}_leftImg8bit" for i in range(5)]  # names follow the frames
    assert len(from_video) == 5
    for a, b in zip(from_folder.values(), from_video.values()):
        assert np.array_equal(a, b)
    assert len(read_pngs(out_f / "seq.color")) == 5  # colour maps of a folder are PNGs
    assert probe(out_f / "seq.overlay.mp4")[:4] == (5, W, H, 17)  # folders default to 17 fps


def first_frame(path, **kwargs):
    """The first frame of a video; the decoder is stopped, not left blocked on a full pipe."""
    with VideoReader(str(path), **kwargs) as reader:
        return next(iter(reader))


@pytest.mark.slow
def test_cpu_tdnet_steps_are_encoded_ahead_on_a_pool(tmp_path, tiny, monkeypatch):
    # The state-free part of each step runs on the encoder pool, two frames at once at most,
    # and encode + finish equals step exactly.
    assert tiny.encodes_ahead
    seen, running, most = [], [0], [0]
    real = tiny.encode

    def encode(x, path):
        running[0] += 1
        most[0] = max(most[0], running[0])
        seen.append((threading.current_thread().name, path))
        try:
            return real(x, path)
        finally:
            running[0] -= 1

    monkeypatch.setattr(tiny, "encode", encode)
    src = make_clip(tmp_path / "in.mp4", 9)
    report = run([src], predictor=tiny, save=["labels"], out_dir=tmp_path, cut_detect=False, threads=4)
    assert report.ok
    assert [p for _, p in seen] == [i % tiny.num_paths for i in range(9)]
    assert all(name.startswith("tdnet-encode") for name, _ in seen) and most[0] <= 2
    assert report.results[0].threads == 4  # --threads counts all the model's threads: 2 frames x 2
    monkeypatch.undo()
    x = tiny.prepare(first_frame(src).image[None])
    a, b = tiny.new_stream(), tiny.new_stream()
    for _ in range(6):  # past the warm-up, so the memory is used
        assert torch.equal(tiny.finish(tiny.encode(x, tiny.model.next_path(a.state)), a), tiny.step(x, b))
    with pytest.raises(TdnetError):
        tiny.finish(tiny.encode(x, 3), a)  # a frame encoded for the wrong path is refused


@pytest.mark.slow
def test_scene_cut_resets_the_stream(tmp_path, tiny):
    spliced = encode_rgb(tmp_path / "spliced.mkv", scene(6, 0) + scene(6, 1))
    report = run([spliced], predictor=tiny, save=["labels"], out_dir=tmp_path / "a")
    assert report.results[0].cuts == 1
    # Frames are encoded ahead on other threads, each for the path it will meet: after the
    # cut the second shot starts at path 0 with an empty memory, as a fresh stream would.
    frames = list(VideoReader(str(spliced)))
    expected = []
    for shot in (frames[:6], frames[6:]):
        stream = tiny.new_stream()
        expected += [tiny.segment(f.image, stream) for f in shot]
    got = list(read_pngs(tmp_path / "a" / "spliced.labels").values())
    assert len(got) == 12 and all(np.array_equal(a, b) for a, b in zip(got, expected))
    fake = FakePredictor()
    run([spliced], predictor=fake, save=["labels"], out_dir=tmp_path / "b")
    assert fake.streams[0].reset_at == [6]  # reset exactly before the first frame of the new shot
    fake = FakePredictor()
    run([spliced], predictor=fake, save=["labels"], out_dir=tmp_path / "c", cut_detect=False)
    assert fake.streams[0].resets == 0
    # the same shots as ordinary 4:2:0 video: the cut test reads the luma plane
    yuv = encode_rgb(
        tmp_path / "spliced.mp4",
        scene(6, 0) + scene(6, 1),
        codec=("-c:v", "libx264", "-pix_fmt", "yuv420p", "-crf", "18"),
    )
    assert first_frame(yuv, yuv=True).yuv is not None
    fake = FakePredictor()
    run([yuv], predictor=fake, save=["labels"], out_dir=tmp_path / "d")
    assert fake.streams[0].reset_at == [6]


def test_yuv_rendering_matches_the_rgb_route(tmp_path):
    from tdnet_cli.render import Renderer
    from tdnet_cli.video import VideoWriter

    # a smooth in-gamut frame: RGB clipping of saturated test patterns would differ between routes
    src = encode_rgb(tmp_path / "in.mp4", scene(1, 0), codec=("-c:v", "libx264", "-pix_fmt", "yuv420p"))
    frame = first_frame(src, yuv=True)
    assert frame.yuv is not None
    labels = np.ascontiguousarray(np.broadcast_to((np.arange(W) * 19 // W).astype(np.uint8), (H, W)))
    labels[40:, 90:] = 255  # ignored: shown unblended
    ignored = labels == 255

    def render(legend: bool) -> dict[str, np.ndarray]:
        writers = {k: VideoWriter(tmp_path / f"{k}{legend}.mp4", W, H, 25) for k in ("overlay", "color")}
        try:
            return Renderer(writers, PALETTE, CLASSES, alpha=0.5, legend=legend).prepare(frame, labels)
        finally:
            for w in writers.values():
                w.abort()

    done = render(False)
    rgb = Renderer({}, PALETTE, CLASSES, alpha=0.5, legend=False)
    want = cv2.cvtColor(
        cv2.cvtColor(rgb._overlay_rgb(frame.image, labels), cv2.COLOR_RGB2YUV_I420), cv2.COLOR_YUV2RGB_I420
    )
    got = cv2.cvtColor(done["overlay"].reshape(H * 3 // 2, W), cv2.COLOR_YUV2RGB_I420)
    diff = np.abs(got.astype(int) - want).max(2)
    # Chroma is one sample per 2x2 block: the routes differ only where a block holds two
    # labels (a class edge on an odd column), so compare exactly-ish everywhere else.
    blocks = labels.reshape(H // 2, 2, W // 2, 2)
    one_label = (blocks == blocks[:, :1, :, :1]).all(axis=(1, 3))
    inside = np.repeat(np.repeat(one_label, 2, 0), 2, 1)
    assert inside.mean() > 0.8 and diff[inside].max() <= 4 and diff[inside].mean() < 1.5, diff[inside].max()
    y = done["overlay"][: H * W].reshape(H, W)
    assert np.array_equal(y[ignored], frame.yuv.y[ignored])  # the frame's own luma, untouched
    assert not np.array_equal(y[~ignored], frame.yuv.y[~ignored])
    colour = cv2.cvtColor(done["color"].reshape(H * 3 // 2, W), cv2.COLOR_YUV2RGB_I420)
    keep = inside & ~ignored
    assert np.abs(colour[keep].astype(int) - np.array(PALETTE, dtype=int)[labels[keep]]).max() <= 4
    legend = render(True)["overlay"][: H * W].reshape(H, W)
    changed = np.argwhere(legend != y)
    # a box at the top left (at this tiny size it is the frame's full height), the rest untouched
    assert len(changed) and changed.min(0).tolist() == [0, 0] and changed[:, 1].max() < W * 3 // 4


def test_cli_end_to_end_with_a_preset(tmp_path):
    src = make_clip(tmp_path / "in.mp4", 4)
    result = invoke(src, "--model", "td4-tiny", "--device", "cpu", "-s", "overlay", "-s", "labels", "--json")
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["ok"] and summary["frames"] == 4 and summary["inputs"] == 1
    assert sorted(summary["outputs"]) == [str(tmp_path / "in.labels"), str(tmp_path / "in.overlay.mp4")]


# --------------------------------------------------------------------------- pipeline behaviour (fake model)


def test_cut_detector_ignores_motion_and_finds_cuts(tmp_path):
    det = CutDetector()
    assert not any(det(f) for f in scene(10, 0))
    det.reset()
    assert not any(det(f) for f in scene(10, 1))
    assert det(scene(1, 0)[0])
    det.reset()
    frames = [f.image for f in VideoReader(str(make_clip(tmp_path / "m.mp4", 25)))]
    assert not any(det(f) for f in frames)  # testsrc: moving gradient and counter, one shot


def test_exception_mid_run_leaves_no_output(tmp_path):
    src = make_clip(tmp_path / "in.mp4", 10)
    out = tmp_path / "out"
    report = run([src], predictor=FakePredictor(fail_at=4), save=["overlay", "color", "labels"], out_dir=out)
    assert not report.ok and "model exploded" in report.failures[0].error
    assert names(out) == []
    with pytest.raises(KeyboardInterrupt):  # Ctrl-C: propagates, after cleaning up
        run([src], predictor=FakePredictor(interrupt_at=3), save=["overlay", "labels"], out_dir=out)
    assert names(out) == []
    with pytest.raises(RuntimeError, match="a bug"):  # a bug is not a bad input: it propagates, cleaned up
        run([src], predictor=FakePredictor(bug_at=2), save=["overlay", "labels"], out_dir=out)
    assert names(out) == []


def test_predictors_implement_the_pipelines_protocol(tiny):
    assert isinstance(FakePredictor(), StreamPredictor) and isinstance(tiny, StreamPredictor)


def test_writer_thread_failure_fails_the_input_cleanly(tmp_path, monkeypatch):
    src = make_clip(tmp_path / "in.mp4", 10)
    original = PngSequenceWriter.write

    def flaky(self, name, image, **kw):
        if name == "000003":
            raise OSError(28, "No space left on device")
        original(self, name, image, **kw)

    monkeypatch.setattr(PngSequenceWriter, "write", flaky)
    report = run([src], predictor=FakePredictor(), save=["overlay", "labels"], out_dir=tmp_path / "o")
    assert report.failures and "No space left" in report.failures[0].error
    assert names(tmp_path / "o") == []


def test_batch_continues_past_bad_inputs(tmp_path):
    good1, good2 = make_clip(tmp_path / "a.mp4", 3), make_clip(tmp_path / "c.mp4", 3)
    (tmp_path / "b.mp4").write_text("junk")
    seen = []

    class Hook(ProgressHook):
        def finish_input(self, result):
            seen.append((result.input, result.status))

    report = run([good1, tmp_path / "b.mp4", good2], predictor=FakePredictor(), out_dir=tmp_path / "o", progress=Hook())
    assert [s for _, s in seen] == ["ok", "failed", "ok"]
    assert names(tmp_path / "o") == ["a.overlay.mp4", "c.overlay.mp4"]
    d = report.to_dict()
    assert d["failed"] == 1 and d["succeeded"] == 2 and d["frames"] == 6


def test_skip_existing_and_overwrite(tmp_path):
    src = make_clip(tmp_path / "in.mp4", 3)
    assert run([src], predictor=FakePredictor(), save=["overlay"]).ok  # beside the input
    report = run([src], predictor=FakePredictor(), save=["overlay", "labels"], skip_existing=True)
    assert report.ok and report.outputs == [str(tmp_path / "in.labels")]
    report = run([src], predictor=FakePredictor(), save=["overlay", "labels"], skip_existing=True)
    assert report.results[0].status == "skipped" and report.frames == 0
    report = run([src], predictor=FakePredictor(), save=["labels"])
    assert not report.ok and "exists" in report.failures[0].error
    assert run([src], predictor=FakePredictor(), save=["labels"], overwrite=True).ok


def test_odd_frame_size_is_padded_for_h264(tmp_path):
    src = encode_rgb(tmp_path / "odd.mkv", scene(3, 1, h=33, w=65))
    report = run([src], predictor=FakePredictor(), save=["overlay", "labels"], out_dir=tmp_path / "o")
    assert report.ok
    assert probe(tmp_path / "o" / "odd.overlay.mp4")[:3] == (3, 66, 34)
    assert next(iter(read_pngs(tmp_path / "o" / "odd.labels").values())).shape == (33, 65)


def test_output_planning(tmp_path):
    (tmp_path / "seq").mkdir()
    plans = plan_outputs(str(tmp_path / "v.mp4"), ["overlay", "color", "labels", "labelids"])
    assert [p.name for p in plans.values()] == ["v.overlay.mp4", "v.color.mp4", "v.labels", "v.labelids"]
    plans = plan_outputs(str(tmp_path / "seq"), ["color"], out_dir=tmp_path / "o")
    assert plans["color"] == tmp_path / "o" / "seq.color"
    plans = plan_outputs("rtsp://cam.local/live/stream1", ["overlay"], out_dir="x")
    assert plans["overlay"] == Path("x/stream1.overlay.mp4")
    plans = plan_outputs("v.mp4", ["overlay", "labels"], output=tmp_path / "r.mp4")
    assert plans == {"overlay": tmp_path / "r.mp4", "labels": tmp_path / "r.labels"}


def test_inputs_globs_and_shards(tmp_path):
    for i in (1, 2, 10):
        (tmp_path / f"v{i}.mp4").touch()
    specs = expand_inputs([str(tmp_path / "v*.mp4"), str(tmp_path / "v1.mp4"), "http://h/x.mp4", "nope*.mp4"])
    assert [Path(s).name for s in specs] == ["v1.mp4", "v2.mp4", "v10.mp4", "x.mp4", "nope*.mp4"]
    assert select_shard(list("abcde"), (1, 2)) == ["b", "d"]
    assert select_shard(list("abcde"), None) == list("abcde")
    assert resolve_shard("2/3", {}) == (2, 3)
    assert resolve_shard(None, {"RANK": "1", "WORLD_SIZE": "4"}) == (1, 4)
    assert resolve_shard(None, {"RANK": "0", "WORLD_SIZE": "1"}) is None
    assert device_for_rank("cpu", {"LOCAL_RANK": "3"}) == "cpu"
    assert device_for_rank("cuda", {"LOCAL_RANK": "3"}) == "cuda:3"


# --------------------------------------------------------------------------- the command (fake model)


def test_video_engines_follow_the_models_gpu(monkeypatch):
    from tdnet_cli.pipeline.stream import model_gpu
    from tdnet_cli.video import hw

    tried = []
    monkeypatch.setattr(hw, "require_nvenc", lambda gpu: tried.append(("nvenc", gpu)))
    monkeypatch.setattr(hw, "require_nvdec", lambda gpu: tried.append(("nvdec", gpu)))
    gpu = model_gpu(torch.device("cuda", 1))
    enc, dec = hw.hardware_video(Encoding(encoder="nvenc"), hw_decode=True, gpu=gpu)
    assert (enc.gpu, dec, tried) == (1, 1, [("nvenc", 1), ("nvdec", 1)])
    gpu = model_gpu(torch.device("cpu"))  # a CPU model: NVENC wherever the driver puts it, NVDEC on GPU 0
    tried.clear()
    enc, dec = hw.hardware_video(Encoding(encoder="nvenc"), hw_decode=True, gpu=gpu)
    assert (enc.gpu, dec, tried) == (None, 0, [("nvenc", None), ("nvdec", 0)])
    tried.clear()
    enc, dec = hw.hardware_video(Encoding(), hw_decode=False, gpu=gpu)  # x264, software decoding: nothing tried
    assert (enc, dec, tried) == (Encoding(), None, [])


@pytest.mark.slow
def test_compiled_predictor_in_the_pipeline_gives_the_eager_labels(tmp_path, tiny, eager_compile):
    """segment --compile: the pipeline steps a compiled predictor (no encoding ahead) frame by
    frame; dynamo's eager backend keeps the test fast."""
    from tdnet_cli.inference import Predictor

    compiled = Predictor(tiny.loaded, device="cpu", compile=True)
    assert not compiled.encodes_ahead
    src = make_clip(tmp_path / "in.mp4", 7)
    for name, pred in (("eager", tiny), ("compiled", compiled)):
        assert run([src], predictor=pred, save=["labels"], out_dir=tmp_path / name, cut_detect=False).ok
    a, b = read_pngs(tmp_path / "eager" / "in.labels"), read_pngs(tmp_path / "compiled" / "in.labels")
    assert len(a) == 7 and all((a[k] == b[k]).mean() > 0.999 for k in a)
    assert eager_compile == [0, 1, 2, 3]  # one graph per path, each traced once


def test_cli_compile_options_reach_the_predictor(tmp_path, fake_cli):
    src = make_clip(tmp_path / "in.mp4", 2)
    for args, want in (
        ((), False),
        (("--compile",), True),
        (("--compile-mode", "reduce-overhead"), "reduce-overhead"),
        (("--compile", "--compile-mode", "max-autotune"), "max-autotune"),
    ):
        assert invoke(src, "-d", tmp_path / "o", "--overwrite", "-q", *args).exit_code == 0
        assert fake_cli[-1].kwargs["compile"] == want


def test_cli_gpu_video_engine_that_cannot_run_is_one_line_exit_2(tmp_path, fake_cli):
    from tdnet_cli.video.hw import nvenc_problem

    if nvenc_problem() is None:
        pytest.skip("NVENC works on this machine")
    src = make_clip(tmp_path / "in.mp4", 3)
    result = invoke(src, "--encoder", "nvenc", "-d", tmp_path / "out")
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert error_lines(result) == [
        f"error: NVENC (--encoder nvenc) does not work here: {nvenc_problem()} (use --encoder x264, the CPU encoder)"
    ]
    assert not (tmp_path / "out").exists()


def test_cli_batch_with_one_bad_input(tmp_path, fake_cli):
    a, c = make_clip(tmp_path / "a.mp4", 3), make_clip(tmp_path / "c.mp4", 3)
    (tmp_path / "b.mp4").write_text("junk")
    result = invoke(a, tmp_path / "b.mp4", c, "--out-dir", tmp_path / "o")
    assert result.exit_code == 1
    assert error_lines(result) == [f"error: {tmp_path / 'b.mp4'}: not a video ffmpeg can read (invalid data)"]
    assert names(tmp_path / "o") == ["a.overlay.mp4", "c.overlay.mp4"]
    assert "3 inputs, 6 frames" in result.stdout


def _mixed(folder: Path) -> Path:
    folder.mkdir()
    cv2.imwrite(str(folder / "1.png"), np.zeros((H, W, 3), np.uint8))
    cv2.imwrite(str(folder / "2.png"), np.zeros((H, W + 2, 3), np.uint8))
    return folder


def _truncated(p: Path) -> Path:
    data = make_clip(p.with_name("full.mp4"), 50).read_bytes()
    ffmpeg("-i", str(p.with_name("full.mp4")), "-c", "copy", "-movflags", "+faststart", str(p))
    data = p.read_bytes()
    p.write_bytes(data[: len(data) * 4 // 5])
    return p


BAD_INPUTS = {
    "missing": (lambda t: t / "nope.mp4", "no such file or folder"),
    "not-a-video": (lambda t: (t / "x.mp4").write_text("hello") and t / "x.mp4", "not a video"),
    "zero-frames": (
        lambda t: (t / "z.y4m").write_bytes(b"YUV4MPEG2 W128 H64 F25:1 Ip C420jpeg\n") and t / "z.y4m",
        "no frames",
    ),
    "audio-only": (
        lambda t: ffmpeg("-f", "lavfi", "-i", "sine", "-t", "0.2", str(t / "s.m4a")) or t / "s.m4a",
        "no video stream",
    ),
    "empty-folder": (lambda t: (t / "empty").mkdir() or t / "empty", "no frames (png/jpg)"),
    "mixed-sizes": (lambda t: _mixed(t / "mixed"), "differs from the first frame"),
    "truncated": (lambda t: _truncated(t / "cut.mp4"), "corrupt or truncated video, kept the"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_cli_bad_input_is_one_line_and_nonzero(tmp_path, fake_cli, case):
    make, message = BAD_INPUTS[case]
    path = make(tmp_path)
    out = tmp_path / "out"
    result = invoke(path, "--out-dir", out, "-s", "overlay", "-s", "labels")
    assert result.exit_code == 1
    errors = error_lines(result)
    assert len(errors) == 1 and message in errors[0], result.stderr
    assert "Traceback" not in result.stderr
    left = names(out)
    if case == "truncated":  # the decoded frames are kept, as complete files
        assert left == ["cut.labels", "cut.overlay.mp4"]
        assert 0 < probe(out / "cut.overlay.mp4")[0] < 50
    else:
        assert left == []  # nothing half-written


def test_cli_unwritable_out_dir_and_existing_output(tmp_path, fake_cli):
    src = make_clip(tmp_path / "in.mp4", 2)
    (tmp_path / "file").write_text("x")
    result = invoke(src, "--out-dir", tmp_path / "file" / "sub")
    assert result.exit_code == 2 and len(error_lines(result)) == 1 and "output folder" in result.stderr
    assert invoke(src).exit_code == 0
    result = invoke(src)
    assert result.exit_code == 1 and error_lines(result) == [
        f"error: {src}: {tmp_path / 'in.overlay.mp4'} exists (use --overwrite, or --skip-existing to keep it)"
    ]
    assert invoke(src, "--overwrite", "-q").exit_code == 0
    result = invoke(src, "--skip-existing", "--json")
    assert result.exit_code == 0 and json.loads(result.stdout)["skipped"] == 1


def test_cli_converts_grey_rgba_and_16bit_pngs(tmp_path, fake_cli):
    folder = tmp_path / "frames"
    folder.mkdir()
    cv2.imwrite(str(folder / "f1.png"), np.full((H, W), 100, np.uint8))
    cv2.imwrite(str(folder / "f2.png"), np.full((H, W, 4), 100, np.uint8))
    cv2.imwrite(str(folder / "f3.png"), np.full((H, W, 3), 100 * 257, np.uint16))
    result = invoke(folder, "-s", "labels", "-d", tmp_path / "o", "-q")
    assert result.exit_code == 0, result.stderr
    labels = read_pngs(tmp_path / "o" / "frames.labels")
    assert list(labels) == ["f1", "f2", "f3"] and all((v == 100 // 14).all() for v in labels.values())


def test_cli_shard_list_and_stdin(tmp_path, fake_cli, runner):
    vids = [make_clip(tmp_path / f"v{i}.mp4", 2) for i in range(3)]
    listing = tmp_path / "list.txt"
    listing.write_text("# inputs\n" + "\n".join(map(str, vids)) + "\n\n")
    result = invoke("--list", listing, "--shard", "0/2", "-d", tmp_path / "s0", "--json")
    assert result.exit_code == 0, result.stderr
    assert names(tmp_path / "s0") == ["v0.overlay.mp4", "v2.overlay.mp4"]
    assert json.loads(result.stdout)["shard"] == [0, 2]
    result = invoke("--list", "-", "--shard", "1/2", "-d", tmp_path / "s1", "-q", input="\n".join(map(str, vids)))
    assert result.exit_code == 0 and names(tmp_path / "s1") == ["v1.overlay.mp4"]
    result = runner.invoke(
        app, ["segment", str(vids[0]), "-d", str(tmp_path / "s2"), "-q"], env={"RANK": "1", "WORLD_SIZE": "2"}
    )
    assert result.exit_code == 0 and not (tmp_path / "s2").exists() and len(fake_cli) == 2  # shard 1 got nothing
    assert invoke("--shard", "2/2", vids[0]).exit_code == 2


def test_cli_usage_errors(tmp_path, fake_cli):
    src = make_clip(tmp_path / "in.mp4", 2)
    assert invoke().exit_code == 2
    result = invoke(src, src.with_name("other.mp4"), "-o", tmp_path / "x.mp4")
    assert result.exit_code == 2 and "single input" in result.stderr
    result = invoke(src, "-s", "labels", "-o", tmp_path / "x.mp4")
    assert result.exit_code == 2 and "folder of PNGs" in result.stderr
    for bad in (["--x264-preset", "fastest"], ["--crf", "99"]):
        result = invoke(src, *bad)
        assert result.exit_code == 2 and len(error_lines(result)) == 1 and "Traceback" not in result.output
    result = invoke(src, "-o", tmp_path / "named.mp4", "-s", "overlay", "-s", "labelids", "-q")
    assert result.exit_code == 0 and names(tmp_path) == ["in.mp4", "named.labelids", "named.mp4"]


def test_help_mentions_urls(runner):
    result = runner.invoke(app, ["segment", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0 and "URL" in result.stdout and "--no-cut-detect" in result.stdout


def test_render_and_png_threads_keep_frame_order(tmp_path, monkeypatch):
    """Many-core hosts render and write PNGs on extra threads: same outputs, same order."""
    seg = importlib.import_module("tdnet_cli.pipeline.segment")  # the package's `segment` is the function
    src = encode_rgb(tmp_path / "in.mkv", scene(9, 0) + scene(4, 1))
    save = ["overlay", "color", "labels", "labelids"]
    assert run([src], predictor=FakePredictor(), save=save, out_dir=tmp_path / "a").ok
    monkeypatch.setattr(seg, "spare_workers", lambda: 3)
    assert run([src], predictor=FakePredictor(), save=save, out_dir=tmp_path / "b").ok
    for kind in ("labels", "labelids"):
        a, b = read_pngs(tmp_path / "a" / f"in.{kind}"), read_pngs(tmp_path / "b" / f"in.{kind}")
        assert list(a) == list(b) and all(np.array_equal(a[k], b[k]) for k in a)
    for kind in ("overlay", "color"):
        va = [f.image for f in VideoReader(str(tmp_path / "a" / f"in.{kind}.mp4"))]
        vb = [f.image for f in VideoReader(str(tmp_path / "b" / f"in.{kind}.mp4"))]
        assert len(va) == len(vb) == 13 and all(np.array_equal(x, y) for x, y in zip(va, vb))
    report = run([src], predictor=FakePredictor(fail_at=5), save=save, out_dir=tmp_path / "c")
    assert not report.ok and names(tmp_path / "c") == []


@pytest.mark.parametrize(
    "many_dt, few_dt, expect_few",
    [(0.010, 0.006, True), (0.010, 0.0102, True), (0.010, 0.030, False), (0.060, 0.030, True), (0.300, 0.030, True)],
)
def test_thread_tuner_keeps_the_faster_count(monkeypatch, many_dt, few_dt, expect_few):
    from tdnet_cli.pipeline import stream

    before = torch.get_num_threads()
    clock = [0.0]
    monkeypatch.setattr(stream.time, "perf_counter", lambda: clock[0])
    set_to = []
    monkeypatch.setattr(stream.torch, "set_num_threads", set_to.append)
    tuner = stream.ThreadTuner(many=4, window=4, warmup=3)
    assert tuner.few == 3
    tuner.start()
    for _ in range(tuner.frames_needed + 2):
        clock[0] += few_dt if set_to[-1] == 3 else many_dt
        tuner.tick()
        assert tuner.current == set_to[-1]  # what encoder pool threads apply to themselves
    assert tuner.choice == (3 if expect_few else 4) and set_to[-1] == tuner.choice
    if many_dt > 4 * few_dt:  # disastrous: the trial of all threads stopped after its first frame
        assert tuner.count == tuner.warmup + tuner.window + 1
    elif many_dt > 1.5 * few_dt:  # clearly worse: stopped after two frames
        assert tuner.count == tuner.warmup + tuner.window + tuner.settle + 2
    assert torch.get_num_threads() == before
