"""The fidelity check of an upscaled photo: does its MATLAB-bicubic downscale give back the input?

Contract:

- :func:`consistency_db`: the back-projection consistency of ``output`` (``scale``× ``source``): Y-PSNR
  in dB of ``imresize(output, 1/scale)`` against ``source``, measured as ``srpipe evaluate`` measures
  (MATLAB Y of 8-bit RGB, the gray values of gray images, peak 255), with 1 LR pixel shaved off each
  border (the bicubic's own boundary). Alpha is left out; 16-bit images are compared at 8 bits. A
  bicubic-trained model on a clean input scores high (about 40-50 dB); a model that removes JPEG blocks
  or noise scores lower *by design* (the input's artefacts are not in the output), and a colour or
  brightness drift shows as a low score on a clean input. Capped at 100 dB (identical images).
- :func:`back_project`: ``output + imresize(source − imresize(output, 1/scale), scale)`` in float64,
  rounded into ``output``'s dtype: the output's low frequencies (its colour and brightness over areas a
  few LR pixels wide) replaced by the input's, its detail kept. One step of iterative back-projection
  (Irani & Peleg 1991). Alpha is kept as it is.
"""

from __future__ import annotations

import numpy as np

from srpipe.imaging.color import split_alpha, to_uint8
from srpipe.imaging.resize import imresize
from srpipe.metrics import psnr, to_y

CAP_DB = 100.0


def consistency_db(output: np.ndarray, source: np.ndarray, scale: int) -> float:
    """Back-projection Y-PSNR (module docstring)."""
    out, _ = split_alpha(output)
    src, _ = split_alpha(source)
    out8 = to_uint8(out) if out.dtype != np.uint8 else out
    src8 = to_uint8(src) if src.dtype != np.uint8 else src
    down = imresize(out8, 1 / scale)
    if down.shape != src8.shape:
        raise ValueError(f"output {out.shape} is not {scale}x the input {src.shape}")
    a, b = to_y(down), to_y(src8)
    if min(a.shape) > 2:
        a, b = a[1:-1, 1:-1], b[1:-1, 1:-1]
    return min(CAP_DB, psnr(a, b))


def back_project(output: np.ndarray, source: np.ndarray, scale: int) -> np.ndarray:
    """``output`` with the input's low frequencies (module docstring); same shape and dtype."""
    out, alpha = split_alpha(output)
    src, _ = split_alpha(source)
    if out.dtype != src.dtype:
        raise ValueError(f"output is {out.dtype} but the input is {src.dtype}")
    top = float(np.iinfo(out.dtype).max)
    hr = out.astype(np.float64)
    residual = src.astype(np.float64) - imresize(hr, 1 / scale)
    fixed = np.clip(np.rint(hr + imresize(residual, scale)), 0, top).astype(out.dtype)
    if alpha is None:
        return fixed
    return np.concatenate([fixed, alpha[..., None]], axis=2)
