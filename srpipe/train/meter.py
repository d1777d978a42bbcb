"""Loss and throughput bookkeeping for one sitting of training.

:class:`Meter` times only training iterations: :meth:`Meter.restart_clock` after validation or a
checkpoint keeps that time out of it/s, ETA and the CPU estimate. The first iteration of a sitting
(warm-up, cudnn autotuning, torch.compile) is excluded from the speed shown to the user.
"""

from __future__ import annotations

import logging
import math
import time

from srpipe.progress import ProgressFn, report
from srpipe.train.runtime import duration_text

log = logging.getLogger(__name__)

CPU_ESTIMATE_AFTER = (5, 10.0)  # iterations and seconds timed (after the first) before the CPU warning
REPORT_INTERVAL_S = 0.1  # progress callbacks at most this often (rendering is not free)


class Meter:
    """See the module docstring. ``iteration`` arguments are counts of iterations done."""

    def __init__(self, *, start: int, total: int, progress: ProgressFn | None, cpu_estimate: bool) -> None:
        self.start, self.total, self.progress, self.cpu_estimate = start, total, progress, cpu_estimate
        self.train_time = 0.0
        self._t = time.perf_counter()
        self._first: tuple[int, float] | None = None  # (iteration, train_time) after the first iteration
        self._loss_sum, self._loss_n, self._window_t, self._window_it = 0.0, 0, 0.0, 0
        self._last_report = -math.inf

    def restart_clock(self) -> None:
        """Forget the time since the last iteration (it was spent validating or saving)."""
        self._t = time.perf_counter()

    def step(self, iteration: int, loss: float) -> None:
        """Record one finished iteration; a non-finite ``loss`` counts for speed but not for the mean loss."""
        now = time.perf_counter()
        dt, self._t = now - self._t, now
        self.train_time += dt
        self._window_t += dt
        self._window_it += 1
        if math.isfinite(loss):
            self._loss_sum += loss
            self._loss_n += 1
        if self._first is None:
            self._first = (iteration, self.train_time)
            return
        timed_it, timed_s = iteration - self._first[0], self.train_time - self._first[1]
        # At least a few iterations and a few seconds, so one slow iteration does not set the estimate.
        if self.cpu_estimate and timed_it >= CPU_ESTIMATE_AFTER[0] and timed_s >= CPU_ESTIMATE_AFTER[1]:
            self.cpu_estimate = False
            per_it = timed_s / timed_it
            log.warning("training on the CPU: %.2f s per iteration, about %s for the remaining %d "
                        "iterations; a CUDA GPU is far faster (docs/train.md)", per_it,
                        duration_text(per_it * (self.total - iteration)), self.total - iteration)

    def speed(self, iteration: int) -> float:
        """Iterations per second of training since the first iteration of the sitting (0 if unknown)."""
        if self._first is None or iteration <= self._first[0]:
            return 0.0
        return (iteration - self._first[0]) / max(1e-9, self.train_time - self._first[1])

    def take_window(self) -> tuple[float, float | None]:
        """(mean finite loss, it/s) since the last call, then start a new window."""
        mean = self._loss_sum / self._loss_n if self._loss_n else math.nan
        ips = self._window_it / self._window_t if self._window_t > 0 else None
        self._loss_sum, self._loss_n, self._window_t, self._window_it = 0.0, 0, 0.0, 0
        return mean, ips

    def report(self, iteration: int, *, loss: float, lr: float, val_psnr: float, force: bool = False) -> None:
        """Progress callback (throttled unless ``force``; the last iteration is always reported)."""
        now = time.perf_counter()
        due = force or iteration >= self.total or now - self._last_report >= REPORT_INTERVAL_S
        if self.progress is None or not due:
            return
        self._last_report = now
        info = f"loss {loss:.4f}  lr {lr:.2e}  {self.speed(iteration):.2f} it/s"
        if not math.isnan(val_psnr):
            info += f"  val {val_psnr:.2f} dB"
        report(self.progress, "train", iteration, self.total, info)

    def sitting_speed(self, iteration: int) -> float:
        """Iterations per second over the whole sitting's training time (first iteration included)."""
        return (iteration - self.start) / self.train_time if self.train_time > 0 else 0.0
