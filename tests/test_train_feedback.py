"""What `tdnet train` and `tdnet synth` tell a new user (issue 25 items 3, 7 and 8): resuming a
finished run is one line before any work; the bar moves every iteration and ends on the whole
run's rate; an interruption says at once that it is saving last.pt; the README's training recipe
runs in the order it is written; `tdnet synth` adds a split without --overwrite."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import signal
import time
from pathlib import Path
from types import SimpleNamespace
from typing import ClassVar

import pytest
import tomllib
from faults import REPO, assert_one_error, cli, snapshot

from tdnet_cli.config import toml_string
from tdnet_cli.data import layout
from tdnet_cli.errors import EXIT_INTERRUPTED, EXIT_TERMINATED, EXIT_USAGE


@pytest.fixture(scope="module")
def data_root(synth_data):
    """Two tiny training snippets, no validation split (the same set tests/test_faults_train.py uses)."""
    return synth_data((96, 192), train=(2, 1))


def _args(data_root: Path, out: Path, name: str, **over: str) -> list[str]:
    """`--set` arguments for a tiny per-frame PSPNet run: a step is a fraction of a second."""
    sets = {
        "data.root": toml_string(str(data_root)),
        "run.out": toml_string(str(out)),
        "run.name": toml_string(name),
        "model.preset": '"psp-tiny"',
        "model.width": "4",
        "data.batch_size": "2",
        "data.workers": "0",
        "run.log_every": "1",
        "run.save_every": "100",
        "run.val_every": "0",
        "optim.warmup_iters": "0",
        "loss.ohem": "false",
        **over,
    }
    return [a for k, v in sets.items() for a in ("--set", f"{k}={v}")]


class _Bar:
    """Stands in for rich's Progress in tdnet_cli.cli.train (the bar is off where stderr is not a
    terminal): records what the user would see. ``on_update`` runs after each update."""

    events: list
    on_update = None

    def __init__(self, *columns, **options) -> None:
        pass

    def start(self) -> None:
        self.events.append(("start",))

    def add_task(self, description: str, *, total: int, completed: int = 0, **fields) -> int:
        self.events.append(("task", completed, total))
        return 0

    def update(self, task: int, *, completed: int | None = None, info: str = "", visible: bool = True) -> None:
        self.events.append(("update", completed, info) if visible else ("hide",))
        if self.on_update and completed is not None:
            self.on_update(completed)

    def stop(self) -> None:
        self.events.append(("stop",))


@pytest.fixture
def bar(monkeypatch):
    """What the train command's bar showed, in order; set ``bar.on_update`` to act on an update."""
    import tdnet_cli.cli.train as cli_train

    class Bar(_Bar):
        events: ClassVar[list] = []

    monkeypatch.setattr(cli_train, "Progress", Bar)
    return Bar


def _updates(bar) -> list[tuple]:
    return [e for e in bar.events if e[0] == "update"]


# -- item 3: --resume of a finished run ------------------------------------------------------------
@pytest.fixture(scope="module")
def finished(data_root, tmp_path_factory):
    """A run that went all the way (2 of 2 iterations)."""
    out = tmp_path_factory.mktemp("runs")
    result = cli("train", "--quiet", *_args(data_root, out, "done", **{"optim.iterations": "2"}))
    assert result.exit_code == 0, result.stderr
    return out / "done"


@pytest.mark.parametrize("extra", [(), ("--json",)])
def test_resuming_a_finished_run_is_one_line_before_any_work(finished, bar, monkeypatch, extra):
    import tdnet_cli.pipeline.train as train_mod

    def no_work(*args, **kwargs):
        raise AssertionError("a finished run was set up again")

    monkeypatch.setattr(train_mod, "build_student", no_work)
    monkeypatch.setattr(train_mod, "make_loader", no_work)
    before = snapshot(finished)
    result = cli("train", "--resume", finished, *extra)
    assert_one_error(
        result, EXIT_USAGE, f"{finished} is already at 2/2 iterations", "raise optim.iterations", "optim.iterations=4"
    )
    assert result.stdout == "" and bar.events == []  # no bar, no summary, no JSON
    assert snapshot(finished) == before


def test_a_run_past_the_iterations_asked_for_is_one_line(finished, bar):
    result = cli("train", "--resume", finished, "--set", "optim.iterations=1")
    assert_one_error(result, EXIT_USAGE, "at iteration 2, past optim.iterations=1")
    assert bar.events == []


