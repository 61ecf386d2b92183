"""Hostile-user tests for `tdnet train` (issue 19, items 6-9, 11, 14 and train's own prints):
resume is exact whatever point a signal lands on, SIGTERM to a process group with loader
workers still saves last.pt, kill -9 leaves no duplicate metrics, a bad last.pt or a full disk
is one line, a bad config creates nothing, and --set/--data values round-trip exactly."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import tomllib
import torch
from faults import assert_one_error, cli, final_names, snapshot

from tdnet_cli.config import apply_overrides, dump_toml, load_config, load_run_config, toml_string
from tdnet_cli.errors import EXIT_FAILED, EXIT_TERMINATED, EXIT_USAGE, Terminated, UsageError


@pytest.fixture(scope="module")
def data_root(synth_data):
    """Two tiny training snippets (as tests/test_train.py makes), no validation split: no run
    here spends time validating."""
    return synth_data((96, 192), train=(2, 1))


def _sets(data_root, out, name, preset="td4-tiny", **over) -> list[str]:
    sets = [
        f"data.root={toml_string(str(data_root))}",
        f"run.out={toml_string(str(out))}",
        f"run.name={toml_string(name)}",
        f'model.preset="{preset}"',
        "data.batch_size=2",
        "data.workers=0",
        "run.log_every=1",
        "run.save_every=100",
        "run.val_every=0",
        "optim.warmup_iters=0",
        "optim.lr=0.02",
        "loss.ohem=false",
    ]
    return sets + [f"{k}={v}" for k, v in over.items()]


def _config(data_root, out, name, **over) -> dict:
    return load_config(None, _sets(data_root, out, name, **over))


def _set_args(sets: list[str]) -> list[str]:
    return [a for s in sets for a in ("--set", s)]


def _state(run: Path) -> dict:
    return torch.load(run / "last.pt", map_location="cpu", weights_only=True)


def _assert_same_training_state(a: dict, b: dict) -> None:
    """Every tensor of the weights (BatchNorm running stats and num_batches_tracked included) and
    of the optimiser state bitwise equal."""
    assert a["train_state"]["iteration"] == b["train_state"]["iteration"]
    sa, sb = a["state_dict"], b["state_dict"]
    assert sa.keys() == sb.keys()
    differ = [k for k in sa if not torch.equal(sa[k], sb[k])]
    assert not differ, f"{len(differ)} of {len(sa)} tensors differ, e.g. {differ[:3]}"
    oa, ob = a["train_state"]["optimizer"], b["train_state"]["optimizer"]
    assert oa["param_groups"] == ob["param_groups"] and oa["state"].keys() == ob["state"].keys()
    for i in oa["state"]:
        assert torch.equal(oa["state"][i]["momentum_buffer"], ob["state"][i]["momentum_buffer"]), i


# -- item 6: a signal in the middle of an iteration ----------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("signals,saved_at", [((signal.SIGTERM,), 2), ((signal.SIGINT, signal.SIGINT), 1)])
def test_signal_mid_iteration_then_resume_equals_an_uninterrupted_run(
    data_root, tmp_path, monkeypatch, signals, saved_at
):
    # The signal lands in iteration 2, after its forward pass moved BatchNorm's running stats
    # (the loss is computed from the forward's output). One signal waits for the iteration's end;
    # a second one stops at once, and the iteration's BN updates are rolled back.
    import tdnet_cli.pipeline.train as train_mod

    iterations = {"optim.iterations": "3"}
    train_mod.train(_config(data_root, tmp_path, "whole", **iterations))

    real = train_mod.Criterion

    class SignalInLoss(real):
        calls = 0

        def __call__(self, *args, **kwargs):
            SignalInLoss.calls += 1
            if SignalInLoss.calls == 2:
                for signum in signals:
                    signal.raise_signal(signum)
            return super().__call__(*args, **kwargs)

    monkeypatch.setattr(train_mod, "Criterion", SignalInLoss)
    with pytest.raises(KeyboardInterrupt) as stopped:
        train_mod.train(_config(data_root, tmp_path, "cut", **iterations))
    assert isinstance(stopped.value, Terminated) == (signals[0] == signal.SIGTERM)
    assert _state(tmp_path / "cut")["train_state"]["iteration"] == saved_at
    monkeypatch.setattr(train_mod, "Criterion", real)
    train_mod.train(load_run_config(tmp_path / "cut"), resume=str(tmp_path / "cut"))
    _assert_same_training_state(_state(tmp_path / "whole"), _state(tmp_path / "cut"))


# -- item 7: SIGTERM to the whole process group, loader workers included -------------------------------
@pytest.mark.slow
def test_sigterm_to_the_process_group_with_workers_saves_last_and_exits_143(data_root, tmp_path):
    run = tmp_path / "group"
    args = [
        "train",
        *_set_args(_sets(data_root, tmp_path, "group", **{"data.workers": "1", "optim.iterations": "500"})),
    ]
    proc = subprocess.Popen(
        [sys.executable, "-m", "tdnet_cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        stdin=subprocess.DEVNULL,
        env={**os.environ, "COLUMNS": "200"},
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            log = run / "metrics.jsonl"
            if log.is_file() and len(log.read_text().splitlines()) >= 2:
                break
            time.sleep(0.2)
        assert proc.poll() is None, proc.communicate()
        os.killpg(proc.pid, signal.SIGTERM)  # how Slurm, Kubernetes and `timeout` stop a job
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    saying = [ln for ln in err.splitlines() if ln.startswith("stopping after iteration")]
    assert len(saying) == 1 and "saving" in saying[0] and "last.pt" in saying[0], err  # said before saving
    rest = "\n".join(ln for ln in err.splitlines() if ln not in saying)
    result = subprocess.CompletedProcess(proc.args, proc.returncode, out, rest)
    line = assert_one_error(result, EXIT_TERMINATED, "terminated", "last.pt", f"--resume {run}")
    saved = _state(run)["train_state"]["iteration"]
    assert saved >= 2 and f"after iteration {saved}" in line
    with pytest.raises(ProcessLookupError):  # the loader's worker did not outlive the run
        for _ in range(50):
            os.killpg(proc.pid, 0)
            time.sleep(0.1)
    assert final_names(run) == ["config.toml", "last.pt", "metrics.jsonl"]


# -- item 8: kill -9, then --resume -------------------------------------------------------------------
@pytest.mark.slow
def test_resume_after_a_hard_kill_logs_each_iteration_once(data_root, tmp_path):
    from tdnet_cli.pipeline.train import train

    def die(done, total, rec):  # what kill -9 leaves: metrics past the last save, no clean-up
        if done == 3:
            raise SystemExit(137)

    with pytest.raises(SystemExit):
        train(_config(data_root, tmp_path, "killed", **{"optim.iterations": "4", "run.save_every": "2"}), progress=die)
    log = tmp_path / "killed" / "metrics.jsonl"
    with open(log, "a") as f:
        f.write('{"iteration": 4, "lo')  # a line torn by the kill
    assert _state(tmp_path / "killed")["train_state"]["iteration"] == 2
    result = cli("train", "--resume", tmp_path / "killed", "--quiet")
    assert result.exit_code == 0, result.stderr
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert [r["iteration"] for r in records if "loss" in r] == [1, 2, 3, 4]


# -- item 9: a bad last.pt, a full disk ----------------------------------------------------------------
@pytest.fixture(scope="module")
def small_run(data_root, tmp_path_factory):
    """A finished 1-iteration run of a narrow PSPNet (a ~0.6 MB last.pt) to resume."""
    out = tmp_path_factory.mktemp("runs")
    result = cli(
        "train",
        "--quiet",
        *_set_args(_sets(data_root, out, "small", preset="psp-tiny", **{"model.width": "4", "optim.iterations": "1"})),
    )
    assert result.exit_code == 0, result.stderr
    return out / "small"


class _RunsCode:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["truncated", "random", "malicious", "other model", "not ours"])
def test_resume_from_a_bad_last_pt_is_one_line(small_run, data_root, tmp_path, damage):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(small_run, run)
    last, marker = run / "last.pt", tmp_path / "code-ran"
    good = last.read_bytes()
    if damage == "truncated":
        last.write_bytes(good[: len(good) // 2])
    elif damage == "random":
        last.write_bytes(os.urandom(4096))
    elif damage == "malicious":
        torch.save({**_state(run), "train_state": _RunsCode(marker)}, last)
    elif damage == "other model":  # a td4-tiny run's state in a psp-tiny run's folder
        from tdnet_cli.models import random_model, save_checkpoint

        save_checkpoint(last, random_model("td4-tiny"), extra={"train_state": _state(run)["train_state"]})
    else:
        torch.save(_state(run)["state_dict"], last)  # a plain state dict: no training state
    before = snapshot(run)
    result = cli("train", "--resume", run, "--set", "optim.iterations=2")
    assert_one_error(result, EXIT_USAGE, str(last))
    assert not marker.exists()
    assert snapshot(run) == before


def test_disk_full_saving_last_is_one_line_and_leaves_nothing(data_root, small_disk):
    result = cli(
        "train", *_set_args(_sets(data_root, small_disk, "full", **{"optim.iterations": "1", "run.save_every": "1"}))
    )
    assert_one_error(result, EXIT_FAILED, "disk full", "last.pt")
    assert sorted(p.name for p in small_disk.iterdir()) == []  # no temporary, no half a run folder


def test_disk_full_on_resume_keeps_the_previous_last_pt(small_run, small_disk):
    import shutil

    run = small_disk / "run"
    shutil.copytree(small_run, run, ignore=shutil.ignore_patterns("model.pt"))
    free = shutil.disk_usage(small_disk).free
    (small_disk / "filler").write_bytes(b"\0" * max(0, free - 200_000))  # room for the log, not a last.pt
    before = (run / "last.pt").read_bytes()
    result = cli("train", "--resume", run, "--quiet", "--set", "optim.iterations=2", "--set", "run.save_every=1")
    assert_one_error(result, EXIT_FAILED, "disk full", "last.pt")
    assert (run / "last.pt").read_bytes() == before
    assert not [p.name for p in run.iterdir() if p.name.startswith(".")]


# -- item 11: a bad config creates nothing -------------------------------------------------------------
@pytest.mark.parametrize(
    "override,needle",
    [
        ('data.scale=["a","b"]', "data.scale"),
        ("data.scale=[0.5, true]", "data.scale"),
        ("data.workers=-1", "data.workers"),
        ("run.val_limit=-3", "run.val_limit"),
        ('data.val_split="test"', "no ground truth"),
        ("optim.lr=nan", "optim.lr"),
        ("optim.momentum=1.5", "optim.momentum"),
        ("run.seed=-1", "run.seed"),
        ('run.name="../elsewhere"', "run.name"),
    ],
)
def test_bad_config_values_are_refused_before_anything_is_made(data_root, tmp_path, override, needle):
    result = cli("train", *_set_args(_sets(data_root, tmp_path / "runs", "bad")), "--set", override)
    assert_one_error(result, EXIT_USAGE, needle)
    assert not (tmp_path / "runs").exists()


def test_run_out_that_is_a_file_is_refused(data_root, tmp_path):
    (tmp_path / "afile").write_text("mine")
    for out in (tmp_path / "afile", tmp_path / "afile" / "deeper"):
        result = cli("train", *_set_args(_sets(data_root, out, "x")))
        assert_one_error(result, EXIT_USAGE, f"{tmp_path / 'afile'} is a file", "run.out")
    assert (tmp_path / "afile").read_text() == "mine"


def test_val_split_with_frames_but_no_labels_is_refused(data_root, tmp_path):
    import shutil

    root = tmp_path / "data"
    shutil.copytree(data_root, root)
    (root / "leftImg8bit_sequence" / "val").mkdir()  # frames of a split, no gtFine/val
    result = cli("train", *_set_args(_sets(root, tmp_path / "runs", "v", **{"run.val_every": "1"})))
    assert_one_error(result, EXIT_USAGE, "val", "no ground truth")
    assert not (tmp_path / "runs").exists()


def test_unreadable_frames_in_a_worker_are_one_line_and_free_the_name(data_root, tmp_path):
    import shutil

    root = tmp_path / "data"
    shutil.copytree(data_root, root)
    for png in (root / "leftImg8bit_sequence" / "train").rglob("*.png"):
        png.write_bytes(b"not a png")
    sets = _sets(root, tmp_path / "runs", "broken", **{"data.workers": "1", "optim.iterations": "1"})
    result = cli("train", *_set_args(sets))
    assert_one_error(result, EXIT_USAGE, "cannot read", "_leftImg8bit.png")
    assert not (tmp_path / "runs" / "broken").exists()  # the same name can be used once the data is fixed


# -- item 14: --set and --data values are TOML values, written back exactly ---------------------------
@pytest.mark.parametrize(
    "text",
    [
        "/data/O'Brien",
        'say "hi"',
        "back\\slash\\",
        "tab\tnew\nline\x7f",
        "ünï 😀",
        " spaced ",
        "[b]red[/b]",
        "1",
        "2024-01-01",
        "true",
    ],
)
def test_string_values_round_trip_through_set_and_config_toml(text):
    cfg = apply_overrides(load_config(), [f"data.root={text}", f"run.name={toml_string(text)}"])
    assert cfg["data"]["root"] == text and cfg["run"]["name"] == text
    assert tomllib.loads(dump_toml(cfg)) == cfg


def test_set_values_are_toml_or_taken_as_text():
    cfg = apply_overrides(
        load_config(), ["optim.lr=0.005", "data.scale=[1, 2]", "loss.ohem=false", "run.name=2024-01-01"]
    )
    assert cfg["optim"]["lr"] == 0.005 and cfg["data"]["scale"] == [1.0, 2.0] and cfg["loss"]["ohem"] is False
    assert cfg["run"]["name"] == "2024-01-01"
    with pytest.raises(UsageError, match="optim.lr"):  # two TOML lines are not one value
        apply_overrides(load_config(), ["optim.lr=1\nrun.seed = 3"])


def test_data_path_with_quotes_round_trips_into_the_run_config(data_root, tmp_path):
    # Also item 15: the summary prints the run folder's brackets as they are.
    weird = tmp_path / 'O\'Brien "q" back\\slash [red]x'
    weird.symlink_to(data_root, target_is_directory=True)
    name = "r[b]1"
    sets = _sets(
        data_root, tmp_path / "runs", "unused", preset="psp-tiny", **{"model.width": "4", "optim.iterations": "1"}
    )
    sets = [s for s in sets if not s.startswith(("data.root=", "run.name="))]
    result = cli("train", "--data", weird, "--name", name, *_set_args(sets), env={"COLUMNS": "1000"})
    assert result.exit_code == 0, result.stderr
    run = tmp_path / "runs" / name
    saved = tomllib.loads((run / "config.toml").read_text())
    assert saved["data"]["root"] == str(weird) and saved["run"]["name"] == name
    assert f"run: {run}" in result.stdout
