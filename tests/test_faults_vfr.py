"""Issue 19 item 5: variable-frame-rate input keeps its timing (video stays in sync with audio).

The reader resamples to a constant rate by presentation time (as ``ffmpeg -fps_mode cfr``), at
the rate it reports in ``info.fps``, which the writer uses; constant-rate input is unchanged.
"""

from __future__ import annotations

import subprocess
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from faults import cli
from media import H, W, encode_rgb, ffmpeg, probe

from tdnet_cli.video import VideoReader, ffmpeg_exe

WEIGHTS = Path(__file__).resolve().parent.parent / "weights" / "td4-mini-synth.pt"
LEVEL = 5  # frame k is solid grey 5*k: its number survives lossy YUV round trips
FAST, SLOW = 25, 25  # frames at 25 fps (0 .. 0.96 s), then frames 0.12 s apart (1.0 .. 3.88 s)


def input_time(k: int) -> float:
    """Presentation time of input frame ``k`` of the VFR clip."""
    return k / 25 if k < FAST else 1 + (k - FAST) * 3 / 25


def make_vfr(path: Path, audio_seconds: float = 4.0) -> Path:
    """A 128x64 mkv with irregular timestamps (input_time) and a sine audio track."""
    frames = [np.full((H, W, 3), LEVEL * k, np.uint8).tobytes() for k in range(FAST + SLOW)]
    cmd = [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y",
           "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{W}x{H}", "-framerate", "25", "-i", "-",
           "-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=16000:duration={audio_seconds}",
           # in time-base units (1/25 s): integer, so exact
           "-vf", f"setpts='if(lt(N,{FAST}),N,{FAST}+(N-{FAST})*3)'", "-fps_mode", "vfr",
           "-c:v", "libx264", "-qp", "0", "-pix_fmt", "yuv420p", "-c:a", "aac", str(path)]  # fmt: skip
    subprocess.run(cmd, input=b"".join(frames), check=True)
    return path


def audio_seconds(path: Path) -> float:
    """Duration of a file's audio, by decoding it (16 kHz mono s16)."""
    pcm = subprocess.run(
        [
            ffmpeg_exe(),
            "-hide_banner",
            "-loglevel",
            "error",
            "-i",
            str(path),
            "-map",
            "0:a:0",
            "-f",
            "s16le",
            "-ac",
            "1",
            "-ar",
            "16000",
            "-",
        ],
        capture_output=True,
        check=True,
    ).stdout
    return len(pcm) / 2 / 16000


def frame_number(image: np.ndarray) -> int:
    return round(float(image.mean()) / LEVEL)


@pytest.mark.slow
def test_vfr_segment_output_keeps_sync_with_audio(tmp_path):
    """Before the fix: 50 frames written at 25 fps, video 2.0 s against audio 4.0 s."""
    clip = make_vfr(tmp_path / "vfr.mkv")
    result = cli("segment", clip, "--weights", WEIGHTS)
    assert result.exit_code == 0, result.stderr
    out = tmp_path / "vfr.overlay.mp4"
    frames, _, _, fps, has_audio = probe(out)
    assert has_audio and fps == 25
    video = frames / fps
    audio = audio_seconds(out)
    assert abs(video - audio) <= 2 / fps, (video, audio)  # within a frame (+ the last frame's duration)
    assert abs(video - audio_seconds(clip)) <= 2 / fps


def shown_at(t: float) -> int:
    """The input frame on screen at ``t`` seconds."""
    return max(k for k in range(FAST + SLOW) if input_time(k) <= t + 1e-6)


@pytest.mark.parametrize("yuv", [False, True], ids=["rgb", "yuv"])
def test_vfr_reader_frames_follow_presentation_time(tmp_path, yuv):
    """Frame i of the reader is the input picture shown at i / fps seconds, to within one frame:
    ffmpeg's cfr repeats the previous picture round(gap - 0.6) times, so after a jump in rate
    the next one can come one output frame early. Every input frame appears, in order."""
    clip = make_vfr(tmp_path / "vfr.mkv")
    with VideoReader(str(clip), yuv=yuv) as reader:
        fps = reader.info.fps
        got = [frame_number(f.image) for f in reader]
        assert reader.problems == []
    assert fps == 25
    end = input_time(FAST + SLOW - 1) + 3 / 25  # the last frame lasts as long as its predecessors
    assert abs(len(got) - end * fps) <= 1, len(got)
    assert got == sorted(got) and set(got) == set(range(FAST + SLOW))
    for i, k in enumerate(got):
        near = {shown_at(i / fps), shown_at((i + 1) / fps), shown_at(max(i - 1, 0) / fps)}
        assert k in near, (i, k, near)
    assert got[: FAST + 1] == list(range(FAST + 1))  # the constant-rate part: frame for frame


@pytest.mark.parametrize("ext", ["mkv", "mp4"])
def test_vfr_with_a_time_base_for_a_rate_resamples_at_the_average(tmp_path, ext):
    """ffmpeg guesses 1000 fps (the time base) for frames ~13 ms apart: resampling at that rate
    would multiply the frames by 13; the mp4 header holds the average rate (77.16), the mkv's
    does not ("1k fps, 1k tbr") and it is measured from the packets."""
    clip = tmp_path / f"tb.{ext}"
    ffmpeg(
        "-f",
        "lavfi",
        "-i",
        f"testsrc=size={W}x{H}:rate=1000",
        "-frames:v",
        "200",
        "-vf",
        "setpts='(N*13+mod(N,2)*4)/1000/TB'",
        "-fps_mode",
        "vfr",
        "-c:v",
        "libx264",
        str(clip),
    )
    with VideoReader(str(clip)) as reader:
        fps = reader.info.fps
        n = sum(1 for _ in reader)
    assert 70 < fps < 85, fps
    span = (199 * 13 + 4) / 1000  # first to last frame
    assert abs(n - span * fps) <= 2, (n, fps)
    assert reader.info.frame_count is not None and abs(reader.info.frame_count - n) <= 2


@pytest.mark.parametrize("ext, rate", [("mkv", "25"), ("mp4", "30000/1001")])
def test_constant_rate_input_comes_out_frame_for_frame(tmp_path, ext, rate):
    """Resampling at the input's own rate changes nothing: every frame once, bit-identical."""
    rng = np.random.default_rng(5)
    frames = [rng.integers(0, 256, (H, W, 3), dtype=np.uint8) for _ in range(9)]
    clip = encode_rgb(tmp_path / f"cfr.{ext}", frames, rate=rate)
    with VideoReader(str(clip)) as reader:
        got = [f.image for f in reader]
        assert reader.info.fps == Fraction(rate)
    assert len(got) == len(frames) and all(np.array_equal(a, b) for a, b in zip(got, frames))
