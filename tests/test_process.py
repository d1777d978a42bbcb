"""srpipe process end to end: every image kind, robust batches, path safety, collisions, shards."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import smooth_image
from PIL import Image as PILImage
from PIL import ImageCms
from test_imaging_io import IPTC, app13
from test_manifest import assert_consistent
from tiny_onnx import tiny_model

from srpipe import hardware
from srpipe.cli import cli
from srpipe.config import ProcessConfig
from srpipe.imaging.io import read_image, write_image
from srpipe.infer import ovsession
from srpipe.infer.files import parse_shard
from srpipe.process import make_jobs


@pytest.fixture(scope="session")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_model(tmp_path_factory, scale=2)


def run(tmp_path: Path, *args: str) -> tuple[int, dict, str]:
    """``srpipe process ... --json`` in a clean workspace: (exit code, report, stderr)."""
    res = CliRunner().invoke(cli, ["--workspace", str(tmp_path / "ws"), "process", *args, "--json"])
    report = json.loads(res.stdout) if res.stdout.strip().startswith("{") else {}
    return res.exit_code, report, res.stderr


def save(path: Path, pixels: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_image(path, pixels, quality=100)


def make_tree(root: Path, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Every kind of input, odd sizes, plus files that must be ignored or must fail."""
    images = {
        "rgb.png": smooth_image(rng, 23, 17), "gray.png": smooth_image(rng, 19, 21, c=1)[..., 0],
        "sub/rgba.png": smooth_image(rng, 17, 23, c=4),
        "sub/deep/rgb16.png": smooth_image(rng, 15, 13, dtype=np.uint16),
        "gray16.png": smooth_image(rng, 11, 19, c=1, dtype=np.uint16)[..., 0],
        "sub/w.webp": smooth_image(rng, 13, 11), "t.tif": smooth_image(rng, 9, 14),
    }
    for rel, px in images.items():
        save(root / rel, px)
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    exif = PILImage.Exif()
    exif[0x0112] = 6  # stored 20 wide × 12 high, displayed rotated: 12 wide × 20 high
    xmp = (b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
           b'<rdf:Description xmlns:tiff="http://ns.adobe.com/tiff/1.0/" xmlns:xmp="http://ns.adobe.com/xap/1.0/"'
           b' tiff:Orientation="6" xmp:Rating="5"/></rdf:RDF></x:xmpmeta>')
    PILImage.fromarray(smooth_image(rng, 12, 20)).save(
        root / "photo.jpg", exif=exif.tobytes(), icc_profile=icc, xmp=xmp, quality=95, extra=app13(IPTC))
    data = (root / "rgb.png").read_bytes()
    (root / "sub" / "corrupt.png").write_bytes(data[: len(data) // 2])  # truncated
    save(root / ".hidden.png", images["rgb.png"])
    (root / ".git").mkdir()
    save(root / ".git" / "x.png", images["rgb.png"])
    (root / "notes.txt").write_text("not an image")
    return images


def test_every_kind_of_image_mirrored_with_metadata_and_isolated_failure(tmp_path: Path, model: Path,
                                                                         rng: np.random.Generator) -> None:
    src, out = tmp_path / "in", tmp_path / "out"
    images = make_tree(src, rng)
    code, rep, _ = run(tmp_path, str(src), "-o", str(out), "--model", str(model), "--tile", "24")
    assert code == 1  # one file failed
    assert (rep["ok"], rep["skipped"], rep["failed"]) == (8, 0, 1)
    bf16 = ovsession.available() and hardware.cpu_has_bf16()  # the documented automatic choice
    assert rep["provider"] == ("OpenVINO CPU (bf16)" if bf16 else "CPUExecutionProvider")
    assert rep["scale"] == 2
    failed = next(f for f in rep["files"] if f["status"] == "failed")
    assert failed["input"].endswith("corrupt.png") and "decode" in failed["reason"]
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert written == sorted([*images, "photo.jpg", ".srpipe-manifest.json"])  # hidden, .txt, corrupt absent
    for rel, px in images.items():
        got = read_image(out / rel).pixels
        assert got.shape == (px.shape[0] * 2, px.shape[1] * 2, *px.shape[2:]) and got.dtype == px.dtype
    assert np.count_nonzero(read_image(out / "sub/deep/rgb16.png").pixels % 257) > 0  # real 16-bit
    photo = read_image(out / "photo.jpg")
    source = read_image(src / "photo.jpg")
    assert source.pixels.shape == (20, 12, 3) and photo.pixels.shape == (40, 24, 3)  # orientation applied
    assert photo.orientation == 1 and photo.exif is not None and photo.icc == source.icc  # reset, kept
    assert source.xmp is not None and photo.xmp == source.xmp.replace(b'Orientation="6"', b'Orientation="1"')
    assert source.iptc == IPTC and photo.iptc == IPTC  # captions, keywords, copyright carried over


def test_rerun_skips_finished_outputs_and_overwrite_redoes_them(tmp_path: Path, model: Path,
                                                               rng: np.random.Generator) -> None:
    src, out = tmp_path / "in", tmp_path / "out"
    for i in range(3):
        save(src / f"{i}.png", smooth_image(rng, 20 + i, 15))
    assert run(tmp_path, str(src), "-o", str(out), "-m", str(model))[0] == 0
    stamps = {p: p.stat().st_mtime_ns for p in out.glob("*.png")}
    (out / "1.png").unlink()  # as if the first run had been killed before this one
    code, rep, _ = run(tmp_path, str(src), "-o", str(out), "-m", str(model))
    assert code == 0 and (rep["ok"], rep["skipped"]) == (1, 2)
    assert all(p.stat().st_mtime_ns == t for p, t in stamps.items() if p.name != "1.png")
    code, rep, _ = run(tmp_path, str(src), "-o", str(out), "-m", str(model), "--overwrite", "--tile", "0")
    assert code == 0 and rep["ok"] == 3 and rep["tile"] == 0


def test_a_killed_run_leaves_no_corrupt_file_and_a_rerun_finishes(tmp_path: Path, model: Path,
                                                                  rng: np.random.Generator) -> None:
    src, out = tmp_path / "in", tmp_path / "out"
    for i in range(24):
        save(src / f"{i:02d}.png", smooth_image(rng, 96, 96))
    cmd = [sys.executable, "-m", "srpipe.cli", "-q", "process", str(src), "-o", str(out), "-m", str(model),
           "--tile", "24", "--device", "cpu"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while proc.poll() is None and time.monotonic() < deadline:
        if len(list(out.glob("[0-9]*.png"))) >= 2:
            break
        time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = sorted(out.glob("[0-9]*.png"))
    if len(done) == 24:
        pytest.skip("the run finished before it could be killed")
    for path in done:  # everything visible under its final name is a complete image
        assert read_image(path).pixels.shape == (192, 192, 3)
    recorded = assert_consistent(out)  # the manifest vouches only for complete outputs
    code, rep, _ = run(tmp_path, str(src), "-o", str(out), "-m", str(model), "--tile", "24")
    assert code == 0 and rep["skipped"] == len(recorded) <= len(done) and rep["ok"] == 24 - len(recorded)
    assert sorted(p.name for p in out.iterdir()) == [".srpipe-manifest.json",
                                                    *(f"{i:02d}.png" for i in range(24))]  # temporaries gone


def test_output_names_never_collide(tmp_path: Path, model: Path, rng: np.random.Generator) -> None:
    src, out = tmp_path / "in", tmp_path / "out"
    save(src / "a.jpg", smooth_image(rng, 10, 12))
    save(src / "a.png", smooth_image(rng, 14, 16))
    save(src / "A.PNG", smooth_image(rng, 8, 8))
    code, rep, _ = run(tmp_path, str(src), "-o", str(out), "-m", str(model), "--format", "png")
    assert code == 0 and rep["ok"] == 3
    assert read_image(out / "a.png").pixels.shape[:2] == (28, 32)  # a.png keeps its own name
    assert read_image(out / "a.jpg.png").pixels.shape[:2] == (20, 24)
    assert len(list(out.glob("*.png"))) == 3


def test_never_writes_into_the_input_or_outside_out(tmp_path: Path, model: Path,
                                                    rng: np.random.Generator) -> None:
    src, out, outside = tmp_path / "in", tmp_path / "out", tmp_path / "outside"
    save(src / "sub" / "x.png", smooth_image(rng, 9, 9))
    save(src / "y.png", smooth_image(rng, 9, 9))
    outside.mkdir()
    out.mkdir()
    (out / "sub").symlink_to(outside, target_is_directory=True)  # a trap left in the output folder
    (outside / "victim.png").write_bytes(b"keep me")
    (out / "y.png").symlink_to(outside / "victim.png")
    code, rep, _ = run(tmp_path, str(src), "-o", str(out), "-m", str(model), "--overwrite")
    assert code == 1 and rep["failed"] == 2
    reasons = " ".join(f["reason"] for f in rep["files"])
    assert "outside --out" in reasons and "symlink" in reasons
    assert sorted(p.name for p in outside.iterdir()) == ["victim.png"]
    assert (outside / "victim.png").read_bytes() == b"keep me"
    code, _, err = run(tmp_path, str(src), "-o", str(src / "hr"), "-m", str(model))
    assert code == 2 and "inside the input folder" in err and not (src / "hr").exists()
    code, _, err = run(tmp_path, str(src / "y.png"), "-o", str(src), "-m", str(model), "--overwrite")
    assert code == 1 and read_image(src / "y.png").pixels.shape == (9, 9, 3)  # the input survived


def test_format_conversion_alpha_and_bit_depth(tmp_path: Path, model: Path, rng: np.random.Generator) -> None:
    src, out = tmp_path / "in", tmp_path / "out"
    save(src / "rgba.png", smooth_image(rng, 9, 11, c=4))
    save(src / "deep.png", smooth_image(rng, 9, 11, dtype=np.uint16))
    code, rep, _ = run(tmp_path, str(src), "-o", str(out), "-m", str(model), "--format", "jpg",
                       "--quality", "90")
    assert code == 1 and rep["ok"] == 1
    assert "alpha" in next(f["reason"] for f in rep["files"] if f["input"].endswith("rgba.png"))
    assert read_image(out / "deep.jpg").pixels.dtype == np.uint8


def test_missing_model_and_bad_shard_are_usage_errors(tmp_path: Path, rng: np.random.Generator,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("srpipe.infer.session.BUNDLED_DIR", tmp_path / "no-bundled-models")
    save(tmp_path / "in" / "a.png", smooth_image(rng, 9, 9))
    code, _, err = run(tmp_path, str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--scale", "3")
    assert code == 2 and "no x3 model" in err and "srpipe export" in err
    code, _, err = run(tmp_path, str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--shard", "3/3")
    assert code == 2 and "--shard" in err
    code, _, err = run(tmp_path, str(tmp_path / "missing"), "-o", str(tmp_path / "out"))
    assert code == 2 and "no such file or folder" in err
    (tmp_path / "empty" / ".hidden").mkdir(parents=True)
    code, _, err = run(tmp_path, str(tmp_path / "empty"), "-o", str(tmp_path / "out"))
    assert code == 2 and "no images to process" in err


def test_shards_partition_the_files(tmp_path: Path, model: Path, rng: np.random.Generator) -> None:
    src = tmp_path / "in"
    for i in range(30):
        save(src / f"d{i % 3}" / f"{i}.png", smooth_image(rng, 6, 7))
    cfg = ProcessConfig()
    everything = {j.rel for j in make_jobs(src, tmp_path / "o", cfg, (0, 1))}
    parts = [{j.rel for j in make_jobs(src, tmp_path / "o", cfg, (k, 3))} for k in range(3)]
    assert set().union(*parts) == everything and len(everything) == 30
    assert sum(len(p) for p in parts) == 30 and all(len(p) > 0 for p in parts)  # disjoint, all used
    assert parse_shard(None, {"RANK": "1", "WORLD_SIZE": "3"}) == (1, 3) == parse_shard("1/3")
    assert parse_shard(None, {}) == (0, 1)
    code, rep, _ = run(tmp_path, str(src), "-o", str(tmp_path / "out"), "-m", str(model), "--shard", "1/3")
    assert code == 0 and rep["ok"] == len(parts[1])
    out = tmp_path / "out"
    got = {PurePosixPath(p.relative_to(out).as_posix()) for p in out.rglob("*.png")}
    assert got == parts[1]


def refuse_listing(monkeypatch: pytest.MonkeyPatch, folder: Path) -> None:
    """Make ``folder`` unlistable as ``chmod 000`` does for a non-root user (tests run as root)."""
    real = os.scandir

    def scandir(path: Any = ".") -> Any:
        if os.fspath(path) == str(folder):
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real(path)

    monkeypatch.setattr(os, "scandir", scandir)


def test_an_unreadable_subfolder_is_a_failure_and_the_rest_is_processed(
        tmp_path: Path, model: Path, rng: np.random.Generator, monkeypatch: pytest.MonkeyPatch) -> None:
    src = tmp_path / "in"
    save(src / "a.png", smooth_image(rng, 9, 8))
    save(src / "sub" / "b.png", smooth_image(rng, 7, 9))
    save(src / "locked" / "c.png", smooth_image(rng, 8, 8))
    refuse_listing(monkeypatch, src / "locked")
    code, rep, _ = run(tmp_path, str(src), "-o", str(tmp_path / "out"), "-m", str(model))
    assert code == 1 and rep["ok"] == 2 and rep["failed"] == 1
    failed = next(f for f in rep["files"] if f["status"] == "failed")
    assert failed["input"] == str(src / "locked") and "Permission denied" in failed["reason"]
    assert (tmp_path / "out" / "sub" / "b.png").is_file() and not (tmp_path / "out" / "locked").exists()
    save(tmp_path / "only" / "locked" / "c.png", smooth_image(rng, 8, 8))  # nothing else to do: still 1
    refuse_listing(monkeypatch, tmp_path / "only" / "locked")
    code, rep, _ = run(tmp_path, str(tmp_path / "only"), "-o", str(tmp_path / "out2"), "-m", str(model))
    assert code == 1 and rep["failed"] == 1 and rep["ok"] == 0


def test_an_unwritable_out_is_refused_before_any_work(tmp_path: Path, model: Path, rng: np.random.Generator,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    save(tmp_path / "in" / "a.png", smooth_image(rng, 9, 8))
    (tmp_path / "afile").write_text("x")
    code, rep, err = run(tmp_path, str(tmp_path / "in"), "-o", str(tmp_path / "afile" / "sub"),
                         "-m", str(model))
    assert code == 1 and not rep and err.count("\n") == 1
    assert f"--out {tmp_path / 'afile' / 'sub'}: cannot be created: {tmp_path / 'afile'} is a file" in err
    readonly = tmp_path / "readonly"
    readonly.mkdir()
    real = os.access  # root passes any permission check: deny this one folder as a mode of 555 would
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: (os.fspath(p) != str(readonly)
                                                               and real(p, mode, **kw)))
    called: list[str] = []
    monkeypatch.setattr("srpipe.infer.runner.read_image", lambda *a, **kw: called.append("read"))
    code, rep, err = run(tmp_path, str(tmp_path / "in"), "-o", str(readonly / "new"), "-m", str(model))
    assert code == 1 and not rep and "not writable" in err and "permission denied" in err
    assert not called and not (readonly / "new").exists()  # refused before reading a single image


def test_a_file_over_the_memory_budget_is_refused_from_its_header(tmp_path: Path, model: Path,
                                                                  rng: np.random.Generator) -> None:
    src = tmp_path / "in"
    src.mkdir()
    PILImage.new("L", (13000, 13000)).save(src / "huge.png")  # ~160 KB on disk, 169 MP decoded
    save(src / "small.png", smooth_image(rng, 20, 15))
    started = time.perf_counter()
    code, rep, _ = run(tmp_path, str(src), "-o", str(tmp_path / "out"), "-m", str(model),
                       "--backend", "onnxruntime")
    assert time.perf_counter() - started < 5
    by_name = {Path(f["input"]).name: f for f in rep["files"]}
    assert code == 1 and by_name["small.png"]["status"] == "ok"
    huge = by_name["huge.png"]
    assert huge["status"] == "failed" and "memory budget of 2048 MiB" in huge["reason"]
    assert "pass --memory-budget" in huge["reason"] and "26000×26000" in huge["reason"]
    needed = int(huge["reason"].rsplit("--memory-budget ", 1)[1].split()[0])
    from srpipe.config import ProcessConfig as Config
    from srpipe.imaging.io import peek_layout
    from srpipe.infer import budget

    layout = peek_layout(src / "huge.png")
    assert layout is not None and (layout.width, layout.channels, layout.itemsize) == (13000, 1, 1)
    assert needed * budget.MIB >= budget.file_bytes(layout, 2, Config().tile, ".png")


def test_the_log_counts_only_the_files_left_to_do(tmp_path: Path, model: Path, rng: np.random.Generator,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    from srpipe.process import process
    from srpipe.workspace import Workspace

    src, out = tmp_path / "in", tmp_path / "out"
    for i in range(3):
        save(src / f"{i}.png", smooth_image(rng, 12, 10))
    cfg = ProcessConfig(backend="onnxruntime")
    process(src, out, cfg, workspace=Workspace(tmp_path / "ws"), model=model)
    caplog.clear()
    with caplog.at_level("INFO", logger="srpipe.process"):
        rep = process(src, out, cfg, workspace=Workspace(tmp_path / "ws"), model=model)
    assert rep.count("skipped") == 3
    assert "0 file(s) to process" in caplog.text and "3 up to date (skipped)" in caplog.text


def test_summary_keeps_the_provider_whole_at_80_columns(monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    from srpipe import render
    from srpipe.process import ProcessReport

    report = ProcessReport(model="/a/rather/long/path/to/models/edsr-baseline-x4.onnx",
                           provider="OpenVINO CPU (bf16) on a very long device name", scale=4, tile=384,
                           overlap=17, overlap_source="measured", batch=1, ensemble=False, shard=(0, 1))
    monkeypatch.setenv("COLUMNS", "80")
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    render.print_process(report)
    text = re.sub(r"\x1b\[[0-9;]*m", "", capsys.readouterr().out)  # colours of a terminal
    assert max(len(line) for line in text.splitlines()) <= 80
    assert "OpenVINO CPU (bf16) on a very long device name" in " ".join(text.split())


@pytest.mark.skipif(sys.platform != "linux", reason="non-UTF-8 file names are a Linux matter")
def test_json_report_is_valid_utf8_for_a_non_utf8_file_name(tmp_path: Path, model: Path,
                                                             rng: np.random.Generator) -> None:
    src = tmp_path / "in"
    src.mkdir()
    name = os.fsdecode(b"caf\xe9.png")  # Latin-1 bytes: not UTF-8
    save(src / name, smooth_image(rng, 12, 10))
    res = subprocess.run([sys.executable, "-m", "srpipe.cli", "--workspace", str(tmp_path / "ws"), "process",
                          str(src), "-o", str(tmp_path / "out"), "-m", str(model), "--backend", "onnxruntime",
                          "--json"], capture_output=True, check=False)
    assert res.returncode == 0, res.stderr
    rep = json.loads(res.stdout.decode("utf-8", errors="strict"))
    entry = rep["files"][0]
    assert entry["input"].endswith("caf\\xe9.png") and entry["output"].endswith("caf\\xe9.png")
    assert os.fsencode(tmp_path / "out" / name) == os.fsencode(tmp_path / "out") + b"/caf\xe9.png"
    assert (tmp_path / "out" / name).is_file()
