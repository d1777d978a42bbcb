"""MATLAB-exact bicubic: hand-computed cases, an independent reference port, properties, and the
official benchmark LR files (bit-exact; skipped cleanly without ../shared)."""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from conftest import smooth_image

from srpipe.imaging import kernel, resize
from srpipe.imaging.resize import contributions, imresize, modcrop

# ---- an independent, deliberately plain port of MATLAB imresize (small images only) -------------


def _cubic(x: float) -> float:
    a = abs(x)
    if a <= 1:
        return 1.5 * a**3 - 2.5 * a**2 + 1
    if a <= 2:
        return -0.5 * a**3 + 2.5 * a**2 - 4 * a + 2
    return 0.0


def _reference_pass(a: np.ndarray, scale: float, boundary: str) -> np.ndarray:
    """Resize axis 0 of ``a`` one output row at a time, with Python floats for the weights."""
    n = a.shape[0]
    width = 4 / scale if scale < 1 else 4.0
    out = []
    for x in range(1, math.ceil(n * scale - 1e-9) + 1):
        u = x / scale + 0.5 * (1 - 1 / scale)
        left = math.floor(u - width / 2)
        taps = [(j, scale * _cubic(scale * (u - j)) if scale < 1 else _cubic(u - j))
                for j in range(left, left + math.ceil(width) + 2)]
        total = sum(w for _, w in taps)
        row = np.zeros(a.shape[1:])
        for j, w in taps:
            k = j - 1  # 0-based
            if boundary == "mirror":
                k %= 2 * n
                k = k if k < n else 2 * n - 1 - k
            else:
                k = min(max(k, 0), n - 1)
            row = row + (w / total) * a[k].astype(np.float64)
        out.append(row)
    result = np.stack(out)
    if a.dtype.kind == "u":  # round half away from zero (exactly: x - floor(x) is exact), saturate
        whole = np.floor(result)
        rounded = whole + (result - whole >= 0.5)
        return np.clip(rounded, 0, np.iinfo(a.dtype).max).astype(a.dtype)
    return result


def reference_imresize(img: np.ndarray, scale: float, boundary: str = "mirror") -> np.ndarray:
    rows = _reference_pass(img, scale, boundary)
    return np.swapaxes(_reference_pass(np.swapaxes(rows, 0, 1), scale, boundary), 0, 1)


# ---- hand-computed cases --------------------------------------------------------------------------

# x2 shrink: 0.5 * cubic(0.5 * d) at d = ±0.5, ±1.5, ±2.5, ±3.5 is (111, 29, -9, -3) / 256 and the
# eight taps sum to exactly 1; output j (0-based) reads source positions 2j-3 .. 2j+4.
X2_TAPS = np.array([-3, -9, 29, 111, 111, 29, -9, -3]) / 256
SIGNAL = np.array([10, 20, 40, 80, 160, 200, 220, 250], dtype=np.uint8)


@pytest.mark.parametrize(("boundary", "padded"), [
    ("mirror", [40, 20, 10, 10, 20, 40, 80, 160, 200, 220, 250, 250, 220, 200]),
    ("replicate", [10, 10, 10, 10, 20, 40, 80, 160, 200, 220, 250, 250, 250, 250]),
])
def test_hand_computed_x2_shrink(route: str, boundary: str, padded: list[int]) -> None:
    expected = [math.floor(float(np.dot(X2_TAPS, padded[2 * j : 2 * j + 8])) + 0.5) for j in range(4)]
    if boundary == "mirror":
        assert expected[0] == 13  # (-120 - 180 + 290 + 1110 + 2220 + 1160 - 720 - 480) / 256 = 12.81
    column = np.repeat(SIGNAL[:, None], 5, axis=1)  # 8×5, constant along each row
    assert imresize(column, 1 / 2, boundary=boundary)[:, 0].tolist() == expected  # row pass
    assert imresize(column.T.copy(), 1 / 2, boundary=boundary)[0].tolist() == expected  # column pass
    weights, indices = contributions(8, 4, 0.5, boundary)
    assert np.array_equal(weights[1], X2_TAPS)
    assert indices[0].tolist() == ([2, 1, 0, 0, 1, 2, 3, 4] if boundary == "mirror" else
                                   [0, 0, 0, 0, 1, 2, 3, 4])


