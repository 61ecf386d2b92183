"""Pipelines that drive a Predictor over inputs (core: no typer, no rich)."""

from tdnet_cli.pipeline.inputs import (
    InputSet,
    device_for_rank,
    expand_inputs,
    gather_inputs,
    parse_shard,
    plan_outputs,
    read_list,
    resolve_shard,
    select_shard,
)
from tdnet_cli.pipeline.options import SAVE_KINDS, SegmentOptions
from tdnet_cli.pipeline.results import (
    InputResult,
    ProgressHook,
    SegmentReport,
    SilentProgress,
)
from tdnet_cli.pipeline.segment import segment
from tdnet_cli.pipeline.stream import StreamPredictor

__all__ = [
    "SAVE_KINDS",
    "InputResult",
    "InputSet",
    "ProgressHook",
    "SegmentOptions",
    "SegmentReport",
    "SilentProgress",
    "StreamPredictor",
    "device_for_rank",
    "expand_inputs",
    "gather_inputs",
    "parse_shard",
    "plan_outputs",
    "read_list",
    "resolve_shard",
    "segment",
    "select_shard",
]
