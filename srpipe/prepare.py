"""``srpipe prepare``: input images → ``train.h5`` (HR sub-images + aligned LR) and ``valid.h5`` (whole).

The stage: :func:`prepare` takes a :class:`~srpipe.config.PrepareConfig` and returns a
:class:`PrepareReport`. The store format, its reader and the inputs live in :mod:`srpipe.data`.

Contract of :func:`prepare` (details in docs/prepare.md, the format in docs/store-format.md):

- Pixels: RGBA drops alpha, gray is replicated to RGB, 16-bit becomes 8-bit as round(x / 257); then,
  per scale s, LR = MATLAB ``imresize(modcrop(image, s), 1/s)`` of the *whole* image. Train sub-images
  (``hr_size`` side, every ``stride`` px plus one flush with the bottom/right edge) lie inside the image
  cropped to a multiple of lcm(scales), at offsets that are multiples of every scale, so the LR crop at
  ``(y/s, x/s)`` is exactly aligned with the HR one.
- Work: a process pool decodes and resizes (``workers``; at most 2 × workers images in flight), the
  parent alone writes HDF5, in input order, committing about once a second (``COMMIT_SECONDS``).
- Safety: stores are written as ``<name>.partial`` and renamed when complete. A ``.partial`` from an
  interrupted run with the same settings and inputs is resumed, any other one is discarded. A finished
  store made with the same settings and inputs is left untouched (no-op); one made with other settings
  or inputs is a ``StoreError`` unless ``force``. Inputs are compared by (path, size, mtime) first and,
  when that differs, by content (a copied folder with new mtimes is still the same input).
- Bad files (corrupt, unsupported, too large, too small) are skipped and listed; a missing or empty
  input folder raises ``InputError``, an unwritable output ``OutputError``.
"""

from __future__ import annotations

import json
import logging
import math
import tempfile
import time
from concurrent.futures import Executor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass
from pathlib import Path

from srpipe.config import PrepareConfig
from srpipe.data import store as st
from srpipe.data.sources import Source, find_inputs, fingerprint
from srpipe.data.summary import SplitSummary, summarise
from srpipe.data.work import Decoded, Skip, Task, process_image
from srpipe.data.writer import StoreWriter
from srpipe.digest import file_sha256
from srpipe.errors import ConfigError, OutputError, SrpipeError, StoreError
from srpipe.parallel import make_pool, ordered_map, usable_cores
from srpipe.progress import ProgressFn, report

log = logging.getLogger(__name__)
COLOR_RULE = "rgb8: drop alpha, replicate gray, uint16 -> round(x/257)"
COMMIT_SECONDS = 1.0  # a killed run loses at most this much work; resume restarts after the last commit


@dataclass(frozen=True)
class PrepareReport:
    """What :func:`prepare` did: one summary per store, read back from the finished store."""

    root: Path
    out: Path
    layout: str  # "div2k" or "folder"
    splits: tuple[SplitSummary, ...]  # train, then valid
    seconds: float
    megapixels: float  # HR megapixels decoded by this run (0 for a no-op)

    @property
    def failed(self) -> int:
        """Inputs skipped because they could not be read (not those merely too small)."""
        return sum(kind == "unreadable" for split in self.splits for _, kind, _ in split.skipped)

    @property
    def exit_code(self) -> int:
        """1 when an input could not be read or no training sub-image came out, else 0."""
        return 1 if self.failed or not self.splits[0].patches else 0

    def to_dict(self) -> dict[str, object]:
        d = asdict(self)
        for s, split in zip(d["splits"], self.splits, strict=True):
            s["official"] = [dict(asdict(o), share=o.share) for o in split.official]
        d["failed"] = self.failed
        return json.loads(json.dumps(d, default=str))


