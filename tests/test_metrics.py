"""Paper-exact PSNR/SSIM: hand-computable cases, an independent SSIM, and the proof
that MATLAB-bicubic upscaling of the official LR files reproduces the EDSR paper's bicubic row."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from conftest import smooth_image

from srpipe import metrics
from srpipe.imaging.resize import imresize

PAPER_BICUBIC = {  # EDSR paper Table 6, Y channel, shave = scale: (PSNR, SSIM)
    ("Set5", 2): (33.66, 0.9299), ("Set5", 3): (30.39, 0.8682), ("Set5", 4): (28.42, 0.8104),
    ("Set14", 2): (30.24, 0.8688), ("Set14", 3): (27.55, 0.7742), ("Set14", 4): (26.00, 0.7027),
}


def reference_ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Wang et al.'s ssim_index.m written out directly: full 2-D fspecial window, 'valid' sums."""
    yy, xx = np.mgrid[-5:6, -5:6].astype(np.float64)
    win = np.exp(-(xx**2 + yy**2) / (2 * 1.5**2))
    win /= win.sum()

    def filt(img: np.ndarray) -> np.ndarray:
        patches = np.lib.stride_tricks.sliding_window_view(img, (11, 11))
        return np.einsum("ijkl,kl->ij", patches, win)

    x, y = a.astype(np.float64), b.astype(np.float64)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mx, my = filt(x), filt(y)
    sxx, syy, sxy = filt(x * x) - mx**2, filt(y * y) - my**2, filt(x * y) - mx * my
    ssim_map = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx**2 + my**2 + c1) * (sxx + syy + c2))
    return float(ssim_map.mean())


def test_identical_images_score_inf_and_one(rng: np.random.Generator) -> None:
    img = smooth_image(rng, 23, 17)
    s = metrics.score(img, img.copy(), shave=2)
    assert s.psnr_y == s.psnr_rgb == math.inf
    assert s.ssim_y == pytest.approx(1.0, abs=1e-12) and s.ssim_rgb == pytest.approx(1.0, abs=1e-12)


def test_offset_of_one_code_value_is_exactly_20log10_255(rng: np.random.Generator) -> None:
    hr = rng.integers(0, 255, (23, 17, 3), dtype=np.uint8)  # < 255, so +1 cannot saturate
    assert metrics.score(hr + 1, hr, shave=0).psnr_rgb == pytest.approx(20 * math.log10(255), abs=1e-12)
    gray = hr[..., 0]
    s = metrics.score(gray + 1, gray, shave=3)
    assert s.psnr_y == s.psnr_rgb == pytest.approx(20 * math.log10(255), abs=1e-12)
    assert math.isclose(20 * math.log10(255), 48.13080360867910, abs_tol=1e-9)


def test_y_is_matlab_rgb2ycbcr_rounded() -> None:
    px = np.array([[[0, 0, 0], [255, 255, 255], [255, 0, 0], [0, 255, 0], [0, 0, 255], [10, 200, 30]]],
                  dtype=np.uint8)
    # 16; 235; 16 + 65.481 = 81.481; 16 + 128.553; 16 + 24.966; 16 + (654.81 + 25710.6 + 748.98)/255
    assert metrics.to_y(px).tolist() == [[16.0, 235.0, 81.0, 145.0, 41.0, 122.0]]


def test_shave_removes_exactly_the_border(rng: np.random.Generator) -> None:
    hr = smooth_image(rng, 31, 27)
    sr = hr.copy()
    sr[:3] = 0  # damage confined to the 3-pixel top border
    sr[:, -3:] = 255
    assert metrics.score(sr, hr, shave=3).psnr_rgb == math.inf
    assert math.isfinite(metrics.score(sr, hr, shave=2).psnr_rgb)
    with pytest.raises(ValueError, match="cannot shave 16"):
        metrics.score(sr, hr, shave=16)


def test_hr_is_cropped_to_sr_size(rng: np.random.Generator) -> None:
    hr = smooth_image(rng, 37, 29)
    sr = np.clip(hr[:32, :28].astype(int) + rng.integers(-9, 10, (32, 28, 3)), 0, 255).astype(np.uint8)
    padded = hr.copy()
    padded[32:], padded[:, 28:] = 0, 255  # whatever lies beyond the SR size must not count
    assert metrics.score(sr, padded, shave=4) == metrics.score(sr, hr[:32, :28], shave=4)
    with pytest.raises(ValueError, match="smaller than SR"):
        metrics.score(hr, sr, shave=4)