@pytest.mark.slow
def test_raising_the_iterations_continues_a_finished_run(finished, bar, tmp_path):
    run = tmp_path / "more"
    shutil.copytree(finished, run)
    result = cli("train", "--resume", run, "--set", "optim.iterations=3")
    assert result.exit_code == 0, result.stderr
    assert f"resumed {run} at iteration 2" in result.stderr and result.stdout.startswith("run: ")
    assert bar.events[:2] == [("start",), ("task", 2, 3)]  # the bar starts where the run is
    assert [u[1] for u in _updates(bar)] == [3]
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in records if "loss" in r] == [1, 2, 3]
    assert records[-1] == {"iteration": 3, "model_from": "last", "model_iteration": 3}  # which weights model.pt holds


# -- item 7: the bar, its rate, and what an interruption says ---------------------------------------
@pytest.mark.slow
def test_bar_moves_every_iteration_and_ends_on_the_whole_runs_rate(data_root, tmp_path, bar, monkeypatch):
    import tdnet_cli.pipeline.train_loop as train_mod

    # train's clock, made to read 10 s for the first step (a warm-up) and 1 s for each later one.
    clock, real = [1000.0], train_mod.TrainStep.gradients
    monkeypatch.setattr(train_mod, "time", SimpleNamespace(perf_counter=lambda: clock[0], time=time.time))

    def timed(self, batches, it):
        clock[0] += 10.0 if it == 0 else 1.0
        return real(self, batches, it)

    monkeypatch.setattr(train_mod.TrainStep, "gradients", timed)
    result = cli("train", *_args(data_root, tmp_path, "bar", **{"optim.iterations": "4", "run.log_every": "2"}))
    assert result.exit_code == 0, result.stderr
    assert bar.events[:2] == [("start",), ("task", 0, 4)] and bar.events[-1] == ("stop",)
    updates = _updates(bar)
    assert [u[1] for u in updates] == [1, 2, 3, 4]  # every iteration, not every run.log_every
    records = [json.loads(line) for line in (tmp_path / "bar" / "metrics.jsonl").read_text().splitlines()]
    records = [r for r in records if "loss" in r]  # the iterations' records (the run's last says what model.pt is)
    assert [r["iteration"] for r in records] == [1, 2, 4]  # the log still every 2 (and the first, the last)
    for (_, done, info), rec in zip(updates, [records[0], records[1], None, records[2]]):
        assert info.startswith(f"loss {rec['loss']:.3f} lr") if rec else info.startswith("loss ")
    rates = [float(re.fullmatch(r"loss \S+ lr \S+ ([\d.]+) it/s", u[2]).group(1)) for u in updates]
    assert rates == [0.1, 0.18, 0.25, 0.31]  # iterations done / the loop's time so far: 1/10, 2/11, 3/12, 4/13
    assert [r["it_s"] for r in records] == [0.1, 1.0, 1.0]  # the log's own: each window since the last record


@pytest.mark.parametrize(
    "signum,code,what",
    [(signal.SIGINT, EXIT_INTERRUPTED, "interrupted"), (signal.SIGTERM, EXIT_TERMINATED, "terminated")],
)
@pytest.mark.slow
def test_an_interruption_says_it_is_saving_before_it_saves(data_root, tmp_path, bar, monkeypatch, signum, code, what):
    import tdnet_cli.cli.train as cli_train
    import tdnet_cli.pipeline.train_loop as train_mod

    order: list[tuple[str, str]] = []
    real_save, real_note = train_mod.save, cli_train._note

    def save(path, *args, **kwargs):
        order.append(("save", path.name))
        return real_save(path, *args, **kwargs)

    def note(text: str) -> None:
        order.append(("note", text))
        real_note(text)

    monkeypatch.setattr(train_mod, "save", save)
    monkeypatch.setattr(cli_train, "_note", note)
    bar.on_update = staticmethod(lambda done: signal.raise_signal(signum) if done == 2 else None)
    run = tmp_path / "cut"
    result = cli("train", *_args(data_root, tmp_path, "cut", **{"optim.iterations": "50"}))
    saying = f"stopping after iteration 2: saving {run / 'last.pt'} ..."
    assert order == [("note", saying), ("save", "last.pt")]  # said before the save began, not after it
    lines = result.stderr.splitlines()
    assert lines[0] == saying, result.stderr
    rest = SimpleNamespace(exit_code=result.exit_code, stdout=result.stdout, stderr="\n".join(lines[1:]))
    assert_one_error(
        rest,
        code,
        what,
        "after iteration 2",
        f"saved {run / 'last.pt'}",
        f"--resume {run}",
    )
    assert bar.events[-2:] == [("hide",), ("stop",)]


