"""Live video in `tdnet segment` (issue 22): a video on stdin, streams over the loopback
interface, the overlay or raw labels on stdout. Every socket is on 127.0.0.1, on a port the
test picks free; every process the test starts is killed in a finally, and each has a timeout."""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from faults import REPO, assert_one_error, cli, runner
from media import H, W, make_clip, probe
from rich.console import Console
from rich.progress import Progress
from test_segment import FakePredictor

from tdnet_cli.cli.app import app
from tdnet_cli.cli.segment_report import _BarIfKnown, _Frames
from tdnet_cli.video import ffmpeg_exe

MODEL = ("-w", str(REPO / "weights" / "td4-mini-synth.pt"), "--device", "cpu", "--threads", "1")
FRAMES = 8
TIMEOUT = 240  # a tdnet process: loading torch and the model is most of it on a busy machine


def clip_ts(path: Path, frames: int = FRAMES) -> Path:
    """A tiny MPEG-TS testsrc clip, the container live streams use."""
    return make_clip(path, frames, extra=("-f", "mpegts"))


def tdnet(*args: str, **kwargs) -> subprocess.Popen:
    """``python -m tdnet_cli ARGS`` as a real process running this working tree."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "200"}
    return subprocess.Popen([sys.executable, "-m", "tdnet_cli", *args], env=env, **kwargs)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def listening(port: int) -> bool:
    """Whether something listens on TCP ``port`` of 127.0.0.1 (read from /proc: connecting
    would use up a one-shot ffmpeg listener)."""
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        if state == "0A" and local == f"0100007F:{port:04X}":
            return True
    return False


def wait_listening(port: int, proc: subprocess.Popen, timeout: float = 60) -> None:
    end = time.monotonic() + timeout
    while not listening(port):
        assert proc.poll() is None, f"the helper ffmpeg ended: {proc.stderr.read() if proc.stderr else ''}"
        assert time.monotonic() < end, f"nothing listens on 127.0.0.1:{port}"
        time.sleep(0.05)


def serve(*args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-nostdin", "-y", *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def stop(*procs: subprocess.Popen | None) -> None:
    for proc in procs:
        if proc is not None and proc.poll() is None:
            proc.kill()
        if proc is not None:
            proc.wait(timeout=30)


@pytest.fixture
def fake(monkeypatch):
    """The command builds a FakePredictor (labels = red // 14) instead of loading a model."""
    from tdnet_cli.inference import Predictor

    monkeypatch.setattr(Predictor, "create", staticmethod(lambda **kwargs: FakePredictor()))


# --------------------------------------------------------------------------- real processes


@pytest.mark.slow
def test_pipe_mpegts_in_overlay_out_no_files_and_quiet(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    data = clip_ts(tmp_path / "in.ts").read_bytes()
    proc = tdnet("segment", "-", "-o", "-", *MODEL, "-q", cwd=work, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                 stderr=subprocess.PIPE)  # fmt: skip
    try:
        out, err = proc.communicate(data, timeout=TIMEOUT)  # through a real pipe: not seekable
    finally:
        stop(proc)
    assert proc.returncode == 0, err.decode()
    assert err == b""  # --quiet: nothing on stderr on success
    assert list(work.iterdir()) == []  # no temporary or other file anywhere
    (tmp_path / "out.ts").write_bytes(out)
    assert out[:1] == b"\x47"  # MPEG-TS sync byte
    assert probe(tmp_path / "out.ts")[:3] == (FRAMES, W, H)


@pytest.mark.slow
def test_raw_labels_on_stdout_from_a_redirected_mp4(tmp_path):
    src = make_clip(tmp_path / "in.mp4", FRAMES)  # an mp4 with its index at the end: needs the file itself
    with open(src, "rb") as stdin:
        proc = tdnet("segment", "-", "--save", "labels", "-o", "-", "--format", "rawvideo", *MODEL, cwd=tmp_path,
                     stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
        try:
            out, err = proc.communicate(timeout=TIMEOUT)
        finally:
            stop(proc)
    assert proc.returncode == 0, err.decode()
    assert len(out) == FRAMES * H * W
    labels = np.frombuffer(out, np.uint8)
    assert ((labels < 19) | (labels == 255)).all()
    assert len(np.unique(labels)) > 1  # real predictions, not a constant fill
    assert f"{FRAMES} frames" in err.decode()  # the summary went to stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mp4"]


@pytest.mark.slow
def test_tcp_stream_in_tcp_stream_out(tmp_path):
    """ffmpeg serves a clip on one loopback port, another ffmpeg listens for the result on a second."""
    p_in, p_out = free_port(), free_port()
    received = tmp_path / "received.ts"
    sender = receiver = proc = None
    try:
        sender = serve("-f", "lavfi", "-i", f"testsrc=size={W}x{H}:rate=25", "-frames:v", str(FRAMES),
                       "-c:v", "libx264", "-pix_fmt", "yuv420p", "-f", "mpegts", f"tcp://127.0.0.1:{p_in}?listen=1")  # fmt: skip
        receiver = serve("-i", f"tcp://127.0.0.1:{p_out}?listen=1", "-c", "copy", "-f", "mpegts", str(received))
        wait_listening(p_in, sender)
        wait_listening(p_out, receiver)
        proc = tdnet("segment", f"tcp://127.0.0.1:{p_in}", "-o", f"tcp://127.0.0.1:{p_out}", *MODEL, "--json",
                     cwd=tmp_path, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
        out, err = proc.communicate(timeout=TIMEOUT)
        assert proc.returncode == 0, err.decode()
        receiver.wait(timeout=60)
    finally:
        stop(proc, sender, receiver)
    report = json.loads(out)
    result = report["results"][0]
    # a stream is read in real time: what the model had no time for is dropped, and said so
    assert result["status"] == "ok" and result["frames"] + result["realtime"]["dropped"] == FRAMES
    assert report["outputs"] == [f"tcp://127.0.0.1:{p_out}"]
    assert probe(received)[:3] == (result["frames"], W, H)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["received.ts"]  # nothing written for a stream


# --------------------------------------------------------------------------- in process


def bound_udp(port: int) -> bool:
    """Whether a UDP socket is bound to ``port`` of 127.0.0.1 (read from /proc)."""
    lines = Path("/proc/net/udp").read_text().splitlines()[1:]
    return any(line.split()[1] == f"0100007F:{port:04X}" for line in lines)


@pytest.mark.slow
def test_stream_to_a_udp_receiver(tmp_path, fake):
    port = free_port()
    received = tmp_path / "received.ts"
    # the receiver ends 5 s after the last packet (udp has no end of stream)
    receiver = serve("-timeout", "5000000", "-i", f"udp://127.0.0.1:{port}", "-c", "copy", "-f", "mpegts",
                     str(received))  # fmt: skip
    try:
        end = time.monotonic() + 60
        while not bound_udp(port):
            assert receiver.poll() is None and time.monotonic() < end, "the receiver did not bind"
            time.sleep(0.05)
        data = clip_ts(tmp_path / "in.ts").read_bytes()
        result = runner.invoke(app, ["segment", "-", "-o", f"udp://127.0.0.1:{port}", "--json"], input=data)
        assert result.exit_code == 0, result.stderr
        receiver.wait(timeout=60)
    finally:
        stop(receiver)
    assert json.loads(result.stdout)["outputs"] == [f"udp://127.0.0.1:{port}"]
    assert probe(received)[:3] == (FRAMES, W, H)


def test_stdin_of_unknown_length_to_a_file_and_to_stdout(tmp_path, fake, monkeypatch):
    monkeypatch.chdir(tmp_path)
    data = clip_ts(tmp_path / "in.ts").read_bytes()
    result = runner.invoke(app, ["segment", "-", "-o", "out.mp4", "--json"], input=data)
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["results"][0]["input"] == "-" and report["frames"] == FRAMES
    assert probe(tmp_path / "out.mp4")[:3] == (FRAMES, W, H)
    # the summary of an input of unknown length, on stdout when stdout is free
    result = runner.invoke(app, ["segment", "-"], input=data)
    assert result.exit_code == 0, result.stderr
    assert f"-: {FRAMES} frames" in result.stdout and (tmp_path / "stdin.overlay.mp4").is_file()
    # matroska on stdout: the bytes and nothing else
    result = runner.invoke(app, ["segment", "-", "-o", "-", "--format", "mkv"], input=data)
    assert result.exit_code == 0, result.stderr
    assert result.stdout_bytes[:4] == b"\x1a\x45\xdf\xa3"  # EBML: a Matroska file
    (tmp_path / "out.mkv").write_bytes(result.stdout_bytes)
    assert probe(tmp_path / "out.mkv")[:3] == (FRAMES, W, H)
    assert f"{FRAMES} frames" in result.stderr


def test_raw_labels_in_process_are_the_predictors(tmp_path, fake):
    src = make_clip(tmp_path / "in.mp4", FRAMES)
    result = cli("segment", src, "-s", "labelids", "-o", "-", "--format", "rawvideo", "-q")
    assert result.exit_code == 0, result.stderr
    assert len(result.stdout_bytes) == FRAMES * H * W and result.stderr == ""
    ids = np.frombuffer(result.stdout_bytes, np.uint8)
    assert ids.max() <= 33  # Cityscapes label ids, not train ids


def test_stream_usage_errors_come_before_the_model(tmp_path, monkeypatch):
    from tdnet_cli.inference import Predictor

    def no_model(**kwargs):
        raise AssertionError("refused too late: the model was loaded")

    monkeypatch.setattr(Predictor, "create", staticmethod(no_model))
    src = make_clip(tmp_path / "in.mp4", 2)
    cases = [
        ((src, "-o", "-", "--json"), "--json"),
        (("-", "--list", "-"), "not both"),
        ((src, "--format", "mpegts"), "--format"),
        ((src, "-o", "-", "-s", "overlay", "-s", "labels"), "one stream"),
        ((src, "-o", "-", "-s", "labels"), "rawvideo"),
        ((src, "-o", "-", "--format", "rawvideo"), "label frames"),
        ((src, "-o", "udp://127.0.0.1:9", "-s", "labels", "--format", "rawvideo"), "stdout only"),
        ((src, "-o", "-", "--format", "avi"), "unknown --format"),
    ]
    before = sorted(p.name for p in tmp_path.iterdir())
    for args, needle in cases:
        assert_one_error(cli("segment", *args), 2, needle)
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_a_missing_camera_fails_as_an_input(tmp_path, fake, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = cli("segment", "/dev/video99")
    assert_one_error(result, 1, "/dev/video99")
    assert list(tmp_path.iterdir()) == []


def test_progress_of_a_live_input_counts_frames_and_time():
    out = io.StringIO()
    bars = Progress(
        _BarIfKnown(), _Frames(), console=Console(file=out, width=100, force_terminal=True, color_system=None)
    )
    live = bars.add_task("live", total=None)
    bars.update(live, advance=42)
    known = bars.add_task("file", total=100)
    bars.update(known, advance=42)
    bars.console.print(bars.get_renderable())
    text = out.getvalue()
    assert "42 frames 0:00:0" in text  # count and elapsed time, no total
    assert "42/100" in text and "━" in text  # a bar where the length is known


# --------------------------------------------------------------------------- real-time mode


def test_realtime_drops_at_the_reader_and_keeps_the_path_schedule(tmp_path):
    """A 200 fps source against the bundled TDNet (a few fps here): frames are dropped, the
    rest keep TDNet's path schedule (the predictor refuses a frame encoded for the wrong path),
    and the report has the drops and the latency."""
    src = make_clip(tmp_path / "fast.mp4", 40, rate="200")
    result = cli("segment", src, "-s", "labels", "-d", tmp_path / "rt", "--realtime", *MODEL, "--json")
    assert result.exit_code == 0, result.stderr
    r = json.loads(result.stdout)["results"][0]
    assert r["status"] == "ok", r["error"]
    rt = r["realtime"]
    assert rt["dropped"] > 0 and r["frames"] + rt["dropped"] == 40
    assert 0 < rt["latency_ms"]["p50"] <= rt["latency_ms"]["p95"]
    kept = sorted(p.name for p in (tmp_path / "rt" / "fast.labels").glob("*.png"))
    assert len(kept) == r["frames"] and kept[0] == "000000.png"  # named by the source's frame numbers


def test_without_realtime_no_frame_is_dropped(tmp_path, monkeypatch):
    """A slow model on stdin: every frame goes through (a pipe waits), unless --realtime."""

    class Slow(FakePredictor):
        def logits(self, x, stream):
            time.sleep(0.02)
            return super().logits(x, stream)

    from tdnet_cli.inference import Predictor

    monkeypatch.setattr(Predictor, "create", staticmethod(lambda **kwargs: Slow()))
    data = clip_ts(tmp_path / "in.ts", 20).read_bytes()
    for off in ([], ["--no-realtime"]):
        result = runner.invoke(app, ["segment", "-", "-o", str(tmp_path / "all.mp4"), "--overwrite", "--json", *off],
                               input=data)  # fmt: skip
        assert result.exit_code == 0, result.stderr
        r = json.loads(result.stdout)["results"][0]
        assert r["frames"] == 20 and "realtime" not in r
    result = runner.invoke(app, ["segment", "-", "-o", str(tmp_path / "rt.mp4"), "--realtime", "--json"], input=data)
    assert result.exit_code == 0, result.stderr
    r = json.loads(result.stdout)["results"][0]
    assert r["frames"] + r["realtime"]["dropped"] == 20 and r["realtime"]["dropped"] > 0  # read as fast as it came


@pytest.mark.slow
def test_reconnect_opens_the_stream_again_with_a_fresh_memory(tmp_path):
    """The sender ends; another comes up on the same port: one run spans both, frames numbered
    on, the memory reset at the first frame after (a cut); when no sender comes back it ends."""
    port = free_port()
    url = f"tcp://127.0.0.1:{port}"
    clip = ("-frames:v", "6", "-c:v", "libx264", "-pix_fmt", "yuv420p", "-f", "mpegts", f"{url}?listen=1")
    first = second = proc = None
    try:
        first = serve("-f", "lavfi", "-i", f"testsrc=size={W}x{H}:rate=25", *clip)
        wait_listening(port, first)
        proc = tdnet("segment", url, "-s", "labels", "-d", "out", "--reconnect", "6", "--no-realtime",
                     "--no-cut-detect", *MODEL, "--json", cwd=tmp_path, stdin=subprocess.DEVNULL,
                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
        first.wait(timeout=TIMEOUT)  # it has sent its clip
        second = serve("-f", "lavfi", "-i", f"testsrc=size={W}x{H}:rate=25", *clip)
        out, err = proc.communicate(timeout=TIMEOUT)
        assert proc.returncode == 0, err.decode()
    finally:
        stop(proc, first, second)
    r = json.loads(out)["results"][0]
    assert r["status"] == "ok" and r["frames"] == 12 and r["reconnects"] == 1
    assert r["cuts"] == 1  # the memory was reset when the stream came back (cut detection is off)
    names = sorted(p.name for p in (tmp_path / r["outputs"][0]).iterdir() if p.suffix == ".png")
    assert names == [f"{i:06d}.png" for i in range(12)]


@pytest.mark.slow
@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_stopping_a_live_run_keeps_whole_outputs(tmp_path, sig, code):
    """A stream never ends by itself: Ctrl-C or SIGTERM ends the run with the documented exit
    code, the outputs finished (a playable video, as many label PNGs as its frames)."""
    port = free_port()
    sender = proc = None
    try:
        sender = serve("-re", "-f", "lavfi", "-i", f"testsrc=size={W}x{H}:rate=25", "-frames:v", "3000",
                       "-c:v", "libx264", "-pix_fmt", "yuv420p", "-f", "mpegts", f"tcp://127.0.0.1:{port}?listen=1")  # fmt: skip
        wait_listening(port, sender)
        proc = tdnet("segment", f"tcp://127.0.0.1:{port}", "-s", "overlay", "-s", "labels", "-o", "out.mp4", *MODEL,
                     cwd=tmp_path, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
        end = time.monotonic() + TIMEOUT
        while len(list(tmp_path.glob(".out.labels.*.partial.d/*.png"))) < 3:  # a few frames written
            assert proc.poll() is None and time.monotonic() < end, proc.stderr.read().decode() if proc.stderr else ""
            time.sleep(0.1)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=TIMEOUT)
    finally:
        stop(proc, sender)
    assert proc.returncode == code, err.decode()
    assert "Traceback" not in err.decode()
    labels = sorted((tmp_path / "out.labels").glob("*.png"))
    assert len(labels) >= 3
    assert probe(tmp_path / "out.mp4")[:3] == (len(labels), W, H)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.labels", "out.mp4"]  # no temporary left


@pytest.mark.slow
def test_a_sender_killed_mid_stream_leaves_a_playable_output(tmp_path):
    """No --reconnect: the run ends with what arrived, its outputs whole; if the stream broke
    off mid-packet, one line says so (exit 1), as for a truncated file."""
    port = free_port()
    sender = proc = None
    try:
        sender = serve("-re", "-f", "lavfi", "-i", f"testsrc=size={W}x{H}:rate=25", "-frames:v", "3000",
                       "-c:v", "libx264", "-pix_fmt", "yuv420p", "-f", "mpegts", f"tcp://127.0.0.1:{port}?listen=1")  # fmt: skip
        wait_listening(port, sender)
        proc = tdnet("segment", f"tcp://127.0.0.1:{port}", "-s", "overlay", "-s", "labels", "-o", "out.mp4", *MODEL,
                     cwd=tmp_path, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                     text=True)  # fmt: skip
        end = time.monotonic() + TIMEOUT
        while len(list(tmp_path.glob(".out.labels.*.partial.d/*.png"))) < 3:
            assert proc.poll() is None and time.monotonic() < end, proc.stderr.read() if proc.stderr else ""
            time.sleep(0.1)
        sender.kill()
        out, err = proc.communicate(timeout=TIMEOUT)
    finally:
        stop(proc, sender)
    if proc.returncode == 1:
        assert_one_error(subprocess.CompletedProcess(proc.args, 1, out, err), 1, "kept the")
    else:
        assert proc.returncode == 0, err
    labels = sorted((tmp_path / "out.labels").glob("*.png"))
    assert len(labels) >= 3
    assert probe(tmp_path / "out.mp4")[:3] == (len(labels), W, H)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.labels", "out.mp4"]
