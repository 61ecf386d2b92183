"""Synthetic street scenes: Cityscapes layout (checked with cityscapesscripts), labels,
determinism, motion, and the ``tdnet synth`` command. Tiny sizes keep it to seconds."""

from __future__ import annotations

import glob
import itertools
import json
import os
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from official import ground_truths, official_scores

from tdnet_cli.data import layout
from tdnet_cli.data.cityscapes import CLASSES, LABELS, label_id_to_train_id
from tdnet_cli.data.layout import FrameId
from tdnet_cli.data.synth import (
    VAL_CITIES,
    generate_dataset,
    label_color_lut,
    render_sequence,
)
from tdnet_cli.errors import DataError, OutputExistsError, UsageError

SIZE = (128, 256)
N_SEQ = 4
FRAMES = 20  # the smallest snippet that has the annotated frame (index 19)
INSTANCE_LABELS = {lab.id for lab in LABELS if lab.has_instances}


def read(path: Path) -> np.ndarray:
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert img is not None, path
    return img


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    root = tmp_path_factory.mktemp("synth") / "cs"
    result = generate_dataset(root, sequences=N_SEQ, split="val", size=SIZE, seed=11, frames_per_sequence=FRAMES)
    return root, result


# ---- layout -------------------------------------------------------------------------


@pytest.mark.slow
def test_layout_files_and_names(dataset) -> None:
    root, result = dataset
    fids = layout.list_annotated(root, "val")
    assert fids == sorted(result.annotated) and len(fids) == N_SEQ
    assert {f.city for f in fids} <= set(VAL_CITIES)
    assert result.frames == N_SEQ * FRAMES
    for fid in fids:
        seq = layout.sequence_frames(root, "val", fid, FRAMES)  # the whole snippet ends at the annotated frame
        assert [FrameId.parse(p.name) for p in seq] == [fid.shifted(d) for d in range(1 - FRAMES, 1)]
        assert seq[-1].name == f"{fid.stem}_leftImg8bit.png"
        assert seq[0].parent == root / "leftImg8bit_sequence" / "val" / fid.city
        # leftImg8bit holds the annotated frame itself
        assert layout.image_path(root, "val", fid).read_bytes() == seq[-1].read_bytes()
        labels = read(layout.gt_path(root, "val", fid, "labelIds"))
        inst = read(layout.gt_path(root, "val", fid, "instanceIds"))
        color = read(layout.gt_path(root, "val", fid, "color"))
        rgb = read(seq[-1])
        assert labels.dtype == np.uint8 and labels.shape == SIZE
        assert inst.dtype == np.uint16 and inst.shape == SIZE
        assert rgb.shape == color.shape == (*SIZE, 3) and rgb.dtype == color.dtype == np.uint8
        assert np.array_equal(cv2.cvtColor(color, cv2.COLOR_BGR2RGB), label_color_lut()[labels])
    # nothing else lies around (no temporary files left behind)
    files = sorted(p.relative_to(root) for p in root.rglob("*") if p.is_file())
    assert len(files) == N_SEQ * (FRAMES + 4)
    assert not [p for p in files if p.name.startswith(".") or "partial" in p.name]


def test_default_snippet_is_30_frames_with_annotation_at_20th(tmp_path: Path) -> None:
    result = generate_dataset(tmp_path / "o", sequences=1, split="train", size=(64, 128), seed=0)
    (fid,) = result.annotated
    seq = sorted((tmp_path / "o" / "leftImg8bit_sequence" / "train" / fid.city).glob("*.png"))
    numbers = [FrameId.parse(p.name).frame for p in seq]
    assert len(seq) == 30 and numbers == list(range(numbers[0], numbers[0] + 30))
    assert fid.frame == numbers[layout.ANNOTATED_INDEX]


def test_cityscapesscripts_finds_and_scores_them(dataset, tmp_path: Path) -> None:
    from cityscapesscripts.helpers.csHelpers import getCsFileInfo

    root, _ = dataset
    gts = ground_truths(root, "val")
    assert len(gts) == N_SEQ
    for name in gts + glob.glob(str(root / "leftImg8bit*" / "val" / "*" / "*.png")):
        info = getCsFileInfo(name)  # the official parser: city_seq_frame_type[_type2].ext
        assert FrameId(info.city, int(info.sequenceNb), int(info.frameNb)) == FrameId.parse(name)

    perfect, wrong = tmp_path / "perfect", tmp_path / "wrong"
    for d in (perfect, wrong):
        d.mkdir()
    for gt in gts:
        name = os.path.basename(gt).replace("_gtFine_labelIds", "_pred")
        shutil.copy(gt, perfect / name)
        lab = read(Path(gt))
        lab[lab == 7] = 8  # road predicted as sidewalk
        cv2.imwrite(str(wrong / name), lab)
    res = official_scores(root, "val", perfect)
    assert res["averageScoreClasses"] == pytest.approx(1.0)
    assert res["averageScoreInstClasses"] == pytest.approx(1.0)
    assert all(res["classScores"][name] == pytest.approx(1.0) for name in CLASSES)  # none is NaN: all present
    bad = official_scores(root, "val", wrong)
    assert bad["classScores"]["road"] == 0.0 and bad["averageScoreClasses"] < 0.95


