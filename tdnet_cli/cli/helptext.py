"""What ``--help`` shows: flags as flags, choices as ``[a|b|c]``, a value by what it holds (FILE,
HxW, N), and each command's examples above the exit codes.

Typer labels every parameter with its Python type (``--legend <bool>``, ``<list[str]>``, a
required argument as ``{out_dir}``). A user reads ``<bool>`` as "takes a value", and
``--legend true`` then made "true" an input. Every command's class relabels its parameters
when click asks for them (help, parsing), so one definition covers every command."""

from __future__ import annotations

from enum import Enum
from pathlib import Path

import typer
from rich.markup import escape
from typer.core import TyperArgument, TyperCommand, TyperGroup

# The label of a value no option names one for, by the type it is parsed to.
_BY_TYPE: dict[type, str] = {int: "N", float: "NUM", str: "TEXT", Path: "PATH"}
# Choices wider than this would wrap in the label column at 100 columns: named instead.
_MAX_CHOICES_WIDTH = 20


def _choice_label(param: typer.core.TyperOption) -> str | None:
    """``[a|b|c]`` for an option that takes one of a fixed set, else None."""
    desc = getattr(param, "type_descriptor", None)  # typer >= 0.2x; older typers show click's own labels
    if desc is None or not desc.is_choice or not desc.choices:
        return None
    values = (c.value if isinstance(c, Enum) else str(c) for c in desc.choices)
    return "[" + "|".join(values) + "]"


def _value_label(param: typer.core.TyperOption) -> str:
    desc = getattr(param, "type_descriptor", None)
    if desc is None:
        return "VALUE"
    if desc.is_path:
        return "PATH"
    annotation = desc.annotation
    if desc.is_list:
        annotation = getattr(annotation, "__args__", (str,))[0]
    return _BY_TYPE.get(annotation, "VALUE")


class _Argument(TyperArgument):
    """An argument shown by its metavar alone: no type column, and the usage line in click's form
    (NAME required, [NAME] optional, ... repeatable) instead of typer's ``{name}``."""

    def display_type_rich(self, ctx: typer.Context) -> str | None:
        return None

    def _usage_display_name(self) -> str:
        name = (self.metavar or self.name.upper()).removesuffix("...")
        return (name if self.required else f"[{name}]") + ("..." if self.nargs != 1 else "")


def label(param: object) -> None:
    """Give ``param`` the label --help shows; a metavar set by the option's definition stays."""
    if isinstance(param, TyperArgument):
        if type(param) is TyperArgument:  # same layout, only the display methods differ
            param.__class__ = _Argument
        if param.metavar is None:  # the name column shows it: OUT_DIR, INPUTS..., not out_dir
            param.metavar = param.name.upper() + ("..." if param.nargs != 1 else "")
        return
    if not isinstance(param, typer.core.TyperOption) or param.metavar is not None:
        return
    if param.is_flag:
        param.metavar = ""  # a flag takes no value: nothing beside its name
        return
    choices = _choice_label(param)
    if choices and len(choices) > _MAX_CHOICES_WIDTH:  # the option's help lists them
        choices = param.name.upper()
    param.metavar = choices or _value_label(param)


class HelpLabels:
    """Mixin for a command (or group) class: its parameters carry the labels above."""

    def get_params(self, ctx: typer.Context) -> list:
        params = super().get_params(ctx)  # type: ignore[misc]
        for param in params:
            label(param)
        return params


class Command(HelpLabels, TyperCommand):
    """The class of every ``tdnet`` command."""


class Group(HelpLabels, TyperGroup):
    """The class of ``tdnet`` itself (its --version and --help)."""


# Two or three examples per command: (what it does, the command line). tests/test_cli.py parses
# each line against the real command, so an example cannot name an option that is gone.
EXAMPLES: dict[str, tuple[tuple[str, str], ...]] = {
    "segment": (
        ("overlay video beside the clip, with the bundled demo model", "tdnet segment examples/street.mp4"),
        (
            "the authors' model on a GPU; overlays and label PNGs under out/",
            "tdnet segment 'videos/*.mp4' -w td4-psp18.pkl --device cuda -d out/ -s overlay -s labels",
        ),
        (
            "a folder of frames as one sequence: overlay without the legend, and colour maps",
            "tdnet segment frames/ --no-legend -s overlay -s color",
        ),
    ),
    "eval": (
        (
            "Cityscapes val: the table, the figures in a file, the predictions for cityscapesscripts",
            "tdnet eval data/cityscapes -w td4-psp18.pkl --json-file scores.json --save-predictions preds/",
        ),
        ("a quick look: 50 frames, JSON on stdout", "tdnet eval data/synth --limit 50 --json"),
        (
            "temporal consistency of the labels on any clip, with and without TDNet's memory",
            "tdnet eval --consistency --compare-per-frame examples/street.mp4",
        ),
    ),
    "train": (
        ("a run from a config (its folder under runs/)", "tdnet train --config examples/train-psp-mini.toml"),
        (
            "the same with a key changed and the dataset named",
            "tdnet train --config examples/train-psp-mini.toml --set optim.lr=0.005 --data data/synth",
        ),
        ("continue after Ctrl-C, exactly where it stopped", "tdnet train --resume runs/psp-mini"),
    ),
    "bench": (
        (
            "model-only speed of a preset on the CPU, against PSPNet-101",
            "tdnet bench --model td4-psp18 --device cpu --frames 10 --baseline psp101",
        ),
        (
            "on a GPU in fp16 at another input size",
            "tdnet bench -m td4-psp18 --device cuda --precision fp16 --input-size 512x1024",
        ),
        ("the whole segment pipeline on a clip, stage by stage", "tdnet bench --input examples/street.mp4"),
    ),
    "synth": (
        (
            "a training split of 120 snippets",
            "tdnet synth data/synth --split train --sequences 120 --size 512x1024 --seed 1",
        ),
        ("then a val split beside it", "tdnet synth data/synth --split val --sequences 20 --size 512x1024 --seed 2"),
    ),
    "models": (
        ("the presets as a table", "tdnet models"),
        ("the same as JSON, for scripts", "tdnet models --json"),
    ),
    "inspect": (
        ("what a checkpoint holds", "tdnet inspect weights/td4-mini-synth.pt"),
        ("a released state dict read as a preset, as JSON", "tdnet inspect td4-psp18.pkl --model td4-psp18 --json"),
    ),
}

EXIT_CODES_HELP = (
    "Exit codes: 0 done; 1 the work started and something failed (a failed input, a write, a full disk); "
    "2 nothing was done (a bad option or a wrong file named); 130/143 interrupted by Ctrl-C/SIGTERM."
)


def epilog(command: str) -> str:
    """The end of ``tdnet COMMAND --help`` (rich markup): its examples, then the exit codes."""
    lines = ["[bold]Examples[/]"]
    for what, line in EXAMPLES[command]:
        lines += [f"  [dim]# {escape(what)}[/]", f"  {escape(line)}"]
    return "\n".join(lines) + "\n\n" + EXIT_CODES_HELP
