"""Run configuration (dataclasses that round-trip to JSON), presets, and run folders."""

from vaekit.config.presets import PRESETS, preset
from vaekit.config.runs import RunFolder
from vaekit.config.schema import DataConfig, ModelConfig, RunConfig, TrainConfig

__all__ = [
    "PRESETS",
    "DataConfig",
    "ModelConfig",
    "RunConfig",
    "RunFolder",
    "TrainConfig",
    "preset",
]
