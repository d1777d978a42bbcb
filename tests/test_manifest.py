"""The --out manifest of srpipe process: identical reruns skip, changed settings/model/source redo with
the reason, --overwrite redoes all, unknown outputs are redone, corrupt manifests and kills are safe,
shards keep each other's entries."""

from __future__ import annotations

import json
import logging
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import smooth_image
from tiny_onnx import tiny_model

from srpipe.batch import walk
from srpipe.cli import cli
from srpipe.config import ProcessConfig
from srpipe.imaging.io import write_image
from srpipe.infer.manifest import Settings, read_manifests
from srpipe.process import ProcessReport, process
from srpipe.workspace import Workspace

MANIFEST = ".srpipe-manifest.json"


@pytest.fixture(scope="session")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_model(tmp_path_factory, scale=2)


def run(tmp_path: Path, *args: str) -> tuple[int, dict, str]:
    """``srpipe process ... --json`` (as in test_process, which imports this module's helper)."""
    res = CliRunner().invoke(cli, ["--workspace", str(tmp_path / "ws"), "process", *args, "--json"])
    return res.exit_code, json.loads(res.stdout) if res.stdout.startswith("{") else {}, res.stderr


def save(path: Path, pixels: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_image(path, pixels, quality=100)


@dataclass
class Stats:
    tiles: int = 0
    computed_lr_pixels: int = 0
    image_lr_pixels: int = 0
    oom_retries: int = 0


@dataclass
class NearestUpscaler:
    """A stand-in for the ONNX upscaler: nearest-neighbour x2; ``interrupt_at`` raises KeyboardInterrupt
    (which no per-file handler catches, like a kill) on that call."""

    tile: int = 384
    ensemble: bool = False
    interrupt_at: int = 0
    name: str = "nearest"
    scale: int = 2
    overlap: int = 8
    overlap_source: str = "given"
    batch: int = 1
    provider: str = "CPUExecutionProvider"
    stats: Stats = field(default_factory=Stats)
    calls: int = 0

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        self.calls += 1
        if self.calls == self.interrupt_at:
            raise KeyboardInterrupt
        return np.repeat(np.repeat(pixels, 2, axis=0), 2, axis=1)


def fake_run(src: Path, out: Path, up: NearestUpscaler, **cfg: object) -> ProcessReport:
    return process(src, out, ProcessConfig(**cfg), workspace=Workspace(src.parent / "ws"),  # type: ignore[arg-type]
                   upscaler=up)  # type: ignore[arg-type]


def inputs(root: Path, rng: np.random.Generator, n: int = 4) -> Path:
    """``n`` small PNGs in two folders; the fourth has a non-UTF-8 name with a space."""
    for i in range(n):
        name = os.fsdecode(b"3 caf\xe9.png") if i == 3 else f"{i}.png"
        save(root / ("sub" if i % 2 else "") / name, smooth_image(rng, 23 - i, 17 + i))
    return root


def assert_consistent(out: Path) -> dict[str, list]:
    """Every manifest entry names an output on disk with exactly the recorded size and mtime."""
    recorded = read_manifests(out) or {}
    for rel, entries in recorded.items():
        st = (out / rel).stat()
        assert all((e.output_size, e.output_mtime_ns) == (st.st_size, st.st_mtime_ns) for e in entries), rel
    return dict(recorded)


def test_identical_rerun_skips_and_a_changed_tile_redoes_all_with_the_reason(
        tmp_path: Path, model: Path, rng: np.random.Generator) -> None:
    src, out = inputs(tmp_path / "in", rng), tmp_path / "out"
    code, rep, _ = run(tmp_path, str(src), "-o", str(out), "-m", str(model), "--tile", "24")
    assert code == 0 and rep["ok"] == 4 and rep["redone"] == {} and (out / MANIFEST).is_file()
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    code, rep, _ = run(tmp_path, str(src), "-o", str(out), "-m", str(model), "--tile", "24")
    assert code == 0 and rep["skipped"] == 4 and {f["reason"] for f in rep["files"]} == {"up to date"}
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == stamps  # nothing touched
    res = CliRunner().invoke(cli, ["--workspace", str(tmp_path / "ws"), "process", str(src), "-o", str(out),
                                   "-m", str(model), "--tile", "0"])
    assert res.exit_code == 0 and "redone 4 existing output(s): 4 tile 24→0" in res.stdout
    recorded = assert_consistent(out)
    assert len(recorded) == 4 and all(e.settings.tile == 0 for es in recorded.values() for e in es)
    code, rep, _ = run(tmp_path, str(src), "-o", str(out), "-m", str(model), "--tile", "0", "--overwrite")
    assert rep["ok"] == 4 and rep["redone"] == {"--overwrite": 4} and rep["redone_files"] == 4
    assert all(f["reason"] == "redone: --overwrite" for f in rep["files"])


def test_a_model_file_with_other_bytes_redoes_everything(tmp_path: Path, model: Path,
                                                         rng: np.random.Generator) -> None:
    import onnx

    src, out, mine = inputs(tmp_path / "in", rng, 3), tmp_path / "out", tmp_path / "m.onnx"
    mine.write_bytes(model.read_bytes())
    assert run(tmp_path, str(src), "-o", str(out), "-m", str(mine))[0] == 0
    proto = onnx.load(str(mine))
    proto.doc_string = "retrained"  # same path, same behaviour, other bytes
    onnx.save(proto, str(mine))
    code, rep, _ = run(tmp_path, str(src), "-o", str(out), "-m", str(mine))
    assert code == 0 and rep["redone"] == {"model changed": 3}


def test_a_modified_source_is_redone_and_the_others_skipped(tmp_path: Path, rng: np.random.Generator) -> None:
    src, out = inputs(tmp_path / "in", rng), tmp_path / "out"
    assert fake_run(src, out, NearestUpscaler()).count("ok") == 4
    st = (src / "0.png").stat()
    os.utime(src / "0.png", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # touched
    save(src / "sub" / "1.png", smooth_image(rng, 9, 8))  # rewritten: other size
    rep = fake_run(src, out, NearestUpscaler())
    assert rep.redone == {"source changed": 2} and rep.count("skipped") == 2
    assert fake_run(src, out, NearestUpscaler()).count("skipped") == 4


def test_unknown_outputs_are_redone(tmp_path: Path, rng: np.random.Generator) -> None:
    src, out = inputs(tmp_path / "in", rng), tmp_path / "out"
    fake_run(src, out, NearestUpscaler())
    data = json.loads((out / MANIFEST).read_text())
    del data["entries"]["0.png"]  # as if killed between writing 0.png and saving the manifest
    (out / MANIFEST).write_text(json.dumps(data))
    save(out / "sub" / "1.png", smooth_image(rng, 4, 4))  # replaced by someone else
    rep = fake_run(src, out, NearestUpscaler())
    assert rep.redone == {"not in the manifest": 1, "output changed since it was recorded": 1}
    (out / MANIFEST).unlink()  # outputs of an srpipe that kept no manifest
    rep = fake_run(src, out, NearestUpscaler())
    assert rep.redone == {"no manifest (written by an older srpipe or another tool)": 4}
    assert len(assert_consistent(out)) == 4


def test_a_corrupt_manifest_is_treated_as_absent_with_a_warning(tmp_path: Path, rng: np.random.Generator,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    src, out = inputs(tmp_path / "in", rng, 2), tmp_path / "out"
    fake_run(src, out, NearestUpscaler())
    wrong_entry = '{"format": "srpipe-manifest", "layout": 1, "entries": {"0.png": 3}}'
    for junk in ("{not json", '["a list"]', wrong_entry):
        (out / MANIFEST).write_text(junk)
        with caplog.at_level(logging.WARNING, logger="srpipe.infer.manifest"):
            rep = fake_run(src, out, NearestUpscaler())
        assert rep.count("ok") == 2 and rep.redone == {"not in the manifest": 2}
        assert "unreadable manifest" in caplog.text and "treated as absent" in caplog.text
        caplog.clear()
        assert len(assert_consistent(out)) == 2  # rewritten whole


def test_settings_that_change_bits_and_those_that_do_not(tmp_path: Path, rng: np.random.Generator) -> None:
    src, out = inputs(tmp_path / "in", rng, 2), tmp_path / "out"
    fake_run(src, out, NearestUpscaler(), quality=90)
    assert fake_run(src, out, NearestUpscaler(), quality=80, threads=1, batch=4).count("skipped") == 2  # PNG
    assert fake_run(src, out, NearestUpscaler(name="other")).redone == {"model changed": 2}
    assert fake_run(src, out, NearestUpscaler(name="other", ensemble=True)).redone == {"ensemble off→on": 2}
    fake_run(src, out, NearestUpscaler(), format="jpg", quality=90)
    rep = fake_run(src, out, NearestUpscaler(tile=128), format="jpg", quality=80)
    assert rep.redone == {"tile 384→128, quality 90→80": 2}
    assert fake_run(src, out, NearestUpscaler(name="other", ensemble=True)).count("skipped") == 2  # PNGs kept
    old = Settings("sha256:1", 2, 384, 8, False, None)
    assert Settings("sha256:1", 4, 384, 8, False, None, revision=2).changes_from(old) == [
        "scale 2→4", "revision 1→2"]


def test_an_interrupted_rerun_leaves_a_manifest_that_matches_the_files(tmp_path: Path,
                                                                       rng: np.random.Generator) -> None:
    src, out = inputs(tmp_path / "in", rng, 6), tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        fake_run(src, out, NearestUpscaler(interrupt_at=3))
    first = assert_consistent(out)
    assert len(first) == 2 and not list(out.rglob(".*.tmp"))
    fake_run(src, out, NearestUpscaler())
    with pytest.raises(KeyboardInterrupt):  # a rerun with another tile, stopped after 2 files
        fake_run(src, out, NearestUpscaler(tile=64, interrupt_at=3))
    recorded = assert_consistent(out)
    assert len(recorded) == 2 and all(e.settings.tile == 64 for es in recorded.values() for e in es)
    rep = fake_run(src, out, NearestUpscaler(tile=64))  # the old entries were dropped before redoing
    assert rep.count("skipped") == 2 and rep.redone == {"not in the manifest": 4}


def test_concurrent_shards_keep_each_others_entries(tmp_path: Path, rng: np.random.Generator) -> None:
    src, out = inputs(tmp_path / "in", rng, 8), tmp_path / "out"
    reports: list[ProcessReport] = []
    threads = [threading.Thread(target=lambda k=k: reports.append(
        process(src, out, ProcessConfig(), workspace=Workspace(tmp_path / "ws"), shard=(k, 2),
                upscaler=NearestUpscaler())))  # type: ignore[arg-type]
        for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(p.name for p in out.glob(".srpipe-manifest*")) == [
        ".srpipe-manifest-0-of-2.json", ".srpipe-manifest-1-of-2.json"]
    assert sum(r.count("ok") for r in reports) == 8 and len(assert_consistent(out)) == 8
    rep = fake_run(src, out, NearestUpscaler())  # unsharded: reads both
    assert rep.count("skipped") == 8
    assert len(walk(out, suffixes=(".png", ".json")).files) == 8  # the manifests are hidden from walkers


def test_an_output_name_reserved_for_the_manifest_is_refused(tmp_path: Path,
                                                             rng: np.random.Generator) -> None:
    save(tmp_path / "in" / ".srpipe-manifest.png", smooth_image(rng, 5, 7))
    rep = fake_run(tmp_path / "in" / ".srpipe-manifest.png", tmp_path / "out", NearestUpscaler())
    assert rep.count("failed") == 1 and "reserved" in rep.files[0].reason