def test_hand_computed_x2_enlarge() -> None:
    # cubic(d) at d = 1.75, 0.75, 0.25, 1.25 is (-6, 58, 222, -18) / 256. Output 2j reads source
    # j-2 .. j+1 with (-6, 58, 222, -18); output 2j+1 reads j-1 .. j+2 with the taps reversed.
    taps = np.array([-6, 58, 222, -18]) / 256
    padded = [20, 10, *SIGNAL.tolist(), 250, 220]  # mirror: v1 v0 | v0 .. v7 | v7 v6
    expected = []
    for j in range(8):
        expected.append(float(np.dot(taps, padded[j : j + 4])))
        expected.append(float(np.dot(taps[::-1], padded[j + 1 : j + 5])))
    out = imresize(SIGNAL[:, None].astype(np.float64), 2)
    assert out.shape == (16, 2)
    np.testing.assert_allclose(out[:, 0], expected, rtol=0, atol=1e-12)
    rounded = imresize(np.repeat(SIGNAL[:, None], 3, axis=1), 2)[:, 0]
    assert rounded.tolist() == [min(255, max(0, math.floor(v + 0.5))) for v in expected]


# ---- against the reference port ---------------------------------------------------------------------


@pytest.mark.parametrize("scale", [1 / 2, 1 / 3, 1 / 4, 2, 3, 4, 0.37, 1.5])
@pytest.mark.parametrize("boundary", ["mirror", "replicate"])
def test_matches_reference_port(route: str, rng: np.random.Generator, scale: float, boundary: str) -> None:
    img = smooth_image(rng, 23, 17, 3)
    out = imresize(img, scale, boundary=boundary)
    assert out.dtype == np.uint8
    assert out.shape == (math.ceil(23 * scale - 1e-9), math.ceil(17 * scale - 1e-9), 3)
    assert np.array_equal(out, reference_imresize(img, scale, boundary))


def test_integer_factors_match_tap_order_sums_on_a_larger_image(route: str, rng: np.random.Generator) -> None:
    # srpipe sums integer-factor windows with BLAS (its own order); x3 is the factor whose weights
    # are not exact binary fractions, so compare ~1.3 M values with the tap-order reference.
    img = rng.integers(0, 256, (150, 121, 3), dtype=np.uint8)
    assert np.array_equal(imresize(img, 3), reference_imresize(img, 3))
    big = smooth_image(rng, 450, 363, 3)
    assert np.array_equal(imresize(big, 1 / 3, boundary="replicate"),
                          reference_imresize(big, 1 / 3, "replicate"))


@pytest.mark.parametrize("channels", [1, 4])
def test_uint16_gray_and_rgba_match_reference(route: str, rng: np.random.Generator, channels: int) -> None:
    img = smooth_image(rng, 23, 17, channels, dtype=np.uint16)
    for scale in (1 / 3, 4):
        out = imresize(img, scale)
        assert out.dtype == np.uint16 and out.shape[2] == channels
        assert np.array_equal(out, reference_imresize(img, scale))


def test_float_input_stays_float_and_unrounded(rng: np.random.Generator) -> None:
    img = smooth_image(rng, 23, 17, 3).astype(np.float64) / 255
    out = imresize(img, 1 / 4)
    assert out.dtype == np.float64 and out.shape == (6, 5, 3)
    np.testing.assert_allclose(out, reference_imresize(img, 1 / 4), rtol=0, atol=1e-12)
    assert np.any(out * 255 != np.round(out * 255))
    assert imresize(img.astype(np.float32), 2).dtype == np.float32


# ---- the proved-exact integer path (float32 for uint8, BLAS summation order) -------------------------


