"""Issue 24, "one home for each fact": each fact read or parsed in one place, and the side effects
that leaked out of two helpers (TF32 off for the rest of the process, a model moved to "meta")."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import numpy as np
import pytest
import torch

from tdnet_cli.distributed import DistEnv, local_rank, read_dist_env
from tdnet_cli.errors import UsageError
from tdnet_cli.pipeline.inputs import device_for_rank, resolve_shard
from tdnet_cli.sizes import parse_hw, parse_size


# -- 1. the torchrun environment ---------------------------------------------------------------
def test_dist_env_reads_torchrun_world():
    assert read_dist_env({}) == DistEnv(0, 1, 0)
    assert read_dist_env({"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0"}) == DistEnv()
    assert read_dist_env({"RANK": "3"}) == DistEnv()  # no WORLD_SIZE: a single process, as train had it
    d = read_dist_env({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1"})
    assert (d.rank, d.world, d.local_rank, d.distributed, d.is_main) == (3, 4, 1, True, False)
    assert read_dist_env({"RANK": "1", "WORLD_SIZE": "2"}).local_rank == 0
    with pytest.raises(dataclasses.FrozenInstanceError):
        d.rank = 0  # type: ignore[misc]


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"RANK": "x", "WORLD_SIZE": "2"}, "bad RANK/WORLD_SIZE 'x'/'2' in the environment"),
        ({"RANK": "0", "WORLD_SIZE": "two"}, "bad RANK/WORLD_SIZE '0'/'two' in the environment"),
        ({"RANK": "2", "WORLD_SIZE": "2"}, "RANK 2 is outside WORLD_SIZE 2"),
        ({"RANK": "-1", "WORLD_SIZE": "2"}, "RANK -1 is outside WORLD_SIZE 2"),
        ({"RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "gpu0"}, "bad LOCAL_RANK 'gpu0' in the environment"),
    ],
)
def test_dist_env_refuses_bad_values(env, message):
    with pytest.raises(UsageError) as err:
        read_dist_env(env)
    assert str(err.value) == message
    with pytest.raises(UsageError) as err:  # segment's sharding reads them the same way
        resolve_shard(None, env)
    assert str(err.value) == message


def test_local_rank_and_device():
    assert local_rank({}) is None
    assert local_rank({"LOCAL_RANK": "2"}) == 2
    with pytest.raises(UsageError, match="bad LOCAL_RANK '-1'"):
        local_rank({"LOCAL_RANK": "-1"})
    assert device_for_rank("cpu", {"LOCAL_RANK": "bad"}) == "cpu"  # not read where it does not matter
    assert device_for_rank("cuda", {"LOCAL_RANK": "2"}) == "cuda:2"
    assert resolve_shard(None, {"RANK": "1", "WORLD_SIZE": "3"}) == (1, 3)


def test_train_goes_distributed_only_with_several_workers(monkeypatch):
    from tdnet_cli.pipeline import train as train_mod

    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("RANK", "0")
    d, device = train_mod._setup_distributed("cpu")
    assert (d, device.type) == (DistEnv(), "cpu")
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert train_mod._setup_distributed("cpu")[0] == DistEnv()
    monkeypatch.setenv("RANK", "4")
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(UsageError, match="RANK 4 is outside WORLD_SIZE 2"):
        train_mod._setup_distributed("cpu")


# -- 2. sizes ----------------------------------------------------------------------------------
def test_sizes_parse_without_torch():
    code = "import sys, tdnet_cli.sizes; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_each_size_syntax_kept():
    assert parse_size("512X1024") == parse_size("512,1024") == parse_size("512x1024") == (512, 1024)
    assert parse_hw("512x1024") == (512, 1024)
    assert parse_hw("8x8") == (8, 8)  # synth's frames have no model minimum
    with pytest.raises(UsageError) as err:
        parse_hw("512X1024", "--frame-size")
    assert str(err.value) == "bad --frame-size '512X1024' (write it as HEIGHTxWIDTH, e.g. 1024x2048)"
    with pytest.raises(UsageError) as err:
        parse_size("8x8")
    assert str(err.value) == "size '8x8' is too small (use at least 16x16)"
    with pytest.raises(UsageError, match="absurdly large"):
        parse_size(f"16x{(1 << 20) + 1}")


# -- 3. normalisation ----------------------------------------------------------------------------
def test_clips_normalise_with_the_models_mean_and_std(synth_data):
    from tdnet_cli.data.clips import AugmentConfig, ClipDataset
    from tdnet_cli.models.checkpoint import MEAN, STD

    root = synth_data((64, 128), train=(1, 0))
    kw = {"clip_len": 1, "augment": AugmentConfig(crop=(32, 64)), "train": False}  # no border, no jitter
    default = ClipDataset(root, "train", **kw)[0]["frames"]
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
    own = ClipDataset(root, "train", mean=mean, std=std, **kw)[0]["frames"]
    view = (1, 3, 1, 1)
    pixels = default * torch.tensor(STD).view(view) + torch.tensor(MEAN).view(view)  # back to [0, 1]
    expected = (pixels - torch.tensor(mean).view(view)) / torch.tensor(std).view(view)
    torch.testing.assert_close(own, expected, atol=1e-5, rtol=1e-5)


# -- 4. TF32 off only while a fp32 CUDA predictor runs -------------------------------------------
@pytest.fixture
def tf32_flags():
    """Both TF32 flags on (as a training run may have them); put back as they were afterwards."""
    saved = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = True
    yield lambda: (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def test_tf32_off_is_scoped_and_nests(tf32_flags):
    from tdnet_cli.inference import _TF32_OFF

    with _TF32_OFF:
        assert tf32_flags() == (False, False)
        with _TF32_OFF:  # another thread's model stage, say
            pass
        assert tf32_flags() == (False, False)  # the outer one is still running
    assert tf32_flags() == (True, True)


@pytest.mark.slow
def test_predictor_restores_tf32_after_running(tf32_flags):
    from tdnet_cli.inference import Predictor
    from tdnet_cli.models.checkpoint import random_model

    pred = Predictor(random_model("td4-tiny", input_size=(64, 128)), device="cpu", optimize=False)
    assert tf32_flags() == (True, True)  # constructing one changes nothing
    pred._tf32_off = True  # what a fp32 predictor on a GPU sets; this runs where there may be none
    seen, step = [], pred.model.step

    def watched(*args, **kwargs):
        seen.append(tf32_flags())
        return step(*args, **kwargs)

    pred.model.step = watched
    stream = pred.new_stream()
    for _ in range(2):
        pred.segment(np.zeros((64, 128, 3), np.uint8), stream)
    assert seen == [(False, False)] * 2
    assert tf32_flags() == (True, True)


# -- 5. counting FLOPs leaves the model alone ----------------------------------------------------
@pytest.mark.slow
def test_steady_gflops_keeps_the_callers_weights():
    from tdnet_cli.models.complexity import preset_complexity, steady_gflops
    from tdnet_cli.models.registry import get_preset

    model = get_preset("td4-tiny").build().eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert steady_gflops(model) == pytest.approx(preset_complexity("td4-tiny")[1])
    after = model.state_dict()
    assert after.keys() == before.keys()
    for k, v in after.items():
        assert v.device.type == "cpu", k
        torch.testing.assert_close(v, before[k], rtol=0, atol=0, msg=k)
    with torch.inference_mode():
        model.step(torch.zeros(1, 3, *model.input_size), model.new_state(1))  # still runs
