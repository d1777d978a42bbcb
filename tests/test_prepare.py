"""srpipe prepare: alignment, colour rules, skipping, no-op re-runs, settings guard, resume, CLI."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
from click.testing import CliRunner
from conftest import smooth_image

from srpipe import render
from srpipe.cli import cli
from srpipe.config import PrepareConfig
from srpipe.data import store as st
from srpipe.data import work
from srpipe.data.sources import find_inputs, split_holdout
from srpipe.errors import ConfigError, InputError, OutputError, StoreError
from srpipe.imaging.io import read_image, write_image
from srpipe.imaging.resize import imresize, modcrop
from srpipe.prepare import prepare

CFG = PrepareConfig(scales=(2, 3), hr_size=24, stride=12, patch_size=4, valid_count=1, workers=1)
SIZES = {"a.png": (50, 61), "b.png": (37, 45), "sub/c.png": (30, 29), "d.png": (73, 48)}


def make_inputs(root: Path, rng: np.random.Generator) -> Path:
    (root / "sub").mkdir(parents=True)
    for rel, (h, w) in SIZES.items():
        write_image(root / rel, smooth_image(rng, h, w))
    write_image(root / "gray.png", smooth_image(rng, 40, 26, 1)[..., 0])
    write_image(root / "rgba.png", smooth_image(rng, 26, 31, 4))
    write_image(root / "deep.png", smooth_image(rng, 27, 33, 3, np.uint16))
    write_image(root / "small.png", smooth_image(rng, 20, 23))
    (root / "corrupt.png").write_bytes((root / "a.png").read_bytes()[:200])
    (root / "notes.txt").write_text("not an image")
    return root


@pytest.fixture
def inputs(tmp_path: Path, rng: np.random.Generator) -> Path:
    return make_inputs(tmp_path / "in", rng)


def expected_rgb8(path: Path) -> np.ndarray:
    """The documented colour rule, written out independently of srpipe's code."""
    px = read_image(path, max_pixels=10**8).pixels
    if px.dtype == np.uint16:
        px = np.floor(px.astype(np.float64) / 257 + 0.5).astype(np.uint8)
    if px.ndim == 2:
        px = np.repeat(px[..., None], 3, axis=2)
    return np.ascontiguousarray(px[..., :3])