def _random_image(rng: np.random.Generator, shape: tuple[int, int], channels: int, dtype: type,
                  kind: str) -> np.ndarray:
    top = np.iinfo(dtype).max
    full = (*shape, max(channels, 1))
    if kind == "noise":  # every residue of the window sums, so exact ties (x2, x4) and near-ties (x3)
        img = rng.integers(0, top, full, endpoint=True).astype(dtype)
    elif kind == "edges":  # 0 / max blocks: over- and undershoot, saturation at both ends
        img = (rng.integers(0, 2, full) * top).astype(dtype)
    else:
        img = smooth_image(rng, *shape, max(channels, 1), dtype=dtype)
    return img[:, :, 0] if channels == 0 else img


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
@pytest.mark.parametrize("shape", [(23, 17), (101, 67)])
def test_exact_path_matches_reference_and_float64_path_on_random_images(route: str,
    rng: np.random.Generator, monkeypatch: pytest.MonkeyPatch, dtype: type, shape: tuple[int, int]
) -> None:
    cases = [(_random_image(rng, shape, channels, dtype, kind), scale, boundary)
             for channels in (0, 3, 4) for kind in ("noise", "edges", "smooth")
             for scale in (1 / 2, 1 / 3, 1 / 4, 2, 3, 4) for boundary in ("mirror", "replicate")]
    fast = [imresize(img, scale, boundary=boundary) for img, scale, boundary in cases]
    for out, (img, scale, boundary) in zip(fast, cases, strict=True):
        assert out.dtype == dtype and out.shape[2:] == img.shape[2:]
        assert np.array_equal(out, reference_imresize(img, scale, boundary)), (img.shape, scale, boundary)
    # The same images through the float64 path with MATLAB's own weights (what x6 still uses).
    monkeypatch.setattr(resize, "exact_weights", lambda *args: None)
    for out, (img, scale, boundary) in zip(fast, cases, strict=True):
        assert np.array_equal(out, imresize(img, scale, boundary=boundary)), (img.shape, scale, boundary)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
