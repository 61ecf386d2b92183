"""What `tdnet train` tells a new user (issue 25 item 3): resuming a finished run is one line
before any work."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import ClassVar

import pytest
from faults import assert_one_error, cli, snapshot

from tdnet_cli.config import toml_string
from tdnet_cli.errors import EXIT_USAGE


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


def test_raising_the_iterations_continues_a_finished_run(finished, bar, tmp_path):
    run = tmp_path / "more"
    shutil.copytree(finished, run)
    result = cli("train", "--resume", run, "--set", "optim.iterations=3")
    assert result.exit_code == 0, result.stderr
    assert f"resumed {run} at iteration 2" in result.stderr and result.stdout.startswith("run: ")
    assert bar.events[:2] == [("start",), ("task", 2, 3)]  # the bar starts where the run is
    assert [u[1] for u in _updates(bar)] == [3]
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in records] == [1, 2, 3]
