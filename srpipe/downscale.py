"""``srpipe downscale``: MATLAB-bicubic LR copies of an image or a folder tree.

Each image is read (orientation applied, bit depth kept), cropped bottom/right to a multiple of the
scale (``modcrop``), shrunk with :func:`srpipe.imaging.resize.imresize` (``1/scale``, the chosen
boundary) and written as PNG with its ICC profile, EXIF and XMP, atomically. A folder is walked and
mirrored by :mod:`srpipe.batch` (image suffixes only, hidden files and folders skipped, a subfolder
that cannot be listed reported as failed): ``SRC/a/b/photo.jpg`` becomes ``DST/a/b/photo.png``, and
two sources that would share an output name never do (``a.png`` stays ``a.png``, ``a.jpg`` becomes
``a.jpg.png``).

Safety: nothing is ever written inside ``SRC`` (an ``--out`` inside the source folder, or an output
that would replace the source file, is refused); existing outputs are skipped unless ``overwrite``.
A bad file is recorded in ``DownscaleReport.failed`` with the reason and the walk goes on.
Work: one process per usable core by default (``workers``); results are reported in walk order.

The stage: :func:`downscale` takes a :class:`~srpipe.config.DownscaleConfig` and returns a
:class:`DownscaleReport`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Generator, Sequence
from concurrent.futures.process import BrokenProcessPool
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

from srpipe.batch import IMAGE_SUFFIXES, Outcome, failure_reason, plan_outputs, walk
from srpipe.config import DownscaleConfig
from srpipe.errors import InputError, OutputError, SrpipeError
from srpipe.imaging.atomic import check_writable_folder
from srpipe.imaging.io import read_image, write_image
from srpipe.imaging.resize import Boundary, imresize, modcrop
from srpipe.parallel import make_pool, ordered_map, usable_cores
from srpipe.progress import ProgressFn, report

log = logging.getLogger(__name__)
# A pool costs ~0.3 s to start (measured: 5 Set5-sized files took 0.07 s in one process, 0.32 s with
# a pool): it is started only once the images left look like at least this much work.
POOL_AFTER_SECONDS = 1.0


@dataclass(frozen=True)
class DownscaleReport:
    """What :func:`downscale` did.

    ``written``: output files. ``skipped``: ``(source, reason)`` left alone because the output
    exists. ``failed``: ``(source, reason)`` that could not be converted. ``megapixels``: HR
    megapixels read for the written files; ``seconds``: wall time of the whole call; ``out``: the
    destination asked for (a folder, or the ``.png`` file of a single image).
    """

    written: tuple[Path, ...]
    skipped: tuple[tuple[Path, str], ...]
    failed: tuple[tuple[Path, str], ...]
    megapixels: float
    seconds: float
    out: Path

    @property
    def ok(self) -> bool:
        """True when no file failed (skipped files are not failures)."""
        return not self.failed

    @property
    def exit_code(self) -> int:
        """1 when a file failed, else 0 (skipped files are not failures)."""
        return 0 if self.ok else 1

    @classmethod
    def collect(cls, outcomes: Sequence[Outcome], megapixels: float, seconds: float,
                out: Path) -> DownscaleReport:
        """The report of these per-file outcomes, in their order."""
        return cls(tuple(o.output for o in outcomes if o.status == "ok" and o.output is not None),
                   tuple((o.source, o.reason) for o in outcomes if o.status == "skipped"),
                   tuple((o.source, o.reason) for o in outcomes if o.status == "failed"),
                   megapixels, seconds, out)

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready view (paths as strings)."""
        return {"written": [str(p) for p in self.written],
                "skipped": [{"path": str(p), "reason": r} for p, r in self.skipped],
                "failed": [{"path": str(p), "reason": r} for p, r in self.failed],
                "megapixels": round(self.megapixels, 3), "seconds": round(self.seconds, 3)}


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def plan(src: Path, dst: Path) -> tuple[list[tuple[Path, Path]], tuple[Outcome, ...]]:
    """``(source, output)`` pairs for a file or a folder tree, in walk order, and the subfolders that
    could not be listed (``failed`` outcomes; the walk goes on past them).

    A file ``src`` goes to ``dst`` itself when ``dst`` ends in ``.png``, else to ``dst/<stem>.png``; a
    folder's tree is mirrored under ``dst`` as PNG by :func:`srpipe.batch.plan_outputs` (``a.jpg``
    beside ``a.png`` becomes ``a.jpg.png``). Raises ``InputError`` (missing source, not an image, no
    images found) and ``OutputError`` (``dst`` inside the source folder, the output would replace the
    source file, or the output folder cannot be written: checked here, before any image is read).
    """
    if not src.exists():
        raise InputError(f"{src}: no such file or folder")
    if src.is_file():
        if src.suffix.lower() not in IMAGE_SUFFIXES:
            raise InputError(f"{src}: not an image file (expected one of {', '.join(IMAGE_SUFFIXES)})")
        out = dst if dst.suffix.lower() == ".png" else dst / f"{src.stem}.png"
        if out.resolve() == src.resolve():
            raise OutputError(f"{out}: that is the source file; choose another --out")
        check_writable_folder(out.parent)
        return [(src, out)], ()
    if _inside(dst.resolve(), src.resolve()):
        raise OutputError(f"--out {dst} is inside the source folder {src}; choose a folder outside it")
    if dst.exists() and not dst.is_dir():
        raise OutputError(f"--out {dst} is a file; a folder source needs an output folder")
    check_writable_folder(dst)
    found = walk(src)
    if not found.files and not found.unreadable:
        raise InputError(f"{src}: no images found (looked for {', '.join(IMAGE_SUFFIXES)}; "
                         "hidden files and folders are skipped)")
    outs = plan_outputs([f.rel for f in found.files], ".png")
    return [(f.path, dst.joinpath(*rel.parts)) for f, rel in zip(found.files, outs, strict=True)], \
        found.unreadable


