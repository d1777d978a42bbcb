"""Validation during training: whole images, scored the papers' way, and a comparison picture.

Contracts:

- :func:`super_resolve` upscales one uint8 HWC image in fp32 and returns uint8 (clamped, rounded: what
  saving the image would give). Large images are processed in tiles of ``tile`` LR pixels that
  overlap by ``pad`` ≥ the model's receptive radius, so each kept output pixel saw exactly the same
  input as in a whole-image pass (equal up to float summation order).
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


def _to_tensor(img: np.ndarray, device: torch.device) -> torch.Tensor:
    if img.ndim == 2:  # gray: the model is RGB, replicate (reduced again by the metrics' Y of equal R=G=B)
        img = np.repeat(img[:, :, None], 3, axis=2)
    return torch.from_numpy(np.ascontiguousarray(img)).to(device).permute(2, 0, 1)[None].float() / 255


@torch.no_grad()
def super_resolve(model: nn.Module, lr: np.ndarray, *, scale: int, device: torch.device, tile: int = 0,
                  pad: int = 0) -> np.ndarray:
    """SR of a uint8 HWC (or HW) image as uint8 HWC; tiled when ``tile`` > 0 and the image is larger."""
    x = _to_tensor(lr, device)
    _, _, h, w = x.shape
    if tile <= 0 or (h <= tile and w <= tile):
        out = model(x)
    else:
        out = x.new_empty((1, 3, h * scale, w * scale))
        for y0 in range(0, h, tile):
            for x0 in range(0, w, tile):
                y1, x1 = min(y0 + tile, h), min(x0 + tile, w)
                ya, xa = max(0, y0 - pad), max(0, x0 - pad)
                yb, xb = min(h, y1 + pad), min(w, x1 + pad)
                part = model(x[:, :, ya:yb, xa:xb])
                oy, ox = (y0 - ya) * scale, (x0 - xa) * scale
                out[:, :, y0 * scale : y1 * scale, x0 * scale : x1 * scale] = \
                    part[:, :, oy : oy + (y1 - y0) * scale, ox : ox + (x1 - x0) * scale]
    levels = (out.float().clamp(0, 1) * 255).round().to(torch.uint8)
    return levels[0].permute(1, 2, 0).cpu().numpy()


def _y_scores(sr: np.ndarray, hr: np.ndarray, scale: int) -> tuple[float, float]:
    if hr.ndim == 2 and sr.ndim == 3:  # gray HR: score the gray channel, as the papers do
        sr = sr[:, :, 0]
    sr_c, hr_c = metrics.align(sr, hr, shave=scale)
    sr_y, hr_y = metrics.to_y(sr_c), metrics.to_y(hr_c)
    return metrics.psnr(sr_y, hr_y), metrics.ssim(sr_y, hr_y)


def validate_images(model: nn.Module, vset: ValidationSet, indices: list[int], *, device: torch.device,
                    tile: int, pad: int, compare_path: Path | None = None, label: str = "srpipe",
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
            sr = super_resolve(model, lr, scale=scale, device=device, tile=tile, pad=pad)
            psnr_y, ssim_y = _y_scores(sr, hr, scale)
            scores.append(ImageScore(i, name, psnr_y, ssim_y))
            if compare_path is not None and n == 0:
                write_comparison(compare_path, name, lr, sr, hr, scale=scale, label=label, psnr_model=psnr_y)
            report(progress, "validate", n + 1, len(indices), f"{name} {psnr_y:.2f} dB")
    finally:
        model.train(was_training)
    return scores


def validate_sharded(model: nn.Module, vset: ValidationSet, ctx: DistContext, *, count: int, tile: int,
                     pad: int, compare_path: Path, label: str,
                     progress: ProgressFn | None) -> list[ImageScore]:
    """Scores of the first ``count`` images, each rank taking every world-size-th one; gathered, so every
    rank gets all of them (in image order). Only rank 0 writes the picture and reports progress."""
    mine = validate_images(model, vset, list(range(ctx.rank, count, ctx.world_size)), device=ctx.device,
                           tile=tile, pad=pad, compare_path=compare_path if ctx.is_main else None,
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
        if hr.ndim == 2:
            sr = sr[:, :, 0]
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