def test_gray_is_scored_on_its_channel(rng: np.random.Generator) -> None:
    hr = smooth_image(rng, 29, 25, c=1)[..., 0]
    sr = np.clip(hr.astype(int) + rng.integers(-6, 7, hr.shape), 0, 255).astype(np.uint8)
    s = metrics.score(sr, hr, shave=2)
    a, b = sr[2:-2, 2:-2].astype(float), hr[2:-2, 2:-2].astype(float)
    assert s.psnr_y == pytest.approx(10 * math.log10(255**2 / np.mean((a - b) ** 2)), abs=1e-12)
    assert s.ssim_y == pytest.approx(reference_ssim(a, b), abs=1e-12)
    # The trap the papers avoid: gray pushed through the Y formula compresses the range and scores higher.
    rgb = metrics.score(np.repeat(sr[..., None], 3, 2), np.repeat(hr[..., None], 3, 2), shave=2)
    assert rgb.psnr_y > s.psnr_y + 0.5
    with pytest.raises(ValueError, match="gray but HR is RGB"):
        metrics.score(sr, np.repeat(hr[..., None], 3, 2), shave=2)


def test_ssim_matches_the_reference_implementation(rng: np.random.Generator) -> None:
    hr = smooth_image(rng, 41, 35)
    sr = np.clip(hr.astype(int) + rng.integers(-20, 21, hr.shape), 0, 255).astype(np.uint8)
    s = metrics.score(sr, hr, shave=3)
    a, b = sr[3:-3, 3:-3], hr[3:-3, 3:-3]
    assert s.ssim_y == pytest.approx(reference_ssim(metrics.to_y(a), metrics.to_y(b)), abs=1e-12)
    assert s.ssim_rgb == pytest.approx(np.mean([reference_ssim(a[..., c], b[..., c]) for c in range(3)]),
                                       abs=1e-12)
    assert 0.3 < s.ssim_y < 0.99
    with pytest.raises(ValueError, match="at least 11x11"):
        metrics.ssim(a[:10], b[:10])


def test_rejects_non_uint8() -> None:
    with pytest.raises(ValueError, match="must be uint8"):
        metrics.score(np.zeros((20, 20, 3), np.uint16), np.zeros((20, 20, 3), np.uint16), shave=0)


def test_mean_averages_per_image_values() -> None:
    a, b = metrics.Scores(30.0, 0.8, 28.0, 0.7), metrics.Scores(34.0, 0.9, 32.0, 0.8)
    assert metrics.Scores.mean([a, b]) == metrics.Scores(32.0, pytest.approx(0.85), 30.0, pytest.approx(0.75))


@pytest.mark.shared
@pytest.mark.parametrize(("dataset", "scale"), sorted(PAPER_BICUBIC))
def test_bicubic_reproduces_the_edsr_paper(shared_dir: Path, dataset: str, scale: int) -> None:
    import cv2

    root = shared_dir / "data" / "benchmarks" / dataset
    if dataset == "Set5":
        pairs = [(hr, root / "LR_bicubic" / f"X{scale}" / f"{hr.stem}x{scale}.png")
                 for hr in sorted((root / "HR").glob("*.png"))]
    else:
        pairs = [(hr, root / "LR_bicubic" / f"X{scale}" / hr.name.replace("_HR", "_LR"))
                 for hr in sorted((root / "HR" / f"X{scale}").glob("*.png"))]
    assert len(pairs) == (5 if dataset == "Set5" else 14)

    def read(path: Path) -> np.ndarray:
        img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        return img if img.ndim == 2 else img[..., ::-1]

    scores = [metrics.score(imresize(read(lr), scale), read(hr), shave=scale) for hr, lr in pairs]
    mean = metrics.Scores.mean(scores)
    psnr, ssim = PAPER_BICUBIC[(dataset, scale)]
    assert abs(mean.psnr_y - psnr) <= 0.03, mean
    assert abs(mean.ssim_y - ssim) <= 0.001, mean
