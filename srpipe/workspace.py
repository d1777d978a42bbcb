"""Where srpipe reads and writes by default (the workspace convention).

The workspace root is, in order: an explicit path (``--workspace``), the ``SRPIPE_WORKSPACE``
environment variable, or ``./srpipe-work`` in the current directory. Inside it:

- ``stores/``: what ``srpipe prepare`` writes (``train.h5``, ``valid.h5``); ``srpipe train`` reads it.
- ``runs/<pipeline>-<YYYYmmdd-HHMMSS>/``: one folder per training run (checkpoints, metrics.csv, ...).
- ``synthetic/<pipeline>/``: generated images and their stores, for a pipeline with ``synthetic_images``
  (the ``smoke`` install check) trained in a workspace without stores.
- ``cache/overlap/``: tile overlaps measured for foreign models, one JSON per model file's sha256.
- ``models/``: what ``srpipe export`` writes (``<run name>-x<scale>.onnx``); ``srpipe process`` and
  ``srpipe evaluate`` look here when no model is given.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

ENV_VAR = "SRPIPE_WORKSPACE"
DEFAULT_DIRNAME = "srpipe-work"


@dataclass(frozen=True)
class Workspace:
    """Resolved workspace paths. Nothing is created until a stage writes."""

    root: Path

    @classmethod
    def resolve(cls, override: Path | None = None) -> Workspace:
        if override is not None:
            return cls(Path(override).expanduser())
        env = os.environ.get(ENV_VAR)
        if env:
            return cls(Path(env).expanduser())
        return cls(Path.cwd() / DEFAULT_DIRNAME)

    @property
    def stores(self) -> Path:
        return self.root / "stores"

    @property
    def runs(self) -> Path:
        return self.root / "runs"

    @property
    def models(self) -> Path:
        return self.root / "models"

    @property
    def cache(self) -> Path:
        """Measured tile overlaps of models that do not state theirs (``infer.measured``)."""
        return self.root / "cache" / "overlap"
