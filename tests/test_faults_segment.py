"""Hostile-user cases of `tdnet segment` (issue #19 items 1-4, 15-16 for segment, 19, 20): no
user file is ever destroyed, and every failure ends in one line with the documented exit code."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from faults import REPO, assert_one_error, cli, final_names, snapshot
from media import ffmpeg, make_clip, probe

from tdnet_cli.errors import OutputExistsError
from tdnet_cli.fileio import STALE_AFTER_S, remove_stale_partials
from tdnet_cli.video.png_writer import MANIFEST, PngSequenceWriter

MODEL = ("-w", str(REPO / "weights" / "td4-mini-synth.pt"), "--device", "cpu", "--threads", "1")


def segment(*args: str | os.PathLike):
    return cli("segment", *map(str, args), *MODEL)


def partials(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".partial" in p.name)


# --------------------------------------------------------------------------- 1. --overwrite replaces only ours


@pytest.mark.slow
def test_overwrite_refuses_a_folder_holding_other_files(tmp_path):
    clip = make_clip(tmp_path / "one.mp4", 3)
    x = tmp_path / "x"
    (x / "sub").mkdir(parents=True)
    (x / "notes.txt").write_text("p\n")
    (x / "sub" / "keep.png").write_bytes(b"not ours")
    before = snapshot(tmp_path)
    assert_one_error(segment(clip, "-s", "labels", "-o", x, "--overwrite"), 2, "notes.txt", "--into-folder")
    assert snapshot(tmp_path) == before


@pytest.mark.slow
def test_overwrite_refuses_pngs_tdnet_did_not_record(tmp_path):
    # a folder of frames a user extracted (000000.png ...), or one our manifest does not list
    clip = make_clip(tmp_path / "one.mp4", 3)
    frames = tmp_path / "frames"
    frames.mkdir()
    (frames / "000000.png").write_bytes(b"user frame")
    before = snapshot(tmp_path)
    assert_one_error(segment(clip, "-s", "labels", "-o", frames, "--overwrite"), 2, "000000.png", "--into-folder")
    assert snapshot(tmp_path) == before
    assert segment(clip, "-s", "labels", "-o", tmp_path / "ours").exit_code == 0
    (tmp_path / "ours" / "extra.png").write_bytes(b"added by the user")
    before = snapshot(tmp_path)
    assert_one_error(segment(clip, "-s", "labels", "-o", tmp_path / "ours", "--overwrite"), 2, "extra.png")
    assert snapshot(tmp_path) == before


@pytest.mark.slow
def test_overwrite_replaces_a_folder_of_its_own(tmp_path):
    long, short = make_clip(tmp_path / "long.mp4", 5), make_clip(tmp_path / "short.mp4", 2)
    out = tmp_path / "out"
    assert segment(long, "-s", "labels", "-o", out).exit_code == 0
    assert sorted(p.name for p in out.iterdir()) == [MANIFEST] + [f"00000{i}.png" for i in range(5)]
    result = segment(short, "-s", "labels", "-o", out, "--overwrite")
    assert result.exit_code == 0, result.stderr
    assert sorted(p.name for p in out.iterdir()) == [MANIFEST, "000000.png", "000001.png"]
    assert final_names(tmp_path) == ["long.mp4", "out", "out/000000.png", "out/000001.png", "short.mp4"]


@pytest.mark.slow
def test_into_folder_keeps_every_other_entry(tmp_path):
    clip = make_clip(tmp_path / "one.mp4", 2)
    x = tmp_path / "x"
    (x / "sub").mkdir(parents=True)
    (x / "notes.txt").write_text("p\n")
    (x / "000001.png").write_bytes(b"same name: replaced")
    keep = {k: v for k, v in snapshot(x).items() if k != "000001.png"}
    result = segment(clip, "-s", "labels", "-o", x, "--into-folder")
    assert result.exit_code == 0, result.stderr
    after = snapshot(x)
    assert all(after[k] == v for k, v in keep.items())
    assert cv2.imread(str(x / "000001.png"), cv2.IMREAD_UNCHANGED).shape == (64, 128)
    # the manifest lists only our files, so a later --overwrite still refuses this folder
    assert_one_error(segment(clip, "-s", "labels", "-o", x, "--overwrite"), 2, "--into-folder")
    assert (x / "notes.txt").read_text() == "p\n"


def test_png_writer_rechecks_the_folder_before_replacing_it(tmp_path):
    out = tmp_path / "labels"
    with PngSequenceWriter(out, manifest=True) as w:
        w.write("000000", np.zeros((4, 6), np.uint8))
    w = PngSequenceWriter(out, overwrite=True, manifest=True)
    w.write("000000", np.ones((4, 6), np.uint8))
    (out / "late.txt").write_text("written while the run went on")
    with pytest.raises(OutputExistsError, match="late.txt"):
        w.close()
    assert sorted(p.name for p in out.iterdir()) == [MANIFEST, "000000.png", "late.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["labels"]  # no temporary left


# --------------------------------------------------------------------------- 2. an output that is an input


@pytest.mark.slow
def test_an_output_that_is_an_input_is_refused(tmp_path):
    clip = make_clip(tmp_path / "in.mp4", 3)
    (tmp_path / "link.mp4").symlink_to(clip)
    os.link(clip, tmp_path / "hard.mp4")
    frames = tmp_path / "frames"
    frames.mkdir()
    for i in range(2):
        cv2.imwrite(str(frames / f"{i:06d}.png"), np.full((32, 48, 3), 40 * i, np.uint8))
    before = snapshot(tmp_path)
    for target in ("in.mp4", "link.mp4", "hard.mp4"):
        for extra in ((), ("--overwrite",)):
            assert_one_error(segment(clip, "-o", tmp_path / target, *extra), 2, "is the input")
    for extra in (("--overwrite",), ("--into-folder",), ()):
        assert_one_error(segment(frames, "-s", "labels", "-o", frames, *extra), 2, "is the input")
    assert snapshot(tmp_path) == before
    # another input of the batch: in.mp4's overlay would be the input in.overlay.mp4, named too
    make_clip(tmp_path / "in.overlay.mp4", 2)
    before = snapshot(tmp_path)
    assert_one_error(segment(clip, tmp_path / "in.overlay.mp4", "--overwrite"), 2, "is the input")
    assert snapshot(tmp_path) == before


# --------------------------------------------------------------------------- 3. globs skip our outputs


@pytest.mark.slow
def test_glob_twice_does_not_segment_its_own_outputs(tmp_path):
    d = tmp_path / "dir"
    d.mkdir()
    make_clip(d / "a.mp4", 3)
    first = segment(f"{d}/*.mp4", "--skip-existing", "-s", "overlay", "-s", "color")
    assert first.exit_code == 0, first.stderr
    after_first = snapshot(d)
    assert sorted(after_first) == ["a.color.mp4", "a.mp4", "a.overlay.mp4"]
    second = segment(f"{d}/*.mp4", "--skip-existing", "-s", "overlay", "-s", "color")
    assert second.exit_code == 0, second.stderr
    assert snapshot(d) == after_first  # nothing new, nothing changed
    assert "a.overlay.mp4" in second.stderr  # said what it left out
    # named one by one, an output is an input like any other
    third = segment(d / "a.overlay.mp4", "-s", "labels")
    assert third.exit_code == 0 and (d / "a.overlay.labels").is_dir()


# --------------------------------------------------------------------------- 4 and 16. a full disk


def _fill(disk: Path, leave: int) -> None:
    """Leave about ``leave`` bytes free on the small disk."""
    st = os.statvfs(disk)
    free = st.f_bavail * st.f_frsize
    (disk / "filler").write_bytes(b"\0" * max(0, free - leave))


@pytest.mark.slow
def test_disk_full_while_adding_the_audio_fails_the_output(tmp_path, small_disk):
    src = tmp_path / "noisy.mp4"  # noise compresses badly: a video of a few hundred KB
    ffmpeg(
        "-f",
        "lavfi",
        "-i",
        "testsrc=size=320x240:rate=25,noise=alls=100:allf=t",
        "-f",
        "lavfi",
        "-i",
        "sine=frequency=440:sample_rate=16000",
        "-c:a",
        "aac",
        "-shortest",
        "-frames:v",
        "12",
        "-c:v",
        "libx264",
        "-pix_fmt",
        "yuv420p",
        str(src),
    )
    roomy = tmp_path / "roomy.mp4"
    assert segment(src, "-o", roomy, "--crf", "0").exit_code == 0
    size = roomy.stat().st_size
    assert probe(roomy)[4] and size > 200_000
    # room for the video, not for the video and its copy with the audio
    _fill(small_disk, int(1.5 * size))
    before = snapshot(small_disk)
    result = segment(src, "-o", small_disk / "out.mp4", "--crf", "0")
    assert_one_error(result, 1, "disk full", str(small_disk))
    assert "audio not copied" not in result.stderr
    assert snapshot(small_disk) == before  # nothing under the final name, no temporary


def test_audio_that_cannot_be_added_still_keeps_the_video(tmp_path):
    # not a write failure (the audio source is unreadable): the warning and the video stay
    from tdnet_cli.video.writer import VideoWriter

    (tmp_path / "junk.m4a").write_bytes(b"not audio" * 100)
    with VideoWriter(tmp_path / "v.mp4", 64, 32, 25, audio_from=str(tmp_path / "junk.m4a")) as w:
        w.write(np.zeros((32, 64, 3), np.uint8))
    assert probe(tmp_path / "v.mp4")[0] == 1 and "audio not copied" in w.warnings[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["junk.m4a", "v.mp4"]


@pytest.mark.slow
def test_disk_full_writing_pngs_says_so_and_where(tmp_path, small_disk):
    clip = make_clip(tmp_path / "one.mp4", 5)
    _fill(small_disk, 0)
    before = snapshot(small_disk)
    result = segment(clip, "-s", "labels", "-o", small_disk / "labels")
    line = assert_one_error(result, 1, "disk full", str(small_disk / "labels"))
    assert "requested" not in line
    assert snapshot(small_disk) == before


def test_fileio_png_on_a_full_disk_is_a_write_error(small_disk):
    from tdnet_cli.errors import WriteError
    from tdnet_cli.fileio import write_png

    _fill(small_disk, 0)
    before = snapshot(small_disk)
    with pytest.raises(WriteError, match=f"disk full writing {small_disk}"):
        write_png(small_disk / "x.png", np.random.default_rng(0).integers(0, 255, (64, 64), np.uint8))
    assert snapshot(small_disk) == before


@pytest.mark.slow
def test_an_unwritable_o_names_o(tmp_path):
    clip = make_clip(tmp_path / "one.mp4", 2)
    (tmp_path / "afile").write_text("x")
    line = assert_one_error(segment(clip, "-o", tmp_path / "afile" / "out.mp4"), 2, "-o")
    assert "--out-dir" not in line


# --------------------------------------------------------------------------- 15. brackets in names


@pytest.mark.slow
def test_bracketed_names_are_printed_as_they_are(tmp_path):
    bad = tmp_path / "clip[red]x.mp4"
    bad.write_text("junk")
    assert_one_error(segment(bad), 1, "clip[red]x.mp4")
    good = make_clip(tmp_path / "ok[b].mp4", 2)
    result = segment(good)
    assert result.exit_code == 0 and "ok[b].overlay.mp4" in result.stdout


# --------------------------------------------------------------------------- 19. SIGTERM and SIGKILL


def _start(*args: str | os.PathLike) -> subprocess.Popen:
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.Popen(
        [sys.executable, "-m", "tdnet_cli", "segment", *map(str, args), *MODEL],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        stdin=subprocess.DEVNULL,
    )


def _wait_for_partial(proc: subprocess.Popen, folder: Path, name: str) -> Path:
    path = folder / f".{name}.{proc.pid}.partial.d"
    deadline = time.monotonic() + 60
    while not (path.is_dir() and any(path.iterdir())):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.05)
    return path


@pytest.mark.slow
def test_sigterm_removes_the_temporaries(tmp_path):
    clip = make_clip(tmp_path / "long.mp4", 400)
    out = tmp_path / "out"
    proc = _start(clip, "-d", out, "-s", "labels", "-s", "overlay")
    _wait_for_partial(proc, out, "long.labels")
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=60)
    result = subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)
    assert_one_error(result, 143, "SIGTERM")
    assert list(out.iterdir()) == []


@pytest.mark.slow
def test_a_later_run_removes_what_sigkill_left(tmp_path):
    clip = make_clip(tmp_path / "long.mp4", 400)
    out = tmp_path / "out"
    proc = _start(clip, "-d", out, "-s", "labels")
    left = _wait_for_partial(proc, out, "long.labels")
    proc.kill()
    proc.communicate(timeout=60)
    assert left.is_dir()
    old = time.time() - STALE_AFTER_S - 60
    os.utime(left, (old, old))
    # look-alikes that are not ours to remove: another name, a live process's, a fresh one
    kept = [
        out / ".notes.1.partial.txt",
        out / f".x.{os.getpid()}.partial.mp4",
        out / f".y.{os.getppid()}.partial.mp4",
        out / ".notes.partial.mp4",
        out / "z.1.partial.mp4",
    ]
    for path in kept:
        path.write_text("keep")
        os.utime(path, (old, old))
    fresh = out / f".fresh.{proc.pid}.partial.mp4"
    fresh.write_text("a dead pid, but it changed a moment ago: maybe another host's")
    short = make_clip(tmp_path / "short.mp4", 2)
    result = segment(short, "-d", out, "-s", "labels")
    assert result.exit_code == 0, result.stderr
    assert not left.exists()
    assert all(p.read_text() == "keep" for p in kept) and fresh.exists()
    assert remove_stale_partials(out, min_age=0) == [fresh]


@pytest.mark.slow
def test_a_rerun_removes_its_own_leftover_at_once(tmp_path):
    """Rerunning the command a SIGKILL stopped cleans up straight away: a temporary of a dead
    process for an output this run writes goes now; one of another name waits STALE_AFTER_S."""
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    out = tmp_path / "out"
    leftover = out / f".long.labels.{dead.pid}.partial.d"
    leftover.mkdir(parents=True)
    (leftover / "000000.png").write_bytes(b"half")
    other = out / f".other.overlay.{dead.pid}.partial.mp4"
    other.write_bytes(b"maybe another host's")
    result = segment(make_clip(tmp_path / "long.mp4", 2), "-d", out, "-s", "labels")
    assert result.exit_code == 0, result.stderr
    assert not leftover.exists() and other.exists()
    assert (out / "long.labels" / "000000.png").is_file()


# --------------------------------------------------------------------------- 20. an input named like an option


@pytest.mark.slow
def test_an_input_that_looks_like_an_option(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    make_clip(tmp_path / "-dash.mp4", 2)
    before = snapshot(tmp_path)
    assert_one_error(segment("-dash.mp4"), 2, "./-dash.mp4", "--", "-d ash.mp4")
    assert snapshot(tmp_path) == before
    result = segment("./-dash.mp4")
    assert result.exit_code == 0, result.stderr
    assert (tmp_path / "-dash.overlay.mp4").is_file()
    result = cli("segment", *MODEL, "-o", "o.mp4", "--", "-dash.mp4")
    assert result.exit_code == 0, result.stderr
    # an option's value is never taken for such an input, nor is anything after --
    import typer.main

    from tdnet_cli.cli.app import app
    from tdnet_cli.cli.segment import option_like_file

    command = typer.main.get_command(app).commands["segment"]
    assert option_like_file(command, ["-o", "-dash.mp4", "x.mp4"]) is None
    assert option_like_file(command, ["--", "-dash.mp4"]) is None
    assert option_like_file(command, ["-q", "-dash.mp4"]) == "-dash.mp4"


def test_a_value_after_a_flag_says_flags_take_none():
    """`--legend true` reads "true" as an input: the failure says why."""
    result = cli("segment", "--legend", "true", *MODEL)
    assert_one_error(result, 1, "true: no such file or folder", "a flag takes no value: --legend, not --legend true")
