"""Validation during training: whole images, scored the papers' way, and a comparison picture.

Contracts:

- :func:`super_resolve` upscales one uint8 image in fp32 through the tiled engine that ``process`` and
  ``evaluate`` use (``srpipe.infer.upscaler``) and returns uint8 (clamped, rounded: what saving the
  image would give; gray stays gray, the channel mean, as in ``evaluate``). Large images are processed
  in tiles of ``tile`` LR pixels whose overlap makes every blended pixel equal to a whole-image pass
  (up to float summation order).
- :func:`validate_images` scores Y-PSNR / Y-SSIM with :mod:`srpipe.metrics` (MATLAB Y, shave = scale,
  11×11 Gaussian SSIM) on the images it is given — under DDP each rank passes its own shard and the
  caller gathers.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from srpipe import metrics
from srpipe.data.dataset import ValidationSet
from srpipe.infer.backends import TorchBackend
from srpipe.infer.upscaler import TiledUpscaler, exact_overlap
from srpipe.progress import ProgressFn, report
from srpipe.train.distributed import DistContext, all_gather_object

log = logging.getLogger(__name__)

COMPARE_CROP = 96  # HR pixels of the comparison crop


@dataclass(frozen=True)
class ImageScore:
    """One validation image's scores."""

    index: int
    name: str
    psnr_y: float
    ssim_y: float


def super_resolve(model: nn.Module, lr: np.ndarray, *, scale: int, device: torch.device, tile: int = 0,
                  radius: int = 0) -> np.ndarray:
    """SR of a uint8 HWC (or HW) image, uint8 in the same layout, through the tiled engine.

    Tiles of ``tile`` LR px (0 = whole image) overlap by ``exact_overlap(radius)``, so for a model of
    receptive ``radius`` the result equals the whole-image pass up to float summation order; the tile
    grows to twice that overlap when it is smaller.
    """
    overlap = exact_overlap(radius) if tile else 0
    engine = TiledUpscaler(TorchBackend(model, scale=scale, device=device), overlap=overlap,
                           tile=max(tile, 2 * overlap) if tile else 0, name="validation")
    return engine(np.ascontiguousarray(lr))


def _y_scores(sr: np.ndarray, hr: np.ndarray, scale: int) -> tuple[float, float]:
    sr_c, hr_c = metrics.align(sr, hr, shave=scale)
    sr_y, hr_y = metrics.to_y(sr_c), metrics.to_y(hr_c)
    return metrics.psnr(sr_y, hr_y), metrics.ssim(sr_y, hr_y)


def validate_images(model: nn.Module, vset: ValidationSet, indices: list[int], *, device: torch.device,
                    tile: int, radius: int, compare_path: Path | None = None, label: str = "srpipe",
                    progress: ProgressFn | None = None) -> list[ImageScore]:
    """Scores of ``vset[i]`` for ``i`` in ``indices``; writes the comparison picture of the first one.

    ``model`` is switched to eval mode for the pass and restored to its previous mode afterwards.
    """
    scale = vset.scale
    was_training = model.training
    model.eval()
    scores: list[ImageScore] = []
    try:
        for n, i in enumerate(indices):
            name, lr, hr = vset[i]
            sr = super_resolve(model, lr, scale=scale, device=device, tile=tile, radius=radius)
            psnr_y, ssim_y = _y_scores(sr, hr, scale)
            scores.append(ImageScore(i, name, psnr_y, ssim_y))
            if compare_path is not None and n == 0:
                write_comparison(compare_path, name, lr, sr, hr, scale=scale, label=label, psnr_model=psnr_y)
            report(progress, "validate", n + 1, len(indices), f"{name} {psnr_y:.2f} dB")
    finally:
        model.train(was_training)
    return scores


def validate_sharded(model: nn.Module, vset: ValidationSet, ctx: DistContext, *, count: int, tile: int,
                     radius: int, compare_path: Path, label: str,
                     progress: ProgressFn | None) -> list[ImageScore]:
    """Scores of the first ``count`` images, each rank taking every world-size-th one; gathered, so every
    rank gets all of them (in image order). Only rank 0 writes the picture and reports progress."""
    mine = validate_images(model, vset, list(range(ctx.rank, count, ctx.world_size)), device=ctx.device,
                           tile=tile, radius=radius, compare_path=compare_path if ctx.is_main else None,
                           label=label, progress=progress if ctx.is_main else None)
    parts = all_gather_object(ctx, mine)
    return sorted((s for part in parts for s in part), key=lambda s: s.index)


def write_comparison(path: Path, name: str, lr: np.ndarray, sr: np.ndarray, hr: np.ndarray, *, scale: int,
                     label: str, psnr_model: float) -> None:
    """bicubic | model | HR crops at the bicubic's worst window (srpipe.compare); failures only logged."""
    from srpipe import compare
    from srpipe.imaging.resize import imresize

    try:
        bicubic = imresize(lr, scale)
        psnr_bicubic, _ = _y_scores(bicubic, hr, scale)
        panel = compare.make_panel(name, sr=sr, bicubic=bicubic, hr=hr, crop=COMPARE_CROP, shave=scale,
                                   psnr_bicubic=psnr_bicubic, psnr_model=psnr_model)
        path.parent.mkdir(parents=True, exist_ok=True)
        compare.write_compare(path, [panel], label)
    except Exception as exc:  # a picture is a convenience: never let it stop a long training run
        log.warning("could not write the comparison picture %s: %s", path, exc)


def mean_scores(scores: list[ImageScore]) -> tuple[float, float]:
    """Mean Y-PSNR and Y-SSIM over images (the papers' per-image average); NaN when empty."""
    if not scores:
        return math.nan, math.nan
    return float(np.mean([s.psnr_y for s in scores])), float(np.mean([s.ssim_y for s in scores]))
