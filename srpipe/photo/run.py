"""Photo mode inside ``srpipe process``: which engine runs, what the manifest records, the fidelity check.

- :func:`open_for`: the engine of a process run: a ``TiledUpscaler`` of the chosen model, or, with
  ``--model photo``, a :class:`~srpipe.photo.strength.StrengthUpscaler` between the bundled default and
  photo models of the scale (``strength`` unset = ``auto``). ``--strength`` with any other model is a
  usage error.
- :func:`variant`: what photo mode and ``--fidelity-fix`` add to an output's manifest settings, so a
  rerun with another strength or without the fix redoes the file.
- :func:`check_fidelity`: the per-output numbers of the report (``photo.fidelity``), and the fixed pixels
  when asked for.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from srpipe.config import ProcessConfig
from srpipe.errors import UsageError
from srpipe.infer.session import find_model
from srpipe.infer.upscaler import TiledUpscaler
from srpipe.photo.estimate import Estimate
from srpipe.photo.fidelity import back_project, consistency_db
from srpipe.photo.strength import StrengthUpscaler, open_photo
from srpipe.workspace import Workspace

Engine = TiledUpscaler | StrengthUpscaler


def open_for(cfg: ProcessConfig, model: str | Path | None, workspace: Workspace) -> tuple[Engine, str]:
    """The engine for ``process`` and the model name its report and manifest carry."""

    def opener(path: Path) -> TiledUpscaler:
        return TiledUpscaler.open(path, device=cfg.device, threads=cfg.threads, tile=cfg.tile,
                                  overlap=cfg.overlap, batch=cfg.batch, ensemble=cfg.ensemble,
                                  cache_dir=workspace.cache, backend=cfg.backend, precision=cfg.precision)

    if str(model) != "photo":
        if cfg.strength is not None:
            raise UsageError("--strength needs --model photo (it blends the bundled default and photo "
                             "models of the scale)")
        path = find_model(cfg.scale, model=model, workspace=workspace)
        return opener(path), str(path)
    engine = open_photo(cfg.scale, cfg.strength, opener=opener, cache_dir=workspace.cache)
    return engine, str(engine.photo)


def photo_mode(engine: object) -> str:
    """``"auto"`` or the fixed strength for a photo-mode engine, else ``""``."""
    if not isinstance(engine, StrengthUpscaler):
        return ""
    return "auto" if engine.fixed is None else f"{engine.fixed:g}"


def variant(report: Any) -> str:
    """The manifest's ``variant`` for a run (module docstring)."""
    parts = [f"strength {report.strength}"] if report.strength else []
    if report.fidelity_fix:
        parts.append("fidelity-fix")
    return ", ".join(parts)


def check_fidelity(output: np.ndarray, source: np.ndarray, scale: int, *, fix: bool,
                   estimate: Estimate | None) -> tuple[np.ndarray, dict[str, Any]]:
    """``(pixels to write, FileResult fields)``: the consistency, and with ``fix`` the back-projected
    output and its consistency; the photo-mode estimate when there is one."""
    fields: dict[str, Any] = {"fidelity_db": round(consistency_db(output, source, scale), 3)}
    if fix:
        output = back_project(output, source, scale)
        fields["fidelity_fixed_db"] = round(consistency_db(output, source, scale), 3)
    if estimate is not None:
        fields.update(jpeg_quality=estimate.jpeg_quality, noise_sigma=estimate.noise_sigma,
                      strength=estimate.strength)
    return output, fields
