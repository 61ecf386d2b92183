"""`segment` with torch on 1 thread against 2, on the CPU: which keeps the pipeline faster?

usage: python docs/experiments/segment_threads.py CLIP... (e.g. the clips docs/experiments/e2e_routes.py makes)
Bundled model, overlay output, x264 ultrafast; three alternating runs per thread count.
"""

import sys
import tempfile

from tdnet_cli.inference import Predictor
from tdnet_cli.pipeline import SegmentOptions, segment
from tdnet_cli.video import Encoding

pred = Predictor.create(device="cpu")
for clip in sys.argv[1:]:
    fps = {1: [], 2: []}
    for _ in range(3):
        for threads in (1, 2):
            with tempfile.TemporaryDirectory() as out:
                options = SegmentOptions(out_dir=out, encoding=Encoding("ultrafast"), threads=threads)
                r = segment([clip], predictor=pred, options=options).results[0]
            fps[threads].append(round(r.frames / r.seconds, 2))
    print(clip, "fps with 1 thread:", fps[1], "with 2:", fps[2], flush=True)
