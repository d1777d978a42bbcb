"""PatchDataset / ValidationSet: aligned crops, augmentation, determinism across workers, clear errors."""

from __future__ import annotations

import pickle
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from conftest import smooth_image

from srpipe.config import PrepareConfig
from srpipe.data.dataset import PatchDataset, PatchLoader, ValidationSet, transform_into
from srpipe.errors import StoreError
from srpipe.imaging.io import write_image
from srpipe.imaging.resize import imresize, modcrop
from srpipe.prepare import prepare


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rng = np.random.default_rng(7)
    root = tmp_path_factory.mktemp("in")
    for i, (h, w) in enumerate([(70, 83), (61, 64), (96, 77), (53, 71)]):
        write_image(root / f"img{i}.png", smooth_image(rng, h, w))
    out = root.parent / "stores"
    cfg = PrepareConfig(scales=(2, 4), hr_size=48, stride=24, patch_size=8, valid_count=1, workers=1)
    prepare(root, out, cfg)
    return out


def _transform(a: np.ndarray, code: int) -> np.ndarray:
    """Reference for transform_into, in plain numpy views."""
    if code & 1:
        a = a[:, ::-1]
    if code & 2:
        a = a[::-1]
    return a.transpose(1, 0, 2) if code & 4 else a


def test_transform_into_matches_numpy_reference(rng: np.random.Generator) -> None:
    src = rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)
    outs = set()
    for code in range(8):
        want = _transform(src, code)
        dst = np.zeros((2, *want.shape), np.uint8)
        transform_into(src, code, dst[1])
        np.testing.assert_array_equal(dst[1], want)
        assert not dst[0].any()
        outs.add(dst[1].tobytes())
    assert len(outs) == 8  # eight distinct variants (the dihedral group of the square)


def test_items_are_aligned_crops_with_one_transform(stores: Path) -> None:
    ds = PatchDataset(stores / "train.h5", scale=4, patch_size=8, seed=3)
    codes = set()
    with h5py.File(stores / "train.h5", "r") as f:
        for i in range(len(ds)):
            k, y, x, code = ds.draw(i)
            codes.add(code)
            lr, hr = ds[i]
            assert lr.shape == (3, 8, 8) and hr.shape == (3, 32, 32) and lr.dtype == hr.dtype == torch.float32
            assert float(hr.min()) >= 0.0 and float(hr.max()) <= 1.0
            want_lr = _transform(f["lr_x4"][k, y : y + 8, x : x + 8], code)
            want_hr = _transform(f["hr"][k, 4 * y : 4 * y + 32, 4 * x : 4 * x + 32], code)
            np.testing.assert_array_equal((lr.permute(1, 2, 0).numpy() * 255).round(), want_lr)
            np.testing.assert_array_equal((hr.permute(1, 2, 0).numpy() * 255).round(), want_hr)
    assert len(codes) > 4  # the 8 flip/rot90 variants are all in use


def test_augmented_pairs_stay_aligned(stores: Path) -> None:
    """Downscaling the HR crop must reproduce its LR crop far better than a 1-px shifted LR would."""
    ds = PatchDataset(stores / "train.h5", scale=2, patch_size=16, seed=1, length=40)
    errors, shifted = [], []
    for i in range(len(ds)):
        lr, hr = (t.permute(1, 2, 0).numpy() for t in ds[i])
        down = imresize(hr.astype(np.float64), 0.5)[3:-3, 3:-3]  # the interior: no border effects
        errors.append(np.abs(down - lr[3:-3, 3:-3]).mean())
        shifted.append(np.abs(down - lr[4:-2, 3:-3]).mean())
    assert max(errors) < 0.5 / 255 and min(shifted) > 4 * max(errors)


