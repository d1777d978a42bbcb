"""srpipe checkpoints: files that carry their ``ModelConfig``, written atomically, loaded strictly.

Format (a plain dict, loadable with ``torch.load(weights_only=True)``, so it holds only tensors,
numbers, strings, lists, tuples and dicts — never pickled objects)::

    {"format": "srpipe-checkpoint", "version": 1, "srpipe_version": "0.1.0",
     "model_config": dataclasses.asdict(ModelConfig),   # plain dict
     "model": state_dict,                                # the raw weights
     "ema": state_dict,                                  # optional: EMA weights (training)
     "train": {...}}                                     # optional: trainer state (srpipe.train.state)

Contracts:

- :func:`save_checkpoint` never leaves a half-written file under the final name: it writes a temporary
  file in the same folder and ``os.replace``-s it (``imaging.io.atomic_path``), so a crash keeps the
  previous checkpoint intact.
- :func:`load_model` takes a checkpoint file or a training run directory (its ``checkpoints/best.pt``,
  else ``checkpoints/last.pt``). Keys are loaded **strictly** after stripping ``module.`` (DDP) and
  ``_orig_mod.`` (torch.compile) prefixes. Files that are not srpipe checkpoints are handed to
  :mod:`srpipe.model.convert` (EDSR-PyTorch / BasicSR layouts). Every failure is a ``CheckpointError``
  naming the file.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import torch

from srpipe import __version__
from srpipe.config import ModelConfig, from_dict
from srpipe.errors import CheckpointError, ConfigError
from srpipe.imaging.io import atomic_path
from srpipe.model.convert import convert_state_dict, extract_state_dict, strip_prefixes
from srpipe.model.edsr import EDSR, build_model

log = logging.getLogger(__name__)

FORMAT = "srpipe-checkpoint"
VERSION = 1
RESERVED = frozenset({"format", "version", "srpipe_version", "model_config", "model"})
BEST_NAME, LAST_NAME = "best.pt", "last.pt"


def save_checkpoint(path: Path, *, model_config: ModelConfig, model_state: dict[str, torch.Tensor],
                    extra: dict[str, Any] | None = None) -> Path:
    """Write an srpipe checkpoint to ``path`` atomically and return ``path``.

    ``model_state`` is a state dict (prefixes are stripped before saving, so a DDP- or compile-wrapped
    model's ``state_dict()`` is fine). ``extra`` adds top-level entries (``"ema"``, ``"train"``); they
    may not reuse the reserved keys and must be ``weights_only``-loadable (tensors, primitives, containers).
    """
    path = Path(path)
    if extra and (clash := RESERVED & set(extra)):
        raise ValueError(f"extra checkpoint entries may not use reserved keys {sorted(clash)}")
    payload: dict[str, Any] = {
        "format": FORMAT,
        "version": VERSION,
        "srpipe_version": __version__,
        "model_config": dataclasses.asdict(model_config),
        "model": strip_prefixes(model_state),
        **(extra or {}),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:  # temp file beside path, fsync, os.replace: never half a checkpoint
        torch.save(payload, tmp)
    return path


def resolve_checkpoint(path: Path) -> Path:
    """The checkpoint file ``path`` names: itself, or for a run directory its best, else last, checkpoint."""
    path = Path(path)
    if path.is_dir():
        folder = path / "checkpoints" if (path / "checkpoints").is_dir() else path
        for name in (BEST_NAME, LAST_NAME):
            if (folder / name).is_file():
                return folder / name
        raise CheckpointError(f"{path}: no {BEST_NAME} or {LAST_NAME} in {folder}; is this a training run "
                              "that has saved a checkpoint yet?")
    if not path.exists():
        raise CheckpointError(f"{path}: no such checkpoint file or run directory")
    return path


def read_file(path: Path) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU; any failure is a ``CheckpointError``."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError as exc:
        raise CheckpointError(f"{path}: no such checkpoint file") from exc
    except IsADirectoryError as exc:
        raise CheckpointError(f"{path}: is a directory, expected a checkpoint file") from exc
    except Exception as exc:  # zip/pickle/EOF errors come in many types; all mean "unusable file"
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path}: not a readable checkpoint (truncated, corrupt, or not a PyTorch "
                              f"weights file): {reason[:200]}") from exc


def is_srpipe_checkpoint(obj: Any) -> bool:
    """True when a loaded object is an srpipe checkpoint dict."""
    return isinstance(obj, dict) and obj.get("format") == FORMAT


def read_checkpoint(path: Path) -> dict[str, Any]:
    """Load and validate an srpipe checkpoint file (not a run directory); returns the whole dict."""
    return validate(read_file(Path(path)), Path(path))


def validate(obj: Any, path: Path) -> dict[str, Any]:
    """Check that a loaded object is a usable srpipe checkpoint of a supported version."""
    if not is_srpipe_checkpoint(obj):
        raise CheckpointError(f"{path}: not an srpipe checkpoint (no format='{FORMAT}')")
    version = obj.get("version")
    if not isinstance(version, int) or version > VERSION:
        raise CheckpointError(f"{path}: checkpoint version {version!r} is newer than this srpipe supports "
                              f"({VERSION}); upgrade srpipe")
    for key in ("model_config", "model"):
        if not isinstance(obj.get(key), dict):
            raise CheckpointError(f"{path}: checkpoint lacks its '{key}' entry")
    return obj


def model_config_of(ckpt: dict[str, Any], path: Path) -> ModelConfig:
    """The ``ModelConfig`` stored in a checkpoint dict (checked like a pipeline file's table)."""
    try:
        return from_dict(ModelConfig, dict(ckpt["model_config"]), source=str(path), prefix="model_config.")
    except ConfigError as exc:
        raise CheckpointError(f"bad model config in checkpoint: {exc}") from exc


def weights_of(ckpt: dict[str, Any], path: Path, *, use_ema: bool) -> dict[str, torch.Tensor]:
    """The state dict to use: EMA weights when asked for and present, else the raw weights."""
    ema = ckpt.get("ema")
    state: dict[str, Any] = ema if use_ema and isinstance(ema, dict) else ckpt["model"]
    if use_ema and state is not ckpt["model"]:
        log.debug("%s: using the EMA weights", path)
    return strip_prefixes(state)


def load_into(model: torch.nn.Module, state: dict[str, torch.Tensor], *, source: Path | str) -> None:
    """``model.load_state_dict(state, strict=True)`` with a ``CheckpointError`` that names what differs."""
    state = strip_prefixes(state)
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in own.items()
              if k in state and tuple(state[k].shape) != tuple(v.shape)]
    if missing or unexpected or shapes:
        parts = [f"missing {missing[:4]}" if missing else "",
                 f"unexpected {unexpected[:4]}" if unexpected else "",
                 f"shape mismatch {shapes[:3]}" if shapes else ""]
        raise CheckpointError(f"{source}: weights do not fit the model: {'; '.join(p for p in parts if p)}")
    model.load_state_dict(state, strict=True)


def load_model(path: str | Path, *, use_ema: bool = True, res_scale: float | None = None,
               rgb_mean: tuple[float, float, float] | None = None,
               device: str | torch.device = "cpu") -> tuple[EDSR, ModelConfig]:
    """``(EDSR in eval mode on ``device``, ModelConfig)`` from an srpipe checkpoint or run directory (its
    EMA weights when ``use_ema`` and present, else its raw weights), or an EDSR-PyTorch / BasicSR / bare
    srpipe weight file (``use_ema`` ignored: they hold one set of weights).

    ``res_scale`` and ``rgb_mean`` override what cannot be read from foreign files (see
    :func:`srpipe.model.convert.convert_state_dict`); srpipe checkpoints carry their own config.
    Failures raise ``CheckpointError`` naming the file.
    """
    file = resolve_checkpoint(Path(path))
    model, cfg = model_from(read_file(file), file, use_ema=use_ema, res_scale=res_scale,
                           rgb_mean=rgb_mean)
    return model.to(device), cfg


def model_from(obj: Any, file: Path, *, use_ema: bool = True, res_scale: float | None = None,
               rgb_mean: tuple[float, float, float] | None = None) -> tuple[EDSR, ModelConfig]:
    """:func:`load_model` of an object already read from ``file`` (named in errors)."""
    if is_srpipe_checkpoint(obj):
        ckpt = validate(obj, file)
        cfg = model_config_of(ckpt, file)
        state = weights_of(ckpt, file, use_ema=use_ema)
    else:
        cfg, state = convert_state_dict(extract_state_dict(obj, source=str(file)), source=str(file),
                                        res_scale=res_scale, rgb_mean=rgb_mean)
    try:
        model = build_model(cfg)
    except ValueError as exc:
        raise CheckpointError(f"{file}: cannot build the stored model {cfg}: {exc}") from exc
    load_into(model, state, source=file)
    return model.eval(), cfg
