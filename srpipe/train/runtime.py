"""Runtime decisions and controls of a training process: precision, memory format, config checks, signals.

- :func:`autocast_dtype` / :func:`use_channels_last` turn the ``"auto"`` settings into concrete choices
  for the device at hand: bf16 / NHWC on CUDA GPUs that support bf16; on the CPU, bf16 / NHWC where
  the cores have native bf16 (``srpipe.hardware.cpu_has_bf16``: EDSR 16×32 x4 trained 2.5× faster
  than fp32 / NCHW on such a CPU, docs/train.md) and fp32 / NCHW elsewhere (on a CPU without it bf16
  autocast measured ~9× slower than fp32 and channels_last ~20 % slower).
- :func:`check_config` rejects impossible settings before anything slow happens, naming the key.
- :class:`StopRequest` turns SIGINT/SIGTERM into a flag that the loop checks between iterations, so
  an interrupted run saves a consistent checkpoint; a second signal interrupts at once.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from types import FrameType
from typing import Any

import torch

from srpipe.config import TrainConfig
from srpipe.errors import ConfigError
from srpipe.hardware import cpu_has_bf16

log = logging.getLogger(__name__)


def autocast_dtype(cfg: TrainConfig, device: torch.device) -> torch.dtype | None:
    """The autocast dtype (None = fp32). ``auto``: bf16 on CUDA GPUs that support it and on CPUs with
    native bf16, else fp32."""
    if cfg.precision == "auto":
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        if device.type == "cpu" and cpu_has_bf16():
            return torch.bfloat16
        return None
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[cfg.precision]


def precision_name(dtype: torch.dtype | None) -> str:
    return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}.get(dtype, str(dtype))


def use_channels_last(cfg: TrainConfig, device: torch.device) -> bool:
    """``auto``: on for CUDA (NHWC tensor-core kernels) and for CPUs with native bf16 (oneDNN's NHWC bf16
    kernels), off on other CPUs."""
    if cfg.channels_last != "auto":
        return bool(cfg.channels_last)
    return device.type == "cuda" or (device.type == "cpu" and cpu_has_bf16())


def check_config(cfg: TrainConfig, world_size: int) -> None:
    """Raise ``ConfigError`` for settings that cannot work, naming each key at fault."""
    problems = []
    if cfg.batch_size < 1 or cfg.batch_size % world_size:
        problems.append(f"train.batch_size = {cfg.batch_size} must be a positive multiple of the "
                        f"{world_size} processes (it is the global batch)")
    for key in ("iterations", "patch_size", "log_every", "checkpoint_every", "max_bad_steps"):
        if getattr(cfg, key) < 1:
            problems.append(f"train.{key} must be ≥ 1")
    for key in ("val_every", "val_images", "val_tile", "early_stop_patience", "workers", "threads",
                "warmup_iterations"):
        if getattr(cfg, key) < 0:
            problems.append(f"train.{key} must be ≥ 0")
    if cfg.lr <= 0:
        problems.append("train.lr must be > 0")
    if not 0.0 <= cfg.ema_decay < 1.0:
        problems.append("train.ema_decay must be in [0, 1)")
    if cfg.grad_clip < 0:
        problems.append("train.grad_clip must be ≥ 0")
    if cfg.early_stop_patience and not cfg.val_every:
        problems.append("train.early_stop_patience needs validation (train.val_every > 0)")
    if cfg.data_on_device and cfg.degrade.enabled:
        problems.append("train.data_on_device cannot be combined with [train.degrade]: the loader makes "
                        "the degradations on the CPU (set data_on_device = false)")
    if problems:
        raise ConfigError("; ".join(problems))


class StopRequest:
    """Context manager: SIGINT/SIGTERM set ``requested``; a second signal raises ``KeyboardInterrupt``."""

    def __init__(self) -> None:
        self.requested = False
        self._old: dict[int, Any] = {}
        self._pid = os.getpid()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if os.getpid() != self._pid:  # a forked DataLoader worker inherited the handler: not its business
            return
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        log.warning("%s: stopping after this iteration and saving a checkpoint (again to abort now)",
                    signal.Signals(signum).name)

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():  # handlers can only be set there
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)
        self._old.clear()


def duration_text(seconds: float) -> str:
    """A human duration: ``42 s``, ``17 min``, ``5.3 h``, ``12.0 days``."""
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"
