"""The HDF5 store format: writing, atomic finish, resume/restart of a .partial, and open_store's errors."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import h5py
import numpy as np
import pytest

from srpipe.data import store as st
from srpipe.data.writer import StoreWriter
from srpipe.errors import StoreError

SCALES = (2, 3)
P = 12


def meta(split: str = "train", settings_hash: str = "s" * 64, inputs_hash: str = "i" * 64) -> st.StoreMeta:
    train = split == "train"
    return st.StoreMeta(split=split, scales=SCALES, hr_size=P if train else 0, stride=6 if train else 0,  # type: ignore[arg-type]
                        boundary="mirror", settings='{"x": 1}', settings_hash=settings_hash,
                        inputs_hash=inputs_hash)


def add_image(w: StoreWriter, rng: np.random.Generator, k: int, name: str) -> np.ndarray:
    src = w.add_source(name, "ab" * 32, (30, 40, 3), 8)
    hr = rng.integers(0, 256, (k, P, P, 3), dtype=np.uint8)
    boxes = np.array([[0, 6 * j, P, 6 * j + P] for j in range(k)])
    w.add_patches(src, hr, {s: hr[:, ::s, ::s].copy() for s in SCALES}, boxes)
    return hr


def test_commit_pushes_the_partial_file_to_disk_in_the_background(
    tmp_path: Path, rng: np.random.Generator, monkeypatch: pytest.MonkeyPatch
) -> None:
    final = tmp_path / "train.h5"
    synced: list[int] = []
    started = threading.Event()

    def fake_fdatasync(fd: int) -> None:
        started.wait(5)  # still running while the writer goes on: a second commit must not pile up
        synced.append(os.fstat(fd).st_ino)
        raise OSError(5, "simulated I/O error")  # left to the final fsync; never breaks the run

    monkeypatch.setattr(os, "fdatasync", fake_fdatasync, raising=False)
    w = StoreWriter.open(final, meta())
    add_image(w, rng, 2, "a.png")
    w.commit(1)
    first = w._writeback
    add_image(w, rng, 1, "b.png")
    w.commit(2)  # the first writeback has not finished: no second thread
    assert first is not None and w._writeback is first and first.is_alive()
    inode = st.partial_path(final).stat().st_ino
    started.set()
    assert w.finalize() == final  # joins the writeback before its own fsync and rename
    assert w._writeback is None and not first.is_alive()
    assert synced == [inode]
    assert st.open_store(final).n_patches == 3


def test_chunk_side_divides_and_stays_near_target() -> None:
    assert st.chunk_side(480) == 120
    assert st.chunk_side(240) == 120
    assert st.chunk_side(160) == 80
    assert st.chunk_side(192) == 96
    assert st.chunk_side(24) == 24
    assert st.chunk_side(254) == 120  # 2 x 127: no good divisor, so partial edge chunks


def test_written_store_reads_back_with_attributes(tmp_path: Path, rng: np.random.Generator) -> None:
    final = tmp_path / "train.h5"
    w = StoreWriter.open(final, meta())
    hr = add_image(w, rng, 3, "a.png")
    w.add_skipped("bad.png", "unreadable", "corrupt")
    w.add_official_check(0, 2, 0, 0, 36)
    w.commit(2)
    assert not final.exists() and st.partial_path(final).exists()
    assert w.finalize() == final
    assert final.exists() and not st.partial_path(final).exists()

    info = st.open_store(final, split="train")
    assert (info.scales, info.hr_size, info.n_images, info.n_patches, info.n_skipped) == (SCALES, P, 1, 3, 1)
    assert info.meta == meta()
    with h5py.File(final, "r") as f:
        assert f.attrs["kernel"] == st.KERNEL and f.attrs["complete"]
        np.testing.assert_array_equal(f["hr"][()], hr)
        np.testing.assert_array_equal(f["lr_x3"][()], hr[:, ::3, ::3])
        assert f["hr"].chunks == (1, 12, 12, 3) and f["hr"].dtype == np.uint8
        assert f["patch_box"][2].tolist() == [0, 12, 12, 24]
    assert st.read_table(final, "sources")["path"].tolist() == ["a.png"]
    assert st.read_table(final, "skipped")["reason"].tolist() == ["corrupt"]
    assert st.read_table(final, "official_lr")["rows"].tolist() == [[0, 2, 0, 0, 36]]


def test_partial_is_resumed_after_last_commit_only(tmp_path: Path, rng: np.random.Generator) -> None:
    final = tmp_path / "train.h5"
    w = StoreWriter.open(final, meta())
    first = add_image(w, rng, 2, "a.png")
    w.commit(1)
    add_image(w, rng, 4, "b.png")  # written but never committed: a kill happened here
    w.add_skipped("c.png", "too-small", "small")
    w.close()

    w = StoreWriter.open(final, meta())
    assert w.inputs_done == 1
    assert w.f["hr"].shape[0] == 2 and w.f["sources/path"].shape[0] == 1 and w.f["skipped/path"].shape[0] == 0
    np.testing.assert_array_equal(w.f["hr"][()], first)
    w.commit(1)
    w.finalize()
    assert st.open_store(final).n_patches == 2


def test_partial_from_other_settings_or_garbage_restarts(tmp_path: Path, rng: np.random.Generator) -> None:
    final = tmp_path / "train.h5"
    w = StoreWriter.open(final, meta())
    add_image(w, rng, 2, "a.png")
    w.commit(1)
    w.close()
    w = StoreWriter.open(final, meta(settings_hash="t" * 64))
    assert w.inputs_done == 0 and w.f["hr"].shape[0] == 0
    w.close()
    st.partial_path(final).write_bytes(b"not hdf5 at all")
    w = StoreWriter.open(final, meta())
    assert w.inputs_done == 0
    w.close()


def test_valid_store_keeps_whole_images(tmp_path: Path, rng: np.random.Generator) -> None:
    final = tmp_path / "valid.h5"
    w = StoreWriter.open(final, meta("valid"))
    hr = rng.integers(0, 256, (13, 17, 3), dtype=np.uint8)
    src = w.add_source("v.png", "cd" * 32, (13, 17, 3), 8)
    w.add_whole(src, hr, {2: hr[:12:2, :16:2], 3: hr[:12:3, :15:3]})
    w.commit(1)
    w.finalize()
    info = st.open_store(final, split="valid")
    assert (info.n_images, info.n_patches, info.hr_size) == (1, 0, 0)
    with h5py.File(final, "r") as f:
        assert f["images/000000/hr"].shape == (13, 17, 3)
        assert f["images/000000/lr_x3"].shape == (4, 5, 3)


def test_open_store_errors_name_the_file_and_the_fix(tmp_path: Path, rng: np.random.Generator) -> None:
    missing = tmp_path / "train.h5"
    with pytest.raises(StoreError, match=r"train\.h5: no such store.*srpipe prepare"):
        st.open_store(missing)
    w = StoreWriter.open(missing, meta())
    w.close()
    with pytest.raises(StoreError, match=r"train\.h5\.partial exists: a prepare was interrupted"):
        st.open_store(missing)
    with pytest.raises(StoreError, match="incomplete"):
        st.open_store(st.partial_path(missing))
    with pytest.raises(StoreError, match="is a folder"):
        st.open_store(tmp_path)
    text = tmp_path / "notes.h5"
    text.write_text("hello")
    with pytest.raises(StoreError, match=r"notes\.h5: cannot read as HDF5"):
        st.open_store(text)
    foreign = tmp_path / "foreign.h5"
    with h5py.File(foreign, "w") as f:
        f["x"] = 1
    with pytest.raises(StoreError, match="not an srpipe patch store"):
        st.open_store(foreign)
    valid = tmp_path / "valid.h5"
    w = StoreWriter.open(valid, meta("valid"))
    w.commit(0)
    w.finalize()
    with pytest.raises(StoreError, match="is a valid store, expected a train store"):
        st.open_store(valid, split="train")
    with h5py.File(valid, "r+") as f:
        f.attrs["format_version"] = st.FORMAT_VERSION + 1
    with pytest.raises(StoreError, match="newer than this srpipe"):
        st.open_store(valid)


def test_lookup3_matches_the_reference_vectors() -> None:
    """The superblock checksum of a killed writer's store (``data.recovery``): lookup3.c's own checks."""
    from srpipe.data.recovery import lookup3

    assert lookup3(b"") == 0xDEADBEEF
    assert lookup3(b"Four score and seven years ago") == 0x17770551
    assert lookup3(b"Four score and seven years ago", 1) == 0xCD628161
    assert lookup3(b"\0" * 12) != lookup3(b"\0" * 13)  # a full last block vs one padded with zeros
