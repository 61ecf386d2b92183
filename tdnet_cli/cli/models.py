"""``tdnet models``: the preset table."""

from __future__ import annotations

import json

from rich.markup import escape
from rich.table import Table

from tdnet_cli.cli.common import JsonOpt, console, handle_errors


def models_table() -> list[dict]:
    """One row per preset: what `tdnet models` shows (plain data, for --json and tests)."""
    from tdnet_cli.models.complexity import preset_complexity  # torch: loaded by the command, not by --help
    from tdnet_cli.models.registry import PRESETS

    rows = []
    for name, preset in PRESETS.items():
        params, gflops = preset_complexity(name)
        cfg = preset.config
        rows.append(
            {
                "name": name,
                "kind": preset.kind,
                "paths": preset.num_paths,
                "backbone": cfg.backbone + ("" if cfg.width == 64 else f" (width {cfg.width})"),
                "input_size": list(cfg.input_size),
                "parameters": params,
                "gflops_per_frame": round(gflops, 2),
                "weights": preset.weights_source,
                "description": preset.description,
                "paper": preset.paper,
            }
        )
    return rows


@handle_errors
def models_command(as_json: JsonOpt = False) -> None:
    """List the model presets: paths, backbone, input size, size and cost per frame, weights."""
    rows = models_table()
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    table = Table(title="TDNet presets (GFLOPs: one steady-state frame at the input size)")
    for col, kw in (
        ("name", {"style": "bold"}),
        ("paths", {"justify": "right"}),
        ("backbone", {}),
        ("input HxW", {}),
        ("params", {"justify": "right"}),
        ("GFLOPs", {"justify": "right"}),
        ("weights", {}),
    ):
        table.add_column(col, **kw)
    for r in rows:
        # names and sources are shown literally (rich would read "[...]" in them as markup)
        table.add_row(
            escape(r["name"]),
            str(r["paths"]),
            escape(r["backbone"]),
            "x".join(map(str, r["input_size"])),
            f"{r['parameters'] / 1e6:.1f}M",
            f"{r['gflops_per_frame']:.1f}" if r["gflops_per_frame"] >= 1 else f"{r['gflops_per_frame']:.2f}",
            escape(r["weights"]),
        )
    console.print(table)
