"""Pipelines that drive a Predictor over inputs (core: no typer, no rich)."""

from tdnet_cli.pipeline.segment import (
    DEFAULT_FOLDER_FPS,
    SAVE_KINDS,
    CutDetector,
    InputResult,
    ProgressHook,
    Renderer,
    SegmentReport,
    device_for_rank,
    expand_inputs,
    parse_shard,
    plan_outputs,
    read_list,
    resolve_shard,
    segment,
    select_shard,
)

__all__ = [
    "DEFAULT_FOLDER_FPS",
    "SAVE_KINDS",
    "CutDetector",
    "InputResult",
    "ProgressHook",
    "Renderer",
    "SegmentReport",
    "device_for_rank",
    "expand_inputs",
    "parse_shard",
    "plan_outputs",
    "read_list",
    "resolve_shard",
    "segment",
    "select_shard",
]
