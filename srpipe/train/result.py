"""What a sitting of ``srpipe train`` did: for people (``TrainResult.lines``) and machines (``to_dict``)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class TrainResult:
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

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (paths as strings)."""
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(self).items()}

    def lines(self) -> list[str]:
        """A short human summary: what ran, where everything went, what to do next."""
        run = self.run_dir
        resumed = f", resumed at {self.start_iteration}" if self.start_iteration else ""
        ranks = f" × {self.world_size} processes" if self.world_size > 1 else ""
        early = " (stopped early: no improvement)" if self.stopped_early else ""
        out = [f"run:         {run}",
               f"iterations:  {self.iteration} of {self.iterations}{resumed}{early}",
               f"speed:       {self.it_per_s:.2f} it/s on {self.device}{ranks}, {self.precision}, "
               f"{self.data_source} data; {self.seconds:.1f} s this sitting"]
        if self.best_psnr_y is not None:
            out.append(f"validation:  best {self.best_psnr_y:.3f} dB Y-PSNR at iteration "
                       f"{self.best_iteration} (last {self.last_psnr_y:.3f} dB)")
        if self.skipped_steps:
            out.append(f"skipped:     {self.skipped_steps} steps with a non-finite loss")
        if self.init_report:
            out.append(f"init:        {self.init_report}")
        best = self.best_checkpoint.relative_to(run) if self.best_checkpoint else "none yet"
        out += [f"checkpoints: {self.last_checkpoint.relative_to(run)} (resumable), best: {best}",
                f"metrics:     {self.metrics.relative_to(run)}; pictures in compare/; log in train.log"]
        if self.iteration < self.iterations and not self.stopped_early:
            out.append(f"continue:    srpipe train --resume {run}")
        else:
            out.append(f"next:        srpipe evaluate {run} --hr HR_DIR --scale S ; srpipe export {run}")
        return out
