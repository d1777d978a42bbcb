"""``srpipe train`` entry point: pick or create the run directory, train.

The stage: :func:`train` takes a :class:`~srpipe.config.Pipeline` (training needs its name, its
``[train]`` table and, for install checks, its ``[prepare]`` table) and returns a
:class:`~srpipe.train.report.TrainReport`. :func:`starting_point` gives the command its base config;
``--set`` reaches ``[train]`` through :func:`srpipe.config.configure` (``table="train"``).

Contract of :func:`train` (called once per process; under torchrun every rank calls it):

- New run (``resume`` None): the run directory is ``run_dir`` or
  ``<workspace>/runs/<pipeline>-<YYYYmmdd-HHMMSS>`` (rank 0 picks the name, every rank uses it). A
  directory that already holds a checkpoint is refused (pass ``resume`` instead).
- Resume (``resume`` True → the workspace's latest run, ``rundir.latest_run``; a Path → that run): the
  config is ``pipeline`` (the run's ``config.toml`` with overrides such as ``iterations=600000`` to
  train longer), or the run's ``config.toml`` itself when ``pipeline`` is None; the model may not
  change. Training continues from ``checkpoints/last.pt`` exactly.
- Stores: ``train.stores`` or the workspace's ``stores/``; a missing store is a ``StoreError`` that
  says to run ``srpipe prepare``, except for a pipeline with ``synthetic_images`` (the ``smoke``
  install check) and no ``train.stores``: it prepares its own stores from generated images under
  ``<workspace>/synthetic/<pipeline>/`` (once; a re-run finds them up to date) and says so.
- Every value is checked (``ConfigError`` naming the key) before anything is created.
- Rank 0 writes ``config.toml``, the checkpoints, ``metrics.csv`` and ``train.log`` (the ``srpipe``
  loggers' records during the run).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from srpipe.config import Pipeline, TrainConfig, load_pipeline
from srpipe.errors import ConfigError, InputError, StoreError, UsageError
from srpipe.progress import ProgressFn
from srpipe.train import distributed, runtime
from srpipe.train.loop import fit
from srpipe.train.report import TrainReport
from srpipe.train.rundir import RunDir, latest_run, new_run_name, write_config
from srpipe.train.state import read_resume
from srpipe.workspace import Workspace

log = logging.getLogger(__name__)


def resolve_stores(cfg: TrainConfig, workspace: Workspace) -> Path:
    """The stores folder; ``StoreError`` (with what to run) when ``train.h5``/``valid.h5`` are missing."""
    stores = Path(cfg.stores).expanduser() if cfg.stores else workspace.stores
    needed = ["train.h5"] + (["valid.h5"] if cfg.val_every else [])
    missing = [name for name in needed if not (stores / name).is_file()]
    if missing:
        raise StoreError(f"{stores}: no {' or '.join(missing)}; run `srpipe prepare IMAGES_DIR` first (it "
                         "writes train.h5 and valid.h5 there), or point train.stores at a folder with them")
    return stores


def synthetic_stores(pipeline: Pipeline, workspace: Workspace) -> Path | None:
    """Where ``pipeline`` trains on generated images (see the module docstring), or None when it does
    not: it has no ``synthetic_images``, names its stores, or the workspace's stores exist."""
    cfg = pipeline.train
    if not pipeline.synthetic_images or cfg.stores or (workspace.stores / "train.h5").is_file():
        return None
    return workspace.root / "synthetic" / pipeline.name


def prepare_synthetic(pipeline: Pipeline, folder: Path) -> Path:
    """Generate ``pipeline.synthetic_images`` images in ``folder/images`` and prepare ``folder/stores``."""
    from srpipe.data.synthetic import write_synthetic_images
    from srpipe.prepare import prepare

    size = max(2 * pipeline.prepare.hr_size, 8 * max(pipeline.prepare.scales))
    log.info("no stores in the workspace: the %s recipe trains on %d generated %dx%d images instead, "
             "prepared into %s (for real photos run `srpipe prepare IMAGES_DIR` first)",
             pipeline.name, pipeline.synthetic_images, size, size, folder / "stores")
    write_synthetic_images(folder / "images", pipeline.synthetic_images, size=size)
    prepare(folder / "images", folder / "stores", pipeline.prepare)
    return folder / "stores"


def find_resume_dir(resume: Path | bool, workspace: Workspace) -> Path:
    """The run directory to resume: the given one, or the workspace's latest run (``rundir.latest_run``)."""
    if resume is True:
        latest = latest_run(workspace.runs)
        if latest is None:
            raise InputError(f"{workspace.runs}: no run with a checkpoint to resume; "
                             "start one with `srpipe train`")
        if not RunDir(latest).last.is_file():
            raise InputError(f"{latest}: the latest run has no checkpoints/last.pt to resume (it stopped "
                             "before saving one); name another with --resume RUN_DIR, or start a new run")
        run = latest
    else:
        run = Path(resume)  # type: ignore[arg-type]
    if not RunDir(run).last.is_file():
        raise InputError(f"{run}: not a run directory with checkpoints/last.pt; nothing to resume")
    if not RunDir(run).config.is_file():
        raise InputError(f"{run}: has no config.toml; cannot tell how it was trained")
    return run


