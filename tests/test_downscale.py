"""``srpipe downscale`` and ``srpipe.downscale``: files, tree layout, safety, exit codes."""

from __future__ import annotations

import json
import os
from concurrent.futures import Future
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import smooth_image
from PIL import Image as PILImage

from srpipe import downscale as downscale_module
from srpipe.cli import cli
from srpipe.config import DownscaleConfig
from srpipe.downscale import downscale
from srpipe.errors import InputError, OutputError, SrpipeError, UsageError
from srpipe.imaging.resize import imresize, modcrop
from srpipe.parallel import make_pool
from srpipe.progress import Progress


def _save(path: Path, pixels: np.ndarray) -> np.ndarray:
    path.parent.mkdir(parents=True, exist_ok=True)
    PILImage.fromarray(pixels).save(path)
    return pixels


def _load(path: Path) -> np.ndarray:
    with PILImage.open(path) as im:
        return np.asarray(im)


def _tree(root: Path, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """A source tree: images at several depths plus things that must be ignored."""
    images = {
        "top.png": _save(root / "top.png", smooth_image(rng, 23, 17, 3)),
        "a/b/photo.png": _save(root / "a" / "b" / "photo.png", smooth_image(rng, 19, 26, 3)),
        "a/rgba.png": _save(root / "a" / "rgba.png", smooth_image(rng, 20, 21, 4)),
        "gray.png": _save(root / "gray.png", smooth_image(rng, 17, 23, 1)[:, :, 0]),
    }
    _save(root / ".hidden.png", smooth_image(rng, 8, 8, 3))
    _save(root / ".cache" / "x.png", smooth_image(rng, 8, 8, 3))
    (root / "notes.txt").write_text("not an image")
    return images


def _run(*args: str) -> object:
    return CliRunner().invoke(cli, ["downscale", *args], catch_exceptions=False)


def test_tree_is_mirrored_with_modcrop_and_exact_pixels(tmp_path: Path, rng: np.random.Generator) -> None:
    src, dst = tmp_path / "hr", tmp_path / "lr"
    images = _tree(src, rng)
    before = sorted(p.relative_to(src) for p in src.rglob("*"))
    result = _run(str(src), "--scale", "2", "--out", str(dst))
    assert result.exit_code == 0, result.output
    assert "4 written, 0 skipped" in result.output
    written = sorted(str(p.relative_to(dst)) for p in dst.rglob("*") if p.is_file())
    assert written == ["a/b/photo.png", "a/rgba.png", "gray.png", "top.png"]
    for rel, hr in images.items():
        lr = _load(dst / rel)
        assert np.array_equal(lr, imresize(modcrop(hr, 2), 1 / 2)), rel
    assert _load(dst / "top.png").shape == (11, 8, 3)  # 23×17 → modcrop 22×16 → 11×8
    assert _load(dst / "a" / "rgba.png").shape == (10, 10, 4)
    assert sorted(p.relative_to(src) for p in src.rglob("*")) == before  # nothing written into SRC


def test_existing_outputs_are_skipped_unless_overwrite(tmp_path: Path, rng: np.random.Generator) -> None:
    src, dst = tmp_path / "hr", tmp_path / "lr"
    hr = _save(src / "one.png", smooth_image(rng, 24, 18, 3))
    assert _run(str(src), "-s", "3", "-o", str(dst)).exit_code == 0
    (dst / "one.png").write_bytes(b"user's own file")
    again = _run(str(src), "-s", "3", "-o", str(dst))
    assert again.exit_code == 0 and "0 written, 1 skipped" in again.output
    assert (dst / "one.png").read_bytes() == b"user's own file"
    forced = _run(str(src), "-s", "3", "-o", str(dst), "--overwrite")
    assert forced.exit_code == 0 and "1 written" in forced.output
    assert np.array_equal(_load(dst / "one.png"), imresize(hr, 1 / 3))


def test_bad_files_are_reported_and_the_rest_written(tmp_path: Path, rng: np.random.Generator) -> None:
    src, dst = tmp_path / "hr", tmp_path / "lr"
    _save(src / "good.png", smooth_image(rng, 16, 16, 3))
    (src / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n but then nothing")
    _save(src / "tiny.png", smooth_image(rng, 3, 9, 3))
    _save(src / "twin.jpg", smooth_image(rng, 16, 16, 3))
    _save(src / "twin.png", smooth_image(rng, 16, 16, 3))
    result = CliRunner().invoke(cli, ["downscale", str(src), "-s", "4", "-o", str(dst)])
    assert result.exit_code == 1
    assert "3 written" in result.stdout and "2 failed" in result.stdout
    assert f"{src / 'broken.png'}:" in result.stderr
    assert "smaller than the scale 4" in result.stderr
    assert "twin" not in result.stderr  # two sources sharing a stem both get an output (docs/downscale.md)
    assert sorted(p.name for p in dst.iterdir()) == ["good.png", "twin.jpg.png", "twin.png"]
    assert np.array_equal(_load(dst / "twin.png"), imresize(_load(src / "twin.png"), 1 / 4))
    assert np.array_equal(_load(dst / "twin.jpg.png"), imresize(_load(src / "twin.jpg"), 1 / 4))


def test_worker_processes_give_the_same_files_and_report_in_walk_order(
    tmp_path: Path, rng: np.random.Generator, monkeypatch: pytest.MonkeyPatch
) -> None:
    pools: list[int] = []

    def spy(workers: int) -> object:
        pools.append(workers)
        return make_pool(workers)

    monkeypatch.setattr(downscale_module, "make_pool", spy)
    monkeypatch.setattr(downscale_module, "POOL_AFTER_SECONDS", 0.0)  # a pool even for tiny images
    src = tmp_path / "hr"
    for k in range(7):  # more images than in flight at once (2 x workers), so the window refills
        _save(src / f"d{k % 3}" / f"img{k}.png", smooth_image(rng, 19 + k, 23 + 2 * k, 3))
    (src / "d1" / "img3.png").write_bytes(b"not a png")  # an 8th file; fails in a worker
    _save(src / "d0" / "img0.jpg", smooth_image(rng, 16, 16, 3))  # d0/img0.jpg.png beside d0/img0.png
    results = {w: downscale(src, tmp_path / f"lr{w}", DownscaleConfig(scale=3, workers=w))
               for w in (1, 2)}
    one, two = results[1], results[2]
    assert pools == [2]  # workers=1 runs in this process; workers=2 after the first image
    monkeypatch.setattr(downscale_module, "POOL_AFTER_SECONDS", 1.0)
    small = downscale(src, tmp_path / "lr3", DownscaleConfig(scale=3, workers=2))  # ~1 ms an image: no pool
    assert pools == [2] and len(small.written) == 8
    assert [p.relative_to(tmp_path / "lr2") for p in two.written] == \
        [p.relative_to(tmp_path / "lr1") for p in one.written]
    assert len(two.written) == 8 and two.megapixels == pytest.approx(one.megapixels)
    assert [p for p, _ in two.failed] == [p for p, _ in one.failed] == [src / "d1" / "img3.png"]
    assert [r.replace("lr2", "lr1") for _, r in two.failed] == [r for _, r in one.failed]
    for out in one.written:
        assert np.array_equal(_load(out), _load(tmp_path / "lr2" / out.relative_to(tmp_path / "lr1")))


def test_a_dead_worker_stops_the_run_with_a_clear_error_and_complete_outputs(
    tmp_path: Path, rng: np.random.Generator, monkeypatch: pytest.MonkeyPatch
) -> None:
    class DeadPool:  # what ProcessPoolExecutor does once a worker was killed (out of memory)
        def submit(self, fn: object, item: object) -> Future:
            future: Future = Future()
            future.set_exception(BrokenProcessPool("A process in the process pool was terminated"))
            return future

        def shutdown(self, wait: bool = True, cancel_futures: bool = False) -> None:
            pass

    monkeypatch.setattr(downscale_module, "make_pool", lambda workers: DeadPool())
    monkeypatch.setattr(downscale_module, "POOL_AFTER_SECONDS", 0.0)
    for k in range(3):
        _save(tmp_path / "hr" / f"{k}.png", smooth_image(rng, 16, 16, 3))
    with pytest.raises(SrpipeError, match=r"worker process died .* after 1 outputs, which are complete"):
        downscale(tmp_path / "hr", tmp_path / "lr", DownscaleConfig(scale=2, workers=2))
    assert [p.name for p in (tmp_path / "lr").iterdir()] == ["0.png"]  # no partial file left
    assert np.array_equal(_load(tmp_path / "lr" / "0.png"), imresize(_load(tmp_path / "hr" / "0.png"), 1 / 2))
    result = CliRunner().invoke(cli, ["downscale", str(tmp_path / "hr"), "-s", "2",
                                      "-o", str(tmp_path / "lr2"), "-j", "2"])
    assert result.exit_code != 0 and "worker process died" in result.stderr
    assert "Traceback" not in result.stderr


def test_single_file_to_folder_or_png_and_json(tmp_path: Path, rng: np.random.Generator) -> None:
    hr = _save(tmp_path / "in" / "pic.png", smooth_image(rng, 30, 22, 3))
    result = _run(str(tmp_path / "in" / "pic.png"), "-s", "2", "-o", str(tmp_path / "out"), "--json",
                  "--boundary", "replicate")
    payload = json.loads(result.stdout)
    assert result.exit_code == 0 and payload["written"] == [str(tmp_path / "out" / "pic.png")]
    replicate = _load(tmp_path / "out" / "pic.png")
    assert np.array_equal(replicate, imresize(hr, 1 / 2, boundary="replicate"))
    assert _run(str(tmp_path / "in" / "pic.png"), "-s", "2", "-o", str(tmp_path / "x.png")).exit_code == 0
    mirror = _load(tmp_path / "x.png")
    assert not np.array_equal(mirror, replicate)  # the boundary option reaches the resizer


@pytest.mark.parametrize(("setup", "args", "code", "words"), [
    ("tree", ["SRC", "-s", "2", "-o", "SRC/lr"], 1, "is inside the source folder"),
    ("tree", ["SRC/pic.png", "-s", "2", "-o", "SRC"], 1, "that is the source file"),
    ("none", ["SRC", "-s", "2", "-o", "OUT"], 2, "no such file or folder"),
    ("empty", ["SRC", "-s", "2", "-o", "OUT"], 2, "no images found"),
    ("tree", ["SRC", "-s", "1", "-o", "OUT"], 2, "1 is not in the range x>=2"),
])
def test_unusable_arguments_fail_cleanly(tmp_path: Path, rng: np.random.Generator, setup: str,
                                         args: list[str], code: int, words: str) -> None:
    src = tmp_path / "src"
    if setup == "tree":
        _save(src / "pic.png", smooth_image(rng, 12, 12, 3))
    elif setup == "empty":
        (src / "sub").mkdir(parents=True)
        (src / "readme.txt").write_text("x")
    argv = [a.replace("SRC", str(src)).replace("OUT", str(tmp_path / "out")) for a in args]
    result = CliRunner().invoke(cli, ["downscale", *argv])
    assert result.exit_code == code and words in result.output
    assert not (tmp_path / "out").exists() and not (src / "lr").exists()
    if setup == "tree":
        assert sorted(p.name for p in src.iterdir()) == ["pic.png"]


def test_library_result_and_progress(tmp_path: Path, rng: np.random.Generator) -> None:
    _tree(tmp_path / "hr", rng)
    seen: list[Progress] = []
    result = downscale(tmp_path / "hr", tmp_path / "lr", DownscaleConfig(scale=4), progress=seen.append)
    assert result.ok and len(result.written) == 4 and not result.skipped
    assert [p.done for p in seen] == [0, 1, 2, 3, 4] and {p.total for p in seen} == {4}
    assert result.megapixels == pytest.approx((23 * 17 + 19 * 26 + 20 * 21 + 17 * 23) / 1e6)
    with pytest.raises(UsageError):
        downscale(tmp_path / "hr", tmp_path / "lr", DownscaleConfig(scale=1))
    with pytest.raises(UsageError, match=r"downscale\.workers"):
        downscale(tmp_path / "hr", tmp_path / "lr", DownscaleConfig(scale=2, workers=-1))
    with pytest.raises(InputError):
        downscale(tmp_path / "nope", tmp_path / "lr", DownscaleConfig(scale=2))
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputError, match="is a file"):
        downscale(tmp_path / "hr", tmp_path / "file", DownscaleConfig(scale=2))


def test_an_unreadable_subfolder_is_reported_as_failed(tmp_path: Path, rng: np.random.Generator,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    images = _tree(tmp_path / "hr", rng)
    locked = tmp_path / "hr" / "a" / "b"
    real = os.scandir

    def scandir(path: Any = ".") -> Any:  # what chmod 000 does to a non-root user (tests run as root)
        if os.fspath(path) == str(locked):
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real(path)

    monkeypatch.setattr(os, "scandir", scandir)
    result = CliRunner().invoke(cli, ["downscale", str(tmp_path / "hr"), "-s", "2",
                                      "-o", str(tmp_path / "lr"),
                                      "--json", "-j", "1"])
    assert result.exit_code == 1, result.output
    payload = json.loads(result.stdout)
    assert payload["failed"] == [{"path": str(locked), "reason": "cannot list the folder: Permission denied"}]
    assert len(payload["written"]) == len(images) - 1  # a/b/photo.png is the one behind the locked folder


def test_an_unwritable_out_is_refused_before_any_image_is_read(tmp_path: Path, rng: np.random.Generator,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    _tree(tmp_path / "hr", rng)
    (tmp_path / "afile").write_text("x")
    monkeypatch.setattr(downscale_module, "read_image", lambda *a, **kw: pytest.fail("an image was read"))
    for src in (tmp_path / "hr", tmp_path / "hr" / "top.png"):
        with pytest.raises(OutputError, match=r"cannot be created: .*afile is a file"):
            downscale(src, tmp_path / "afile" / "sub", DownscaleConfig(scale=2))
    readonly = tmp_path / "readonly"
    readonly.mkdir()
    real = os.access  # root passes any permission check: deny this one folder as a mode of 555 would
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: (os.fspath(p) != str(readonly)
                                                               and real(p, mode, **kw)))
    result = CliRunner().invoke(cli, ["downscale", str(tmp_path / "hr"), "-s", "2",
                                      "-o", str(readonly / "lr")])
    assert result.exit_code == 1 and "not writable" in result.output and "Traceback" not in result.output
    assert not (readonly / "lr").exists()


def test_max_pixels_option_and_message(tmp_path: Path, rng: np.random.Generator) -> None:
    _save(tmp_path / "hr" / "pic.png", smooth_image(rng, 12, 10, 3))
    result = CliRunner().invoke(cli, ["downscale", str(tmp_path / "hr"), "-s", "2",
                                      "-o", str(tmp_path / "lr"),
                                      "--max-pixels", "100", "--json"])
    assert result.exit_code == 1
    reason = json.loads(result.stdout)["failed"][0]["reason"]
    assert reason == ("10×12 = 120 pixels is over the limit of 100 (a guard against decompression bombs); "
                      "pass --max-pixels 120 if you trust this file")
    result = CliRunner().invoke(cli, ["downscale", str(tmp_path / "hr"), "-s", "2",
                                      "-o", str(tmp_path / "lr"),
                                      "--max-pixels", "120"])
    assert result.exit_code == 0 and (tmp_path / "lr" / "pic.png").is_file()
