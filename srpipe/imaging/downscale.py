"""``srpipe downscale``: MATLAB-bicubic LR copies of an image or a folder tree.

Each image is read (orientation applied, bit depth kept), cropped bottom/right to a multiple of the
scale (``modcrop``), shrunk with :func:`srpipe.imaging.resize.imresize` (``1/scale``, the chosen
boundary) and written as PNG with its ICC profile, EXIF and XMP, atomically. A folder is walked
recursively in sorted order; only image suffixes are taken and hidden files and folders (names
starting with ``.``) are skipped; a subfolder that cannot be listed is reported as failed.
``SRC/a/b/photo.jpg`` becomes ``DST/a/b/photo.png``.

Safety: nothing is ever written inside ``SRC`` (an ``--out`` inside the source folder, or an output
that would replace the source file, is refused); existing outputs are skipped unless ``overwrite``;
two sources that would share an output name (``a.jpg``, ``a.png``) are reported, not overwritten.
A bad file is recorded in ``DownscaleResult.failed`` with the reason and the walk goes on.
Work: one process per usable core by default (``workers``); results are reported in walk order.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Generator
from concurrent.futures.process import BrokenProcessPool
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

from srpipe.errors import InputError, OutputError, SrpipeError, UsageError
from srpipe.imaging.atomic import check_writable_folder, listing_errors
from srpipe.imaging.io import DEFAULT_MAX_PIXELS, IMAGE_SUFFIXES, read_image, write_image
from srpipe.imaging.resize import Boundary, imresize, modcrop
from srpipe.parallel import make_pool, ordered_map, usable_cores
from srpipe.progress import ProgressFn, report

log = logging.getLogger(__name__)
# A pool costs ~0.3 s to start (measured: 5 Set5-sized files took 0.07 s in one process, 0.32 s with
# a pool): it is started only once the images left look like at least this much work.
POOL_AFTER_SECONDS = 1.0


@dataclass(frozen=True)
class DownscaleResult:
    """What :func:`downscale_tree` did.

    ``written``: output files. ``skipped``: ``(source, reason)`` left alone because the output
    exists. ``failed``: ``(source, reason)`` that could not be converted. ``megapixels``: HR
    megapixels read for the written files; ``seconds``: wall time of the whole call.
    """

    written: tuple[Path, ...]
    skipped: tuple[tuple[Path, str], ...]
    failed: tuple[tuple[Path, str], ...]
    megapixels: float
    seconds: float

    @property
    def ok(self) -> bool:
        """True when no file failed (skipped files are not failures)."""
        return not self.failed

    def as_dict(self) -> dict[str, object]:
        """A JSON-ready view (paths as strings)."""
        return {"written": [str(p) for p in self.written],
                "skipped": [{"path": str(p), "reason": r} for p, r in self.skipped],
                "failed": [{"path": str(p), "reason": r} for p, r in self.failed],
                "megapixels": round(self.megapixels, 3), "seconds": round(self.seconds, 3)}


def _is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def plan_outputs(src: Path, dst: Path, *,
                 unreadable: list[tuple[Path, str]] | None = None) -> list[tuple[Path, Path]]:
    """``(source, output)`` pairs for a file or a folder tree, in a stable order (see module doc).

    A file ``src`` goes to ``dst`` itself when ``dst`` ends in ``.png``, else to ``dst/<stem>.png``.
    Raises ``InputError`` (missing source, not an image, no images found) and ``OutputError``
    (``dst`` inside the source folder, the output would replace the source file, or the output folder
    cannot be written: checked here, before any image is read). A subfolder that cannot be listed is
    appended to ``unreadable`` as ``(folder, reason)`` and the walk goes on (without the list, or for
    ``src`` itself, it is an ``InputError``).
    """
    if not src.exists():
        raise InputError(f"{src}: no such file or folder")
    if src.is_file():
        if not _is_image(src):
            raise InputError(f"{src}: not an image file (expected one of {', '.join(IMAGE_SUFFIXES)})")
        out = dst if dst.suffix.lower() == ".png" else dst / f"{src.stem}.png"
        if out.resolve() == src.resolve():
            raise OutputError(f"{out}: that is the source file; choose another --out")
        check_writable_folder(out.parent)
        return [(src, out)]
    root = src.resolve()
    if _inside(dst.resolve(), root):
        raise OutputError(f"--out {dst} is inside the source folder {src}; choose a folder outside it")
    if dst.exists() and not dst.is_dir():
        raise OutputError(f"--out {dst} is a file; a folder source needs an output folder")
    check_writable_folder(dst)
    pairs = []
    for folder, dirs, files in os.walk(src, onerror=listing_errors(src, unreadable)):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            path = Path(folder) / name
            if not name.startswith(".") and _is_image(path):
                pairs.append((path, dst / path.relative_to(src).with_suffix(".png")))
    if not pairs and not unreadable:
        raise InputError(f"{src}: no images found (looked for {', '.join(IMAGE_SUFFIXES)}; "
                         "hidden files and folders are skipped)")
    return pairs


def _reason(exc: Exception, path: Path) -> str:
    text = str(exc) or type(exc).__name__
    return text.removeprefix(f"{path}: ")


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
        return 0.0, _reason(exc, job.path)
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


def downscale_tree(src: Path, dst: Path, *, scale: int, boundary: Boundary = "mirror",
                   overwrite: bool = False, max_pixels: int = DEFAULT_MAX_PIXELS, workers: int = 0,
                   progress: ProgressFn | None = None) -> DownscaleResult:
    """Write ``modcrop(img, scale)`` shrunk by ``1/scale`` (MATLAB bicubic) for every image under ``src``.

    Returns a :class:`DownscaleResult`, its lists in ``src`` order; per-file problems (unreadable, too
    small, unwritable, output exists, name clash) are recorded there, never raised. ``workers``: image
    processes (0 = one per usable core; 1 = all in this process). With more than one, once the images
    left look like more than ``POOL_AFTER_SECONDS`` of work at the pace of the first ones, a process
    pool reads, shrinks and writes them while this process keeps the order.
    Raises ``UsageError`` for ``scale`` < 2 or ``workers`` < 0, the errors of :func:`plan_outputs` for
    an unusable ``src``/``dst``, and ``SrpipeError`` if a worker process dies (outputs already written
    are complete; a re-run skips them). Reports progress as task ``"downscale"`` (files, HR MP/s).
    """
    if isinstance(scale, bool) or not isinstance(scale, int) or scale < 2:
        raise UsageError(f"--scale must be an integer >= 2, got {scale!r}")
    if workers < 0:
        raise UsageError(f"--workers must be >= 0 (0 = one per CPU core), got {workers}")
    start = time.perf_counter()
    src, dst = Path(src), Path(dst)
    unreadable: list[tuple[Path, str]] = []
    pairs = plan_outputs(src, dst, unreadable=unreadable)
    root = src.resolve() if src.is_dir() else None
    skipped: list[tuple[Path, str]] = []
    failed: list[tuple[int, Path, str]] = []
    jobs: list[tuple[int, _Job]] = []
    claimed: dict[Path, Path] = {}
    for i, (path, out) in enumerate(pairs):
        key = out.resolve()
        if key in claimed:
            failed.append((i, path, f"same output {out} as {claimed[key]}; rename one of them"))
        elif root is not None and _inside(key, root):
            failed.append((i, path, f"output {out} would be inside the source folder"))
        elif out.exists() and not overwrite:
            skipped.append((path, f"{out} exists (--overwrite replaces it)"))
        else:
            jobs.append((i, _Job(path, out, scale, boundary, max_pixels)))
        claimed.setdefault(key, path)
    written: list[Path] = []
    megapixels, done = 0.0, len(pairs) - len(jobs)
    report(progress, "downscale", done, len(pairs), "")
    conversions = _conversions([job for _, job in jobs], workers or usable_cores())
    try:  # closing: a pool still running (Ctrl-C, a dead worker) is shut down on the way out
        with closing(conversions):
            for (i, job), (mp, reason) in zip(jobs, conversions, strict=True):
                if reason is None:
                    written.append(job.out)
                    megapixels += mp
                else:
                    failed.append((i, job.path, reason))
                done += 1
                rate = megapixels / max(time.perf_counter() - start, 1e-9)
                report(progress, "downscale", done, len(pairs), f"{rate:.1f} MP/s")
    except BrokenProcessPool as exc:
        raise SrpipeError(f"a downscale worker process died (out of memory?) after {len(written)} "
                          "outputs, which are complete; re-run the same command to do the rest") from exc
    failed += [(len(pairs), folder, reason) for folder, reason in unreadable]
    failed.sort(key=lambda item: item[0])  # name clashes were found before the conversions ran
    return DownscaleResult(tuple(written), tuple(skipped), tuple((p, r) for _, p, r in failed),
                           megapixels, time.perf_counter() - start)
