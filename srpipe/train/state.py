"""What a training checkpoint holds beyond the weights, and how it is restored.

A training checkpoint is an srpipe checkpoint (:mod:`srpipe.model.checkpoint`) with two extra
entries, both ``torch.load(weights_only=True)``-safe:

- ``"ema"``: the EMA weights (state dict) when ``ema_decay`` > 0.
- ``"train"``: ``{"state": TrainState fields, "optimizer": optimizer.state_dict(), "scaler": GradScaler
  state or None, "schedule": {"kind", "lr"}, "rng": [per-rank RNG states], "world_size": int,
  "config": the TrainConfig as a plain dict}``.

The data sampler needs no state of its own: the batch of iteration ``k`` is a pure function of
``(seed, k, rank, world size)`` (:mod:`srpipe.train.batches`), so ``TrainState.iteration`` *is*
the sampler position. RNG states (Python, NumPy's legacy global generator, torch CPU, every CUDA
device) are stored as lists/tensors so that nothing needs unpickling.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from srpipe.config import ModelConfig
from srpipe.errors import CheckpointError
from srpipe.model import checkpoint as ckpt_io
from srpipe.model.convert import strip_prefixes

log = logging.getLogger(__name__)


@dataclass
class TrainState:
    """Counters of a run; mutable, saved in every checkpoint, restored on resume."""

    iteration: int = 0  # optimizer iterations done (= batches consumed, skipped ones included)
    bad_streak: int = 0  # consecutive non-finite losses
    skipped_steps: int = 0  # non-finite losses over the whole run
    best_psnr: float = -math.inf
    best_iteration: int = 0
    stale_validations: int = 0  # validations since the best one (early stopping)
    last_val_psnr: float = math.nan
    elapsed_s: float = 0.0  # wall time over all sittings (validation and checkpoints included)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainState:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


def capture_rng() -> dict[str, Any]:
    """This process's RNG states as weights_only-safe values."""
    version, internal, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)  # type: ignore[misc]
    state: dict[str, Any] = {
        "python": [version, list(internal), gauss],
        "numpy": [name, np.asarray(keys).tolist(), int(pos), int(has_gauss), float(cached)],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else [],
    }
    return state


def restore_rng(state: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng` (CUDA states are restored only when the device count matches)."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    cuda = state.get("cuda") or []
    if cuda and torch.cuda.is_available():
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)
        else:
            log.warning("checkpoint has CUDA RNG states for %d devices, this machine has %d; not restored",
                        len(cuda), torch.cuda.device_count())


@dataclass(frozen=True)
class InitReport:
    """What :func:`init_from_checkpoint` copied: tensor names loaded, skipped (shape differs), absent."""

    source: Path
    loaded: tuple[str, ...]
    skipped: tuple[str, ...]
    absent: tuple[str, ...]

    def summary(self) -> str:
        text = f"initialised {len(self.loaded)} tensors from {self.source}"
        if self.skipped:
            text += f"; kept fresh (shape differs): {', '.join(self.skipped)}"
        if self.absent:
            text += f"; not in the source: {', '.join(self.absent)}"
        return text


def init_from_checkpoint(model: nn.Module, source: Path) -> InitReport:
    """Copy every tensor of ``source`` whose name and shape match ``model`` (x2 → x3/x4 as in the paper).

    ``source`` is an srpipe checkpoint or run dir (EMA weights preferred) or an EDSR-PyTorch/BasicSR
    file. Tensors whose shape differs (the upsampler of another scale) keep their fresh initialisation.
    Raises ``CheckpointError`` when nothing matches (a different architecture).
    """
    file = ckpt_io.resolve_checkpoint(Path(source))
    obj = ckpt_io.read_file(file)
    if ckpt_io.is_srpipe_checkpoint(obj):
        state = ckpt_io.weights_of(ckpt_io.validate(obj, file), file, use_ema=True)
    else:
        from srpipe.model import convert

        _, state = convert.convert_state_dict(convert.extract_state_dict(obj, source=str(file)),
                                              source=str(file))
    own = model.state_dict()
    loaded, skipped = [], []
    for name, tensor in own.items():
        src = state.get(name)
        if src is None:
            continue
        if tuple(src.shape) == tuple(tensor.shape):
            with torch.no_grad():
                tensor.copy_(src.to(tensor.dtype))
            loaded.append(name)
        else:
            skipped.append(f"{name} {tuple(src.shape)}→{tuple(tensor.shape)}")
    absent = [name for name in own if name not in state]
    if not any(name.endswith("weight") for name in loaded):
        raise CheckpointError(f"{file}: no weights match this model (is it an EDSR of another width?)")
    return InitReport(file, tuple(loaded), tuple(skipped), tuple(absent))


def checkpoint_extra(*, state: TrainState, optimizer: torch.optim.Optimizer,
                     scaler_state: dict[str, Any] | None, lr: float, schedule: str, rng: list[dict[str, Any]],
                     ema_state: dict[str, torch.Tensor] | None, config: dict[str, Any]) -> dict[str, Any]:
    """The ``extra`` entries of a training checkpoint (see the module docstring)."""
    train = {"state": state.to_dict(), "optimizer": optimizer.state_dict(), "scaler": scaler_state,
             "schedule": {"kind": schedule, "lr": lr}, "rng": rng, "world_size": len(rng), "config": config}
    extra: dict[str, Any] = {"train": train}
    if ema_state is not None:
        extra["ema"] = ema_state
    return extra


@dataclass(frozen=True)
class Resumed:
    """A training checkpoint, read and checked for resuming."""

    path: Path
    model_config: ModelConfig
    model: dict[str, torch.Tensor]
    ema: dict[str, torch.Tensor] | None
    state: TrainState
    optimizer: dict[str, Any]
    scaler: dict[str, Any] | None
    rng: list[dict[str, Any]]


def read_resume(path: Path) -> Resumed:
    """Read a training checkpoint (``last.pt``); ``CheckpointError`` if it holds no trainer state."""
    data = ckpt_io.read_checkpoint(path)
    train = data.get("train")
    if not isinstance(train, dict) or "state" not in train or "optimizer" not in train:
        raise CheckpointError(f"{path}: holds weights only, no trainer state; it cannot be resumed "
                              "(use train.init_from to start a new run from these weights)")
    ema = data.get("ema") if isinstance(data.get("ema"), dict) else None
    return Resumed(path=path, model_config=ckpt_io.model_config_of(data, path),
                   model=strip_prefixes(data["model"]), ema=ema,
                   state=TrainState.from_dict(train["state"]), optimizer=train["optimizer"],
                   scaler=train.get("scaler"), rng=list(train.get("rng") or []))
