"""Issue 21: TC of the ground truth on `tdnet synth` sequences, as written to disk.

`tdnet synth` writes labels for the annotated frame only; every frame's labels come from the
generator itself: ``render_sequence(sequence_seed(seed, split, i), size, frames)`` renders the
same street as sequence ``i`` of the written split, frame by frame, with its labels. The test
checks that the frames it renders are the bytes written to ``leftImg8bit_sequence``, so the
labels belong to those frames, then scores the ground truth's own TC on the written frames.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from test_consistency import add_label_noise, expected_with_noise

from tdnet_cli.consistency import ConsistencyMeter, ConsistencyResult
from tdnet_cli.data.cityscapes import CLASSES, NUM_CLASSES, label_id_to_train_id
from tdnet_cli.data.synth import render_sequence, sequence_seed

SIZE, SEED, FRAMES = (256, 512), 31, 8  # the first 8 of the written snippet's 20 frames
THIN = ("pole", "traffic light", "traffic sign", "person", "rider", "bicycle", "motorcycle", "fence", "wall")


@pytest.fixture(scope="module")
def clip(synth_data):
    """(frame read from the written dataset, its ground-truth train ids) for the first frames."""
    root = synth_data(SIZE, val=(1, SEED))
    files = sorted((root / "leftImg8bit_sequence" / "val").glob("*/*_leftImg8bit.png"))[:FRAMES]
    out = []
    for path, fr in zip(files, render_sequence(sequence_seed(SEED, "val", 0), SIZE, FRAMES), strict=True):
        frame = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
        assert np.array_equal(frame, fr.rgb), path  # the rendered labels are this file's labels
        out.append((frame, label_id_to_train_id(fr.label_ids)))
    return out


def test_ground_truth_is_consistent_on_written_synth_frames(clip):
    """The flow works on these scenes: the ground truth's labels agree after warping on ~97-98% of
    the compared pixels, and wide classes (road, building, sky, cars, ...) have a TC above 90.
    TC itself, a mean over classes, is below the issue's hoped-for 90 here (87.3 with the default
    ULTRAFAST, 89.8 with MEDIUM; 85.5-92.7 over seeds and sizes): thin classes (pole 61, bicycle
    77, fence 80) lose pixels at their edges, where DIS's coarse patches give a thin object its
    background's motion. Measured in docs/benchmarks.md; this asserts what holds, not 90."""
    default, medium = ConsistencyMeter(NUM_CLASSES), ConsistencyMeter(NUM_CLASSES, preset="medium")
    for frame, labels in clip:
        default.update(frame, labels)
        medium.update(frame, labels)
    d, m = default.result(), medium.result()
    assert d.tc > 0.85 and m.tc > d.tc + 0.01, (d.tc, m.tc)
    assert d.flicker < 0.03 and m.flicker < d.flicker
    per_class = dict(zip(CLASSES, d.per_class))
    wide = [v for name, v in per_class.items() if name not in THIN and not np.isnan(v)]
    thin = [v for name, v in per_class.items() if name in THIN and not np.isnan(v)]
    assert len(wide) >= 8 and np.mean(wide) > 0.92 and np.median(wide) > 0.95, per_class
    assert np.mean(thin) < np.mean(wide) - 0.08 and per_class["pole"] < 0.75, per_class  # where TC is lost
    assert d.pixels > 0.4 * d.pairs * SIZE[0] * SIZE[1]  # the forward-backward check keeps enough


def test_noise_on_every_other_frame_lowers_tc_as_expected(clip):
    """A fraction p of the labelled pixels of every other frame switched to another present class:
    TC falls to the expectation computed from the clean pairs (the flow does not see labels)."""
    p, rng = 0.1, np.random.default_rng(3)
    clean = ConsistencyMeter(NUM_CLASSES)
    pairs = [c for c in (clean.update(f, lab) for f, lab in clip) if c is not None]
    r = clean.result()
    classes = np.unique(np.concatenate([lab.ravel() for _, lab in clip]))
    classes = classes[classes < NUM_CLASSES]
    noisy = ConsistencyMeter(NUM_CLASSES)
    for t, (frame, lab) in enumerate(clip):
        if t % 2 == 0:  # even frames: the first of each pair from 0, the second of each from 1
            lab = add_label_noise(lab, classes, p, rng)
        noisy.update(frame, lab)
    got = noisy.result()
    want = ConsistencyResult.from_confusion(
        expected_with_noise(pairs, noisy_first=True, p=p, classes=classes), r.pairs, r.preset, r.work_size
    )
    assert got.tc == pytest.approx(want.tc, abs=0.005), (got.tc, want.tc, r.tc)
    assert got.flicker == pytest.approx(want.flicker, abs=0.002)
    # roughly: a pixel compared against a noisy side disagrees ~p more often
    assert got.flicker == pytest.approx(r.flicker + p * (1 - r.flicker), abs=0.02)
    assert r.tc - got.tc > 0.1 and got.pixels == r.pixels
