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


@pytest.fixture(scope="session", autouse=True)
def resize_kernel_ready() -> None:
    """Every test sees the compiled resize kernel ready (as a long job does), not a state that
    depends on which test ran first; ``route`` tests pick their path themselves."""
    from srpipe.imaging import windowed

    windowed.warm()


@pytest.fixture(params=["kernel", "blas"])
def route(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run a resize test through both routes of integer images at integer factors: the compiled
    kernel, and the BLAS route a process takes before the kernel is ready. Both must be exact."""
    from srpipe.imaging import windowed

    if request.param == "blas":
        monkeypatch.setattr(windowed, "ready", lambda: False)
        monkeypatch.setattr(windowed, "note_blas_pass", lambda values: None)
    return str(request.param)


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