def test_deterministic_for_seed_and_index_whatever_the_workers(stores: Path) -> None:
    ds = PatchDataset(stores / "train.h5", scale=4, patch_size=8, seed=5, length=96)
    ds[0]  # the parent holds an open handle before the workers fork: they must not share it
    batches = {w: list(PatchLoader(ds, batch_size=16, workers=w)) for w in (0, 2)}
    assert len(batches[0]) == 6 == len(PatchLoader(ds, batch_size=16, workers=0))
    for (lr0, hr0), (lr2, hr2) in zip(batches[0], batches[2], strict=True):
        assert torch.equal(lr0, lr2) and torch.equal(hr0, hr2)
    lr, hr = batches[0][1]
    assert lr.shape == (16, 3, 8, 8) and hr.shape == (16, 3, 32, 32) and hr.is_contiguous()
    assert torch.equal(lr[3], ds[19][0]) and torch.equal(hr[3], ds[19][1])
    resumed = next(iter(PatchLoader(ds, batch_size=16, workers=0, start=32)))
    assert torch.equal(resumed[1], batches[0][2][1])
    other = PatchDataset(stores / "train.h5", scale=4, patch_size=8, seed=6, length=96)
    assert not torch.equal(other[0][1], ds[0][1])


def test_loader_batches_equal_stacked_items(stores: Path) -> None:
    ds = PatchDataset(stores / "train.h5", scale=2, patch_size=8)
    lr, hr = next(iter(PatchLoader(ds, batch_size=3, workers=0, indices=[4, 0, 9], channels_last=True)))
    plain_lr, plain_hr = next(iter(torch.utils.data.DataLoader(ds, batch_size=3, sampler=[4, 0, 9])))
    assert torch.equal(lr, plain_lr) and torch.equal(hr, plain_hr)
    assert hr.is_contiguous(memory_format=torch.channels_last)
    assert len(PatchLoader(ds, batch_size=4, workers=0, drop_last=False)) == -(-len(ds) // 4)


def test_reads_while_the_file_is_open_without_locking(stores: Path) -> None:
    """HDF5 refuses a second open with other locking flags; the dataset falls back instead of failing."""
    with h5py.File(stores / "train.h5", "r", locking=False) as f:
        ds = PatchDataset(stores / "train.h5", scale=2, patch_size=8, augment=False)
        _, hr = ds[0]
        k, y, x, _ = ds.draw(0)
        np.testing.assert_array_equal((hr.permute(1, 2, 0).numpy() * 255).round(),
                                      f["hr"][k, 2 * y : 2 * y + 16, 2 * x : 2 * x + 16])


def test_pickled_dataset_reopens_its_file(stores: Path) -> None:
    ds = PatchDataset(stores / "train.h5", scale=2, patch_size=8, augment=False)
    first = ds[2]
    clone = pickle.loads(pickle.dumps(ds))  # what spawn-started workers receive
    assert torch.equal(clone[2][1], first[1])
    assert ds.draw(2)[3] == 0  # augment=False: identity transform


def test_validation_set_whole_images(stores: Path) -> None:
    vs = ValidationSet(stores / "valid.h5", scale=4)
    assert len(vs) == 1
    name, lr, hr = vs[0]
    assert name.startswith("img") and "." not in name
    assert hr.shape[0] % 4 == 0 and hr.shape[1] % 4 == 0
    assert lr.shape == (hr.shape[0] // 4, hr.shape[1] // 4, 3)
    assert lr.dtype == hr.dtype == np.uint8
    np.testing.assert_array_equal(lr, imresize(modcrop(hr, 4), 1 / 4))
    with pytest.raises(IndexError):
        vs[1]


def test_clear_errors(stores: Path, tmp_path: Path) -> None:
    with pytest.raises(StoreError, match=r"missing\.h5: no such store.*srpipe prepare"):
        PatchDataset(tmp_path / "missing.h5", scale=2)
    with pytest.raises(StoreError, match="not x3"):
        PatchDataset(stores / "train.h5", scale=3, patch_size=8)
    with pytest.raises(StoreError, match="does not fit its 48-px sub-images"):
        PatchDataset(stores / "train.h5", scale=4, patch_size=48)
    with pytest.raises(StoreError, match="expected a valid store"):
        ValidationSet(stores / "train.h5", scale=2)
    ds = PatchDataset(stores / "train.h5", scale=2, patch_size=8, length=10)
    with pytest.raises(IndexError):
        ds[10]
