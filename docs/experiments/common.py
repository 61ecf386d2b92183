"""What the experiment scripts beside this file share (run them from the repository root;
Python puts this folder on sys.path, so ``from common import ...`` needs nothing more).

- The conformance recipe bound to the repository's fixtures: ``recipe_model``, ``expected``
  (``tdnet_cli.conformance`` holds the recipe and the comparison; tests/ binds the same
  fixtures for the tests).
- The H.264 street clips that the CPU end-to-end scripts time (60 frames for e2e_routes.py
  and encode_ahead.py, 240 for segment_ab.py): the bundled example, looped, at 1024x512 and
  upscaled to 2048x1024.
"""

import pathlib
import subprocess
from functools import partial

from tdnet_cli import conformance
from tdnet_cli.video import ffmpeg_exe

REPO = pathlib.Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures" / "conformance"  # data only: nothing is imported from tests/
recipe_model = partial(conformance.recipe_model, FIXTURES)
expected = partial(conformance.expected, FIXTURES)

SIZES = ("1024x512", "2048x1024")


def street_clips(out: pathlib.Path, frames: int = 60) -> dict[str, str]:
    """``{size: path}`` under ``out``, made once (an existing clip is reused)."""
    clips = {}
    for size in SIZES:
        path = out / (f"clip_{size}.mp4" if frames == 60 else f"clip_{size}_{frames}.mp4")
        if not path.exists():
            subprocess.run(
                [
                    ffmpeg_exe(),
                    "-v",
                    "error",
                    "-y",
                    "-stream_loop",
                    "-1",
                    "-i",
                    str(REPO / "examples" / "street.mp4"),
                    "-frames:v",
                    str(frames),
                    "-vf",
                    f"scale={size.replace('x', ':')}",
                    "-c:v",
                    "libx264",
                    "-preset",
                    "veryfast",
                    "-crf",
                    "18",
                    str(path),
                ],
                check=True,
            )
        clips[size] = str(path)
    return clips
