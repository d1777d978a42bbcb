"""``srpipe process``: upscale a file or a folder tree with one ONNX model (docs/process.md).

The stage: :func:`process` takes a :class:`~srpipe.config.ProcessConfig` and returns a
:class:`ProcessReport`. Every file ends as ``ok``, ``skipped`` (its output is up to date:
``infer.manifest`` records in ``--out`` what made each output, and an output made with other settings,
model or source is redone; ``overwrite`` redoes all) or ``failed`` with the reason (corrupt, truncated,
unsupported, over the pixel cap or the memory budget, unwritable...); one bad file never stops the
batch. Writes are atomic, so an existing output is always complete and a rerun after a kill simply
finishes the job. Inputs are walked and their outputs named by ``srpipe.batch`` (mirrored tree, no
collisions); paths are checked by ``infer.files`` (nothing outside ``--out``, never the input). The
engine is ``infer``: the model opened by ``photo.run.open_for`` (a ``TiledUpscaler``, or the photo
model's ``StrengthUpscaler``), driven by ``infer.runner.Runner`` (decode, upscale and encode overlap).
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from srpipe.batch import Outcome, Status, plan_outputs, walk
from srpipe.config import ProcessConfig
from srpipe.errors import InputError, UsageError
from srpipe.infer import manifest
from srpipe.infer.files import FORMAT_SUFFIX, Job, check_roots, shard_of
from srpipe.infer.runner import FileResult, Runner
from srpipe.photo.run import Engine, open_for, photo_mode, variant
from srpipe.progress import ProgressFn
from srpipe.workspace import Workspace

log = logging.getLogger(__name__)


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
    def exit_code(self) -> int:
        """1 when a file failed, else 0 (skipped files are not failures)."""
        return 1 if self.count("failed") else 0

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

    ``model``: a file, "default" (bundled), "photo" (the bundled photo model, blended by
    ``cfg.strength``), or None (newest workspace export of ``cfg.scale``, then bundled). ``shard``:
    ``(k, n)``, do the k-th of n disjoint shares. ``upscaler`` replaces the session-backed engine
    (tests, benchmarks).
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
    """Plan reruns from the manifest, run the files left to do, and fill ``rep.files``/``rep.redone``."""
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
    results = {i: FileResult(str(jobs[i].source), str(targets[i]), *settled)
               for i, settled in plan.settled.items()}
    todo = [(i, job, target) for i, (job, target) in enumerate(zip(jobs, targets, strict=True))
            if i not in plan.settled]
    try:
        Runner(out, cfg, upscaler, book, results, total=len(jobs), progress=progress).run(todo)
    finally:
        book.close()
    for i, why in plan.redo.items():
        if (done := results.get(i)) is not None and done.status == "ok":
            done.reason = f"redone: {why}"
            rep.redone[why] = rep.redone.get(why, 0) + 1
    rep.files = [results[i] for i in sorted(results)]