def test_quiet_interruption_is_the_error_line_alone(data_root, tmp_path, bar):
    bar.on_update = staticmethod(lambda done: signal.raise_signal(signal.SIGINT) if done == 1 else None)
    result = cli("train", "--quiet", *_args(data_root, tmp_path, "q", **{"optim.iterations": "50"}))
    assert_one_error(result, EXIT_INTERRUPTED, "interrupted after iteration 1", "last.pt")


# -- item 8: the README's training recipe, and synth adding a split ---------------------------------
def _readme_commands() -> list[list[str]]:
    """The `tdnet ...` lines of the README's bash blocks, split as a shell would (comments dropped)."""
    text = (REPO / "README.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)```", text, flags=re.DOTALL)
    return [shlex.split(line, comments=True) for b in blocks for line in b.splitlines() if line.startswith("tdnet ")]


def test_readme_trains_each_run_after_the_runs_it_starts_from():
    made: dict[str, set[str]] = {}  # dataset root -> splits synthesised so far
    trained: set[str] = set()
    configs = 0
    for cmd in _readme_commands():
        if cmd[1] == "synth":
            split = cmd[cmd.index("--split") + 1] if "--split" in cmd else "train"
            made.setdefault(cmd[2], set()).add(split)
        elif cmd[1] == "train" and "--config" in cmd:
            cfg = tomllib.loads((REPO / cmd[cmd.index("--config") + 1]).read_text())
            assert "train" in made.get(cfg["data"]["root"], set()), f"{cmd}: no earlier synth of its data"
            for key in ("init", "teacher"):
                source = cfg["model"].get(key)
                if source:
                    assert re.fullmatch(r"runs/[\w-]+/model\.pt", source) and Path(source).parent.name in trained, (
                        f"{cmd}: model.{key} {source} is not trained by an earlier line"
                    )
            assert "out" not in cfg["run"]  # the runs/ above
            trained.add(cfg["run"]["name"])
            configs += 1
    assert configs >= 3 and {"psp-mini", "gpsp-mini", "td4-mini"} <= trained


@pytest.mark.slow
def test_readme_synth_lines_run_as_written(tmp_path, monkeypatch):
    """The README's synth commands, made tiny: the second adds the val split without a flag."""
    monkeypatch.chdir(tmp_path)
    lines = [cmd for cmd in _readme_commands() if cmd[1] == "synth"]
    assert len(lines) >= 2 and not any("--overwrite" in cmd for cmd in lines)
    for cmd in lines:
        args = cmd[1:]
        args[args.index("--sequences") + 1] = "1"
        args[args.index("--size") + 1] = "64x128"
        result = cli(*args, "--quiet")
        assert result.exit_code == 0, (cmd, result.stderr)
    root = Path(lines[0][2])
    assert layout.list_annotated(root, "train") and layout.list_annotated(root, "val")


@pytest.mark.slow
def test_synth_adds_a_split_and_replaces_one_only_with_overwrite(tmp_path):
    root, tiny = tmp_path / "set", ["--sequences", "1", "--size", "64x128", "--frames", "20", "--quiet"]
    assert cli("synth", root, "--split", "train", *tiny).exit_code == 0
    (root / "notes.txt").write_text("mine")
    before = snapshot(root)
    result = cli("synth", root, "--split", "val", "--seed", "2", *tiny)
    assert result.exit_code == 0, result.stderr
    after = snapshot(root)
    assert {k: after[k] for k in before} == before  # the train split and the user's file untouched
    assert {Path(k).parts[1] for k in after.keys() - before.keys() if len(Path(k).parts) > 1} == {"val"}
    result = cli("synth", root, "--split", "val", *tiny)
    assert_one_error(result, EXIT_USAGE, f"{root} already holds the val split", "--overwrite")
    assert snapshot(root) == after
    result = cli("synth", root, "--split", "val", "--seed", "2", *tiny, "--overwrite")
    assert result.exit_code == 0, result.stderr
    assert snapshot(root) == after  # the same split, written over with the same bytes