@pytest.mark.parametrize(("factor", "denom"), [(2, 256), (3, 81), (4, 4096)])
def test_one_pass_equals_exact_integer_rounding(route: str, rng: np.random.Generator, dtype: type,
                                                factor: int, denom: int) -> None:
    # Every weight is m_k / D (exactly for x2 and x4; x3 up to float rounding), so a pass is
    # round-half-up(S / D) with S = sum m_k v_k, an oracle in pure integer arithmetic. A single
    # column isolates the row pass (the column pass of a width-1 image returns its input).
    top, n = np.iinfo(dtype).max, 100_000
    column = rng.integers(0, top, (factor * n, 1), endpoint=True).astype(dtype)
    for boundary in ("mirror", "replicate"):
        weights, indices = contributions(factor * n, n, 1 / factor, boundary)
        m = np.rint(weights * denom).astype(np.int64)
        assert np.abs(weights * denom - m).max() < 1e-9 and np.all(m.sum(axis=1) == denom)
        sums = (m * column[indices, 0].astype(np.int64)).sum(axis=1)
        expected = np.clip((2 * sums + denom) // (2 * denom), 0, top)
        assert np.array_equal(imresize(column, 1 / factor, boundary=boundary)[:, 0], expected)
    closest = np.abs(2 * (sums % denom) - denom).min()  # 0: exact ties (x2, x4); 1: 1/162 away (x3)
    assert closest == denom % 2 and np.sum(np.abs(2 * (sums % denom) - denom) == closest) >= 10


def test_exact_path_covers_the_integer_factors() -> None:
    # (factor, D shrinking, D enlarging). Dyadic D: sums are exact and ties must round up, hence the
    # offset 1/4D before rounding to nearest; odd D: no sum is near a tie, offset 0.
    for factor, shrink, enlarge in ((2, 256, 128), (3, 81, 9), (4, 4096, 1024)):
        for in_len, out_len, scale, denom in ((60 * factor, 60, 1 / factor, shrink),
                                              (60, 60 * factor, factor, enlarge)):
            weights, offset = kernel.exact_weights(in_len, out_len, scale, "mirror", 255)
            assert weights.dtype == np.float32
            assert offset == (0.0 if denom % 2 else 1 / (4 * denom))
            assert kernel.exact_weights(in_len, out_len, scale, "replicate", 65535) is not None
    x8 = kernel.exact_weights(400, 50, 1 / 8, "mirror", 255)
    assert x8 is not None and x8[0].dtype == np.float64  # 4 * 255 * 76544 > 2**24
    assert kernel.exact_weights(360, 60, 1 / 6, "mirror", 255) is None  # D = 20736: even, not 2**q
    assert kernel.exact_weights(100, 37, 0.37, "mirror", 255) is None  # not an integer factor


def test_results_never_share_the_reused_buffers(route: str, rng: np.random.Generator) -> None:
    # Intermediates live in per-thread buffers reused by the next call; results must not.
    first_img, second_img = smooth_image(rng, 40, 30, 3), smooth_image(rng, 40, 30, 3)
    first = imresize(first_img, 1 / 2)
    kept = first.copy()
    second = imresize(second_img, 1 / 2)
    assert np.array_equal(first, kept) and not np.shares_memory(first, second)
    images = [smooth_image(rng, 241 + k, 187, 3) for k in range(4)] * 30
    with ThreadPoolExecutor(max_workers=4) as pool:  # each thread has its own buffers
        together = list(pool.map(lambda img: imresize(img, 1 / 3), images))
    assert all(np.array_equal(out, imresize(img, 1 / 3)) for out, img in zip(together, images, strict=True))


@pytest.mark.parametrize("scale", [1 / 2, 1 / 3, 1 / 4, 1 / 6])
def test_integer_images_stay_exact_after_float_images_and_other_dtypes(route: str, rng: np.random.Generator,
                                                                      scale: float) -> None:
    # Integer rows are copied into a reused buffer by OpenCV as `buf + (rows - buf)`, exact only
    # while that buffer holds integers: floats (and x6's float64 weights) must never land there.
    img8, img16 = smooth_image(rng, 47, 37, 3), smooth_image(rng, 47, 37, 3, dtype=np.uint16)
    noise = rng.random((47, 37, 3)) * 1e6 - 3.3e5
    for other in (noise.astype(np.float32), noise, img16, smooth_image(rng, 72, 48, 1)[:, :, 0]):
        imresize(other, scale)
        imresize(other, 1 / 6)  # float64 weights through a float64 view of the same scratch bytes
        assert np.array_equal(imresize(img8, scale), reference_imresize(img8, scale))
        assert np.array_equal(imresize(img16, scale), reference_imresize(img16, scale))


def test_views_give_the_same_result_as_copies(route: str, rng: np.random.Generator) -> None:
    big = smooth_image(rng, 50, 41, 4)
    for view in (modcrop(big, 4), big[::-1], big[:, :, 2::-1], big[1::2, 3:, :3], big[:, :, 1]):
        for scale in (1 / 2, 1 / 3, 2):
            assert np.array_equal(imresize(view, scale), imresize(np.ascontiguousarray(view), scale))


# ---- properties --------------------------------------------------------------------------------------


@pytest.mark.parametrize("scale", [1 / 2, 1 / 3, 1 / 4, 2, 3, 4])
def test_constant_image_stays_constant(route: str, scale: float) -> None:
    for value, dtype in ((0, np.uint8), (137, np.uint8), (255, np.uint8), (40_000, np.uint16)):
        out = imresize(np.full((23, 17, 3), value, dtype=dtype), scale, boundary="replicate")
        assert out.dtype == dtype and np.all(out == value)


def test_gray_2d_and_channels_independent(rng: np.random.Generator) -> None:
    rgba = smooth_image(rng, 23, 17, 4)
    out = imresize(rgba, 1 / 3)
    assert out.shape == (8, 6, 4)
    for c in range(4):
        gray = imresize(np.ascontiguousarray(rgba[:, :, c]), 1 / 3)
        assert gray.shape == (8, 6) and np.array_equal(gray, out[:, :, c])


def test_overshoot_saturates_instead_of_wrapping(route: str, ) -> None:
    img = np.zeros((12, 12), dtype=np.uint8)
    img[:, 6:] = 255  # a hard edge: bicubic over/undershoots it
    out = imresize(img, 1 / 2)
    wide = imresize(img.astype(np.float64), 1 / 2)
    assert wide.min() < 0 and wide.max() > 255
    assert out.min() == 0 and out.max() == 255


@pytest.mark.parametrize("bad", [
    (np.zeros((4, 4), np.int32), 0.5, "mirror", "uint8, uint16"),
    (np.zeros((4, 4, 3, 1), np.uint8), 0.5, "mirror", "H×W"),
    (np.zeros((0, 4), np.uint8), 0.5, "mirror", "empty"),
    (np.zeros((4, 4), np.uint8), 0, "mirror", "positive"),
    (np.zeros((4, 4), np.uint8), float("nan"), "mirror", "positive"),
    (np.zeros((4, 4), np.uint8), 0.5, "wrap", "boundary"),
])
def test_bad_input_is_rejected(bad: tuple[np.ndarray, float, str, str]) -> None:
    img, scale, boundary, words = bad
    with pytest.raises(ValueError, match=words):
        imresize(img, scale, boundary=boundary)  # type: ignore[arg-type]


def test_modcrop() -> None:
    img = np.arange(23 * 17).reshape(23, 17)
    cropped = modcrop(img, 4)
    assert cropped.shape == (20, 16) and np.shares_memory(cropped, img)
    assert np.array_equal(cropped, img[:20, :16])
    assert modcrop(img, 1).shape == (23, 17)
    with pytest.raises(ValueError, match="smaller than the scale"):
        modcrop(np.zeros((3, 8)), 4)


def test_weights_are_cached_and_read_only() -> None:
    w1, i1 = contributions(255, 85, 1 / 3, "mirror")
    w2, _ = contributions(255, 85, 1 / 3, "mirror")
    assert w1 is w2 and not w1.flags.writeable and not i1.flags.writeable
    np.testing.assert_allclose(w1.sum(axis=1), 1.0, rtol=0, atol=1e-15)


# ---- the official benchmark files (bit-exact) ---------------------------------------------------------


def _read(path: Path) -> np.ndarray:
    import cv2

    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert img is not None, f"cannot read {path}"
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB) if img.ndim == 3 else img


