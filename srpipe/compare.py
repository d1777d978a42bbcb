"""Side-by-side comparison pictures: bicubic | model | HR crops, one row per image.

Crop choice: the ``crop``×``crop`` HR window where the **bicubic** result has the largest squared
error (summed over channels, borders shaved). It depends only on the image and the scale, not on
the model, so pictures of different models show the same places — the hardest ones to upscale,
where a model's gain (or failure) is easiest to see. Crops are enlarged with nearest-neighbour
sampling (no smoothing that would hide artefacts) and labelled with their Y-PSNR.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

ZOOM_TARGET = 288  # displayed side of a crop, in screen pixels
GAP = 6
LABEL_H = 24
BACKGROUND = 30


@dataclass(frozen=True)
class Panel:
    """One comparison row: three equally sized uint8 crops (RGB or gray) and their labels' data."""

    name: str
    bicubic: np.ndarray
    model: np.ndarray
    hr: np.ndarray
    top_left: tuple[int, int]  # (x, y) of the crop in the HR image
    psnr_bicubic: float
    psnr_model: float

    @property
    def gain(self) -> float:
        return self.psnr_model - self.psnr_bicubic


def worst_window(err: np.ndarray, size: int) -> tuple[int, int]:
    """``(top, left)`` of the ``size``×``size`` window with the largest sum of ``err`` (H×W)."""
    h, w = err.shape
    size = min(size, h, w)
    integral = np.zeros((h + 1, w + 1), dtype=np.float64)
    integral[1:, 1:] = err.cumsum(0).cumsum(1)
    sums = (integral[size:, size:] - integral[:-size, size:] - integral[size:, :-size]
            + integral[:-size, :-size])
    top, left = np.unravel_index(int(np.argmax(sums)), sums.shape)
    return int(top), int(left)


def make_panel(name: str, *, sr: np.ndarray, bicubic: np.ndarray, hr: np.ndarray, crop: int, shave: int,
               psnr_bicubic: float, psnr_model: float) -> Panel:
    """Cut the three crops at the bicubic's worst window (see the module docstring).

    ``sr`` and ``bicubic`` have the same shape; ``hr`` is at least that large and is cropped to it.
    """
    h, w = sr.shape[:2]
    hr = hr[:h, :w]
    diff = bicubic.astype(np.float64) - hr.astype(np.float64)
    err = diff * diff if diff.ndim == 2 else (diff * diff).sum(axis=2)
    s = shave if min(h, w) > 2 * shave else 0
    inner = err[s : h - s, s : w - s]
    size = min(crop, *inner.shape)
    top, left = worst_window(inner, size)
    top, left = top + s, left + s
    cut = (slice(top, top + size), slice(left, left + size))
    return Panel(name, bicubic[cut].copy(), sr[cut].copy(), hr[cut].copy(), (left, top), psnr_bicubic,
                 psnr_model)


def _tile(img: np.ndarray, zoom: int, label: str) -> np.ndarray:
    import cv2

    rgb = np.repeat(img[..., None], 3, axis=2) if img.ndim == 2 else img
    big = np.repeat(np.repeat(rgb, zoom, axis=0), zoom, axis=1)
    tile = np.full((big.shape[0] + LABEL_H, big.shape[1], 3), BACKGROUND, dtype=np.uint8)
    tile[LABEL_H:] = big
    font, scale = cv2.FONT_HERSHEY_SIMPLEX, 0.5
    while scale > 0.3 and cv2.getTextSize(label, font, scale, 1)[0][0] > big.shape[1] - 8:
        scale -= 0.05
    cv2.putText(tile, label, (4, LABEL_H - 8), font, scale, (235, 235, 235), 1, cv2.LINE_AA)
    return tile


def render(panels: list[Panel], model_name: str) -> np.ndarray:
    """The comparison picture (uint8 H×W×3 RGB): one row per panel, columns bicubic | model | HR."""
    if not panels:
        raise ValueError("no panels to render")
    side = max(p.hr.shape[0] for p in panels)
    zoom = max(1, round(ZOOM_TARGET / side))
    rows = []
    for p in panels:
        tiles = [_tile(p.bicubic, zoom, f"bicubic {p.psnr_bicubic:.2f} dB"),
                 _tile(p.model, zoom, f"{model_name} {p.psnr_model:.2f} dB ({p.gain:+.2f})"),
                 _tile(p.hr, zoom, f"HR {p.name} @{p.top_left[0]},{p.top_left[1]}")]
        height = max(t.shape[0] for t in tiles)
        row = np.full((height, sum(t.shape[1] for t in tiles) + GAP * 2, 3), BACKGROUND, dtype=np.uint8)
        x = 0
        for t in tiles:
            row[: t.shape[0], x : x + t.shape[1]] = t
            x += t.shape[1] + GAP
        rows.append(row)
    width = max(r.shape[1] for r in rows)
    canvas = np.full((sum(r.shape[0] for r in rows) + GAP * (len(rows) + 1), width + 2 * GAP, 3), BACKGROUND,
                     dtype=np.uint8)
    y = GAP
    for r in rows:
        canvas[y : y + r.shape[0], GAP : GAP + r.shape[1]] = r
        y += r.shape[0] + GAP
    return canvas


def write_compare(path: Path, panels: list[Panel], model_name: str) -> Path:
    """Render ``panels`` and write the picture atomically (format from the suffix; PNG recommended)."""
    from srpipe.imaging.io import write_image

    write_image(path, render(panels, model_name))
    return path
