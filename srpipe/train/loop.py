"""The training loop of one process (of one, or of a torchrun job).

Contract of :func:`fit`: trains ``cfg.model`` from ``state.iteration`` (0, or a resumed checkpoint's)
up to ``cfg.iterations`` and returns a :class:`TrainReport`. Each iteration: set the learning rate
from the iteration (:func:`srpipe.train.optim.lr_at`), forward under autocast, loss in float32, and —
only if the loss (averaged over ranks) is finite — backward, optional clipping, optimizer step,
EMA update. A non-finite loss skips the step; ``max_bad_steps`` in a row raise ``TrainingError``.
Validation every ``val_every``, ``last.pt`` every ``checkpoint_every`` and after each validation,
``best.pt`` on improvement, early stopping after ``early_stop_patience`` validations without one.
SIGINT/SIGTERM finish the current iteration, save ``last.pt`` and raise ``KeyboardInterrupt``.
Only rank 0 writes; every rank runs the same collective calls in the same order.

One host sync per iteration (the loss value, needed to decide the skip) is the price of NaN safety.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel

from srpipe.config import TrainConfig
from srpipe.data.dataset import PatchDataset, ValidationSet
from srpipe.errors import StoreError, TrainingError
from srpipe.model import checkpoint as ckpt_io
from srpipe.model.edsr import build_model, receptive_radius
from srpipe.progress import ProgressFn
from srpipe.train import batches, optim, runtime, validate
from srpipe.train import distributed as dist_util
from srpipe.train import state as ts
from srpipe.train.distributed import DistContext
from srpipe.train.meter import Meter
from srpipe.train.report import TrainReport
from srpipe.train.rundir import MetricsLog, RunDir

log = logging.getLogger(__name__)


class Trainer:
    """Holds the model, optimizer and data of one run; :meth:`run` trains. See the module docstring."""

    def __init__(self, cfg: TrainConfig, run: RunDir, *, ctx: DistContext, stores: Path,
                 resume: ts.Resumed | None, progress: ProgressFn | None) -> None:
        runtime.check_config(cfg, ctx.world_size)
        self.cfg, self.run_dir, self.ctx, self.progress = cfg, run, ctx, progress
        device = self.device = ctx.device
        self.dtype = runtime.autocast_dtype(cfg, device)
        self.channels_last = runtime.use_channels_last(cfg, device)
        if cfg.threads > 0:
            torch.set_num_threads(cfg.threads)
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = cfg.cudnn_benchmark
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        self._open_data(stores)
        torch.manual_seed(cfg.seed)  # same initial weights on every rank (DDP also broadcasts rank 0's)
        self.model = build_model(cfg.model)
        self.init_report: str | None = None
        if resume is not None:
            ckpt_io.load_into(self.model, resume.model, source=resume.path)
        elif cfg.init_from:
            self.init_report = ts.init_from_checkpoint(self.model, Path(cfg.init_from)).summary()
            log.info("%s", self.init_report)
        fmt = torch.channels_last if self.channels_last else torch.preserve_format
        self.model.to(device, memory_format=fmt)  # type: ignore[call-overload]  # torch accepts it; stubs lack it
        for buf in self.model.buffers():  # a 1x3x1x1 mean in channels_last strides breaks DDP's broadcast
            buf.data = buf.data.clone(memory_format=torch.contiguous_format)
        self.ema = optim.EMA(self.model, cfg.ema_decay) if cfg.ema_decay > 0 else None
        if self.ema is not None and resume is not None:
            if resume.ema is not None:
                self.ema.load_state_dict(resume.ema)
            else:
                log.warning("%s has no EMA weights; EMA starts from the current weights", resume.path)

        module: torch.nn.Module = self.model
        if ctx.distributed:
            ids = [device] if device.type == "cuda" else None
            module = DistributedDataParallel(self.model, device_ids=ids)
        self.step_module = torch.compile(module) if cfg.compile else module
        self.optimizer = optim.build_optimizer(cfg, self.model.parameters(), device)
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.dtype == torch.float16)
        self.loss_fn = optim.make_loss(cfg)
        self.state = self._restore(resume) if resume is not None else ts.TrainState()
        self.last_saved = self.state.iteration
        self.metrics = MetricsLog(run.metrics, tensorboard_dir=run.tensorboard if cfg.tensorboard else None) \
            if ctx.is_main else None
        self.data_source = "loader"

    def _open_data(self, stores: Path) -> None:
        cfg = self.cfg
        self.dataset = PatchDataset(stores / "train.h5", scale=cfg.model.scale, patch_size=cfg.patch_size,
                                    augment=True, seed=cfg.seed, length=cfg.iterations * cfg.batch_size,
                                    degrade=cfg.degrade)
        self.vset = ValidationSet(stores / "valid.h5", scale=cfg.model.scale, degrade=cfg.degrade,
                                  seed=cfg.seed) if cfg.val_every else None
        if self.vset is not None and len(self.vset) == 0:
            raise StoreError(f"{stores / 'valid.h5'}: holds no validation images; re-run `srpipe prepare` "
                             "with valid_count > 0, or set train.val_every = 0")

    def _restore(self, resume: ts.Resumed) -> ts.TrainState:
        """Optimizer, scaler and RNG of a resumed run; returns its training state."""
        ctx = self.ctx
        self.optimizer.load_state_dict(resume.optimizer)
        if resume.scaler and self.scaler.is_enabled():
            self.scaler.load_state_dict(resume.scaler)
        if len(resume.rng) == ctx.world_size:
            ts.restore_rng(resume.rng[ctx.rank])
        elif resume.rng:
            log.info("resuming with %d processes instead of %d: the data stream is unchanged (global "
                     "batch); RNG states are not restored", ctx.world_size, len(resume.rng))
        return dataclasses.replace(resume.state)

    # ---- data ----
    def _batches(self, start: int) -> Iterator[batches.Batch]:
        cfg, ctx = self.cfg, self.ctx
        feed, self.data_source = batches.training_batches(
            self.dataset, start=start, stop=cfg.iterations, batch_size=cfg.batch_size, rank=ctx.rank,
            world_size=ctx.world_size, workers=cfg.workers, device=self.device,
            channels_last=self.channels_last, on_device=cfg.data_on_device)
        return feed

    # ---- one iteration ----
    def _step(self, lr_img: torch.Tensor, hr: torch.Tensor, lr: float, stop: bool) -> tuple[float, bool]:
        """One iteration; returns (loss averaged over ranks, stop requested on any rank)."""
        optim.set_lr(self.optimizer, lr)
        dtype = self.dtype or torch.float32
        with torch.autocast(self.device.type, dtype=dtype, enabled=self.dtype is not None):
            sr = self.step_module(lr_img)
        loss = self.loss_fn(sr, hr)
        if self.ctx.distributed:  # one all-reduce carries the loss and the stop flag
            both = torch.stack([loss.detach(), loss.new_tensor(float(stop))])
            both = dist_util.mean_over_ranks(self.ctx, both)
            value, stop = float(both[0]), bool(both[1] > 0)
        else:
            value = float(loss.detach())
        if not math.isfinite(value):
            self.optimizer.zero_grad(set_to_none=True)
            return value, stop
        self.scaler.scale(loss).backward()
        if self.cfg.grad_clip > 0:
            self.scaler.unscale_(self.optimizer)
            norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
            if not self.scaler.is_enabled() and not math.isfinite(float(norm)):
                self.optimizer.zero_grad(set_to_none=True)
                return math.nan, stop  # finite loss but non-finite gradients: same treatment
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        if self.ema is not None:
            self.ema.update(self.model, self.state.iteration)
        return value, stop

    # ---- validation and checkpoints ----
    def _validate(self) -> bool:
        """Validate (sharded over ranks); update best/stale counters; returns True on a new best."""
        assert self.vset is not None
        cfg, ctx, st, t0 = self.cfg, self.ctx, self.state, time.perf_counter()
        scores = validate.validate_sharded(
            self.ema.module if self.ema is not None else self.model, self.vset, ctx,
            count=min(cfg.val_images, len(self.vset)) if cfg.val_images else len(self.vset),
            tile=cfg.val_tile, radius=receptive_radius(cfg.model),
            compare_path=self.run_dir.compare / f"iter-{st.iteration:07d}.png", label=f"iter {st.iteration}",
            progress=self.progress)
        psnr, ssim = validate.mean_scores(scores)
        st.last_val_psnr = psnr
        improved = psnr > st.best_psnr
        if improved:
            st.best_psnr, st.best_iteration, st.stale_validations = psnr, st.iteration, 0
        else:
            st.stale_validations += 1
        if self.metrics is not None:
            self.metrics.append(iteration=st.iteration, kind="val", psnr_y=psnr, ssim_y=ssim,
                                elapsed_s=st.elapsed_s)
        note = " (new best)" if improved else f"; best {st.best_psnr:.3f} at {st.best_iteration}"
        log.info("iteration %d: validation Y-PSNR %.3f dB, SSIM %.4f on %d images%s (%.1f s)", st.iteration,
                 psnr, ssim, len(scores), note, time.perf_counter() - t0)
        return improved

    def _save(self, *, best: bool) -> None:
        rng = dist_util.all_gather_object(self.ctx, ts.capture_rng())  # collective: every rank calls it
        self.last_saved = self.state.iteration
        if not self.ctx.is_main:
            return
        ema = self.ema.state_dict() if self.ema is not None else None
        config = dataclasses.asdict(self.cfg)
        extra = ts.checkpoint_extra(state=self.state, optimizer=self.optimizer,
                                 scaler_state=self.scaler.state_dict() if self.scaler.is_enabled() else None,
                                 lr=optim.lr_at(self.cfg, self.state.iteration), schedule=self.cfg.scheduler,
                                 rng=rng, ema_state=ema, config=config)
        state = self.model.state_dict()
        mcfg = self.cfg.model
        ckpt_io.save_checkpoint(self.run_dir.last, model_config=mcfg, model_state=state, extra=extra)
        if best:  # weights only (no optimizer): what evaluate/export need, at a third of the size
            slim: dict[str, Any] = {"train": {"state": self.state.to_dict(), "config": config}}
            if ema is not None:
                slim["ema"] = ema
            ckpt_io.save_checkpoint(self.run_dir.best, model_config=mcfg, model_state=state, extra=slim)

    # ---- the loop ----
    def run(self) -> TrainReport:
        cfg, ctx, st = self.cfg, self.ctx, self.state
        start, sitting_t0, stopped_early = st.iteration, time.perf_counter(), False
        elapsed_before = st.elapsed_s
        if self.metrics is not None and start > 0 and (dropped := self.metrics.truncate_after(start)):
            log.info("metrics.csv: dropped %d rows logged after iteration %d by the interrupted sitting",
                     dropped, start)
        if start >= cfg.iterations:
            log.info("already at iteration %d of %d: nothing to train", start, cfg.iterations)
        meter = Meter(start=start, total=cfg.iterations, progress=self.progress if ctx.is_main else None,
                      cpu_estimate=self.device.type == "cpu" and ctx.is_main and start == 0)
        self.model.train()
        try:
            with runtime.StopRequest() as stop_request:
                for lr_img, hr in self._batches(start) if start < cfg.iterations else iter(()):
                    lr = optim.lr_at(cfg, st.iteration)
                    loss, stop = self._step(lr_img, hr, lr, stop_request.requested)
                    st.iteration += 1
                    self._count(loss, lr)
                    meter.step(st.iteration, loss)
                    st.elapsed_s = elapsed_before + time.perf_counter() - sitting_t0
                    stopped_early = self._after_step(meter, loss=loss, lr=lr, stop=stop)
                    if stopped_early:
                        break
        finally:
            if self.metrics is not None:
                self.metrics.close()
        best = math.isfinite(st.best_psnr)
        return TrainReport(
            run_dir=self.run_dir.root, iteration=st.iteration, iterations=cfg.iterations,
            start_iteration=start,
            best_psnr_y=st.best_psnr if best else None, best_iteration=st.best_iteration if best else None,
            last_psnr_y=None if math.isnan(st.last_val_psnr) else st.last_val_psnr,
            stopped_early=stopped_early,
            skipped_steps=st.skipped_steps, seconds=time.perf_counter() - sitting_t0,
            it_per_s=meter.sitting_speed(st.iteration), device=str(self.device), world_size=ctx.world_size,
            rank=ctx.rank,
            precision=runtime.precision_name(self.dtype), data_source=self.data_source,
            last_checkpoint=self.run_dir.last,
            best_checkpoint=self.run_dir.best if self.run_dir.best.is_file() else None,
            metrics=self.run_dir.metrics, init_report=self.init_report)

    def _after_step(self, meter: Meter, *, loss: float, lr: float, stop: bool) -> bool:
        """Metrics row, progress, validation, checkpoint, interrupt; returns True to stop early."""
        cfg, st = self.cfg, self.state
        if st.iteration % cfg.log_every == 0:
            mean, ips = meter.take_window()
            if self.metrics is not None:
                self.metrics.append(iteration=st.iteration, kind="train", loss=mean, lr=lr, it_per_s=ips,
                                    skipped_steps=st.skipped_steps, elapsed_s=st.elapsed_s)
        meter.report(st.iteration, loss=loss, lr=lr, val_psnr=st.last_val_psnr)
        done = st.iteration >= cfg.iterations
        validated = bool(cfg.val_every) and (st.iteration % cfg.val_every == 0 or done)
        improved = early = False
        if validated:
            improved = self._validate()
            meter.report(st.iteration, loss=loss, lr=lr, val_psnr=st.last_val_psnr, force=True)
            early = bool(cfg.early_stop_patience) and st.stale_validations >= cfg.early_stop_patience
            if early:
                log.info("early stopping at iteration %d: no improvement in %d validations (best %.3f dB at "
                         "%d)", st.iteration, st.stale_validations, st.best_psnr, st.best_iteration)
        if validated or done or stop or early or st.iteration % cfg.checkpoint_every == 0:
            self._save(best=improved)
        meter.restart_clock()  # validation and checkpoint time is not training time
        if stop:
            log.warning("interrupted at iteration %d; saved %s. Continue with: srpipe train --resume %s",
                        st.iteration, self.run_dir.last, self.run_dir.root)
            raise KeyboardInterrupt
        return early

    def _count(self, loss: float, lr: float) -> None:
        """Bad-step bookkeeping; raises ``TrainingError`` after ``max_bad_steps`` in a row."""
        st = self.state
        if math.isfinite(loss):
            st.bad_streak = 0
            return
        st.bad_streak += 1
        st.skipped_steps += 1
        log.warning("iteration %d: non-finite loss (%s); step skipped (%d in a row)", st.iteration, loss,
                    st.bad_streak)
        if st.bad_streak >= self.cfg.max_bad_steps:
            raise TrainingError(
                f"{st.bad_streak} consecutive non-finite losses up to iteration {st.iteration} "
                f"(lr {lr:.3g}); training stopped. The last good checkpoint is {self.run_dir.last} "
                f"(iteration {self.last_saved}); resume it with a lower learning rate (--set lr=...) "
                "or gradient clipping (--set grad_clip=1.0)")


def fit(cfg: TrainConfig, run: RunDir, *, ctx: DistContext, stores: Path, resume: ts.Resumed | None = None,
        progress: ProgressFn | None = None) -> TrainReport:
    """Train one run (see the module docstring); every rank of a torchrun job calls it."""
    return Trainer(cfg, run, ctx=ctx, stores=stores, resume=resume, progress=progress).run()
