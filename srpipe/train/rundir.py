"""The training run directory: its layout, its resolved ``config.toml`` and its ``metrics.csv``.

Layout (docs/train.md)::

    <workspace>/runs/<pipeline>-<YYYYmmdd-HHMMSS>/
        config.toml          the resolved pipeline (overrides applied); a valid pipeline file
        checkpoints/last.pt  latest state: weights, EMA, optimizer, RNG, iteration (resumable)
        checkpoints/best.pt  weights (+ EMA) of the best validation so far
        metrics.csv          one row per log window (kind=train) and per validation (kind=val)
        compare/             bicubic | model | HR picture at each validation (iter-NNNNNNN.png)
        train.log            the log of every sitting
        tensorboard/         event files, when the tensorboard package is installed

``metrics.csv`` is one continuous file across resumes: resuming from iteration k first drops rows
logged after k (by the sitting that was killed), so no iteration appears twice.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from srpipe.config import Pipeline
from srpipe.imaging.io import atomic_path

log = logging.getLogger(__name__)

METRICS_COLUMNS = ("iteration", "kind", "loss", "lr", "psnr_y", "ssim_y", "it_per_s", "skipped_steps",
                   "elapsed_s", "time")


@dataclass(frozen=True)
class RunDir:
    """Paths inside one run directory (nothing is created by constructing it)."""

    root: Path

    @property
    def config(self) -> Path:
        return self.root / "config.toml"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def last(self) -> Path:
        return self.checkpoints / "last.pt"

    @property
    def best(self) -> Path:
        return self.checkpoints / "best.pt"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.csv"

    @property
    def compare(self) -> Path:
        return self.root / "compare"

    @property
    def log(self) -> Path:
        return self.root / "train.log"

    @property
    def tensorboard(self) -> Path:
        return self.root / "tensorboard"


def new_run_name(pipeline_name: str) -> str:
    """``<pipeline>-<YYYYmmdd-HHMMSS>`` (local time); unsafe characters in the name become ``_``."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in pipeline_name) or "run"
    return f"{safe}-{time.strftime('%Y%m%d-%H%M%S')}"


def latest_run(runs: Path) -> Path | None:
    """The run under ``runs`` trained most recently, or None: of the folders holding a ``config.toml``
    or a checkpoint, the one whose ``config.toml``, ``checkpoints/last.pt`` or ``checkpoints/best.pt``
    was written last (a start or resume writes ``config.toml``, every save a checkpoint); ties go to
    the later name. Install-check runs count like any other (docs/train.md, "The latest run")."""
    if not runs.is_dir():
        return None
    written: list[tuple[int, str, Path]] = []
    for folder in runs.iterdir():
        run = RunDir(folder)
        times = [t for t in map(_mtime_ns, (run.config, run.last, run.best)) if t is not None]
        if times:
            written.append((max(times), folder.name, folder))
    return max(written)[2] if written else None


def _mtime_ns(path: Path) -> int | None:
    try:
        return path.stat().st_mtime_ns if path.is_file() else None
    except OSError:
        return None


# ---- config.toml ----

def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)  # shortest round-trip form, always with '.' or 'e'
    if isinstance(value, (str, Path)):
        return json.dumps(str(value), ensure_ascii=False)  # a JSON string is a valid TOML basic string
    if isinstance(value, (tuple, list)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} to TOML")


def dump_toml(obj: Any, header: str = "") -> str:
    """A frozen config dataclass as TOML: scalars first, then one ``[table]`` per nested dataclass."""
    lines, tables = [], []
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            tables.append((f.name, value))
        elif value is not None:  # TOML has no null: an omitted key loads as its default (None)
            lines.append(f"{f.name} = {_toml_value(value)}")
    out = (f"[{header}]\n" if header else "") + "".join(line + "\n" for line in lines)
    for name, value in tables:
        out += "\n" + dump_toml(value, f"{header}.{name}" if header else name)
    return out


def write_config(path: Path, pipeline: Pipeline) -> None:
    """Write the resolved pipeline atomically; ``srpipe.config.load_pipeline`` reads it back unchanged."""
    text = "# Resolved configuration of this run (written by srpipe train; a valid pipeline file).\n"
    text += dump_toml(pipeline)
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


# ---- metrics.csv (+ TensorBoard) ----

class MetricsLog:
    """Appends rows to ``metrics.csv`` (flushed per row) and mirrors scalars to TensorBoard if available."""

    def __init__(self, path: Path, *, tensorboard_dir: Path | None = None) -> None:
        self.path = path
        self._tb: Any = None
        if tensorboard_dir is not None:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # tensorboard is optional; metrics.csv has everything
                log.debug("tensorboard not installed; metrics go to %s only", path)
            else:
                self._tb = SummaryWriter(log_dir=str(tensorboard_dir))

    def truncate_after(self, iteration: int) -> int:
        """Drop rows with ``iteration`` greater than the given one (a resume); returns rows dropped."""
        if not self.path.is_file():
            return 0
        with open(self.path, newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
        keep = [r for r in rows if r.get("iteration", "").isdigit() and int(r["iteration"]) <= iteration]
        if len(keep) != len(rows):
            buf = io.StringIO()
            writer = csv.DictWriter(buf, fieldnames=METRICS_COLUMNS, extrasaction="ignore", restval="")
            writer.writeheader()
            writer.writerows(keep)
            with atomic_path(self.path) as tmp:
                tmp.write_text(buf.getvalue(), encoding="utf-8")
        return len(rows) - len(keep)

    def append(self, *, iteration: int, kind: str, loss: float | None = None, lr: float | None = None,
               psnr_y: float | None = None, ssim_y: float | None = None, it_per_s: float | None = None,
               skipped_steps: int | None = None, elapsed_s: float | None = None) -> None:
        """Write one row (``None`` → empty cell); floats are written in full (``repr``) precision."""
        row: dict[str, Any] = {"iteration": iteration, "kind": kind, "loss": loss, "lr": lr, "psnr_y": psnr_y,
                               "ssim_y": ssim_y, "it_per_s": it_per_s, "skipped_steps": skipped_steps,
                               "elapsed_s": elapsed_s, "time": time.strftime("%Y-%m-%dT%H:%M:%S")}
        new = not self.path.is_file() or self.path.stat().st_size == 0
        cells = {k: (repr(v) if isinstance(v, float) else v) for k, v in row.items() if v is not None}
        with open(self.path, "a", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=METRICS_COLUMNS, restval="")
            if new:
                writer.writeheader()
            writer.writerow(cells)
        if self._tb is not None:
            for key in ("loss", "lr", "psnr_y", "ssim_y", "it_per_s"):
                if row[key] is not None:
                    self._tb.add_scalar(f"{kind}/{key}", row[key], iteration)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


def read_metrics(path: Path) -> list[dict[str, str]]:
    """All rows of a ``metrics.csv`` as dicts of strings (for tests and reports)."""
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))
