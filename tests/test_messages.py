"""Messages that point the right way (issue 25, items 6 and 10), through the real entry point:
a hint names what the user passed, a mistyped pattern says so first, contradicting options are
refused, the model's notices are warnings in every command, and bench says which figure it
compares with, why the model can pass the ceiling, and when its timings are too spread to trust."""

from __future__ import annotations

from pathlib import Path

import pytest
from faults import assert_one_error, cli
from media import make_clip

from tdnet_cli.errors import EXIT_USAGE
from tdnet_cli.models.checkpoint import random_model, save_checkpoint

PRESET = "td4-tiny"  # a real TDNet layout, built in milliseconds


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    return make_clip(tmp_path_factory.mktemp("clip") / "clip.mp4", frames=2)


# -- item 6: hints that name what the user passed --------------------------------------------------
def test_inspect_of_a_missing_file_does_not_speak_of_weights_option(tmp_path):
    line = assert_one_error(cli("inspect", tmp_path / "nope.pt"), EXIT_USAGE, "weights file not found", "nope.pt")
    assert "--weights" not in line and "inspect" in line


@pytest.mark.parametrize(
    "option, key",
    [("--init", "--init / model.init"), ("--teacher", "--teacher / model.teacher"), (None, "model.resume_weights")],
)
def test_train_names_the_setting_of_a_missing_weights_file(synth_data, tmp_path, option, key):
    from tdnet_cli.config import toml_string

    root, missing = synth_data((96, 192), train=(2, 1)), tmp_path / "missing.pt"
    sets = {
        "data.root": toml_string(str(root)),
        "run.out": toml_string(str(tmp_path / "runs")),
        "model.preset": '"td4-tiny"',
        "data.workers": "0",
        "run.val_every": "0",
    }
    if option is None:
        sets["model.resume_weights"] = toml_string(str(missing))
    args = [a for k, v in sets.items() for a in ("--set", f"{k}={v}")] + ([option, missing] if option else [])
    line = assert_one_error(cli("train", *args), EXIT_USAGE, "weights file not found", f"check {key}")
    assert "--weights" not in line


def test_a_missing_weights_file_names_the_option(tmp_path, clip):
    line = assert_one_error(
        cli("segment", clip, "--weights", tmp_path / "nope.pt", "-d", tmp_path), EXIT_USAGE, "weights file not found"
    )
    assert "check the --weights path" in line


