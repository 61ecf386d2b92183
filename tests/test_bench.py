"""`bench` runs and its numbers are consistent with each other (speed itself is not tested)."""

from __future__ import annotations

import json

import pytest

from tdnet_cli.cli.app import app
from tdnet_cli.pipeline.bench import latency_stats, run_bench


def test_latency_stats():
    s = latency_stats([0.1, 0.2, 0.3, 0.4])
    assert s.frames == 4
    assert s.mean_ms == pytest.approx(250.0)
    assert s.median_ms == pytest.approx(250.0)
    assert s.max_ms == pytest.approx(400.0)
    assert s.fps == pytest.approx(4.0)  # frames / total time
    assert latency_stats([]) is None


@pytest.mark.slow
def test_model_only_report_is_consistent():
    report = run_bench(model="td4-tiny", frames=4, warmup=1, device="cpu", streams=2, baseline="reference")
    r = report.result
    assert r.steady.frames == 4
    assert r.filling.frames == 3  # N-1 frames while the memory queue fills
    assert r.warmup == 3
    assert r.fps_total == pytest.approx(2 * 1000.0 / r.steady.mean_ms)
    assert r.achieved_gflops == pytest.approx(r.gflops_per_frame * 2 / (r.steady.median_ms / 1000))
    assert r.path == "optimised" and report.baseline.path == "reference"
    assert report.speedup == pytest.approx(report.baseline.steady.median_ms / r.steady.median_ms)
    assert report.ceiling["gflops"] > 0 and "->" in report.ceiling["shape"]
    assert report.env["device"] == "cpu" and report.env["input_size"] == [64, 128]
    assert r.peak_rss_mb > 0


@pytest.mark.slow
def test_ceiling_is_the_direct_conv_and_winograd_layers_are_reported_beside_it(runner):
    from tdnet_cli.inference import Predictor
    from tdnet_cli.models.checkpoint import random_model
    from tdnet_cli.pipeline.bench import conv_ceiling

    loaded = random_model("td4-psp18", input_size=(65, 129))
    wino, plain = (Predictor(loaded, device="cpu", winograd=w) for w in (True, False))
    cw, cp = conv_ceiling(wino, repeats=1), conv_ceiling(plain, repeats=1)
    assert cw["shape"] == cp["shape"] == "512->512 3x3 dilation 4 at 9x17"  # layer4 at stride 8
    assert cw["gflop"] == cp["gflop"] and cw["gflops"] > 0
    assert cw["layer_gflops"] > 0 and cp["layer_gflops"] is None
    r = run_bench(model="td4-psp18", size=(65, 129), frames=1, warmup=0, device="cpu", ceiling=False)
    assert r.result.winograd and r.to_dict()["result"]["winograd"] is True
    off = runner.invoke(
        app,
        [
            "bench",
            "--model",
            "td4-psp18",
            "--size",
            "65x129",
            "--frames",
            "1",
            "--warmup",
            "0",
            "--device",
            "cpu",
            "--no-winograd",
            "--json",
        ],
    )
    assert off.exit_code == 0, off.output
    data = json.loads(off.stdout)
    assert data["result"]["winograd"] is False and data["ceiling"]["layer_gflops"] is None
    assert not run_bench(
        model="td4-tiny", frames=1, warmup=0, device="cpu", ceiling=False, precision="bf16"
    ).result.winograd
    # fp32, but no layer wide enough to swap: the report does not claim Winograd
    assert not run_bench(model="td4-tiny", frames=1, warmup=0, device="cpu", ceiling=False).result.winograd


