"""[train.degrade]: on-the-fly LR degradations — what each step does, determinism, config checks."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import smooth_image

from srpipe.config import DegradeConfig, PrepareConfig, TrainConfig, load_pipeline
from srpipe.data import degrade as deg
from srpipe.data.dataset import PatchDataset, PatchLoader, ValidationSet
from srpipe.errors import ConfigError
from srpipe.imaging.io import write_image
from srpipe.imaging.resize import imresize
from srpipe.prepare import prepare
from srpipe.train.runtime import check_config

ALL = DegradeConfig(blur=0.5, noise=0.5, jpeg=0.5)


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rng = np.random.default_rng(11)
    root = tmp_path_factory.mktemp("in")
    for i, (h, w) in enumerate([(70, 83), (61, 64), (96, 77)]):
        write_image(root / f"img{i}.png", smooth_image(rng, h, w))
    out = tmp_path_factory.mktemp("degrade-stores")
    prepare(root, out, PrepareConfig(scales=(2,), hr_size=48, stride=24, patch_size=8, valid_count=1,
                                     workers=1))
    return out


def test_jpeg_step_is_an_opencv_round_trip_in_bgr(rng: np.random.Generator) -> None:
    img = smooth_image(rng, 23, 17)
    out = deg.jpeg(img, 40)
    ok, data = cv2.imencode(".jpg", img[..., ::-1].copy(), [cv2.IMWRITE_JPEG_QUALITY, 40])
    assert ok
    np.testing.assert_array_equal(out, cv2.imdecode(data, cv2.IMREAD_COLOR)[..., ::-1])
    assert np.abs(out.astype(int) - img).mean() > 0.5  # quality 40 really changes the pixels
    gray = deg.jpeg(img[..., 0].copy(), 40)
    assert gray.shape == (23, 17)


def test_noise_has_the_drawn_sigma_and_luma_noise_is_shared(rng: np.random.Generator) -> None:
    flat = np.full((200, 300, 3), 128, np.uint8)
    colour = deg.add_noise(flat, 6.0, False, np.random.default_rng(0)).astype(float) - 128
    luma = deg.add_noise(flat, 6.0, True, np.random.default_rng(0)).astype(float) - 128
    assert abs(colour.std() - 6.0) < 0.15 and abs(luma.std() - 6.0) < 0.15
    assert np.array_equal(luma[..., 0], luma[..., 2]) and not np.array_equal(colour[..., 0], colour[..., 2])


def test_blur_replaces_lr_by_the_bicubic_of_the_blurred_hr(rng: np.random.Generator) -> None:
    hr = smooth_image(rng, 32, 24)
    lr = imresize(hr, 1 / 4)
    d = deg.Draw(blur_sigma=1.0, noise_sigma=None, noise_gray=False, jpeg_quality=None)
    out = deg.apply(lr, hr, 4, d, np.random.default_rng(0))
    np.testing.assert_array_equal(out, imresize(deg.gaussian_blur(hr, 1.0), 1 / 4))
    assert not np.array_equal(out, lr)


def test_draws_are_a_pure_function_of_seed_and_item_and_follow_the_probabilities() -> None:
    cfg = DegradeConfig(blur=0.2, noise=0.5, jpeg=0.8, jpeg_quality=(50, 60))
    draws = [deg.draw(cfg, 3, i)[0] for i in range(2000)]
    assert draws[:50] == [deg.draw(cfg, 3, i)[0] for i in range(50)]
    assert draws[:50] != [deg.draw(cfg, 4, i)[0] for i in range(50)]
    share = {k: np.mean([getattr(d, k) is not None for d in draws]) for k in ("blur_sigma", "noise_sigma",
                                                                            "jpeg_quality")}
    assert abs(share["blur_sigma"] - 0.2) < 0.04 and abs(share["noise_sigma"] - 0.5) < 0.04
    assert abs(share["jpeg_quality"] - 0.8) < 0.04
    assert {d.jpeg_quality for d in draws if d.jpeg_quality} == set(range(50, 61))
    assert [deg.draw(cfg, 3, i, deg.VALID_STREAM)[0] for i in range(50)] != draws[:50]


def test_patch_dataset_degrades_lr_only_and_the_same_in_any_loader(stores: Path) -> None:
    clean = PatchDataset(stores / "train.h5", scale=2, patch_size=8, seed=5, length=64)
    dirty = PatchDataset(stores / "train.h5", scale=2, patch_size=8, seed=5, length=64, degrade=ALL)
    idx = list(range(64))
    lr_c, hr_c = clean.read_batch(idx)
    lr_d, hr_d = dirty.read_batch(idx)
    np.testing.assert_array_equal(hr_c, hr_d)  # the target stays clean
    changed = [not np.array_equal(a, b) for a, b in zip(lr_c, lr_d, strict=True)]
    assert 40 < sum(changed) < 64  # 1 - 0.5³ of the items get at least one step
    again = PatchDataset(stores / "train.h5", scale=2, patch_size=8, seed=5, length=64, degrade=ALL)
    np.testing.assert_array_equal(again.read_batch(idx[30:40])[0], lr_d[30:40])  # resume: item-exact
    off = PatchDataset(stores / "train.h5", scale=2, patch_size=8, seed=5, length=64, degrade=DegradeConfig())
    np.testing.assert_array_equal(off.read_batch(idx)[0], lr_c)  # all probabilities 0 = no degradation
    for workers in (0, 2):
        loader = PatchLoader(dirty, batch_size=8, workers=workers)
        lr = np.concatenate([b[0].numpy() for b in loader])
        np.testing.assert_allclose(lr, lr_d.transpose(0, 3, 1, 2) / np.float32(255), rtol=0, atol=1e-7)


def test_validation_images_are_degraded_the_same_at_every_validation(stores: Path) -> None:
    clean = ValidationSet(stores / "valid.h5", scale=2)
    cfg = DegradeConfig(jpeg=1.0, jpeg_quality=(30, 30))
    dirty = ValidationSet(stores / "valid.h5", scale=2, degrade=cfg, seed=2)
    _, lr_c, hr_c = clean[0]
    _, lr_d, hr_d = dirty[0]
    np.testing.assert_array_equal(hr_c, hr_d)
    np.testing.assert_array_equal(lr_d, deg.jpeg(lr_c, 30))
    np.testing.assert_array_equal(dirty[0][1], lr_d)


def test_degrade_table_is_checked_by_key(tmp_path: Path) -> None:
    base = "[train]\niterations = 10\n[train.degrade]\n"
    (tmp_path / "a.toml").write_text(base + "jpeg = 0.5\njpeg_quality = [40, 90]\n")
    assert load_pipeline(tmp_path / "a.toml").train.degrade == DegradeConfig(jpeg=0.5, jpeg_quality=(40, 90))
    (tmp_path / "b.toml").write_text(base + "jpg = 0.5\n")
    with pytest.raises(ConfigError, match=r"b\.toml.*unknown key 'train\.degrade\.jpg'"):
        load_pipeline(tmp_path / "b.toml")
    (tmp_path / "c.toml").write_text(base + "noise = 1.5\n")
    with pytest.raises(ConfigError, match=r"train\.degrade\.noise: must be in \[0, 1\]"):
        load_pipeline(tmp_path / "c.toml")
    (tmp_path / "d.toml").write_text(base + "jpeg_quality = [90, 40]\n")
    with pytest.raises(ConfigError, match=r"train\.degrade\.jpeg_quality"):
        load_pipeline(tmp_path / "d.toml")


def test_degradations_cannot_run_from_device_memory() -> None:
    cfg = TrainConfig(degrade=DegradeConfig(noise=0.5), data_on_device=True)
    with pytest.raises(ConfigError, match=r"data_on_device cannot be combined with \[train\.degrade\]"):
        check_config(cfg, 1)