def test_every_train_class_appears(dataset) -> None:
    root, result = dataset
    seen: set[int] = set()
    for fid in result.annotated:
        seen |= set(np.unique(label_id_to_train_id(read(layout.gt_path(root, "val", fid)))).tolist())
    missing = [CLASSES[i] for i in range(len(CLASSES)) if i not in seen]
    assert not missing, f"classes never drawn: {missing}"


def test_instance_ids_follow_cityscapes_convention(dataset) -> None:
    root, result = dataset
    for fid in result.annotated:
        labels = read(layout.gt_path(root, "val", fid, "labelIds")).astype(np.int64)
        inst = read(layout.gt_path(root, "val", fid, "instanceIds")).astype(np.int64)
        assert np.array_equal(np.where(inst >= 1000, inst // 1000, inst), labels)
        big = np.unique(inst[inst >= 1000])
        assert big.size >= 5 and set((big // 1000).tolist()) <= INSTANCE_LABELS
        plain = set(np.unique(inst[inst < 1000]).tolist())
        assert not plain & INSTANCE_LABELS  # every instance-class pixel belongs to an instance
        assert {1, 7, 23} <= plain  # ego vehicle, road, sky
        # the ego bonnet is at the bottom centre
        assert labels[-1, SIZE[1] // 2] == 1


# ---- generator ----------------------------------------------------------------------


@pytest.mark.slow
def test_same_seed_same_bytes_other_seed_differs(tmp_path: Path) -> None:
    def make(name: str, seed: int) -> dict[str, bytes]:
        out = tmp_path / name
        generate_dataset(out, sequences=1, split="train", size=(64, 128), seed=seed, frames_per_sequence=FRAMES)
        return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*.png"))}

    a, b, c = make("a", 5), make("b", 5), make("c", 6)
    assert a == b and len(a) == FRAMES + 4
    assert a.keys() != c.keys() or any(a[k] != c[k] for k in a)
    first = [f.rgb for f in render_sequence(123, (64, 128), 2)]
    again = [f.rgb for f in render_sequence(123, (64, 128), 2)]
    other = [f.rgb for f in render_sequence(124, (64, 128), 2)]
    assert all(np.array_equal(x, y) for x, y in zip(first, again))
    assert not np.array_equal(first[0], other[0])


@pytest.mark.slow
def test_splits_and_sequences_differ(tmp_path: Path) -> None:
    train = generate_dataset(
        tmp_path / "t", sequences=2, split="train", size=(64, 128), seed=1, frames_per_sequence=FRAMES
    )
    val = generate_dataset(tmp_path / "v", sequences=1, split="val", size=(64, 128), seed=1, frames_per_sequence=FRAMES)
    imgs = [read(layout.image_path(tmp_path / "t", "train", f)) for f in train.annotated]
    imgs.append(read(layout.image_path(tmp_path / "v", "val", val.annotated[0])))
    assert not np.array_equal(imgs[0], imgs[1]) and not np.array_equal(imgs[0], imgs[2])
    assert train.annotated[0].city != train.annotated[1].city  # sequences are spread over the cities


def test_camera_moves_and_objects_approach() -> None:
    frames = list(render_sequence(7, (128, 256), 20))
    for a, b in itertools.pairwise(frames):
        diff = np.abs(a.rgb.astype(np.int16) - b.rgb.astype(np.int16)).mean()
        assert diff > 2.0, "consecutive frames must really move"
        assert (a.label_ids != b.label_ids).mean() > 0.002
    # the same instance keeps its id from frame to frame; oncoming ones grow
    growth = []
    for k in np.unique(frames[19].instance_ids[frames[19].instance_ids >= 1000]):
        n0, n1 = (frames[10].instance_ids == k).sum(), (frames[19].instance_ids == k).sum()
        if n0 > 20:
            growth.append(n1 / n0)
    assert growth and max(growth) > 1.3
    # shapes and types
    f = frames[0]
    assert f.rgb.shape == (128, 256, 3) and f.rgb.dtype == np.uint8
    assert f.label_ids.shape == (128, 256) and f.label_ids.dtype == np.uint8
    assert f.instance_ids.dtype == np.int32


def test_same_street_at_any_size() -> None:
    small = list(render_sequence(3, (64, 128), 20))[19].label_ids
    big = list(render_sequence(3, (128, 256), 20))[19].label_ids
    down = cv2.resize(big, (128, 64), interpolation=cv2.INTER_NEAREST)
    assert (down == small).mean() > 0.8


def test_refuses_a_split_that_is_there_unless_overwrite(tmp_path: Path) -> None:
    out = tmp_path / "o"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    generate_dataset(out, sequences=1, size=(64, 128), frames_per_sequence=FRAMES)  # a new split: no flag
    assert (out / "keep.txt").read_text() == "mine" and (out / "gtFine").is_dir()
    with pytest.raises(OutputExistsError, match="already holds the train split"):
        generate_dataset(out, sequences=1, size=(64, 128), frames_per_sequence=FRAMES)
    generate_dataset(out, sequences=1, size=(64, 128), frames_per_sequence=FRAMES, overwrite=True)
    assert (out / "keep.txt").read_text() == "mine"
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputExistsError):
        generate_dataset(tmp_path / "file", sequences=1, size=(64, 128))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"split": "test"},
        {"sequences": 0},
        {"frames_per_sequence": 19},
        {"size": (8, 128)},
        {"seed": -1},
    ],
)
def test_bad_arguments(tmp_path: Path, kwargs: dict) -> None:
    args = {"sequences": 1, "size": (64, 128), "frames_per_sequence": FRAMES, **kwargs}
    with pytest.raises(UsageError):
        generate_dataset(tmp_path / "o", **args)
    assert not (tmp_path / "o").exists()


def test_progress_callback(tmp_path: Path) -> None:
    calls: list[tuple[int, int]] = []
    generate_dataset(
        tmp_path / "o",
        sequences=2,
        size=(64, 128),
        frames_per_sequence=FRAMES,
        progress=lambda d, t: calls.append((d, t)),
    )
    assert calls == [(i, 2 * FRAMES) for i in range(1, 2 * FRAMES + 1)]


# ---- layout helpers -----------------------------------------------------------------


def test_frame_id_parse_and_paths(tmp_path: Path) -> None:
    fid = FrameId.parse("frankfurt_000001_054640_gtFine_labelIds.png")
    assert fid == FrameId("frankfurt", 1, 54640) and fid.stem == "frankfurt_000001_054640"
    assert FrameId.parse("/x/bad-honnef_000000_000019_leftImg8bit.png").city == "bad-honnef"
    assert layout.gt_path("R", "val", fid, "instanceIds") == Path(
        "R/gtFine/val/frankfurt/frankfurt_000001_054640_gtFine_instanceIds.png"
    )
    assert layout.sequence_path("R", "train", fid.shifted(-19)).name == "frankfurt_000001_054621_leftImg8bit.png"
    for bad in ("frankfurt_1_2_leftImg8bit.png", "frank_furt_000001_000002_x.png", "readme.txt"):
        with pytest.raises(DataError):
            FrameId.parse(bad)
    with pytest.raises(DataError):
        layout.gt_path("R", "val", fid, "polygons")


def test_layout_errors(dataset, tmp_path: Path) -> None:
    root, result = dataset
    with pytest.raises(DataError, match="not found"):
        layout.list_annotated(tmp_path / "nope", "val")
    with pytest.raises(DataError, match="gtFine"):
        layout.list_annotated(root, "train")
    with pytest.raises(DataError, match="no city"):
        layout.list_annotated(root, "val", ["aachen"])
    fid = result.annotated[0]
    assert layout.list_annotated(root, "val", [fid.city])
    with pytest.raises(DataError, match="missing sequence frame"):
        layout.sequence_frames(root, "val", fid, FRAMES + 1)  # one more than was written
    assert len(layout.list_images(root, "val")) == N_SEQ


# ---- CLI ------------------------------------------------------------------------------


@pytest.mark.slow
def test_cli(tmp_path: Path, runner) -> None:
    from tdnet_cli.cli.app import app

    out = tmp_path / "cli"
    res = runner.invoke(
        app,
        [
            "synth",
            str(out),
            "--sequences",
            "1",
            "--size",
            "64x128",
            "--frames",
            "20",
            "--seed",
            "2",
            "--split",
            "val",
            "--json",
        ],
    )
    assert res.exit_code == 0, res.output
    info = json.loads(res.stdout)
    assert info["frames"] == 20 and info["annotated"] == 1 and info["size"] == [64, 128] and info["split"] == "val"
    assert layout.list_annotated(out, "val")
    # same split again: refused, one line, exit 2
    again = ["synth", str(out), "--sequences", "1", "--size", "64x128", "--frames", "20", "--split", "val"]
    res = runner.invoke(app, again)
    assert res.exit_code == 2 and "already holds the val split" in res.output and "--overwrite" in res.output
    res = runner.invoke(app, [*again, "--overwrite", "-q"])
    assert res.exit_code == 0 and res.stdout == ""
    for bad in ("64*128", "64x", "x128", "64X128", " 64x128", "64x128x3"):
        res = runner.invoke(app, ["synth", str(tmp_path / "b"), "--size", bad])
        assert res.exit_code == 2 and "HEIGHTxWIDTH" in res.output, bad
        assert "Traceback" not in res.output
    res = runner.invoke(app, ["synth", str(tmp_path / "b"), "--split", "test", "--size", "64x128"])
    assert res.exit_code == 2
    assert not (tmp_path / "b").exists()
