"""Stage configurations, and loading them from pipeline files (the typed loader itself, which
rejects unknown keys, is :mod:`srpipe.typed_toml`).

A pipeline file (``pipelines/<name>.toml``) holds one table per stage::

    description = "EDSR-baseline x4, the paper's recipe"
    [prepare]
    scales = [2, 3, 4]
    [train]
    iterations = 300000
    [train.model]
    scale = 4

Each table becomes the stage's frozen dataclass. Unknown keys, wrong types and bad values raise
``ConfigError`` naming the file and the dotted key. Every dataclass checks its own values when it is
built (``__post_init__``: ranges, choices), so a bad value is refused however it arrives (file,
``--set``, command-line option, library call) and before any command creates anything. Options reach
a stage one way, :func:`configure`: the pipeline's table (or the defaults), then ``--set`` overrides
(TOML values), then the command-line options given, all applied with ``dataclasses.replace``.
Nothing else flows around as a dict.

Modules: ``checks`` (value rules), ``train`` (``[train]``, ``[train.model]``, ``[train.degrade]``),
``stages`` (prepare, downscale, export, process, evaluate), ``pipeline`` (``Pipeline``, finding and
loading files, ``configure``). Import the names from ``srpipe.config``.
"""

from __future__ import annotations

from srpipe.config.checks import Boundary, Strength, Weights
from srpipe.config.pipeline import Pipeline, configure, find_pipeline, load_pipeline, pipeline_dirs
from srpipe.config.stages import (
    DownscaleConfig,
    EvaluateConfig,
    ExportConfig,
    PrepareConfig,
    ProcessConfig,
)
from srpipe.config.train import DIV2K_RGB_MEAN, DegradeConfig, ModelConfig, TrainConfig
from srpipe.typed_toml import apply_overrides, from_dict

__all__ = ["DIV2K_RGB_MEAN", "Boundary", "DegradeConfig", "DownscaleConfig", "EvaluateConfig", "ExportConfig",
           "ModelConfig", "Pipeline", "PrepareConfig", "ProcessConfig", "Strength", "TrainConfig", "Weights",
           "apply_overrides", "configure", "find_pipeline", "from_dict", "load_pipeline", "pipeline_dirs"]
