"""Video and frame IO on small clips generated with the bundled ffmpeg (no network)."""

from __future__ import annotations

from fractions import Fraction

import cv2
import numpy as np
import pytest
from media import H, W, encode_rgb, ffmpeg, make_clip, probe

from tdnet_cli.errors import InputError, OutputExistsError, TdnetError, UsageError
from tdnet_cli.video import (
    X264_PRESETS,
    Encoding,
    FrameFolderReader,
    PngSequenceWriter,
    VideoReader,
    VideoWriter,
    encoded_size,
    is_url,
    natural_key,
    open_source,
)
from tdnet_cli.video.ffmpeg import gpu_error
from tdnet_cli.video.hw import nvdec_problem, nvenc_problem


def random_frames(n: int, h: int = H, w: int = W, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(n)]


# --------------------------------------------------------------------------- reading videos


def test_reader_streams_frames_with_metadata(tmp_path):
    clip = make_clip(tmp_path / "clip.mp4", 12)
    with open_source(clip) as src:
        assert src.info.kind == "video" and (src.info.width, src.info.height) == (W, H)
        assert src.info.fps == 25 and src.info.frame_count == 12 and not src.info.has_audio
        frames = list(src)
    assert [f.index for f in frames] == list(range(12))
    assert frames[3].name == "000003"
    assert all(f.image.shape == (H, W, 3) and f.image.dtype == np.uint8 for f in frames)
    assert src.problems == []


def test_reader_is_exact_on_lossless_rgb(tmp_path):
    frames = random_frames(4)
    clip = encode_rgb(tmp_path / "lossless.mkv", frames)
    got = [f.image for f in VideoReader(str(clip))]
    assert len(got) == 4 and all(np.array_equal(a, b) for a, b in zip(got, frames))


def test_reader_ntsc_rate_and_audio(tmp_path):
    clip = make_clip(tmp_path / "ntsc.mp4", 6, rate="30000/1001", audio=True)
    r = VideoReader(str(clip))
    assert r.info.fps == Fraction(30000, 1001) and r.info.has_audio
    r.close()
    r.close()  # idempotent


@pytest.mark.parametrize(
    "make, expected",
    [
        (lambda p: p.write_text("not a video at all\n" * 10), "not a video"),
        (lambda p: None, "no such file"),
    ],
    ids=["text-file", "missing"],
)
def test_open_errors_are_one_line(tmp_path, make, expected):
    path = tmp_path / "x.mp4"
    make(path)
    with pytest.raises(InputError) as err:
        open_source(path)
    assert expected in str(err.value) and "\n" not in str(err.value)


def test_audio_only_file_has_no_video_stream(tmp_path):
    path = tmp_path / "tone.m4a"
    ffmpeg("-f", "lavfi", "-i", "sine=sample_rate=16000", "-t", "0.3", "-c:a", "aac", str(path))
    with pytest.raises(InputError, match="no video stream"):
        open_source(path)