def check_config(cfg: PrepareConfig) -> None:
    """Raise ``ConfigError`` for settings that cannot give aligned ``patch_size`` LR training patches."""
    if not cfg.scales or any(s < 2 for s in cfg.scales) or len(set(cfg.scales)) != len(cfg.scales):
        raise ConfigError(f"prepare.scales must be distinct integers >= 2, got {list(cfg.scales)}")
    lcm = math.lcm(*cfg.scales)
    least = cfg.patch_size * max(cfg.scales)
    if cfg.patch_size < 1 or cfg.hr_size % lcm or cfg.hr_size < least:
        raise ConfigError(f"prepare.hr_size must be a multiple of {lcm} (every scale) and at least {least} "
                          f"(patch_size {cfg.patch_size} x the largest scale), got {cfg.hr_size}")
    if cfg.stride <= 0 or cfg.stride % lcm:
        raise ConfigError(f"prepare.stride must be a positive multiple of {lcm}, got {cfg.stride}")
    if cfg.valid_count < 0 or cfg.max_pixels <= 0 or cfg.workers < 0:
        raise ConfigError("prepare.valid_count and workers must be >= 0 and max_pixels > 0")


def store_meta(cfg: PrepareConfig, split: st.Split, layout: str, sources: tuple[Source, ...]) -> st.StoreMeta:
    """Settings that change a store's content (and their hash), plus the inputs' fingerprint."""
    settings: dict[str, object] = {
        "format_version": st.FORMAT_VERSION, "kernel": st.KERNEL, "color": COLOR_RULE, "split": split,
        "scales": list(cfg.scales), "boundary": cfg.boundary, "max_pixels": cfg.max_pixels,
        "layout": layout, "valid_count": cfg.valid_count, "seed": cfg.seed}
    if split == "train":
        settings.update(hr_size=cfg.hr_size, stride=cfg.stride)
    text, digest = st.settings_digest(settings)
    train = split == "train"
    return st.StoreMeta(split=split, scales=tuple(cfg.scales), hr_size=cfg.hr_size if train else 0,
                        stride=cfg.stride if train else 0, boundary=cfg.boundary, settings=text,
                        settings_hash=digest, inputs_hash=fingerprint(sources))


def _check_existing(final: Path, meta: st.StoreMeta, sources: tuple[Source, ...], cfg: PrepareConfig) -> bool:
    """True when ``final`` is a finished store of exactly these settings and inputs (nothing to do)."""
    if not final.exists():
        return False
    advice = "use another --out, or --force to rebuild it"
    try:
        info = st.open_store(final)
    except StoreError as exc:
        raise StoreError(f"{exc} (it would be overwritten: {advice})") from exc
    if info.meta.settings_hash != meta.settings_hash:
        old, new = json.loads(info.meta.settings), json.loads(meta.settings)
        diff = ", ".join(f"{k} {old.get(k)} -> {new.get(k)}" for k in sorted(new) if old.get(k) != new.get(k))
        raise StoreError(f"{final}: was made with other settings ({diff}); {advice}")
    if info.meta.inputs_hash != meta.inputs_hash:
        if not _same_content(final, meta, sources, cfg):
            raise StoreError(f"{final}: was made from other input files (added, removed or changed since); "
                             f"{advice}")
        log.info("%s: the input files were touched (new modification times) but hold the same content: "
                 "up to date", final)
    return True


def _task(source: Source, meta: st.StoreMeta, cfg: PrepareConfig) -> Task:
    """The work item that turns ``source`` into the store described by ``meta``."""
    return Task(path=source.path, rel=source.rel, official_lr=source.official_lr, split=meta.split,
                scales=meta.scales, hr_size=cfg.hr_size, stride=cfg.stride, boundary=cfg.boundary,
                max_pixels=cfg.max_pixels)


def _same_content(final: Path, meta: st.StoreMeta, sources: tuple[Source, ...], cfg: PrepareConfig) -> bool:
    """Whether inputs whose cheap fingerprint changed (a copied folder has new mtimes) would still make
    ``final``: the same relative paths, byte-identical used images (the sha256 the store records), and
    skipped images skipped again for the same reason. False with official LR files (their content is
    not recorded). Costs one read of every input; runs only when the fingerprint differs."""
    if any(s.official_lr for s in sources):
        return False
    used_table, skipped_table = st.read_table(final, "sources"), st.read_table(final, "skipped")
    used = {str(p): bytes(h).decode() for p, h in zip(used_table["path"], used_table["sha256"], strict=True)}
    skipped = {str(p): str(r) for p, r in zip(skipped_table["path"], skipped_table["reason"], strict=True)}
    if {s.rel for s in sources} != used.keys() | skipped.keys() or used.keys() & skipped.keys():
        return False
    for s in sources:
        if s.rel in used:
            if file_sha256(s.path) != used[s.rel]:
                return False
            continue
        outcome = process_image(_task(s, meta, cfg))
        if not isinstance(outcome, Skip) or outcome.reason != skipped[s.rel]:
            return False
    return True