@pytest.mark.slow
def test_encode_ahead_throughput_is_reported_for_one_cpu_stream(monkeypatch):
    import torch

    threads = torch.get_num_threads()
    report = run_bench(model="td4-tiny", frames=5, warmup=1, device="cpu", ceiling=False)
    a = report.result.encode_ahead
    assert a["frames"] == 5 and a["workers"] == 2 and a["threads_per_worker"] == max(1, threads // 2)
    assert a["fps"] == pytest.approx(5 / a["seconds"])
    assert torch.get_num_threads() == threads  # restored
    assert report.result.best_fps_per_stream == max(a["fps"], report.result.steady.fps)
    # batched streams and per-frame models have no encode-ahead figure
    assert (
        run_bench(model="td4-tiny", frames=2, warmup=0, device="cpu", streams=2, ceiling=False).result.encode_ahead
        is None
    )
    assert run_bench(model="psp-tiny", frames=2, warmup=0, device="cpu", ceiling=False).result.encode_ahead is None


@pytest.mark.slow
def test_preset_baseline_runs_at_the_same_size():
    report = run_bench(model="td4-tiny", frames=2, warmup=0, device="cpu", baseline="psp-tiny", ceiling=False)
    assert report.baseline.model == "psp-tiny"
    assert report.baseline.input_size == report.result.input_size
    assert report.baseline.filling is None  # a per-frame model has no queue


@pytest.mark.slow
def test_cli_json_and_table(runner):
    result = runner.invoke(
        app,
        ["bench", "--model", "td4-tiny", "--frames", "3", "--warmup", "0", "--device", "cpu", "--json", "--no-ceiling"],
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["result"]["steady"]["frames"] == 3 and data["ceiling"] is None
    table = runner.invoke(
        app,
        ["bench", "--model", "td4-tiny", "--frames", "2", "--device", "cpu", "--input-size", "64x96"],
        env={"COLUMNS": "150"},
    )
    assert table.exit_code == 0, table.output
    assert "model-only" in table.output and "ceiling" in table.output and "64x96" in table.output


@pytest.mark.slow
def test_old_size_option_still_works_with_a_warning(runner):
    """bench's --size is --input-size now, as in every other command (issue 25 item 5); the old
    name is hidden from --help, still read, and said to be deprecated."""
    args = ["bench", "--model", "td4-tiny", "--frames", "1", "--warmup", "0", "--device", "cpu", "--no-ceiling"]
    old = runner.invoke(app, [*args, "--size", "64x96", "--json"])
    assert old.exit_code == 0, old.output
    assert json.loads(old.stdout)["result"]["input_size"] == [64, 96]
    assert "--size is deprecated" in old.stderr and "--input-size" in old.stderr
    both = runner.invoke(app, [*args, "--size", "64x96", "--input-size", "64x96"])
    assert both.exit_code == 2 and "--input-size alone" in both.stderr
    shown = runner.invoke(app, ["bench", "--help"], env={"COLUMNS": "100"}).stdout
    assert "--input-size" in shown and "--size " not in shown and "-n " not in shown


@pytest.mark.parametrize(
    "args",
    [
        ["--frames", "0"],
        ["--input-size", "big"],
        ["--model", "nope"],
        ["--precision", "fp16"],
        ["--input", "x.mp4", "--x264-preset", "fastest"],
        ["--compile-mode", "fastest"],
        ["--input", "x.mp4", "--encoder", "qsv"],
    ],
)
def test_cli_bad_options(args, runner):
    result = runner.invoke(app, ["bench", "--model", "td4-tiny", "--device", "cpu", *args])
    assert result.exit_code == 2
    assert "Traceback" not in result.output


@pytest.mark.slow
def test_end_to_end_mode_on_a_real_video(tmp_path):
    import numpy as np
    from media import encode_rgb

    frames = np.random.default_rng(0).integers(0, 255, (12, 64, 96, 3), dtype=np.uint8)
    clip = encode_rgb(tmp_path / "clip.mp4", list(frames), rate="10", codec=("-c:v", "libx264", "-pix_fmt", "yuv420p"))
    report = run_bench(model="td4-tiny", frames=2, warmup=0, device="cpu", ceiling=False, source=str(clip))
    e = report.end_to_end
    assert e["frames"] == 12 and e["decoded_frames"] == 12 and e["size"] == [64, 96]
    assert (e["encoder"], e["x264_preset"], e["crf"], e["hw_decode"]) == ("x264", "veryfast", 20, False)
    assert set(e["stage_ms_per_frame"]) == {"decode", "render", "encode", "preprocess", "model", "postprocess"}
    assert e["fps"] == pytest.approx(12 / e["wall_s"])
    assert e["stage_ms_per_frame"]["render"] > 0 and e["stage_ms_per_frame"]["decode"] > 0
    # CPU by thread (Linux): every group reported, the model's share consistent with them
    cpu = e["cpu_ms_per_frame"]
    assert set(cpu) == {"model", "read + preprocess", "postprocess + render + write", "helper threads", "ffmpeg"}
    assert all(v >= 0 for v in cpu.values()) and cpu["model"] > 0 and cpu["ffmpeg"] > 0
    assert e["cpu_outside_model_share"] == pytest.approx(1 - cpu["model"] / sum(cpu.values()))
    assert e["cores_busy"] == pytest.approx(sum(cpu.values()) / 1000 * e["frames"] / e["wall_s"])
    # end to end is held to the faster model-only figure: stepping or encoding ahead
    best = max(report.result.fps_per_stream, report.result.encode_ahead["fps"])
    assert e["model_only_fps"] == pytest.approx(best)
    assert e["fraction_of_model_only"] == pytest.approx(e["fps"] / best)


@pytest.mark.slow
def test_compiled_runs_keep_every_graph_compile_out_of_the_timing(eager_compile):
    report = run_bench(model="td4-tiny", frames=2, warmup=0, device="cpu", compile=True, ceiling=False)
    r = report.result
    # 3 queue-filling frames, then the first steady frame of each of the 4 paths compiles.
    assert r.compiled and r.warmup == 3 + 4 and r.steady.frames == 2
