"""What a sitting of ``srpipe train`` did (:class:`TrainReport`); ``srpipe.render.print_train`` shows it
to people, ``to_dict`` to machines."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class TrainReport:
    """Outcome of one sitting (one call of :func:`srpipe.train.run.train`)."""

    run_dir: Path
    iteration: int  # reached
    iterations: int  # target
    start_iteration: int  # 0, or where this sitting resumed
    best_psnr_y: float | None  # best validation Y-PSNR over the whole run (None: never validated)
    best_iteration: int | None
    last_psnr_y: float | None
    stopped_early: bool
    skipped_steps: int  # non-finite losses over the whole run
    seconds: float  # this sitting, wall time
    it_per_s: float  # this sitting, training iterations only (validation/checkpoints excluded)
    device: str
    world_size: int
    rank: int  # this process's rank (0 alone); only rank 0 wrote files
    precision: str
    data_source: str  # "loader" or "device"
    last_checkpoint: Path
    best_checkpoint: Path | None
    metrics: Path
    init_report: str | None

    @property
    def exit_code(self) -> int:
        """0: a sitting that could not train raises instead (an interrupt too, after saving)."""
        return 0

    @property
    def finished(self) -> bool:
        """Whether the run is over: every iteration done, or stopped early (else it can be resumed)."""
        return self.iteration >= self.iterations or self.stopped_early

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (paths as strings)."""
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(self).items()}
