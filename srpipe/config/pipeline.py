"""Pipeline files (``pipelines/<name>.toml``: one table per stage), finding and loading them, and
:func:`configure`, the one way a command's options become a stage's configuration."""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from srpipe.config.checks import AT_LEAST_0, check_values
from srpipe.config.stages import ExportConfig, PrepareConfig, ProcessConfig
from srpipe.config.train import TrainConfig
from srpipe.errors import ConfigError
from srpipe.typed_toml import apply_overrides, from_dict

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

C = TypeVar("C")


@dataclass(frozen=True)
class Pipeline:
    """A whole recipe: one config per stage, as read from one TOML file. A training run records its
    resolved pipeline as ``<run>/config.toml``; ``srpipe export`` of that run starts from its
    ``[export]`` table."""

    name: str = "default"
    description: str = ""
    # Install checks: when train finds no stores (and train.stores is unset), it prepares its own from
    # this many generated images (srpipe.data.synthetic) under <workspace>/synthetic/<name>/; 0 = never.
    synthetic_images: int = 0
    prepare: PrepareConfig = field(default_factory=PrepareConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    process: ProcessConfig = field(default_factory=ProcessConfig)

    def __post_init__(self) -> None:
        check_values(self, "pipeline", {"synthetic_images": AT_LEAST_0})


def configure(base: C, assignments: Sequence[str] = (), *, table: str = "", **options: Any) -> C:
    """``base`` with ``--set`` ``assignments`` and then the given ``options`` applied.

    The one way options reach a stage: ``base`` is the stage's table of a pipeline (or of a run's
    recorded ``config.toml``) or its defaults; ``assignments`` are ``key=value`` TOML values, dotted
    keys reaching nested tables (:func:`srpipe.typed_toml.apply_overrides`); ``options`` are fields set
    by name, None meaning "not given". An option beats ``--set``, which beats the table. With ``table``
    (``base`` a :class:`Pipeline`), both apply to that table of it, and a leading ``<table>.`` in an
    assignment is accepted. Every value is checked by its dataclass (``ConfigError`` naming the key).
    """
    if table:
        inner = configure(getattr(base, table), [a.removeprefix(f"{table}.") for a in assignments],
                          **options)
        return dataclasses.replace(base, **{table: inner})  # type: ignore[type-var]
    cfg = apply_overrides(base, tuple(assignments), source="--set") if assignments else base
    given = {k: v for k, v in options.items() if v is not None}
    return dataclasses.replace(cfg, **given) if given else cfg  # type: ignore[type-var]


def pipeline_dirs() -> list[Path]:
    """Folders searched for ``<name>.toml``: ./pipelines, then the recipes shipped with srpipe
    (``srpipe/pipelines``, a link to the repository's ``pipelines/`` that wheels carry as files)."""
    return [Path.cwd() / "pipelines", Path(__file__).resolve().parents[1] / "pipelines"]


def find_pipeline(name_or_path: str | Path) -> Path:
    """Resolve a pipeline name (``edsr-baseline-x4``) or a path to an existing TOML file."""
    candidate = Path(name_or_path)
    if candidate.suffix == ".toml" or candidate.exists():
        if not candidate.is_file():
            raise ConfigError(f"{candidate}: pipeline file not found")
        return candidate
    for folder in pipeline_dirs():
        path = folder / f"{name_or_path}.toml"
        if path.is_file():
            return path
    known = sorted({p.stem for d in pipeline_dirs() if d.is_dir() for p in d.glob("*.toml")})
    raise ConfigError(f"unknown pipeline '{name_or_path}'; known: {', '.join(known) or 'none'}")


def load_pipeline(name_or_path: str | Path) -> Pipeline:
    """Load a pipeline file into a ``Pipeline``; errors name the file and the dotted key."""
    path = find_pipeline(name_or_path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read pipeline: {exc}") from exc
    data.setdefault("name", path.stem)
    return from_dict(Pipeline, data, source=str(path))
