"""Shared fixtures: a seeded RNG, synthetic images, and the optional ../shared data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


@pytest.fixture
def rng() -> np.random.Generator:
    """A seeded generator so every synthetic image is the same on every run."""
    return np.random.default_rng(1234)


@pytest.fixture
def shared_dir() -> Path:
    """``../shared`` beside the checkout; the test is skipped cleanly when it is absent."""
    if not (SHARED / "data").is_dir():
        pytest.skip("../shared/data not available")
    return SHARED


def smooth_image(rng: np.random.Generator, h: int, w: int, c: int = 3, dtype: type = np.uint8) -> np.ndarray:
    """A natural-ish test image: smooth gradients plus texture, full dynamic range, shape (h, w, c)."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    base = np.stack([np.sin(xx / (3 + k) + yy / (5 + 2 * k) + k) for k in range(c)], axis=-1)
    img = 0.5 + 0.35 * base + 0.15 * rng.random((h, w, c))
    top = 65535 if dtype == np.uint16 else 255
    return np.clip(np.round(img * top), 0, top).astype(dtype)