@dataclass(frozen=True)
class _Job:
    path: Path
    out: Path
    scale: int
    boundary: Boundary
    max_pixels: int


def _convert(job: _Job) -> tuple[float, str | None]:
    """Read, shrink and write one image (in a worker or here): ``(HR megapixels, None)``, or
    ``(0, why it failed)``."""
    try:
        image = read_image(job.path, max_pixels=job.max_pixels)
        lr = imresize(modcrop(image.pixels, job.scale), 1 / job.scale, boundary=job.boundary)
        job.out.parent.mkdir(parents=True, exist_ok=True)
        write_image(job.out, lr, icc=image.icc, exif=image.exif, xmp=image.xmp, iptc=image.iptc)
    except (SrpipeError, OSError, ValueError) as exc:
        log.debug("%s: failed", job.path, exc_info=True)
        return 0.0, failure_reason(exc, job.path)
    return image.pixels.shape[0] * image.pixels.shape[1] / 1e6, None


def _conversions(jobs: list[_Job], workers: int) -> Generator[tuple[float, str | None], None, None]:
    """:func:`_convert` of each job, in order: here while the work left looks smaller than
    ``POOL_AFTER_SECONDS`` at the pace so far, then in a pool of up to ``workers`` processes."""
    start = time.perf_counter()
    for k, job in enumerate(jobs):
        pace = (time.perf_counter() - start) / k if k else 0.0
        if workers > 1 and pace * (len(jobs) - k) > POOL_AFTER_SECONDS:
            break
        yield _convert(job)
    else:
        return
    pool = make_pool(min(workers, len(jobs) - k))
    try:
        yield from ordered_map(pool, _convert, jobs[k:], 2 * workers)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def downscale(src: Path, dst: Path, cfg: DownscaleConfig, *,
              progress: ProgressFn | None = None) -> DownscaleReport:
    """Write ``modcrop(img, cfg.scale)`` shrunk by ``1/cfg.scale`` (MATLAB bicubic) for every image
    under ``src``.

    Returns a :class:`DownscaleReport`, its lists in ``src`` order; per-file problems (unreadable, too
    small, unwritable, output exists and not ``cfg.overwrite``) are recorded there, never raised.
    ``cfg.workers``: image processes (0 = one per usable core; 1 = all in this process). With more than
    one, once the images left look like more than ``POOL_AFTER_SECONDS`` of work at the pace of the
    first ones, a process pool reads, shrinks and writes them while this process keeps the order.
    Raises the errors of :func:`plan` for an unusable ``src``/``dst``, and ``SrpipeError`` if a worker
    process dies (outputs already written are complete; a re-run skips them). Reports progress as task
    ``"downscale"`` (files, HR MP/s). (Bad settings are refused by ``DownscaleConfig`` itself.)
    """
    start = time.perf_counter()
    src, dst = Path(src), Path(dst)
    pairs, unreadable = plan(src, dst)
    root = src.resolve() if src.is_dir() else None
    outcomes: list[Outcome | None] = []
    jobs: list[tuple[int, _Job]] = []
    for path, out in pairs:
        if root is not None and _inside(out.resolve(), root):
            outcomes.append(Outcome(path, "failed", f"output {out} would be inside the source folder", out))
        elif out.exists() and not cfg.overwrite:
            outcomes.append(Outcome(path, "skipped", f"{out} exists (--overwrite replaces it)", out))
        else:
            jobs.append((len(outcomes), _Job(path, out, cfg.scale, cfg.boundary, cfg.max_pixels)))
            outcomes.append(None)
    megapixels = _convert_all(jobs, outcomes, cfg.workers or usable_cores(), progress, start)
    done = [o for o in outcomes if o is not None]
    return DownscaleReport.collect([*done, *unreadable], megapixels, time.perf_counter() - start, dst)


def _convert_all(jobs: list[tuple[int, _Job]], outcomes: list[Outcome | None], workers: int,
                 progress: ProgressFn | None, start: float) -> float:
    """Run the jobs (:func:`_conversions`), filling in their ``outcomes``; returns the HR megapixels
    written. Raises ``SrpipeError`` when a worker process dies."""
    megapixels, written, total = 0.0, 0, len(outcomes)
    done = total - len(jobs)
    report(progress, "downscale", done, total, "")
    conversions = _conversions([job for _, job in jobs], workers)
    try:  # closing: a pool still running (Ctrl-C, a dead worker) is shut down on the way out
        with closing(conversions):
            for (i, job), (mp, reason) in zip(jobs, conversions, strict=True):
                if reason is None:
                    outcomes[i] = Outcome(job.path, "ok", "", job.out)
                    megapixels, written = megapixels + mp, written + 1
                else:
                    outcomes[i] = Outcome(job.path, "failed", reason, job.out)
                done += 1
                rate = megapixels / max(time.perf_counter() - start, 1e-9)
                report(progress, "downscale", done, total, f"{rate:.1f} MP/s")
    except BrokenProcessPool as exc:
        raise SrpipeError(f"a downscale worker process died (out of memory?) after {written} "
                          "outputs, which are complete; re-run the same command to do the rest") from exc
    return megapixels