def prepare(root: Path, out: Path, cfg: PrepareConfig, *, force: bool = False,
            progress: ProgressFn | None = None) -> PrepareReport:
    """Build (or resume, or confirm) ``out/train.h5`` and ``out/valid.h5`` from the images under ``root``."""
    check_config(cfg)
    started = time.perf_counter()
    inputs = find_inputs(Path(root), scales=tuple(cfg.scales), valid_count=cfg.valid_count, seed=cfg.seed)
    out = Path(out)
    _check_writable(out)
    plans = []
    for split, sources in (("train", inputs.train), ("valid", inputs.valid)):
        meta = store_meta(cfg, split, inputs.layout, sources)  # type: ignore[arg-type]
        final = out / f"{split}.h5"
        plans.append((split, sources, meta, final, not force and _check_existing(final, meta, sources, cfg)))
    workers = cfg.workers or usable_cores()
    mp_done = 0.0
    summaries = []
    pool = make_pool(workers) if any(not up for *_, up in plans) and workers > 1 else None
    try:
        for split, sources, meta, final, up_to_date in plans:
            status = "up to date"
            if not up_to_date:
                status, mp = _write_split(split, sources, meta, final, cfg, pool, 2 * workers, progress)
                mp_done += mp
            summaries.append(summarise(split, final, status))
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
    return PrepareReport(root=Path(root), out=out, layout=inputs.layout, splits=tuple(summaries),
                         seconds=time.perf_counter() - started, megapixels=mp_done)


def _check_writable(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out, prefix=".srpipe-write-test-"):
            pass
    except OSError as exc:
        raise OutputError(f"{out}: cannot write stores there: {exc.strerror or exc}") from exc


def _write_split(split: str, sources: tuple[Source, ...], meta: st.StoreMeta, final: Path, cfg: PrepareConfig,
                 pool: Executor | None, window: int, progress: ProgressFn | None) -> tuple[str, float]:
    """Write (or resume) one store; returns its status and the HR megapixels decoded."""
    writer = StoreWriter.open(final, meta)
    start = writer.inputs_done
    tasks = [_task(s, meta, cfg) for s in sources[start:]]
    t0 = last_commit = time.perf_counter()
    mp, task_name = 0.0, f"prepare {split}"
    report(progress, task_name, start, len(sources), "resuming" if start else "")
    try:
        for n, result in enumerate(ordered_map(pool, process_image, tasks, window), start + 1):
            _add(writer, result)
            now = time.perf_counter()
            if now - last_commit >= COMMIT_SECONDS:  # per-image commits cost ~5 ms each in HDF5 metadata
                writer.commit(n)
                last_commit = now
            mp += result.megapixels
            report(progress, task_name, n, len(sources), f"{mp / max(now - t0, 1e-9):.1f} MP/s")
        writer.commit(len(sources))
        writer.finalize()
    except BrokenProcessPool as exc:
        raise SrpipeError(f"a prepare worker process died (out of memory?); {writer.temp} is kept: "
                          "re-run the same command to resume") from exc
    except OSError as exc:
        raise OutputError(f"{writer.temp}: writing failed ({exc}); free some space and re-run the same "
                          "command to resume") from exc
    finally:
        writer.close()
    return ("resumed" if start else "written"), mp


def _add(writer: StoreWriter, result: Decoded | Skip) -> None:
    if isinstance(result, Skip):
        # Too-small images are routine (the summary counts them); unreadable ones deserve a warning.
        level = logging.DEBUG if result.kind == "too-small" else logging.WARNING
        log.log(level, "skipped %s: %s", result.rel, result.reason)
        writer.add_skipped(result.rel, result.kind, result.reason)
        return
    index = writer.add_source(result.rel, result.sha256, result.shape, result.bit_depth)
    if writer.meta.split == "train":
        hr, lrs, boxes = result.patches()
        writer.add_patches(index, hr, lrs, boxes)
    else:
        writer.add_whole(index, result.hr, result.lrs)
    for scale, max_abs, differing, pixels in result.official:
        writer.add_official_check(index, scale, max_abs, differing, pixels)