def test_truncated_video_keeps_decoded_frames_and_reports(tmp_path):
    clip = make_clip(tmp_path / "full.mp4", 50, extra=("-movflags", "+faststart"))
    data = clip.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) * 4 // 5])
    with open_source(cut) as src:
        n = sum(1 for _ in src)
    assert 0 < n < 50 and src.problems
    cut.write_bytes(data[: len(data) // 2])  # the cut falls before any complete frame
    with pytest.raises(InputError, match="no frame could be decoded"):
        open_source(cut)


def test_unfinished_mp4_is_an_input_error(tmp_path):
    clip = make_clip(tmp_path / "full.mp4", 20)  # moov at the end: a cut file has no index
    data = clip.read_bytes()
    (tmp_path / "cut.mp4").write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="moov"):
        open_source(tmp_path / "cut.mp4")


def test_zero_frame_video_yields_nothing(tmp_path):
    y4m = tmp_path / "empty.y4m"
    y4m.write_bytes(b"YUV4MPEG2 W128 H64 F25:1 Ip A1:1 C420jpeg\n")
    with open_source(y4m) as src:
        assert (src.info.width, src.info.height) == (128, 64)
        assert list(src) == []


def test_close_mid_stream_stops_ffmpeg(tmp_path):
    clip = make_clip(tmp_path / "clip.mp4", 30)
    r = VideoReader(str(clip))
    it = iter(r)
    next(it)
    r.close()
    assert r._proc.poll() is not None and r.problems == []


# --------------------------------------------------------------------------- frame folders


def test_an_unreachable_reader_stops_its_decoder(tmp_path):
    import gc

    reader = VideoReader(str(make_clip(tmp_path / "a.mp4", 40)))
    assert next(iter(reader)).index == 0
    proc = reader._proc
    assert proc.poll() is None  # decoding ahead, blocked on the pipe
    del reader
    gc.collect()
    assert proc.wait(timeout=5) is not None


def test_folder_natural_order_and_names(tmp_path):
    for i in (10, 2, 1):
        cv2.imwrite(str(tmp_path / f"f{i}.png"), np.full((8, 16, 3), i, np.uint8))
    (tmp_path / "notes.txt").write_text("ignored")
    src = open_source(tmp_path)
    assert src.info.kind == "frames" and src.info.frame_count == 3 and src.info.fps is None
    frames = list(src)
    assert [f.name for f in frames] == ["f1", "f2", "f10"]
    assert [int(f.image[0, 0, 0]) for f in frames] == [1, 2, 10]


def test_folder_converts_grey_rgba_and_16bit(tmp_path):
    grey = np.arange(16 * 8, dtype=np.uint8).reshape(8, 16)
    cv2.imwrite(str(tmp_path / "a_grey.png"), grey)
    bgra = np.zeros((8, 16, 4), np.uint8)
    bgra[..., 0], bgra[..., 2], bgra[..., 3] = 200, 10, 0  # blue, fully transparent
    cv2.imwrite(str(tmp_path / "b_rgba.png"), bgra)
    deep = np.full((8, 16, 3), 65535, np.uint16)
    deep[..., 0] = 257 * 7  # blue channel in OpenCV order
    cv2.imwrite(str(tmp_path / "c_16bit.png"), deep)
    frames = {f.name: f.image for f in FrameFolderReader(tmp_path)}
    assert all(img.dtype == np.uint8 and img.shape == (8, 16, 3) for img in frames.values())
    assert np.array_equal(frames["a_grey"][..., 0], grey) and np.array_equal(frames["a_grey"][..., 2], grey)
    assert tuple(frames["b_rgba"][0, 0]) == (10, 0, 200)  # RGB, alpha dropped
    assert tuple(frames["c_16bit"][0, 0]) == (255, 255, 7)


def test_folder_errors(tmp_path):
    with pytest.raises(InputError, match="no frames"):
        open_source(tmp_path)
    cv2.imwrite(str(tmp_path / "1.png"), np.zeros((8, 16, 3), np.uint8))
    cv2.imwrite(str(tmp_path / "2.png"), np.zeros((8, 18, 3), np.uint8))
    with pytest.raises(InputError, match="differs from the first frame"):
        list(open_source(tmp_path))
    (tmp_path / "3.png").write_bytes(b"garbage")
    (tmp_path / "2.png").unlink()
    with pytest.raises(InputError, match="not a readable image"):
        list(open_source(tmp_path))


def test_helpers():
    assert sorted(["a10", "a2", "A1"], key=natural_key) == ["A1", "a2", "a10"]
    assert is_url("rtsp://cam/1") and is_url("https://x/y.mp4") and not is_url("C:\\v.mp4") and not is_url("a.mp4")
    assert encoded_size(65, 33) == (66, 34) and encoded_size(64, 32) == (64, 32)


# --------------------------------------------------------------------------- writers


def test_video_writer_round_trip_and_atomic_rename(tmp_path):
    out = tmp_path / "o.mp4"
    frames = random_frames(7)
    with VideoWriter(out, W, H, Fraction(30000, 1001)) as w:
        for f in frames:
            w.write(f)
        assert not out.exists()  # ffmpeg writes under .o.<pid>.partial.mp4 meanwhile
    assert probe(out) == (7, W, H, Fraction(30000, 1001), False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.mp4"]
    with pytest.raises(OutputExistsError):
        VideoWriter(out, W, H, 25)
    with VideoWriter(out, W, H, 25, overwrite=True) as w:
        w.write(frames[0])
    assert probe(out)[0] == 1


def test_video_writer_odd_size_is_padded(tmp_path):
    out = tmp_path / "odd.mp4"
    with VideoWriter(out, 65, 33, 25) as w:
        w.write(np.zeros((33, 65, 3), np.uint8))
    assert probe(out)[1:3] == encoded_size(65, 33)


def test_video_writer_copies_audio(tmp_path):
    src = make_clip(tmp_path / "src.mp4", 10, audio=True)
    out = tmp_path / "dst.mp4"
    with VideoWriter(out, W, H, 25, audio_from=str(src)) as w:
        for f in VideoReader(str(src)):
            w.write(f.image)
    assert probe(out)[4] and not w.warnings


def test_video_writer_exception_leaves_nothing(tmp_path):
    out = tmp_path / "o.mp4"
    with pytest.raises(KeyboardInterrupt), VideoWriter(out, W, H, 25) as w:
        w.write(random_frames(1)[0])
        raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError), VideoWriter(out, W, H, 25) as w:
        w.write(np.zeros((H, W + 2, 3), np.uint8))
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(TdnetError, match="no frames"):
        VideoWriter(out, W, H, 25).close()
    assert list(tmp_path.iterdir()) == []


def test_png_writer_atomic_and_no_overwrite(tmp_path):
    out = tmp_path / "labels"
    with PngSequenceWriter(out) as w:
        w.write("000000", np.full((4, 6), 7, np.uint8))
        w.write("000001", np.zeros((4, 6, 3), np.uint8) + np.uint8([1, 2, 3]), rgb=True)
        assert not out.exists()
    assert cv2.imread(str(out / "000000.png"), cv2.IMREAD_UNCHANGED).max() == 7
    assert tuple(cv2.imread(str(out / "000001.png"))[0, 0]) == (3, 2, 1)  # stored as RGB, read back BGR
    with pytest.raises(OutputExistsError):
        PngSequenceWriter(out)
    with pytest.raises(RuntimeError), PngSequenceWriter(out, overwrite=True) as w:
        w.write("x", np.zeros((2, 2), np.uint8))
        raise RuntimeError("boom")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["labels"]
    assert sorted(p.name for p in out.iterdir()) == ["000000.png", "000001.png"]
    with PngSequenceWriter(out, overwrite=True) as w:
        w.write("new", np.zeros((2, 2), np.uint8))
    assert sorted(p.name for p in out.iterdir()) == ["new.png"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["labels"]


def test_video_writer_keeps_colours(tmp_path):
    frame = np.zeros((H, W, 3), np.uint8)
    colours = [(128, 64, 128), (220, 20, 60), (0, 0, 142), (107, 142, 35), (255, 255, 255), (0, 0, 0)]
    for i, c in enumerate(colours):
        frame[:, i * 16 : (i + 1) * 16] = c
    with VideoWriter(tmp_path / "c.mp4", W, H, 25) as w:
        w.write(frame)
    back = next(iter(VideoReader(str(tmp_path / "c.mp4")))).image
    for i, c in enumerate(colours):  # block centres: away from 4:2:0 chroma edges
        assert np.abs(back[H // 2, i * 16 + 8].astype(int) - c).max() <= 4


def test_png_writer_with_worker_threads(tmp_path):
    out = tmp_path / "labels"
    with PngSequenceWriter(out, workers=2) as w:
        for i in range(9):
            w.write(f"{i:06d}", np.full((4, 6), i, np.uint8))
    pngs = sorted(out.iterdir())
    assert [int(cv2.imread(str(p), cv2.IMREAD_UNCHANGED)[0, 0]) for p in pngs] == list(range(9))
    with pytest.raises(cv2.error), PngSequenceWriter(tmp_path / "bad", workers=2) as w:
        w.write("a", np.zeros((4, 6), np.uint8))
        w.write("b", np.zeros((0, 6), np.uint8))  # fails in a worker
        w.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["labels"]


# --------------------------------------------------------------------------- YUV 4:2:0 frames


def test_yuv_frames_match_ffmpegs_own_rgb(tmp_path):
    # BT.601 (untagged) and a BT.709-tagged clip: the planes converted by us match what
    # ffmpeg's decoder gives as RGB, to a few levels of rounding.
    plain = make_clip(tmp_path / "601.mp4", 3)
    hd = make_clip(
        tmp_path / "709.mp4",
        3,
        extra=(
            "-vf",
            "scale=out_color_matrix=bt709:out_range=tv",
            "-colorspace",
            "bt709",
            "-color_primaries",
            "bt709",
            "-color_trc",
            "bt709",
        ),
    )
    for clip, matrix in ((plain, "bt601"), (hd, "bt709")):
        rgb = [f.image for f in VideoReader(str(clip))]
        with VideoReader(str(clip), yuv=True) as r:
            assert r.info.matrix == matrix
            frames = list(r)
        assert len(frames) == 3 and all(f.yuv is not None and f.yuv.matrix == matrix for f in frames)
        assert frames[0].size == (H, W) and frames[0].yuv.data.size == H * W * 3 // 2
        for f, want in zip(frames, rgb):
            diff = np.abs(f.image.astype(int) - want)
            assert diff.max() <= 4 and diff.mean() < 1.5, (matrix, diff.max(), diff.mean())
            small = f.rgb((H // 2, W // 2))  # straight from the planes
            ref = cv2.resize(want, (W // 2, H // 2), interpolation=cv2.INTER_LINEAR)
            assert small.shape == (H // 2, W // 2, 3) and np.abs(small.astype(int) - ref).mean() < 2.5


def test_yuv_decoding_falls_back_to_rgb_where_420_would_lose_detail(tmp_path):
    frames = random_frames(2)
    lossless = encode_rgb(tmp_path / "rgb.mkv", frames)
    with VideoReader(str(lossless), yuv=True) as r:
        assert r.info.matrix is None
        got = list(r)
    assert all(f.yuv is None for f in got) and all(np.array_equal(f.image, w) for f, w in zip(got, frames))
    full = make_clip(tmp_path / "444.mp4", 2, extra=("-pix_fmt", "yuv444p"))
    with VideoReader(str(full), yuv=True) as r:
        assert next(iter(r)).yuv is None


def test_a_restarted_decoders_late_stderr_thread_cannot_end_the_new_header(tmp_path, monkeypatch):
    # The 4:4:4 clip opens as YUV, then restarts as RGB. Make the first decoder's stderr
    # thread finish late, while the second decoder is still starting: it used to mark the
    # new header as read, and the reader then waited forever on a decoder nobody read.
    import threading
    import time

    from tdnet_cli.video import reader

    clip = make_clip(tmp_path / "444.mp4", 3, extra=("-pix_fmt", "yuv444p"))
    started: list[int] = []
    real_popen, real_read = reader.subprocess.Popen, reader._read_stderr

    def popen(*args, **kwargs):
        if started:
            time.sleep(0.6)  # the second start: the first thread finishes meanwhile
        proc = real_popen(*args, **kwargs)
        started.append(proc.pid)
        return proc

    def read_stderr(proc, *args):
        try:
            real_read(proc, *args)
        finally:
            if proc.pid == started[0]:
                time.sleep(0.3)

    monkeypatch.setattr(reader.subprocess, "Popen", popen)
    monkeypatch.setattr(reader, "_read_stderr", read_stderr)
    result: list = []

    def open_and_read():
        with VideoReader(str(clip), yuv=True) as r:
            result.append([f.image.shape for f in r])

    worker = threading.Thread(target=open_and_read, daemon=True)
    worker.start()
    worker.join(timeout=30)
    assert not worker.is_alive(), "the reader hung"
    assert len(started) == 2 and result == [[(H, W, 3)] * 3]


def test_color_conversions_against_opencv():
    from tdnet_cli.video.color import YUV420, rgb_to_i420, rgb_to_yuv

    rgb = random_frames(1)[0]
    ours, cv = rgb_to_i420(rgb, "bt601"), cv2.cvtColor(rgb, cv2.COLOR_RGB2YUV_I420)
    assert ours.shape == cv.shape and np.abs(ours[:H].astype(int) - cv[:H]).max() <= 1  # same luma
    # OpenCV's chroma is each 2x2 block's top-left pixel, ours the block mean: equal on flat blocks
    flat = cv2.resize(rgb[::2, ::2], (W, H), interpolation=cv2.INTER_NEAREST)
    assert np.abs(rgb_to_i420(flat, "bt601").astype(int) - cv2.cvtColor(flat, cv2.COLOR_RGB2YUV_I420)).max() <= 1
    back = YUV420(rgb_to_i420(flat, "bt709").reshape(-1), H, W, "bt709").to_rgb()
    assert np.abs(back.astype(int) - flat).max() <= 3  # BT.709 there and back
    yuv = rgb_to_yuv(np.array([[[0, 0, 0], [255, 255, 255]]], np.uint8), "bt709")
    assert yuv[0, 0].tolist() == [16, 128, 128] and yuv[0, 1].tolist() == [235, 128, 128]  # limited range


def test_video_writer_bt709_tags_and_colours(tmp_path):
    frame = np.zeros((H, W, 3), np.uint8)
    colours = [(128, 64, 128), (220, 20, 60), (0, 0, 142), (107, 142, 35)]
    for i, c in enumerate(colours):
        frame[:, i * 32 : (i + 1) * 32] = c
    with VideoWriter(tmp_path / "hd.mp4", W, H, 25, matrix="bt709") as w:
        w.write(frame)
    with VideoReader(str(tmp_path / "hd.mp4"), yuv=True) as r:
        assert r.info.matrix == "bt709"  # tagged, so players (and ffmpeg) decode BT.709
        back = next(iter(r)).image
    for i, c in enumerate(colours):
        assert np.abs(back[H // 2, i * 32 + 16].astype(int) - c).max() <= 4
    with pytest.raises(ValueError):
        VideoWriter(tmp_path / "x.mp4", W, H, 25, matrix="bt2020")


# --------------------------------------------------------------------------- NVIDIA video engines


def test_encoding_arguments_for_x264_and_nvenc():
    assert Encoding("ultrafast", 40).ffmpeg_args() == ["-c:v", "libx264", "-preset", "ultrafast", "-crf", "40"]
    nv = [Encoding(p, 23, "nvenc").ffmpeg_args() for p in X264_PRESETS]
    levels = [int(a[a.index("-preset") + 1][1:]) for a in nv]
    assert levels[0] == 1 and levels[-1] == 7 and levels == sorted(levels)  # faster x264 names, faster NVENC
    assert all(a[:2] == ["-c:v", "h264_nvenc"] and a[a.index("-cq") + 1] == "23" and "-gpu" not in a for a in nv)
    one = Encoding("veryfast", 0, "nvenc", gpu=1).ffmpeg_args()
    assert one[one.index("-cq") + 1] == "1" and one[-2:] == ["-gpu", "1"]  # NVENC reads cq 0 as "automatic"
    with pytest.raises(UsageError, match="unknown encoder"):
        Encoding(encoder="nvdec").check()


def test_gpu_error_picks_the_cause_out_of_ffmpegs_log():
    log = (
        "[h264_nvenc @ 0x55d1] Cannot load libcuda.so.1\n"
        "[vost#0:0/h264_nvenc @ 0x55d2] [enc:h264_nvenc @ 0x55d3] Error while opening encoder\n"
        "[out#0/mp4 @ 0x55d4] Nothing was written into output file\n"
    )
    assert gpu_error(log) == "Cannot load libcuda.so.1"
    assert gpu_error("[mp4 @ 0x1] disk full\n") == "disk full"


def test_nvenc_writer_encodes_or_fails_naming_the_cause(tmp_path):
    out = tmp_path / "nv.mp4"
    frames = random_frames(5)
    problem = nvenc_problem()
    w = VideoWriter(out, W, H, 25, encoding=Encoding(encoder="nvenc"))
    if problem is None:  # a machine with NVENC
        with w:
            for f in frames:
                w.write(f)
        assert probe(out) == (5, W, H, 25, False) and b"x264" not in out.read_bytes()
        return
    with pytest.raises(TdnetError, match="encoder (stopped|failed)") as err, w:
        for f in frames * 20:  # more than the pipe holds, so a dead encoder shows while writing
            w.write(f)
    assert problem in str(err.value)  # the cause, not the muxer's complaint that follows it
    assert list(tmp_path.iterdir()) == []


def test_nvdec_reader_is_exact_or_fails_naming_nvdec(tmp_path):
    src = make_clip(tmp_path / "in.mp4", 6)
    if nvdec_problem(0) is None:  # a machine with NVDEC: H.264 decoding is bit-exact
        soft = [f.yuv.data.copy() for f in VideoReader(str(src), yuv=True)]
        hard = [f.yuv.data.copy() for f in VideoReader(str(src), yuv=True, hw_decode=0)]
        assert len(hard) == 6 and all(np.array_equal(a, b) for a, b in zip(soft, hard))
        return
    with pytest.raises(InputError, match=r"NVDEC.*could not start"):
        VideoReader(str(src), yuv=True, hw_decode=0)
