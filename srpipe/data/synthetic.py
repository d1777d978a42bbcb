"""Generated training photos for install checks (the ``smoke`` recipe), so that training can be tried
before any dataset is downloaded.

Each image is a seeded mix of what a super-resolution model has to learn: smooth gradients, straight
and curved edges at every orientation, and fine periodic texture. Deterministic: the same ``seed``
and index always give the same pixels, so a re-run finds its images (and the stores prepared from
them) unchanged.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from srpipe.imaging.io import write_image


def synthetic_image(size: int, seed: int) -> np.ndarray:
    """One ``size`` × ``size`` RGB ``uint8`` image (see the module docstring)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64) / size
    img = np.empty((size, size, 3))
    for c in range(3):  # a smooth background gradient per channel
        a, b, d = rng.uniform(-0.4, 0.4, 3)
        img[..., c] = 0.5 + a * xx + b * yy + d * xx * yy
    for _ in range(6):  # flat shapes with sharp edges: discs and rotated bars
        colour = rng.uniform(0, 1, 3)
        cy, cx, r = rng.uniform(0.1, 0.9), rng.uniform(0.1, 0.9), rng.uniform(0.05, 0.3)
        if rng.random() < 0.5:
            mask = (yy - cy) ** 2 + (xx - cx) ** 2 < r * r
        else:
            t = rng.uniform(0, np.pi)
            u = (xx - cx) * np.cos(t) + (yy - cy) * np.sin(t)
            v = -(xx - cx) * np.sin(t) + (yy - cy) * np.cos(t)
            mask = (np.abs(u) < r) & (np.abs(v) < r / 4)
        img[mask] = colour
    t = rng.uniform(0, np.pi)
    freq = rng.uniform(size / 12, size / 5)  # periods of 5 to 12 px: texture that bicubic blurs away
    stripes = np.sin(2 * np.pi * freq * (xx * np.cos(t) + yy * np.sin(t)))
    img += 0.08 * stripes[..., None] + rng.normal(0, 0.01, img.shape)
    return np.clip(np.round(img * 255), 0, 255).astype(np.uint8)


def write_synthetic_images(folder: Path, count: int, *, size: int = 192, seed: int = 0) -> list[Path]:
    """``folder/synthetic-NNN.png`` for ``count`` images; files already there are left as they are
    (their modification times are part of the stores' input fingerprint)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        path = folder / f"synthetic-{i:03d}.png"
        if not path.is_file():
            write_image(path, synthetic_image(size, seed * 100_003 + i))
        paths.append(path)
    return paths
