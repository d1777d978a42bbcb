"""Colour helpers: MATLAB's Y channel for scoring, alpha handling, and the model's float layout.

Arrays follow the imaging contract: ``H×W`` gray, ``H×W×3`` RGB or ``H×W×4`` RGBA, ``uint8``/``uint16``.
The model sees ``H×W×3`` float32 in [0, 1] (``to_rgb_float``); its output goes back to the source's
dtype and channel layout with ``from_rgb_float``. Alpha never goes through these two: split it off
(``split_alpha``) and treat it as a gray image; ``settled_alpha`` finds where the source's alpha is
fully transparent or fully opaque all around, to keep it exactly so.
"""

from __future__ import annotations

import numpy as np

# MATLAB rgb2ycbcr, Y row of the [0, 255]-scale matrix (ITU-R BT.601, studio swing 16..235)
_Y_ROW = (65.481, 128.553, 24.966)
_Y_OFFSET = 16.0


def rgb_to_y(rgb: np.ndarray) -> np.ndarray:
    """MATLAB ``rgb2ycbcr`` luma of ``H×W×3`` RGB on the [0, 255] scale, as float64 (not rounded).

    Y = 16 + (65.481 R + 128.553 G + 24.966 B) / 255, evaluated in the order of MATLAB's source for
    ``uint8`` input (``T = (1/255) * origT``, then ``imlincomb``: R, G, B terms summed in turn, then the
    offset). The order only fixes the last bit, which matters for the 194 of 2^24 colours whose exact
    Y ends in .5. ``rgb`` is ``uint8`` or float on the [0, 255] scale; ``uint16`` is refused (MATLAB
    scales it differently).
    """
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"rgb_to_y expects H×W×3 RGB, got shape {rgb.shape}; split alpha off first")
    if rgb.dtype == np.uint16:
        raise ValueError("rgb_to_y expects uint8 or float on the [0, 255] scale, got uint16")
    r, g, b = (rgb[..., i].astype(np.float64) for i in range(3))
    cr, cg, cb = ((1 / 255) * c for c in _Y_ROW)
    return cr * r + cg * g + cb * b + _Y_OFFSET


def rgb_to_y_uint8(rgb: np.ndarray) -> np.ndarray:
    """``rgb_to_y`` rounded half away from zero and saturated to ``uint8``, as MATLAB's ``uint8`` output."""
    return np.clip(np.floor(rgb_to_y(rgb) + 0.5), 0, 255).astype(np.uint8)


def split_alpha(pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """``(colour, alpha)``: RGBA → contiguous ``H×W×3`` and ``H×W`` copies; anything else → ``(pixels,
    None)`` unchanged."""
    if pixels.ndim == 3 and pixels.shape[2] == 4:
        return np.ascontiguousarray(pixels[..., :3]), np.ascontiguousarray(pixels[..., 3])
    return pixels, None


def settled_alpha(alpha: np.ndarray, radius: int) -> tuple[np.ndarray, np.ndarray]:
    """``(clear, opaque)``: boolean ``H×W`` masks of the pixels whose ``(2·radius + 1)²`` window of
    ``alpha`` (edges replicated) is all 0, resp. all at the dtype's maximum (255 or 65535).

    An upscaler sets its output alpha to exactly 0 / the maximum where the source pixel's window is
    settled, so ringing of the model cannot give fully transparent areas a faint alpha (or opaque ones
    a faint transparency) near edges and corners."""
    if alpha.ndim != 2:
        raise ValueError(f"settled_alpha expects an H×W alpha plane, got shape {alpha.shape}")
    top = _top(alpha.dtype)
    return _window(alpha, radius, np.maximum) == 0, _window(alpha, radius, np.minimum) == top


def _window(plane: np.ndarray, radius: int, op: np.ufunc) -> np.ndarray:
    """``op`` (np.minimum or np.maximum) over the ``(2·radius + 1)²`` window of every pixel, separably."""
    out = plane
    for axis in (0, 1):
        n = out.shape[axis]
        pad = [(radius, radius) if a == axis else (0, 0) for a in range(2)]
        padded = np.pad(out, pad, mode="edge")
        out = np.take(padded, np.arange(n), axis=axis)
        for k in range(1, 2 * radius + 1):
            op(out, np.take(padded, np.arange(k, k + n), axis=axis), out=out)
    return out


def to_rgb_float(pixels: np.ndarray) -> np.ndarray:
    """``H×W`` / ``H×W×3`` ``uint8``/``uint16`` → ``H×W×3`` float32 in [0, 1] (the model's input).

    x / 255 (``uint16``: x / 65535), correctly rounded in float32 as torchvision's ``ToTensor``; gray is
    replicated to three channels. RGBA is refused: split alpha off first.
    """
    top = _top(pixels.dtype)
    if pixels.ndim == 2:
        pixels = pixels[..., None]
    if pixels.ndim != 3 or pixels.shape[2] not in (1, 3):
        raise ValueError(f"to_rgb_float expects H×W or H×W×3, got shape {pixels.shape}; split alpha "
                         "off first")
    out = np.divide(pixels, np.float32(top), dtype=np.float32)
    return np.repeat(out, 3, axis=2) if out.shape[2] == 1 else out


def from_rgb_float(arr: np.ndarray, like: np.ndarray) -> np.ndarray:
    """``H×W×3`` float (the model's output) → the dtype and channel layout of ``like``.

    ``like`` is the source the float came from (any size: only its dtype and ``ndim`` matter). Gray
    ``like`` → mean of the three channels, ``H×W``. Values are clipped to [0, 1], scaled by 255 or 65535
    and rounded half to even (as ``torch.round`` in EDSR's ``quantize``). ``to_rgb_float`` followed by
    ``from_rgb_float`` gives back every ``uint8`` and ``uint16`` value exactly. NaN or infinite values
    raise ``ValueError`` (a broken model output must not become a black image).
    """
    top = _top(like.dtype)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"from_rgb_float expects H×W×3 float, got shape {arr.shape}")
    if like.ndim == 3 and like.shape[2] == 4:
        raise ValueError("from_rgb_float: pass the colour part of an RGBA source (split_alpha)")
    if not np.isfinite(arr).all():
        raise ValueError("from_rgb_float: the array contains NaN or infinite values")
    out = arr.astype(np.float32).mean(axis=2) if like.ndim == 2 else arr.astype(np.float32, copy=True)
    np.clip(out, 0.0, 1.0, out=out)
    out *= np.float32(top)
    np.rint(out, out=out)
    return out.astype(like.dtype)


def to_uint8(pixels: np.ndarray) -> np.ndarray:
    """``uint16`` → ``uint8`` as round(x / 257) in exact integer arithmetic; ``uint8`` comes back as is."""
    if pixels.dtype == np.uint8:
        return pixels
    if pixels.dtype != np.uint16:
        raise ValueError(f"to_uint8 expects uint8 or uint16 pixels, got {pixels.dtype}")
    return ((pixels.astype(np.uint32) + 128) // 257).astype(np.uint8)


def _top(dtype: np.dtype) -> int:
    if dtype == np.uint8:
        return 255
    if dtype == np.uint16:
        return 65535
    raise ValueError(f"expected uint8 or uint16 pixels, got {dtype}")
