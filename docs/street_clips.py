"""The H.264 street clips that the CPU end-to-end scripts time (60 frames for
docs/e2e_routes.py and docs/encode_ahead.py, 240 for docs/segment_ab.py): the bundled
example, looped, at 1024x512 and upscaled to 2048x1024."""
import pathlib
import subprocess

from tdnet_cli.video import ffmpeg_exe

SIZES = ("1024x512", "2048x1024")


def street_clips(out: pathlib.Path, frames: int = 60) -> dict[str, str]:
    """``{size: path}`` under ``out``, made once (an existing clip is reused)."""
    clips = {}
    for size in SIZES:
        path = out / (f"clip_{size}.mp4" if frames == 60 else f"clip_{size}_{frames}.mp4")
        if not path.exists():
            subprocess.run([ffmpeg_exe(), "-v", "error", "-y", "-stream_loop", "-1", "-i", "examples/street.mp4",
                            "-frames:v", str(frames), "-vf", f"scale={size.replace('x', ':')}", "-c:v", "libx264",
                            "-preset", "veryfast", "-crf", "18", str(path)], check=True)
        clips[size] = str(path)
    return clips
