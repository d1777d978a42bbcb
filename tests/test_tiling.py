"""Tile planner, blending windows, receptive-field measurement, and the tiled-vs-whole requirement."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
from conftest import smooth_image
from tiny_onnx import tiny_model

from srpipe.config import ProcessConfig
from srpipe.infer import receptive
from srpipe.infer.tiling import Blender, axis_window, plan_axis, plan_tiles

SWEEP = [(n, t, o) for n, t, o in itertools.product((1, 17, 64, 200, 481, 1000), (0, 16, 48, 192),
                                                    (0, 3, 8, 24)) if 2 * o <= t or t == 0]


@pytest.mark.parametrize(("length", "tile", "overlap"), SWEEP)
def test_plan_axis_covers_evenly_with_at_least_the_overlap(length: int, tile: int, overlap: int) -> None:
    axis = plan_axis(length, tile, overlap)
    starts = np.array(axis.starts)
    assert starts[0] == 0 and starts[-1] + axis.size == length  # covers the axis exactly
    assert axis.size <= tile if 0 < tile < length else axis.size == length
    if len(starts) > 1:
        overlaps = starts[:-1] + axis.size - starts[1:]
        assert overlaps.min() >= overlap
        weights = np.zeros(length * 2)
        for i, start in enumerate(axis.starts):
            weights[start * 2:(start + axis.size) * 2] += axis_window(axis, i, 2)
        assert weights.min() > 0.5  # every output pixel keeps real weight
        assert np.ptp(np.diff(starts)) <= 1  # evenly spread
        m = len(starts) - 1  # one tile fewer, even at full size, could not keep the overlap
        assert m * tile - (m - 1) * overlap < length


def test_even_tiles_avoid_a_wasteful_last_tile() -> None:
    axis = plan_axis(200, 192, 16)
    assert (axis.size, axis.starts) == (108, (0, 92))
    assert plan_tiles(200, 200, tile=192, overlap=16).extra_compute == pytest.approx((216 / 200) ** 2 - 1)
    assert plan_tiles(50, 70, tile=0, overlap=16).extra_compute == 0.0


def test_overlap_larger_than_half_the_tile_is_refused() -> None:
    with pytest.raises(ValueError, match="half the tile"):
        plan_axis(500, 32, 17)


@pytest.mark.parametrize(("h", "w", "tile", "overlap", "scale"),
                         [(23, 17, 8, 3, 2), (61, 47, 16, 5, 3), (100, 33, 24, 12, 4), (9, 40, 12, 6, 1)])
def test_windows_sum_to_one_and_blender_is_exact(h: int, w: int, tile: int, overlap: int, scale: int,
                                                 rng: np.random.Generator) -> None:
    plan = plan_tiles(h, w, tile=tile, overlap=overlap)
    total = np.zeros((h * scale, w * scale))
    for t in plan.tiles:
        win = axis_window(plan.rows, t.row, scale)[:, None] * axis_window(plan.cols, t.col, scale)[None, :]
        total[t.y0 * scale:(t.y0 + t.h) * scale, t.x0 * scale:(t.x0 + t.w) * scale] += win
    np.testing.assert_allclose(total, 1.0, atol=1e-6)  # a partition of unity: blending never dims

    truth = rng.random((h * scale, w * scale, 6)).astype(np.float32)
    out = np.full_like(truth, np.nan)
    emitted: list[tuple[int, int]] = []

    def emit(row0: int, rows: np.ndarray) -> None:
        emitted.append((row0, rows.shape[0]))
        out[row0:row0 + rows.shape[0]] = rows

    blender = Blender(plan, scale, 6, emit)
    for t in plan.tiles:  # each tile "predicts" its crop of the truth exactly
        blender.add(t, truth[t.y0 * scale:(t.y0 + t.h) * scale, t.x0 * scale:(t.x0 + t.w) * scale])
    blender.finish()
    np.testing.assert_allclose(out, truth, rtol=1e-5, atol=1e-6)
    rows = [r for r0, n in emitted for r in range(r0, r0 + n)]
    assert rows == list(range(h * scale))  # every HR row once, in order
    if len(plan.rows.starts) > 1:
        assert len(emitted) > 1  # finished bands left early: the accumulator is not the whole image


def test_blender_rejects_out_of_order_tiles() -> None:
    plan = plan_tiles(40, 40, tile=16, overlap=4)
    blender = Blender(plan, 2, 3, lambda r, a: None)
    tiles = plan.tiles
    size = plan.tile_shape[0] * 2
    cols = len(plan.cols.starts)
    for t in tiles[:cols + 1]:  # all of row 0, then the first tile of row 1
        blender.add(t, np.zeros((size, size, 3), np.float32))
    with pytest.raises(ValueError, match="row-major"):
        blender.add(tiles[0], np.zeros((size, size, 3), np.float32))


def box_blur_model(radius: int, scale: int):
    """A stand-in network with a known receptive radius: zero-padded box blur, then nearest upscale."""
    def forward(x: np.ndarray) -> np.ndarray:
        h, w = x.shape[2:]
        pad = np.pad(x, ((0, 0), (0, 0), (radius, radius), (radius, radius)))
        k = 2 * radius + 1
        acc = sum(pad[:, :, dy:dy + h, dx:dx + w] for dy in range(k) for dx in range(k))
        return np.repeat(np.repeat(acc / (2 * radius + 1) ** 2, scale, axis=2), scale, axis=3)
    return forward


def test_receptive_measurement_finds_a_known_radius() -> None:
    rf = receptive.measure(box_blur_model(3, 2), scale=2, theoretical=6)
    p = np.array(rf.profile)
    assert p[0] > 10 and np.all(p[3:] < 1e-4)  # the blur sees exactly 3 px: nothing changes beyond
    assert 1 <= rf.effective <= 3
    assert rf.overlap >= rf.effective and rf.predicted_error <= receptive.THRESHOLD_CODES / 2


def test_blended_error_and_effective_radius_follow_the_profile() -> None:
    profile = np.array([40.0, 10.0, 2.0, 0.6, 0.3, 0.1, 0.0])
    assert receptive.effective_radius(profile) == 4
    assert receptive.effective_radius(np.zeros(5)) == 0
    assert receptive.blended_error(profile, 0, 2) == 40.0
    errors = [receptive.blended_error(profile, o, 2) for o in range(1, 16)]
    assert errors[-1] < 0.05 and errors[0] > 1  # more overlap, less error
    overlap, err = receptive.recommend_overlap(profile, 2)
    assert err <= 0.25 and receptive.blended_error(profile, overlap - 1, 2) > 0.25


# ---- the requirement: default tiling versus whole-image inference --------------------------------


@pytest.fixture(scope="session")
def wide_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """4 blocks × 16 features: a receptive field wide enough (theoretical 12 LR px) to test tiling."""
    return tiny_model(tmp_path_factory, scale=2, n_resblocks=4, n_feats=16)


def _compare_tiled_with_whole(model: Path, images: list[np.ndarray]) -> tuple[float, int, float]:
    from srpipe.infer.upscaler import TiledUpscaler

    whole = TiledUpscaler.open(model, device="cpu", tile=0)
    tiled = TiledUpscaler.open(model, device="cpu", tile=ProcessConfig().tile)  # default tile, overlap
    se, n, worst = 0.0, 0, 0
    for img in images:
        a, b = whole(img).astype(np.int64), tiled(img).astype(np.int64)
        se += float(((a - b) ** 2).sum())
        n += a.size
        worst = max(worst, int(np.abs(a - b).max()))
    psnr = 10 * np.log10(255**2 / (se / n)) if se else float("inf")
    extra = tiled.stats.computed_lr_pixels / tiled.stats.image_lr_pixels - 1
    return psnr, worst, extra


def test_default_tiling_matches_whole_image_on_synthetic_images(wide_model: Path,
                                                                rng: np.random.Generator) -> None:
    images = [smooth_image(rng, 321, 481), smooth_image(rng, 500, 760),  # 2×3 tiles of the default 384
              (receptive.test_card(260, 410, seed=3) * 255).round().astype(np.uint8)]
    psnr, worst, extra = _compare_tiled_with_whole(wide_model, images)
    assert psnr >= 50 and worst <= 2
    assert 0 < extra <= 0.25


@pytest.mark.shared
def test_default_tiling_matches_whole_image_on_real_photos(wide_model: Path, shared_dir: Path) -> None:
    from srpipe.imaging.io import read_image

    files = sorted((shared_dir / "data" / "train" / "BSD200").glob("*.png"))[:3]
    if not files:
        pytest.skip("no BSD200 photos in ../shared")
    psnr, worst, extra = _compare_tiled_with_whole(wide_model, [read_image(f).pixels for f in files])
    assert psnr >= 50 and worst <= 2
    assert 0 < extra <= 0.25