@pytest.mark.shared
@pytest.mark.parametrize("scale", [2, 3, 4])
def test_set5_official_lr_bit_exact_mirror(route: str, shared_dir: Path, scale: int) -> None:
    root = shared_dir / "data" / "benchmarks" / "Set5"
    hrs = sorted((root / "HR").glob("*.png"))
    assert len(hrs) == 5
    for hr_path in hrs:
        hr = modcrop(_read(hr_path), scale)
        lr = _read(root / "LR_bicubic" / f"X{scale}" / f"{hr_path.stem}x{scale}.png")
        ours = imresize(hr, 1 / scale, boundary="mirror")
        assert ours.shape == lr.shape and np.array_equal(ours, lr), hr_path.name
        # The other convention differs only in the outer ring(s): the files pin the boundary.
        other = imresize(hr, 1 / scale, boundary="replicate")
        assert not np.array_equal(other, lr) and np.array_equal(other[2:-2, 2:-2], lr[2:-2, 2:-2])


@pytest.mark.shared
@pytest.mark.parametrize("scale", [2, 3, 4])
def test_set14_official_lr_bit_exact_replicate(route: str, shared_dir: Path, scale: int) -> None:
    root = shared_dir / "data" / "benchmarks" / "Set14"
    hrs = sorted((root / "HR" / f"X{scale}").glob("*_HR.png"))
    assert len(hrs) == 14
    mismatched = []
    for hr_path in hrs:
        hr = _read(hr_path)
        lr = _read(root / "LR_bicubic" / f"X{scale}" / hr_path.name.replace("_HR", "_LR"))
        ours = imresize(hr, 1 / scale, boundary="replicate")
        if ours.shape != lr.shape or not np.array_equal(ours, lr):
            mismatched.append(hr_path.name)
    assert mismatched == []
    assert _read(hrs[2]).ndim == 2  # img_003 (bridge) is gray and went through the 2-D path


@pytest.mark.shared
def test_set5_x8_files_were_made_in_float(shared_dir: Path) -> None:
    # MANIFEST: X8 came from a float port with one final rounding, not MATLAB's uint8 path.
    root = shared_dir / "data" / "benchmarks" / "Set5"
    hr = modcrop(_read(root / "HR" / "bird.png"), 8)
    lr = _read(root / "LR_bicubic" / "X8" / "birdx8.png")
    as_float = np.floor(imresize(hr.astype(np.float64), 1 / 8) + 0.5).clip(0, 255).astype(np.uint8)
    assert np.array_equal(as_float, lr)
    assert not np.array_equal(imresize(hr, 1 / 8), lr)