# -- item 6: a pattern that matches nothing --------------------------------------------------------
def test_a_pattern_in_a_missing_folder_says_nothing_matches(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    line = assert_one_error(cli("segment", "nomatch/*.mp4"), EXIT_USAGE, "no files match 'nomatch/*.mp4'", "nomatch")
    assert "writable" not in line and "beside" not in line
    assert list(tmp_path.iterdir()) == []  # refused before anything was made


def test_a_pattern_that_matches_nothing_is_refused_before_the_model_loads(tmp_path, clip, monkeypatch):
    monkeypatch.chdir(tmp_path)
    from tdnet_cli import inference

    def no_model(*args, **kwargs):
        raise AssertionError("the model loaded before a mistyped pattern was refused")

    monkeypatch.setattr(inference.Predictor, "create", no_model)
    line = assert_one_error(cli("segment", clip, "none*.mp4", "-d", "out"), EXIT_USAGE, "no files match 'none*.mp4'")
    assert "there is no folder" not in line  # its folder (here) exists
    assert not (tmp_path / "out").exists()


def test_a_missing_input_in_a_missing_folder_is_missing_not_unwritable(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    save_checkpoint(tmp_path / "m.pt", random_model(PRESET))
    result = cli("segment", "nodir/x.mp4", "--weights", "m.pt", "--device", "cpu")
    line = assert_one_error(result, 1, "nodir/x.mp4: no such file or folder")
    assert "writable" not in line


# -- item 6: -o with -d ------------------------------------------------------------------------------
@pytest.mark.parametrize("order", [("-o", "a.mp4", "-d", "out"), ("--out-dir", "out", "--output", "a.mp4")])
def test_output_and_out_dir_together_are_refused(tmp_path, clip, monkeypatch, order):
    monkeypatch.chdir(tmp_path)
    assert_one_error(cli("segment", clip, *order), EXIT_USAGE, "-o/--output", "-d/--out-dir")
    assert sorted(p.name for p in tmp_path.iterdir()) == []


# -- item 6: the demo model's notice is a warning everywhere -----------------------------------------
@pytest.fixture(scope="module")
def demo_weights(tmp_path_factory) -> Path:
    """A tiny checkpoint standing in for the bundled demo model (TDNET_WEIGHTS points there)."""
    return save_checkpoint(tmp_path_factory.mktemp("demo") / "demo.pt", random_model(PRESET))


def _demo_notice(result) -> None:
    assert result.exit_code == 0, result.output
    lines = result.stderr.splitlines()
    assert any(ln.startswith("warning: using the bundled demo model") for ln in lines), result.stderr
    assert not any(ln.startswith("note:") for ln in lines), result.stderr


def test_demo_model_notice_in_segment(tmp_path, clip, demo_weights):
    env = {"TDNET_WEIGHTS": str(demo_weights)}
    _demo_notice(cli("segment", clip, "-s", "labels", "-d", tmp_path / "out", "--device", "cpu", env=env))


@pytest.mark.slow
def test_demo_model_notice_in_eval(synth_data, demo_weights):
    root = synth_data((64, 128), val=(1, 5))
    _demo_notice(cli("eval", root, "--device", "cpu", "--limit", "1", env={"TDNET_WEIGHTS": str(demo_weights)}))


def test_demo_model_notice_in_eval_consistency(clip, demo_weights):
    _demo_notice(cli("eval", "--consistency", clip, "--device", "cpu", env={"TDNET_WEIGHTS": str(demo_weights)}))


@pytest.mark.slow
def test_demo_model_notice_in_bench(demo_weights):
    args = ("bench", "--device", "cpu", "--frames", "1", "--warmup", "0", "--no-ceiling")
    _demo_notice(cli(*args, env={"TDNET_WEIGHTS": str(demo_weights)}))


# -- item 10: bench ------------------------------------------------------------------------------------
BENCH = ("bench", "--model", PRESET, "--device", "cpu", "--warmup", "0")


def test_spread_of_timed_steps():
    from tdnet_cli.pipeline.bench import latency_stats, spread_warning

    s = latency_stats([i / 1000 for i in range(10, 21)])  # 10..20 ms
    assert (s.min_ms, s.p10_ms, s.median_ms, s.p90_ms, s.max_ms) == pytest.approx((10, 11, 15, 19, 20))
    assert s.max_over_min == pytest.approx(2.0)
    line = spread_warning({"this model": s})
    assert "2.0x (10.0 to 20.0 ms)" in line and "busy" in line and "median is shaky" in line
    assert "\n" not in line and "for this model" not in line  # one run: no label needed
    even = latency_stats([0.010, 0.012, 0.015])  # 1.5x is not over the limit
    assert spread_warning({"this model": even}) is None
    assert spread_warning({"this model": even, "the baseline": None}) is None
    both = spread_warning({"this model": even, "the baseline": s})
    assert "for the baseline" in both and "this model" not in both


@pytest.fixture
def timed_ms(monkeypatch):
    """Makes bench's timed steps take the given milliseconds, whatever the machine does."""
    from tdnet_cli.pipeline import bench

    real = bench.latency_stats

    def use(*ms: float) -> None:
        def fake(seconds):
            return real([ms[i % len(ms)] / 1000 for i in range(len(seconds))]) if seconds else None

        monkeypatch.setattr(bench, "latency_stats", fake)

    return use


def _warnings(result, needle: str) -> list[str]:
    return [ln for ln in result.stderr.splitlines() if ln.startswith("warning:") and needle in ln]


@pytest.mark.slow
def test_bench_json_reports_the_spread_and_warns_when_it_is_wide(timed_ms):
    import json

    timed_ms(10, 10, 30)
    result = cli(*BENCH, "--frames", "3", "--no-ceiling", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    steady = data["result"]["steady"]
    assert (steady["min_ms"], steady["p10_ms"], steady["median_ms"], steady["p90_ms"], steady["max_ms"]) == (
        pytest.approx((10, 10, 10, 30, 30))
    )
    assert steady["max_over_min"] == pytest.approx(3.0)
    wide = [w for w in data["warnings"] if not w.startswith("random weights")]  # --model alone: random weights
    assert len(wide) == 1 and "3.0x (10.0 to 30.0 ms)" in wide[0]
    assert len(_warnings(result, "vary widely")) == 1  # on stderr too
    # the keys that were there stay
    assert {"frames", "mean_ms", "median_ms", "p95_ms", "max_ms", "fps"} <= set(steady)
    assert {"env", "result", "baseline", "ceiling", "fraction_of_ceiling", "end_to_end", "notes"} <= set(data)

    timed_ms(10, 11, 12)
    quiet = json.loads(cli(*BENCH, "--frames", "3", "--no-ceiling", "--json").stdout)
    assert [w for w in quiet["warnings"] if not w.startswith("random weights")] == []


@pytest.mark.slow
def test_bench_table_shows_the_spread_and_one_warning(timed_ms):
    timed_ms(10, 10, 30)
    result = cli(*BENCH, "--frames", "3", "--no-ceiling", env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "spread of the 3 timed steps, ms: min 10.0, p10 10.0, median 10.0, p90 30.0, max 30.0" in result.stdout
    assert len(_warnings(result, "vary widely")) == 1


@pytest.mark.parametrize(
    "args, why",
    [
        ((), "the library may run some of the model's with fewer multiplies"),  # td4-tiny: no Winograd layer
        (("--model", "td4-psp18", "--size", "65x129"), "its Winograd convolutions do fewer multiplies"),
    ],
)
@pytest.mark.slow
def test_bench_explains_a_share_of_the_ceiling_over_100_percent_on_the_same_line(monkeypatch, args, why):
    from tdnet_cli.pipeline import bench

    ceiling = {"gflops": 1e-6, "shape": "64->64 3x3 dilation 1 at 8x16", "gflop": 1e-3, "layer_gflops": None}
    monkeypatch.setattr(bench, "conv_ceiling", lambda pred: dict(ceiling))
    result = cli(*BENCH, "--frames", "1", *args, env={"COLUMNS": "300"})
    assert result.exit_code == 0, result.output
    line = next(ln for ln in result.stdout.splitlines() if ln.startswith("ceiling:"))
    assert "the whole model reaches" in line and "(over 100%:" in line and why in line


@pytest.mark.slow
@pytest.mark.parametrize("ahead_fps, figure", [(1e6, "encode-ahead"), (1e-3, "one step at a time")])
def test_bench_end_to_end_names_the_model_only_figure_it_compares_with(tmp_path, monkeypatch, ahead_fps, figure):
    from tdnet_cli.pipeline import bench

    ahead = {"fps": ahead_fps, "frames": 1, "seconds": 1 / ahead_fps, "workers": 2, "threads_per_worker": 1}
    monkeypatch.setattr(bench, "bench_encode_ahead", lambda pred, **kw: dict(ahead))
    clip = make_clip(tmp_path / "clip.mp4", frames=4)
    result = cli(*BENCH, "--frames", "1", "--no-ceiling", "--input", clip, env={"COLUMNS": "400"})
    assert result.exit_code == 0, result.output
    line = next(ln for ln in result.stdout.splitlines() if ln.startswith("end to end"))
    assert f"of model-only {figure}" in line and "the faster model-only figure" in line
    other = "one step at a time: " if figure == "encode-ahead" else f"encode-ahead: {ahead_fps:.2f} fps"
    assert other in line
