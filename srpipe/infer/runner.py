"""``srpipe process``: upscale a file or a folder tree with one ONNX Runtime session.

Pipeline: a reader thread decodes images into a bounded queue, the calling thread runs the model
(``TiledUpscaler``), a writer thread encodes and writes through another bounded queue, so decoding and
encoding overlap inference while at most a few images sit in memory. Every file ends as ``ok``,
``skipped`` (its output is up to date: ``infer.manifest`` records in ``--out`` what made each output, and
an output made with other settings, model or source is redone; ``overwrite`` redoes all) or ``failed``
with the reason (corrupt, truncated, unsupported, over the pixel cap, unwritable...); one bad file never
stops the batch. Writes are atomic (``imaging.io.write_image``), so an existing output is always
complete and a rerun after a kill simply finishes the job. Inputs are walked and their outputs named
by ``srpipe.batch`` (mirrored tree, no collisions); paths are checked by ``infer.files`` (nothing
outside ``--out``, never the input).
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from srpipe.batch import Outcome, Status, failure_reason, plan_outputs, walk
from srpipe.config import ProcessConfig
from srpipe.errors import ImageTooLargeError, InputError, UsageError
from srpipe.imaging.color import to_uint8
from srpipe.imaging.io import Image, Layout, peek_layout, read_image, write_image
from srpipe.infer import budget, manifest
from srpipe.infer.files import FORMAT_SUFFIX, Job, check_roots, safe_output_path, shard_of
from srpipe.photo.estimate import Estimate
from srpipe.photo.run import Engine, check_fidelity, open_for, photo_mode, variant
from srpipe.photo.strength import StrengthUpscaler
from srpipe.progress import ProgressFn, report
from srpipe.workspace import Workspace

log = logging.getLogger(__name__)

QUEUE_DEPTH = 2  # images waiting on each side of the model: enough to hide I/O, little memory
_EIGHT_BIT = (".jpg", ".jpeg", ".webp", ".bmp")
_NO_ALPHA = (".jpg", ".jpeg", ".bmp")


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


@dataclass
class ProcessReport:
    """What ``process`` did; ``to_dict`` is the ``--json`` report."""

    model: str
    provider: str
    scale: int
    tile: int
    overlap: int
    overlap_source: str  # "metadata", "measured" (foreign model, infer.measured) or "given"
    batch: int
    ensemble: bool
    shard: tuple[int, int]
    files: list[FileResult] = field(default_factory=list)
    seconds: float = 0.0
    extra_compute: float = 0.0
    oom_retries: int = 0
    redone: dict[str, int] = field(default_factory=dict)  # existing outputs replaced, by reason
    strength: str = ""  # photo mode: "auto" or the fixed strength; "" otherwise
    fidelity_fix: bool = False

    def count(self, status: Status) -> int:
        return sum(f.status == status for f in self.files)

    @property
    def output_megapixels(self) -> float:
        return sum(f.output_megapixels for f in self.files)

    @property
    def megapixels_per_second(self) -> float:
        return self.output_megapixels / self.seconds if self.seconds > 0 else 0.0

    def fidelity(self) -> tuple[float, FileResult] | None:
        """Median back-projection consistency (dB) of the outputs written, and the worst file."""
        done = [f for f in self.files if f.fidelity_db is not None]
        if not done:
            return None
        key = [float(f.fidelity_fixed_db if f.fidelity_fixed_db is not None else f.fidelity_db or 0.0)
               for f in done]
        worst = done[int(np.argmin(key))]
        return float(np.median(key)), worst

    def to_dict(self) -> dict[str, object]:
        data = asdict(self)
        summary = self.fidelity()
        if summary is not None:
            data["fidelity"] = {"median_db": round(summary[0], 3), "worst_file": summary[1].input}
        data.update(ok=self.count("ok"), skipped=self.count("skipped"), failed=self.count("failed"),
                    output_megapixels=round(self.output_megapixels, 3),
                    megapixels_per_second=round(self.megapixels_per_second, 4),
                    redone_files=sum(self.redone.values()))
        return data


def make_jobs(source: Path, out: Path, cfg: ProcessConfig, shard: tuple[int, int],
              unreadable: list[Outcome] | None = None) -> list[Job]:
    """All inputs, their collision-free outputs, and this shard's share of them; subfolders that cannot
    be listed go to ``unreadable`` (see ``srpipe.batch.walk``)."""
    check_roots(source, out)
    found = walk(source, suffixes=cfg.extensions)
    if unreadable is not None:
        unreadable += found.unreadable
    elif found.unreadable:
        raise InputError(f"{found.unreadable[0].source}: {found.unreadable[0].reason}")
    if not found.files and not found.unreadable:
        raise InputError(f"{source}: no images to process (looked for {', '.join(cfg.extensions)}; "
                         "hidden files and folders are skipped)")
    outs = plan_outputs([f.rel for f in found.files], FORMAT_SUFFIX.get(cfg.format))
    k, n = shard
    return [Job(f.path, f.rel, out_rel) for f, out_rel in zip(found.files, outs, strict=True)
            if n == 1 or shard_of(f.rel, n) == k]


def process(source: Path, out: Path, cfg: ProcessConfig, *, workspace: Workspace,
            model: str | Path | None = None, shard: tuple[int, int] = (0, 1),
            progress: ProgressFn | None = None, upscaler: Engine | None = None) -> ProcessReport:
    """Upscale ``source`` (file or folder) into ``out``; see the module docstring.

    ``model``: a file, "default" (bundled), or None (newest workspace export of ``cfg.scale``, then
    bundled). ``upscaler`` replaces the session-backed one (tests, benchmarks).
    """
    unreadable: list[Outcome] = []
    jobs = make_jobs(source, out, cfg, shard, unreadable)
    if upscaler is None:
        upscaler, model_name = open_for(cfg, model, workspace)
    else:
        model_name = getattr(upscaler, "name", "custom")
    if cfg.scale and upscaler.scale != cfg.scale:
        raise UsageError(f"{model_name} is a x{upscaler.scale} model, but --scale {cfg.scale} was asked "
                         "for; pass a matching --model or drop --scale")
    rep = ProcessReport(model=model_name, provider=upscaler.provider, scale=upscaler.scale,
                        tile=upscaler.tile, overlap=upscaler.overlap, overlap_source=upscaler.overlap_source,
                        batch=upscaler.batch,
                        ensemble=upscaler.ensemble, shard=shard, fidelity_fix=cfg.fidelity_fix,
                        strength=photo_mode(upscaler))
    start = time.perf_counter()
    _run(jobs, out, cfg, upscaler, rep, progress)
    rep.files += [FileResult(str(o.source), "", o.status, o.reason) for o in unreadable]
    rep.seconds = time.perf_counter() - start
    st = upscaler.stats
    rep.extra_compute = st.computed_lr_pixels / st.image_lr_pixels - 1 if st.image_lr_pixels else 0.0
    rep.oom_retries, rep.tile = st.oom_retries, upscaler.tile
    return rep


def _run(jobs: list[Job], out: Path, cfg: ProcessConfig, upscaler: Engine, rep: ProcessReport,
         progress: ProgressFn | None) -> None:
    results: dict[int, FileResult] = {}
    todo: list[tuple[int, Job, Path]] = []
    targets = [out.joinpath(*job.out_rel.parts) for job in jobs]
    settings = manifest.Settings.current(model=rep.model, scale=rep.scale, tile=rep.tile, overlap=rep.overlap,
                                         ensemble=rep.ensemble, quality=cfg.quality,
                                         variant=variant(rep))
    plan = manifest.plan_reruns(jobs, targets, settings, manifest.read_manifests(out),
                                overwrite=cfg.overwrite)
    book = manifest.ManifestWriter(out, rep.shard, settings, provider=rep.provider)
    book.begin(plan)
    skipped = sum(status == "skipped" for status, _ in plan.settled.values())
    log.info("%d file(s) to process with %s on %s%s", len(jobs) - len(plan.settled), rep.model,
             rep.provider, f"; {skipped} up to date (skipped)" if skipped else "")
    for i, (job, target) in enumerate(zip(jobs, targets, strict=True)):
        if i in plan.settled:
            results[i] = FileResult(str(job.source), str(target), *plan.settled[i])
        else:
            todo.append((i, job, target))
    decoded: queue.Queue[tuple[int, Job, Path, Image | Exception] | None] = queue.Queue(QUEUE_DEPTH)
    encode: queue.Queue[tuple[int, Job, Path, Image, np.ndarray, float, Estimate | None] | None] = \
        queue.Queue(QUEUE_DEPTH)
    stop = threading.Event()
    lock = threading.Lock()

    def finish(i: int, result: FileResult) -> None:
        with lock:  # called from the main and the writer thread
            results[i] = result
            done = len(results)
            mps = sum(r.output_megapixels for r in results.values()) / max(time.perf_counter() - t0, 1e-9)
        report(progress, "process", done, len(jobs), f"{mps:.2f} MP/s")

    budget_bytes = cfg.memory_budget * budget.MIB
    pending = [0]  # estimated bytes of the outputs queued for or being encoded
    settle = threading.Condition()

    def reader() -> None:
        for i, job, target in todo:
            if stop.is_set():
                break
            try:
                item: Image | Exception = _over_budget(job, target, cfg, upscaler) or \
                    read_image(job.source, max_pixels=cfg.max_pixels)
            except Exception as exc:  # reported per file; the batch goes on
                item = exc
            decoded.put((i, job, target, item))
        decoded.put(None)

    def encoded(cost: int) -> None:
        with settle:
            pending[0] -= cost
            settle.notify_all()

    def writer() -> None:
        while (item := encode.get()) is not None:
            i, job, target, image, pixels, seconds, estimate = item
            cost = budget.encode_bytes(_layout(image.pixels), rep.scale, target.suffix)
            try:
                path = safe_output_path(out, job.out_rel, job.source)
                pixels, checked = check_fidelity(pixels, image.pixels, rep.scale, fix=cfg.fidelity_fix,
                                                 estimate=estimate)
                if target.suffix.lower() in _EIGHT_BIT and pixels.dtype == np.uint16:
                    pixels = to_uint8(pixels)  # the format holds 8 bits; converting is what was asked
                write_image(path, pixels, icc=image.icc, exif=image.exif, xmp=image.xmp, iptc=image.iptc,
                            quality=cfg.quality)
                book.record(job, path)
                mp = pixels.shape[0] * pixels.shape[1] / 1e6
                finish(i, FileResult(str(job.source), str(path), "ok", "", mp, seconds, **checked))
            except Exception as exc:
                finish(i, FileResult(str(job.source), str(target), "failed", failure_reason(exc, job.source)))
            finally:
                del pixels, image, item
                encoded(cost)

    t0 = time.perf_counter()
    threads = [threading.Thread(target=reader, name="srpipe-decode", daemon=True),
               threading.Thread(target=writer, name="srpipe-encode", daemon=True)]
    for t in threads:
        t.start()
    try:
        while (got := decoded.get()) is not None:
            i, job, target, image = got
            if isinstance(image, Exception):
                finish(i, FileResult(str(job.source), str(target), "failed",
                                     failure_reason(image, job.source)))
                continue
            if image.pixels.ndim == 3 and image.pixels.shape[2] == 4 and target.suffix.lower() in _NO_ALPHA:
                finish(i, FileResult(str(job.source), str(target), "failed",
                                     f"{target.suffix} cannot store the alpha channel; use --format png, "
                                     "webp or tiff"))
                continue
            layout = _layout(image.pixels)
            need = budget.upscale_bytes(layout, upscaler.scale, upscaler.tile)
            with settle:  # upscale beside earlier outputs still encoding only while both fit the budget
                while pending[0] and pending[0] + need > budget_bytes:
                    settle.wait(0.5)
            started = time.perf_counter()
            try:
                estimate = upscaler.choose(job.source, image.pixels) \
                    if isinstance(upscaler, StrengthUpscaler) else None
                pixels = upscaler(image.pixels)
            except Exception as exc:
                log.debug("upscaling %s failed", job.source, exc_info=True)
                finish(i, FileResult(str(job.source), str(target), "failed", failure_reason(exc, job.source)))
                continue
            with settle:
                pending[0] += budget.encode_bytes(layout, upscaler.scale, target.suffix)
            encode.put((i, job, target, image, pixels, time.perf_counter() - started, estimate))
            del pixels, image, got
    finally:
        stop.set()
        encode.put(None)  # the writer finishes what it holds (atomically) and exits
        while threads[0].is_alive():  # unblock a reader waiting on a full queue after an interrupt
            with contextlib.suppress(queue.Empty):
                decoded.get(timeout=0.05)
        for t in threads:
            t.join()
        book.close()
    for i, why in plan.redo.items():
        if (done := results.get(i)) is not None and done.status == "ok":
            done.reason = f"redone: {why}"
            rep.redone[why] = rep.redone.get(why, 0) + 1
    rep.files = [results[i] for i in sorted(results)]


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