def starting_point(pipeline: str | None, resume: Path | bool | None,
                   workspace: Workspace) -> tuple[Pipeline, Path | None]:
    """What ``srpipe train`` starts from, before ``--set``: the named pipeline (default
    ``edsr-baseline-x4``) for a new run, or the ``config.toml`` of the run to resume, and that run."""
    if resume is None or resume is False:
        return load_pipeline(pipeline or "edsr-baseline-x4"), None
    if pipeline is not None:
        raise UsageError("--resume takes the configuration from the run's config.toml; drop --pipeline "
                         "(use --set to change settings such as iterations)")
    root = find_resume_dir(resume, workspace)
    return load_pipeline(RunDir(root).config), root


def _resume_pipeline(run: RunDir, pipeline: Pipeline | None) -> Pipeline:
    saved = load_pipeline(run.config)
    if pipeline is None:
        return saved
    if pipeline.train.model != saved.train.model:
        raise ConfigError(f"--set cannot change the model of a run being resumed ({run.root}); start a "
                          "new run with train.init_from pointing at it instead")
    return pipeline


def _unused_name(runs: Path, name: str) -> str:
    """``name``, or ``name-2``, ``name-3``, ... when runs started within the same second exist."""
    candidate, n = name, 1
    while (runs / candidate).exists():
        n += 1
        candidate = f"{name}-{n}"
    return candidate


@contextmanager
def _run_logging(path: Path, is_main: bool) -> Iterator[None]:
    """Rank 0: copy the ``srpipe`` loggers' records (INFO and up) into ``path``. Other ranks: warnings only,
    so that a torchrun job's console shows each message once."""
    logger, root = logging.getLogger("srpipe"), logging.getLogger()
    old_level = logger.level
    if not is_main:
        logger.setLevel(max(logger.getEffectiveLevel(), logging.WARNING))
        try:
            yield
        finally:
            logger.setLevel(old_level)
        return
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.setLevel(logging.INFO)
    # The file wants INFO even when the console is quieter (-q): let the srpipe loggers emit INFO and
    # give the console handlers the threshold the loggers used to apply, so they show what they did.
    console_level = logger.getEffectiveLevel()
    quieted = [h for h in root.handlers if h.level < console_level]
    old_handler_levels = [h.level for h in quieted]
    for h in quieted:
        h.setLevel(console_level)
    logger.setLevel(min(console_level, logging.INFO))
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        handler.close()
        logger.setLevel(old_level)
        for h, level in zip(quieted, old_handler_levels, strict=True):
            h.setLevel(level)


def train(pipeline: Pipeline | None, *, workspace: Workspace, run_dir: Path | None = None,
          resume: Path | bool | None = None, progress: ProgressFn | None = None) -> TrainReport:
    """Train a new run of ``pipeline`` or resume one; see the module docstring."""
    run: RunDir | None = None
    if resume is not None and resume is not False:
        run = RunDir(find_resume_dir(resume, workspace))
        pipeline = _resume_pipeline(run, pipeline)
    elif pipeline is None:
        raise UsageError("no pipeline given")
    cfg = pipeline.train
    synthetic = synthetic_stores(pipeline, workspace)
    stores = resolve_stores(cfg, workspace) if synthetic is None else synthetic / "stores"
    ctx = distributed.setup(cfg.device)
    clean = False
    try:
        runtime.check_config(cfg, ctx.world_size)  # settings that depend on the process count
        if synthetic is not None:
            if ctx.is_main:
                prepare_synthetic(pipeline, synthetic)
            distributed.barrier(ctx)
        resumed = None
        if run is None:
            name = _unused_name(workspace.runs, new_run_name(pipeline.name))
            name = distributed.broadcast_object(ctx, name)  # rank 0's clock decides
            run = RunDir(Path(run_dir) if run_dir is not None else workspace.runs / name)
            if run.last.is_file() or run.best.is_file():
                raise UsageError(f"{run.root} already holds a training run; resume it with "
                                 f"`srpipe train --resume {run.root}` or choose another --run-dir")
            if ctx.is_main:
                run.checkpoints.mkdir(parents=True, exist_ok=True)
                write_config(run.config, pipeline)
        else:
            resumed = read_resume(run.last)
            if ctx.is_main:
                write_config(run.config, pipeline)  # records overrides such as a longer schedule
        distributed.barrier(ctx)
        with _run_logging(run.log, ctx.is_main):
            if resumed is not None:
                log.info("resuming %s from iteration %d", run.root, resumed.state.iteration)
            else:
                log.info("training %s into %s", pipeline.name, run.root)
            result = fit(cfg, run, ctx=ctx, stores=stores, resume=resumed, progress=progress)
        clean = True
        return result
    finally:
        distributed.teardown(ctx, clean=clean)  # after an error other ranks may never reach a barrier