def test_patches_are_exact_aligned_crops_of_whole_image_lr(inputs: Path, tmp_path: Path) -> None:
    summary = prepare(inputs, tmp_path / "out", CFG)
    train = tmp_path / "out" / "train.h5"
    with h5py.File(train, "r") as f:
        sources = f["sources/path"].asstr()[()].tolist()
        assert f["hr"].shape[1:] == (24, 24, 3) and f["lr_x3"].shape[1:] == (8, 8, 3)
        for k in range(f["hr"].shape[0]):
            src = sources[f["patch_source"][k]]
            y0, x0, y1, x1 = f["patch_box"][k].tolist()
            assert y0 % 6 == 0 and x0 % 6 == 0 and (y1 - y0, x1 - x0) == (24, 24)
            img = expected_rgb8(inputs / src)
            np.testing.assert_array_equal(f["hr"][k], img[y0:y1, x0:x1])
            for s in (2, 3):
                whole = imresize(modcrop(img, s), 1 / s)
                np.testing.assert_array_equal(f[f"lr_x{s}"][k], whole[y0 // s : y1 // s, x0 // s : x1 // s])
        digest = dict(zip(sources, f["sources/sha256"][()].astype(str), strict=True))
        assert digest["a.png"] == hashlib.sha256((inputs / "a.png").read_bytes()).hexdigest()
        assert f.attrs["boundary"] == "mirror" and f.attrs["kernel"] == "matlab-bicubic-a-0.5-antialias"
    # a.png 50x61 -> cropped to 48x60 -> rows 0,12,24 x cols 0,12,24,36 = 12 sub-images, flush to the edge
    boxes = {tuple(b) for b, s in zip(*_boxes(train), strict=True) if sources[s] == "a.png"}
    assert len(boxes) == 12 and (24, 36, 48, 60) in boxes
    valid_names = st.read_table(summary.splits[1].path, "sources")["path"].tolist()
    assert {"gray.png", "rgba.png", "deep.png"} <= set(sources) | set(valid_names)  # colour rules covered


def _boxes(train: Path) -> tuple[np.ndarray, np.ndarray]:
    with h5py.File(train, "r") as f:
        return f["patch_box"][()], f["patch_source"][()]


def test_summary_lists_skips_and_validation_is_whole(inputs: Path, tmp_path: Path) -> None:
    summary = prepare(inputs, tmp_path / "out", CFG)
    train, valid = summary.splits
    reasons = {rel: (kind, reason) for rel, kind, reason in train.skipped + valid.skipped}
    assert reasons["small.png"] == ("too-small", "smaller than hr_size 24 (23×20 px)")
    assert reasons["corrupt.png"][0] == "unreadable" and "notes.txt" not in reasons
    assert summary.failed == 1 and train.status == "written" and train.patches > 0
    assert train.images + valid.images + len(reasons) == 9
    (name,) = st.read_table(valid.path, "sources")["path"]
    img = expected_rgb8(inputs / name)
    with h5py.File(valid.path, "r") as f:
        np.testing.assert_array_equal(f["images/000000/hr"][()], img)
        np.testing.assert_array_equal(f["images/000000/lr_x3"][()], imresize(modcrop(img, 3), 1 / 3))


def test_rerun_is_a_noop_and_other_settings_or_inputs_are_refused(inputs: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    prepare(inputs, out, CFG)
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    again = prepare(inputs, out, CFG)
    assert [s.status for s in again.splits] == ["up to date", "up to date"]
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before
    mismatch = r"train\.h5: was made with other settings \(stride 12 -> 24\).*--force"
    with pytest.raises(StoreError, match=mismatch):
        prepare(inputs, out, PrepareConfig(**{**CFG.__dict__, "stride": 24}))
    # A copy of the folder (new modification times, same bytes) is the same input: still a no-op,
    # skipped files (small.png, corrupt.png) included; a changed byte is another input.
    for path in inputs.iterdir():
        os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    assert [s.status for s in prepare(inputs, out, CFG).splits] == ["up to date", "up to date"]
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before
    used = st.read_table(out / "train.h5", "sources")["path"][0]
    original = (inputs / used).read_bytes()
    data = bytearray(original)
    data[-20] ^= 1  # inside the last IDAT/IEND bytes: size unchanged
    stat = (inputs / used).stat()
    (inputs / used).write_bytes(bytes(data))
    os.utime(inputs / used, ns=(stat.st_atime_ns, stat.st_mtime_ns + 2 * 10**9))
    with pytest.raises(StoreError, match="other input files"):
        prepare(inputs, out, CFG)
    (inputs / used).write_bytes(original)  # restored
    write_image(inputs / "e.png", np.zeros((30, 30, 3), np.uint8))
    with pytest.raises(StoreError, match="other input files"):
        prepare(inputs, out, CFG)
    rebuilt = prepare(inputs, out, CFG, force=True)
    assert rebuilt.splits[0].status == "written"
    assert st.read_table(out / "train.h5", "sources")["path"].tolist().count("e.png") == 1


def test_killed_run_leaves_no_store_and_resumes_to_the_same_result(
    inputs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "out"
    real = work.process_image
    calls = []

    def dying(task: work.Task) -> work.Decoded | work.Skip:
        calls.append(task.rel)
        if len(calls) == 4:
            raise KeyboardInterrupt  # as if the user pressed Ctrl-C during the fourth image
        return real(task)

    monkeypatch.setattr("srpipe.prepare.process_image", dying)
    monkeypatch.setattr("srpipe.prepare.COMMIT_SECONDS", 0.0)  # commit after every input
    with pytest.raises(KeyboardInterrupt):
        prepare(inputs, out, CFG)
    assert not (out / "train.h5").exists() and (out / "train.h5.partial").exists()
    with pytest.raises(StoreError, match="interrupted"):
        st.open_store(out / "train.h5")
    with h5py.File(out / "train.h5.partial", "r") as f:
        assert f.attrs["inputs_done"] == 3 and not f.attrs["complete"]
    again: list[str] = []
    monkeypatch.setattr("srpipe.prepare.process_image", lambda t: again.append(t.rel) or real(t))
    resumed = prepare(inputs, out, CFG)
    assert resumed.splits[0].status == "resumed"
    assert again[0] == calls[3] and not set(calls[:3]) & set(again)  # restarted at the 4th input
    prepare(inputs, tmp_path / "fresh", CFG)
    with h5py.File(out / "train.h5", "r") as a, h5py.File(tmp_path / "fresh" / "train.h5", "r") as b:
        for name in ("hr", "lr_x2", "lr_x3", "patch_box", "patch_source", "sources/path", "skipped/path"):
            np.testing.assert_array_equal(a[name][()], b[name][()])


_PEEK = """
import shutil, sys
import h5py
from srpipe.data import recovery
shutil.copyfile(sys.argv[1], sys.argv[2])
recovery.clear_open_for_write(sys.argv[2])
with h5py.File(sys.argv[2], "r", locking=False) as f:
    print(int(f.attrs["inputs_done"]))
"""


def _committed(partial: Path, scratch: Path) -> int:
    """``inputs_done`` of a store another process is writing (read from a copy, its flags cleared).

    Read in a child process: a copy taken mid-write can be inconsistent enough to crash HDF5 itself.
    """
    if not partial.exists():
        return 0
    peek = subprocess.run([sys.executable, "-c", _PEEK, str(partial), str(scratch)], capture_output=True,
                          text=True, check=False)
    return int(peek.stdout) if peek.returncode == 0 and peek.stdout.strip() else 0


def _alive_in_group(pgid: int) -> list[str]:
    """Processes (not zombies) of process group ``pgid``, as ``"pid comm"``."""
    alive = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        comm, fields = text[text.index("(") + 1 : text.rindex(")")], text[text.rindex(")") + 2 :].split()
        if int(fields[2]) == pgid and fields[0] != "Z":
            alive.append(f"{stat.parent.name} {comm}")
    return alive


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")
def test_sigkill_mid_run_resumes_from_the_last_commit_and_leaves_no_process(
    tmp_path: Path, rng: np.random.Generator, caplog: pytest.LogCaptureFixture
) -> None:
    root = tmp_path / "in"
    root.mkdir()
    write_image(root / "im000.jpg", smooth_image(rng, 2048, 2048), quality=80)
    for i in range(1, 80):  # ~35 ms of decoding and resizing each; links cost no disk
        os.link(root / "im000.jpg", root / f"im{i:03d}.jpg")
    cfg = PrepareConfig(scales=(2, 3), hr_size=48, stride=480, patch_size=4, valid_count=1, workers=2)
    out = tmp_path / "out"
    sets = [f"scales={list(cfg.scales)}", f"hr_size={cfg.hr_size}", f"stride={cfg.stride}",
            f"patch_size={cfg.patch_size}", f"valid_count={cfg.valid_count}", f"workers={cfg.workers}"]
    cmd = [sys.executable, "-m", "srpipe.cli", "--workspace", str(tmp_path / "ws"), "prepare", str(root),
           "--out", str(out), *(a for s in sets for a in ("--set", s)), "--json"]
    quiet = subprocess.DEVNULL
    run = subprocess.Popen(cmd, stdin=quiet, stdout=quiet, stderr=quiet, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while _committed(out / "train.h5.partial", tmp_path / "peek.h5") < 1:
            assert run.poll() is None, "prepare finished before its first commit could be seen"
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert run.poll() is None, "prepare finished before it could be killed"
        os.kill(run.pid, signal.SIGKILL)
        run.wait()
        deadline = time.monotonic() + 10
        while (alive := _alive_in_group(run.pid)) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not alive, f"processes of the killed run survive: {alive}"
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
        for line in _alive_in_group(run.pid):
            os.kill(int(line.split()[0]), signal.SIGKILL)
    assert not (out / "train.h5").exists()
    with caplog.at_level(logging.INFO, logger="srpipe"):
        resumed = prepare(root, out, PrepareConfig(**{**cfg.__dict__, "workers": 1}))
    assert resumed.splits[0].status == "resumed"
    assert "resuming after" in caplog.text and "starting over" not in caplog.text
    prepare(root, tmp_path / "fresh", PrepareConfig(**{**cfg.__dict__, "workers": 1}))
    with h5py.File(out / "train.h5", "r") as a, h5py.File(tmp_path / "fresh" / "train.h5", "r") as b:
        for name in ("hr", "lr_x2", "lr_x3", "patch_box", "patch_source", "sources/path", "sources/sha256"):
            np.testing.assert_array_equal(a[name][()], b[name][()])


def test_pool_gives_the_same_store_as_one_process(inputs: Path, tmp_path: Path) -> None:
    prepare(inputs, tmp_path / "one", CFG)
    prepare(inputs, tmp_path / "two", PrepareConfig(**{**CFG.__dict__, "workers": 2}))
    one, two = tmp_path / "one" / "train.h5", tmp_path / "two" / "train.h5"
    with h5py.File(one, "r") as a, h5py.File(two, "r") as b:
        assert a.attrs["settings_hash"] == b.attrs["settings_hash"]
        for name in ("hr", "lr_x2", "lr_x3", "patch_box"):
            np.testing.assert_array_equal(a[name][()], b[name][()])


def test_div2k_layout_compares_official_lr(tmp_path: Path, rng: np.random.Generator,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "div2k"
    for split, names in (("train", ["0001", "0002"]), ("valid", ["0801"])):
        (root / f"DIV2K_{split}_HR").mkdir(parents=True)
        for name in names:
            hr = smooth_image(rng, 48, 60)
            write_image(root / f"DIV2K_{split}_HR" / f"{name}.png", hr)
            for s in (2, 3):
                lr = imresize(modcrop(hr, s), 1 / s)
                if (split, name, s) == ("train", "0002", 3):
                    lr = lr.copy()
                    lr[0, :3, 0] += 5  # a tampered official file: 3 pixels off by 5
                (root / f"DIV2K_{split}_LR_bicubic" / f"X{s}").mkdir(parents=True, exist_ok=True)
                write_image(root / f"DIV2K_{split}_LR_bicubic" / f"X{s}" / f"{name}x{s}.png", lr)
    summary = prepare(root, tmp_path / "out", CFG)
    assert summary.layout == "div2k"
    train, valid = summary.splits
    x2, x3 = train.official
    assert (x2.images, x2.max_abs, x2.differing) == (2, 0, 0)
    assert (x3.images, x3.max_abs, x3.differing, x3.pixels) == (2, 5, 3, 2 * 16 * 20)
    assert [o.max_abs for o in valid.official] == [0, 0] and valid.images == 1
    render.print_prepare(summary)
    assert "official LR x3 (train): 2 images, max |Δ| 5" in capsys.readouterr().out


def test_bad_inputs_and_outputs_are_clear_errors(tmp_path: Path, inputs: Path) -> None:
    with pytest.raises(InputError, match="does not exist"):
        prepare(tmp_path / "nope", tmp_path / "out", CFG)
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("x")
    with pytest.raises(InputError, match="no images found"):
        prepare(tmp_path / "empty", tmp_path / "out", CFG)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(OutputError, match="cannot write stores there"):
        prepare(inputs, blocker / "out", CFG)
    with pytest.raises(ConfigError, match="multiple of 6"):
        prepare(inputs, tmp_path / "out", PrepareConfig(**{**CFG.__dict__, "hr_size": 28}))
    with pytest.raises(InputError, match="would leave none for training"):
        prepare(inputs, tmp_path / "out", PrepareConfig(**{**CFG.__dict__, "valid_count": 9}))


def test_split_is_deterministic_and_seeded() -> None:
    rels = [f"img{i:03d}.png" for i in range(50)]
    train, valid = split_holdout(rels, 5, seed=0)
    assert split_holdout(list(reversed(rels)), 5, seed=0) == (train, valid)
    assert len(valid) == 5 and sorted(train + valid) == rels
    assert split_holdout(rels, 5, seed=1)[1] != valid


def test_folder_split_ignores_non_images(inputs: Path) -> None:
    found = find_inputs(inputs, scales=(2, 3), valid_count=2)
    rels = [s.rel for s in found.train + found.valid]
    assert len(found.valid) == 2 and "notes.txt" not in rels and "sub/c.png" in rels


def test_cli_prepare_exit_codes_and_json(tmp_path: Path, inputs: Path) -> None:
    runner = CliRunner()
    args = ["prepare", "--set", "scales=[2,3]", "--set", "hr_size=24", "--set", "stride=12",
            "--set", "patch_size=4", "--set", "valid_count=1", "--set", "workers=1"]
    result = runner.invoke(cli, ["--workspace", str(tmp_path / "ws"), *args, str(inputs), "--json"])
    assert result.exit_code == 1, result.output  # corrupt.png could not be read
    payload = json.loads(result.stdout)
    assert payload["failed"] == 1 and payload["splits"][0]["path"].endswith("ws/stores/train.h5")
    (inputs / "corrupt.png").unlink()
    good = tmp_path / "good"
    shutil.copytree(inputs, good)
    result = runner.invoke(cli, [*args, str(good), "--out", str(tmp_path / "o")])
    assert result.exit_code == 0, result.output
    assert "train.h5" in result.stdout and "written" in result.stdout
    assert "small.png: smaller than hr_size 24" in result.stdout
    result = runner.invoke(cli, [*args[:-2], "--set", "stride=24", str(good), "--out", str(tmp_path / "o")])
    assert result.exit_code == 1 and "other settings" in result.output
    result = runner.invoke(cli, ["prepare", str(tmp_path / "missing")])
    assert result.exit_code == 2 and "does not exist" in result.output
    too_big = [*args[:3], "--set", "hr_size=600", "--set", "stride=300", *args[7:]]
    result = runner.invoke(cli, [*too_big, str(good), "--out", str(tmp_path / "big")])
    assert result.exit_code == 1 and "every training image was skipped" in result.stdout
    assert "--set hr_size=240 --set stride=120" in result.stdout  # options that exist (the hint is run below)
    result = runner.invoke(cli, [*args[:3], "--set", "hr_size=240", "--set", "stride=120", *args[7:],
                                 str(good), "--out", str(tmp_path / "hint")])
    assert "No such option" not in result.output and "hr_size 240" in result.stdout


@pytest.mark.shared
def test_set5_as_div2k_matches_official_lr_exactly(shared_dir: Path, tmp_path: Path) -> None:
    set5 = shared_dir / "data" / "benchmarks" / "Set5"
    root = tmp_path / "div2k"
    for split, names in (("train", ["baby", "bird", "butterfly", "head"]), ("valid", ["woman"])):
        (root / f"DIV2K_{split}_HR").mkdir(parents=True)
        for name in names:
            (root / f"DIV2K_{split}_HR" / f"{name}.png").symlink_to(set5 / "HR" / f"{name}.png")
            for s in (2, 3, 4):
                folder = root / f"DIV2K_{split}_LR_bicubic" / f"X{s}"
                folder.mkdir(parents=True, exist_ok=True)
                (folder / f"{name}x{s}.png").symlink_to(set5 / "LR_bicubic" / f"X{s}" / f"{name}x{s}.png")
    cfg = PrepareConfig(hr_size=96, stride=96, patch_size=24, workers=2)
    summary = prepare(root, tmp_path / "out", cfg)
    for split in summary.splits:
        assert [(o.scale, o.max_abs, o.differing, o.shape_mismatch) for o in split.official] == [
            (2, 0, 0, 0), (3, 0, 0, 0), (4, 0, 0, 0)]
    assert summary.splits[0].images == 4 and summary.splits[0].patches > 4


def test_an_unreadable_subfolder_is_an_error_not_a_smaller_store(tmp_path: Path, inputs: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    real = os.scandir

    def scandir(path: Any = ".") -> Any:  # what chmod 000 does to a non-root user (tests run as root)
        if os.fspath(path) == str(inputs / "sub"):
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real(path)

    monkeypatch.setattr(os, "scandir", scandir)
    result = CliRunner().invoke(cli, ["prepare", str(inputs), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2
    assert f"{inputs / 'sub'}: cannot list the folder: Permission denied" in result.output
    assert not (tmp_path / "out").exists()


def test_max_pixels_option_skips_larger_images_with_the_options_name(tmp_path: Path, inputs: Path) -> None:
    args = ["prepare", "--set", "scales=[2,3]", "--set", "hr_size=24", "--set", "stride=12", "--set",
            "patch_size=4", "--set", "valid_count=1", "--set", "workers=1", "--max-pixels", "2000", "--json"]
    result = CliRunner().invoke(cli, [*args, str(inputs), "--out", str(tmp_path / "out")])
    splits = json.loads(result.stdout)["splits"]
    skipped = {rel: reason for split in splits for rel, _, reason in split["skipped"]}
    assert skipped["d.png"] == ("48×73 = 3,504 pixels is over the limit of 2,000 (a guard against "
                                "decompression bombs); pass --max-pixels 3504 if you trust this file")
