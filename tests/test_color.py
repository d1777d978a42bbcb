"""srpipe.imaging.color: MATLAB Y, alpha split, the model's float layout."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import smooth_image

from srpipe.imaging.color import (
    from_rgb_float,
    rgb_to_y,
    rgb_to_y_uint8,
    split_alpha,
    to_rgb_float,
    to_uint8,
)


def test_rgb_to_y_matches_matlab_on_primaries():
    # MATLAB: rgb2ycbcr(uint8([255 0 0; 0 255 0; 0 0 255; 255 255 255; 0 0 0])) -> Y 81 145 41 235 16
    rgb = np.array([[[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 255], [0, 0, 0]]], np.uint8)
    np.testing.assert_allclose(rgb_to_y(rgb)[0], [81.481, 144.553, 40.966, 235.0, 16.0], atol=1e-12)
    np.testing.assert_array_equal(rgb_to_y_uint8(rgb)[0], [81, 145, 41, 235, 16])
    assert rgb_to_y(rgb).dtype == np.float64 and rgb_to_y_uint8(rgb).dtype == np.uint8


def test_rgb_to_y_uint8_equals_exact_rational_rounding_except_at_exact_halves(rng):
    rgb = rng.integers(0, 256, (500, 600, 3), dtype=np.int64)
    # 255000·Y = 65481 R + 128553 G + 24966 B + 16·255000, exactly, in integers
    num = 65481 * rgb[..., 0] + 128553 * rgb[..., 1] + 24966 * rgb[..., 2] + 16 * 255000
    exact = (num + 127500) // 255000  # round half up, in exact arithmetic
    got = rgb_to_y_uint8(rgb.astype(np.uint8))
    differs = got != exact
    assert np.all(num[differs] % 255000 == 127500)  # only exact .5 cases may go either way
    np.testing.assert_allclose(rgb_to_y(rgb.astype(np.uint8)), num / 255000, rtol=0, atol=1e-12)


def test_rgb_to_y_refuses_alpha_and_uint16():
    with pytest.raises(ValueError, match="split alpha"):
        rgb_to_y(np.zeros((3, 4, 4), np.uint8))
    with pytest.raises(ValueError, match="uint16"):
        rgb_to_y(np.zeros((3, 4, 3), np.uint16))


def test_split_alpha_gives_contiguous_colour_and_alpha(rng):
    rgba = smooth_image(rng, 17, 23, 4, np.uint16)
    color, alpha = split_alpha(rgba)
    assert color.shape == (17, 23, 3) and alpha is not None and alpha.shape == (17, 23)
    assert color.flags.c_contiguous and alpha.flags.c_contiguous
    np.testing.assert_array_equal(np.dstack([color, alpha]), rgba)
    rgb = rgba[..., :3].copy()
    assert split_alpha(rgb)[0] is rgb and split_alpha(rgb)[1] is None


def test_to_rgb_float_scales_and_replicates(rng):
    rgb = smooth_image(rng, 17, 23, 3)
    out = to_rgb_float(rgb)
    assert out.dtype == np.float32 and out.shape == (17, 23, 3)
    np.testing.assert_array_equal(out, rgb.astype(np.float32) / np.float32(255))
    assert out.min() >= 0 and out.max() <= 1
    gray16 = smooth_image(rng, 17, 23, 1, np.uint16)[..., 0]
    out16 = to_rgb_float(gray16)
    assert out16.shape == (17, 23, 3)
    for c in range(3):
        np.testing.assert_array_equal(out16[..., c], gray16.astype(np.float32) / np.float32(65535))
    with pytest.raises(ValueError, match="split alpha"):
        to_rgb_float(smooth_image(rng, 17, 23, 4))
    with pytest.raises(ValueError, match="uint8 or uint16"):
        to_rgb_float(rgb.astype(np.float32))


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
@pytest.mark.parametrize("gray", [False, True])
def test_float_round_trip_is_exact_for_every_value(dtype, gray):
    top = np.iinfo(dtype).max
    values = np.arange(top + 1, dtype=dtype).reshape(-1, 256)
    pixels = values if gray else np.stack([values, values[::-1], np.roll(values, 7)], axis=-1)
    back = from_rgb_float(to_rgb_float(pixels), like=pixels)
    assert back.dtype == dtype and back.shape == pixels.shape
    np.testing.assert_array_equal(back, pixels)


def test_from_rgb_float_clips_rounds_and_reduces_gray():
    arr = np.array([[[-0.3, 0.4 / 255, 1.7], [0.6 / 255, 2.5 / 255, 254.4 / 255]]], np.float32)
    np.testing.assert_array_equal(from_rgb_float(arr, like=np.zeros((1, 1, 3), np.uint8)),
                                  [[[0, 0, 255], [1, 2, 254]]])  # 2.5 rounds half to even
    gray = from_rgb_float(np.array([[[0.1, 0.2, 0.9]]], np.float32), like=np.zeros((5, 5), np.uint16))
    assert gray.shape == (1, 1) and gray.dtype == np.uint16
    assert gray[0, 0] == round(0.4 * 65535)


def test_from_rgb_float_refuses_nan_and_bad_layouts():
    like = np.zeros((2, 2, 3), np.uint8)
    with pytest.raises(ValueError, match="NaN"):
        from_rgb_float(np.full((2, 2, 3), np.nan, np.float32), like=like)
    with pytest.raises(ValueError, match="H×W×3"):
        from_rgb_float(np.zeros((2, 2), np.float32), like=like)
    with pytest.raises(ValueError, match="split_alpha"):
        from_rgb_float(np.zeros((2, 2, 3), np.float32), like=np.zeros((2, 2, 4), np.uint8))


def test_to_uint8_rounds_every_16bit_value_to_nearest():
    values = np.arange(65536, dtype=np.uint16)
    expected = np.floor(values / 257 + 0.5).astype(np.uint8)  # 257 is odd: no exact halves
    np.testing.assert_array_equal(to_uint8(values), expected)
    eight = np.arange(256, dtype=np.uint8)
    assert to_uint8(eight) is eight
    np.testing.assert_array_equal(to_uint8(eight.astype(np.uint16) * 257), eight)
    with pytest.raises(ValueError):
        to_uint8(values.astype(np.float32))
