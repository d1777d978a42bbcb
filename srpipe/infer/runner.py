"""The threaded loop behind ``srpipe process`` (the stage itself is :mod:`srpipe.process`).

A reader thread decodes images into a bounded queue, the calling thread runs the model (the engine:
``TiledUpscaler`` or the photo-mode ``StrengthUpscaler``), a writer thread encodes and writes through
another bounded queue, so decoding and encoding overlap inference while at most a few images sit in
memory (and an upscale waits while it would not fit ``memory_budget`` beside outputs still encoding).
Every file ends as a :class:`FileResult`; one bad file never stops the batch. Writes are atomic
(``imaging.io.write_image``) and recorded in the ``--out`` manifest as they finish.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from srpipe.batch import Status, failure_reason
from srpipe.config import ProcessConfig
from srpipe.errors import ImageTooLargeError
from srpipe.imaging.color import to_uint8
from srpipe.imaging.io import Image, Layout, peek_layout, read_image, write_image
from srpipe.infer import budget
from srpipe.infer.files import Job, safe_output_path
from srpipe.infer.manifest import ManifestWriter
from srpipe.photo.estimate import Estimate
from srpipe.photo.run import Engine, check_fidelity
from srpipe.photo.strength import StrengthUpscaler
from srpipe.progress import ProgressFn, report

log = logging.getLogger(__name__)

QUEUE_DEPTH = 2  # images waiting on each side of the model: enough to hide I/O, little memory
_EIGHT_BIT = (".jpg", ".jpeg", ".webp", ".bmp")
_NO_ALPHA = (".jpg", ".jpeg", ".bmp")

Task = tuple[int, Job, Path]  # index in the run's job list, the job, its planned output
Encode = tuple[int, Job, Path, Image, np.ndarray, float, Estimate | None]  # + SR pixels, model seconds, photo


@dataclass
class FileResult:
    """The fate of one input file."""

    input: str
    output: str
    status: Status
    reason: str = ""
    output_megapixels: float = 0.0
    seconds: float = 0.0  # model time for this file
    fidelity_db: float | None = None  # back-projection consistency of the output (photo.fidelity)
    fidelity_fixed_db: float | None = None  # the same after --fidelity-fix
    jpeg_quality: int | None = None  # photo mode: estimated from the file (photo.estimate)
    noise_sigma: float | None = None  # photo mode: estimated luma noise, 0-255 scale
    strength: float | None = None  # photo mode: the strength used


class Runner:
    """Decode → upscale → encode of the files left to do; each result lands in ``results`` (by job
    index, beside the ones the caller settled already) and in the manifest ``book``."""

    def __init__(self, out: Path, cfg: ProcessConfig, upscaler: Engine, book: ManifestWriter,
                 results: dict[int, FileResult], *, total: int, progress: ProgressFn | None) -> None:
        self.out, self.cfg, self.upscaler, self.book = out, cfg, upscaler, book
        self.results, self.total, self.progress = results, total, progress
        self.decoded: queue.Queue[tuple[int, Job, Path, Image | Exception] | None] = queue.Queue(QUEUE_DEPTH)
        self.encode: queue.Queue[Encode | None] = queue.Queue(QUEUE_DEPTH)
        self.stop = threading.Event()
        self.lock = threading.Lock()  # results and progress: written by the main and the writer thread
        self.settle = threading.Condition()  # guards ``pending``
        self.pending = 0  # estimated bytes of the outputs queued for or being encoded
        self.t0 = time.perf_counter()

    def run(self, todo: list[Task]) -> None:
        """Process ``todo`` (in order); returns when every file has its result or on an interrupt."""
        self.t0 = time.perf_counter()
        threads = [threading.Thread(target=self._reader, args=(todo,), name="srpipe-decode", daemon=True),
                   threading.Thread(target=self._writer, name="srpipe-encode", daemon=True)]
        for t in threads:
            t.start()
        try:
            while (got := self.decoded.get()) is not None:
                self._upscale(*got)
                del got  # not held while waiting for the next image
        finally:
            self.stop.set()
            self.encode.put(None)  # the writer finishes what it holds (atomically) and exits
            while threads[0].is_alive():  # unblock a reader waiting on a full queue after an interrupt
                with contextlib.suppress(queue.Empty):
                    self.decoded.get(timeout=0.05)
            for t in threads:
                t.join()

    def _finish(self, i: int, result: FileResult) -> None:
        with self.lock:
            self.results[i] = result
            done = len(self.results)
            megapixels = sum(r.output_megapixels for r in self.results.values())
        mps = megapixels / max(time.perf_counter() - self.t0, 1e-9)
        report(self.progress, "process", done, self.total, f"{mps:.2f} MP/s")

    def _fail(self, i: int, job: Job, target: Path, reason: str) -> None:
        self._finish(i, FileResult(str(job.source), str(target), "failed", reason))

    # ---- reader thread ----
    def _reader(self, todo: list[Task]) -> None:
        for i, job, target in todo:
            if self.stop.is_set():
                break
            try:
                item: Image | Exception = _over_budget(job, target, self.cfg, self.upscaler) or \
                    read_image(job.source, max_pixels=self.cfg.max_pixels)
            except Exception as exc:  # reported per file; the batch goes on
                item = exc
            self.decoded.put((i, job, target, item))
        self.decoded.put(None)

    # ---- main thread ----
    def _upscale(self, i: int, job: Job, target: Path, image: Image | Exception) -> None:
        if isinstance(image, Exception):
            self._fail(i, job, target, failure_reason(image, job.source))
            return
        if image.pixels.ndim == 3 and image.pixels.shape[2] == 4 and target.suffix.lower() in _NO_ALPHA:
            self._fail(i, job, target, f"{target.suffix} cannot store the alpha channel; use --format png, "
                                       "webp or tiff")
            return
        layout, scale = _layout(image.pixels), self.upscaler.scale
        need = budget.upscale_bytes(layout, scale, self.upscaler.tile)
        with self.settle:  # upscale beside earlier outputs still encoding only while both fit the budget
            while self.pending and self.pending + need > self.cfg.memory_budget * budget.MIB:
                self.settle.wait(0.5)
        started = time.perf_counter()
        try:
            estimate = self.upscaler.choose(job.source, image.pixels) \
                if isinstance(self.upscaler, StrengthUpscaler) else None
            pixels = self.upscaler(image.pixels)
        except Exception as exc:
            log.debug("upscaling %s failed", job.source, exc_info=True)
            self._fail(i, job, target, failure_reason(exc, job.source))
            return
        with self.settle:
            self.pending += budget.encode_bytes(layout, scale, target.suffix)
        self.encode.put((i, job, target, image, pixels, time.perf_counter() - started, estimate))

    # ---- writer thread ----
    def _writer(self) -> None:
        while (item := self.encode.get()) is not None:
            cost = budget.encode_bytes(_layout(item[3].pixels), self.upscaler.scale, item[2].suffix)
            try:
                self._write(*item)
            finally:
                del item  # the pixels are freed before the budget says so
                with self.settle:
                    self.pending -= cost
                    self.settle.notify_all()

    def _write(self, i: int, job: Job, target: Path, image: Image, pixels: np.ndarray, seconds: float,
               estimate: Estimate | None) -> None:
        try:
            path = safe_output_path(self.out, job.out_rel, job.source)
            pixels, checked = check_fidelity(pixels, image.pixels, self.upscaler.scale,
                                             fix=self.cfg.fidelity_fix, estimate=estimate)
            if target.suffix.lower() in _EIGHT_BIT and pixels.dtype == np.uint16:
                pixels = to_uint8(pixels)  # the format holds 8 bits; converting is what was asked
            write_image(path, pixels, icc=image.icc, exif=image.exif, xmp=image.xmp, iptc=image.iptc,
                        quality=self.cfg.quality)
            self.book.record(job, path)
            mp = pixels.shape[0] * pixels.shape[1] / 1e6
            self._finish(i, FileResult(str(job.source), str(path), "ok", "", mp, seconds, **checked))
        except Exception as exc:
            self._fail(i, job, target, failure_reason(exc, job.source))


def _layout(pixels: np.ndarray) -> Layout:
    return Layout(pixels.shape[1], pixels.shape[0], pixels.shape[2] if pixels.ndim == 3 else 1,
                  pixels.itemsize)


def _over_budget(job: Job, target: Path, cfg: ProcessConfig, upscaler: Engine) -> Exception | None:
    """The refusal of a file whose estimated memory (``infer.budget``, from its header: instant) is over
    ``cfg.memory_budget``, else None; files over the pixel cap are left to ``read_image``'s message."""
    layout = peek_layout(job.source)
    if layout is None or layout.width * layout.height > cfg.max_pixels:
        return None
    need = budget.file_bytes(layout, upscaler.scale, upscaler.tile, target.suffix)
    if need <= cfg.memory_budget * budget.MIB:
        return None
    return ImageTooLargeError(job.source, budget.over_budget_reason(layout, upscaler.scale, need,
                                                                    cfg.memory_budget))
