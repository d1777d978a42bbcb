"""On-the-fly degradations of training LR patches: blur before the bicubic, noise, JPEG (photo models).

Contract of :func:`degrade`: takes one aligned uint8 HWC RGB pair ``(lr, hr)`` with ``hr`` exactly
``scale`` times ``lr`` and returns the degraded ``lr`` (a new uint8 array of the same shape; ``hr`` is
never changed: it stays the target). Steps, each drawn with its probability from
:class:`~srpipe.config.DegradeConfig`, in the order a camera applies them:

1. blur: Gaussian blur (σ in HR pixels) of ``hr``, then ``lr`` = MATLAB bicubic ``1/scale`` of it;
2. noise: Gaussian noise on ``lr``, σ on the 0-255 scale, independent per channel or (``noise_gray``)
   one value for R, G and B (luma noise), rounded and clipped;
3. JPEG: ``lr`` re-encoded by OpenCV at a quality drawn from the range (4:2:0 chroma, as cameras and
   OpenCV's default do), encoded from BGR so the chroma planes are the true Cb/Cr.

Every draw comes from a generator keyed by ``(seed, stream, item)``: the same item degrades the same way
in any process, with any number of DataLoader workers, and after a resume. The stored patches stay clean.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from srpipe.config import DegradeConfig
from srpipe.imaging.resize import imresize

TRAIN_STREAM = 0x5D  # keeps degradation draws apart from the crop draws of the same item
VALID_STREAM = 0x5E


@dataclass(frozen=True)
class Draw:
    """What one item gets: ``None`` for a step it skips."""

    blur_sigma: float | None
    noise_sigma: float | None
    noise_gray: bool
    jpeg_quality: int | None


def draw(cfg: DegradeConfig, seed: int, item: int,
         stream: int = TRAIN_STREAM) -> tuple[Draw, np.random.Generator]:
    """The item's degradation choices and the generator that then draws its noise."""
    rng = np.random.default_rng([seed & 0xFFFFFFFF, stream, item])
    u = rng.random(4)
    blur = float(rng.uniform(*cfg.blur_sigma)) if u[0] < cfg.blur else None
    noise = float(rng.uniform(*cfg.noise_sigma)) if u[1] < cfg.noise else None
    quality = int(rng.integers(cfg.jpeg_quality[0], cfg.jpeg_quality[1] + 1)) if u[2] < cfg.jpeg else None
    return Draw(blur, noise, bool(u[3] < cfg.noise_gray), quality), rng


def gaussian_blur(img: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur (kernel radius 3σ, reflected borders), uint8 in and out."""
    radius = max(1, int(np.ceil(3 * sigma)))
    return cv2.GaussianBlur(img, (2 * radius + 1, 2 * radius + 1), sigma, borderType=cv2.BORDER_REFLECT)


def add_noise(img: np.ndarray, sigma: float, gray: bool, rng: np.random.Generator) -> np.ndarray:
    """``img`` + N(0, σ²) per pixel (one value for all channels when ``gray``), rounded and clipped."""
    shape = img.shape[:2] + ((1,) if gray and img.ndim == 3 else img.shape[2:])
    noisy = img.astype(np.float32) + rng.standard_normal(shape, dtype=np.float32) * np.float32(sigma)
    return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)


def jpeg(img: np.ndarray, quality: int) -> np.ndarray:
    """``img`` (RGB or gray uint8) through an OpenCV JPEG encode/decode at ``quality``."""
    color = img.ndim == 3
    src = cv2.cvtColor(img, cv2.COLOR_RGB2BGR) if color else img
    ok, data = cv2.imencode(".jpg", src, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:  # pragma: no cover - OpenCV encodes any uint8 image
        raise RuntimeError("OpenCV could not encode a JPEG")
    out = cv2.imdecode(data, cv2.IMREAD_COLOR if color else cv2.IMREAD_GRAYSCALE)
    assert out is not None  # OpenCV decodes what it just encoded
    return cv2.cvtColor(out, cv2.COLOR_BGR2RGB) if color else np.asarray(out)


def apply(lr: np.ndarray, hr: np.ndarray, scale: int, d: Draw, rng: np.random.Generator) -> np.ndarray:
    """Degrade ``lr`` as ``d`` says (module docstring); ``hr`` is read only for the blur."""
    out = lr
    if d.blur_sigma is not None:
        out = imresize(gaussian_blur(hr, d.blur_sigma), 1 / scale)
    if d.noise_sigma is not None:
        out = add_noise(out, d.noise_sigma, d.noise_gray, rng)
    if d.jpeg_quality is not None:
        out = jpeg(out, d.jpeg_quality)
    return out if out is not lr else lr.copy()


def degrade(lr: np.ndarray, hr: np.ndarray, *, scale: int, cfg: DegradeConfig, seed: int, item: int,
            stream: int = TRAIN_STREAM) -> np.ndarray:
    """Item ``item``'s degraded ``lr`` (module docstring); a pure function of its arguments."""
    d, rng = draw(cfg, seed, item, stream)
    return apply(lr, hr, scale, d, rng)
