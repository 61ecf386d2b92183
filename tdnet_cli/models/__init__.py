"""Models: building blocks, TDNet and PSPNet, the preset registry and checkpoint IO."""

from tdnet_cli.models.checkpoint import LoadedModel, load_checkpoint, random_model, save_checkpoint
from tdnet_cli.models.fast import optimize_for_inference
from tdnet_cli.models.init import InitReport, init_from_imagenet, init_tdnet_from_pspnet, kaiming_init_
from tdnet_cli.models.pspnet import PSPNet, PSPNetConfig
from tdnet_cli.models.registry import PRESETS, Preset, create_model, get_preset, list_models
from tdnet_cli.models.tdnet import StreamState, TDNet, TDNetConfig
from tdnet_cli.models.teacher import Teacher, load_teacher

__all__ = [
    "PRESETS",
    "InitReport",
    "LoadedModel",
    "PSPNet",
    "PSPNetConfig",
    "Preset",
    "StreamState",
    "TDNet",
    "TDNetConfig",
    "Teacher",
    "create_model",
    "get_preset",
    "init_from_imagenet",
    "init_tdnet_from_pspnet",
    "kaiming_init_",
    "list_models",
    "load_checkpoint",
    "load_teacher",
    "optimize_for_inference",
    "random_model",
    "save_checkpoint",
]
