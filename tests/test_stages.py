"""The stage contract: every stage's report owns its exit code and its ``--json`` dict; options reach a
stage one way (``config.configure``); ``srpipe export`` starts from the run's recorded ``[export]``."""

from __future__ import annotations

import json
import math
from pathlib import Path

import onnx
import pytest
from click.testing import CliRunner

from srpipe.batch import Outcome
from srpipe.cli import cli
from srpipe.config import (
    DownscaleConfig,
    ExportConfig,
    Pipeline,
    PrepareConfig,
    ProcessConfig,
    TrainConfig,
    configure,
)
from srpipe.data.summary import OfficialCheck, SplitSummary
from srpipe.downscale import DownscaleReport
from srpipe.errors import ConfigError
from srpipe.evaluate import EvaluationReport, ImageResult
from srpipe.infer.receptive import ReceptiveField
from srpipe.infer.runner import FileResult
from srpipe.metrics import Scores
from srpipe.prepare import PrepareReport
from srpipe.process import ProcessReport
from srpipe.train.report import TrainReport


def _split(split: str, *, patches: int, skipped: tuple[tuple[str, str, str], ...] = ()) -> SplitSummary:
    official = (OfficialCheck(scale=2, images=2, max_abs=5, differing=3, pixels=600, shape_mismatch=0,
                              unreadable=0),) if split == "train" else ()
    return SplitSummary(split=split, path=Path(f"/s/{split}.h5"), status="written", images=2,
                        patches=patches, bytes=1000, skipped=skipped, official=official)


def test_prepare_report_exit_code_and_dict() -> None:
    def report(train: SplitSummary) -> PrepareReport:
        return PrepareReport(root=Path("/in"), out=Path("/s"), layout="folder",
                             splits=(train, _split("valid", patches=0)), seconds=2.0, megapixels=1.5)

    fine = report(_split("train", patches=7, skipped=(("small.png", "too-small", "smaller than 96 px"),)))
    assert (fine.failed, fine.exit_code) == (0, 0)  # too small is routine, not a failure
    bad = report(_split("train", patches=7, skipped=(("x.png", "unreadable", "corrupt"),)))
    assert (bad.failed, bad.exit_code) == (1, 1)
    assert report(_split("train", patches=0)).exit_code == 1  # nothing to train on
    d = bad.to_dict()
    assert d["failed"] == 1 and d["out"] == "/s" and d["layout"] == "folder" and d["megapixels"] == 1.5
    train = d["splits"][0]
    assert train["path"] == "/s/train.h5" and train["patches"] == 7
    assert train["skipped"] == [["x.png", "unreadable", "corrupt"]]
    assert train["official"][0]["share"] == pytest.approx(3 / 600)
    json.dumps(d)  # plain JSON types only


def test_downscale_report_exit_code_and_dict() -> None:
    outcomes = [Outcome(Path("a.png"), "ok", "", Path("o/a.png")),
                Outcome(Path("b.png"), "skipped", "o/b.png exists", Path("o/b.png"))]
    ok = DownscaleReport.collect(outcomes, megapixels=1.23456, seconds=0.5, out=Path("o"))
    assert ok.exit_code == 0 and ok.ok
    assert ok.to_dict() == {"written": ["o/a.png"],
                            "skipped": [{"path": "b.png", "reason": "o/b.png exists"}],
                            "failed": [], "megapixels": 1.235, "seconds": 0.5}
    failed = DownscaleReport.collect([*outcomes, Outcome(Path("c.png"), "failed", "corrupt")], 0.0, 0.1,
                                     Path("o"))
    assert failed.exit_code == 1 and failed.to_dict()["failed"] == [{"path": "c.png", "reason": "corrupt"}]


def test_train_report_exit_code_and_dict() -> None:
    def report(iteration: int, *, early: bool = False) -> TrainReport:
        run = Path("/runs/r")
        return TrainReport(run_dir=run, iteration=iteration, iterations=10, start_iteration=0,
                           best_psnr_y=30.0, best_iteration=5, last_psnr_y=29.0, stopped_early=early,
                           skipped_steps=0, seconds=1.0, it_per_s=10.0, device="cpu", world_size=1, rank=0,
                           precision="fp32", data_source="loader",
                           last_checkpoint=run / "checkpoints/last.pt", best_checkpoint=None,
                           metrics=run / "metrics.csv", init_report=None)

    assert report(10).exit_code == report(4).exit_code == 0  # failures raise; a report is a sitting done
    assert report(10).finished and report(4, early=True).finished and not report(4).finished
    d = report(4).to_dict()
    assert d["run_dir"] == "/runs/r" and d["last_checkpoint"] == "/runs/r/checkpoints/last.pt"
    assert d["best_checkpoint"] is None and d["iteration"] == 4 and "finished" not in d


def test_export_report_exit_code_and_dict() -> None:
    from srpipe.export import ExportReport

    rf = ReceptiveField(theoretical=6, effective=5, overlap=12, predicted_error=0.1, profile=(3.0, 0.2))
    report = ExportReport(path=Path("/m/x.onnx"), source="/r/best.pt", scale=2, precision="fp32",
                          parity=1e-7, parity_note="fp32: ...", receptive=rf, metadata={"scale": "2"})
    assert report.exit_code == 0  # a failed export raises and writes nothing
    assert report.to_dict() == {"path": "/m/x.onnx", "source": "/r/best.pt", "scale": 2, "precision": "fp32",
                                "parity": 1e-7, "parity_note": "fp32: ...",
                                "receptive": {"theoretical": 6, "effective": 5, "overlap": 12,
                                              "predicted_error": 0.1, "profile": (3.0, 0.2)},
                                "metadata": {"scale": "2"}}


def test_evaluation_report_exit_code_and_dict() -> None:
    model, bicubic = Scores(32.0, 0.9, 30.0, 0.88), Scores(30.0, 0.85, math.inf, 1.0)
    image = ImageResult("a", Path("/hr/a.png"), None, (8, 6), model, bicubic, 0.25)
    clean = EvaluationReport(model="m", scale=2, shave=2, lr_source="files", images=(image,))
    assert clean.exit_code == 0
    d = clean.to_dict()
    assert d["mean"]["images"] == 1 and d["mean"]["model"]["psnr_y"] == 32.0
    assert d["images"][0]["bicubic"]["psnr_rgb"] is None  # an infinite PSNR is null in JSON
    assert d["images"][0]["width"] == 8 and d["images"][0]["lr"] is None and "strength" not in d["images"][0]
    failed = EvaluationReport(model="m", scale=2, shave=2, lr_source="files", images=(),
                              failures=((Path("/hr/b.png"), "corrupt"),))
    assert failed.exit_code == 1
    assert failed.to_dict()["failures"] == [{"path": "/hr/b.png", "error": "corrupt"}]
    assert failed.to_dict()["mean"] == {"model": None, "bicubic": None, "images": 0}


def test_process_report_exit_code_and_dict() -> None:
    report = ProcessReport(model="m.onnx", provider="CPU", scale=2, tile=64, overlap=12,
                           overlap_source="metadata", batch=1, ensemble=False, shard=(0, 1), seconds=2.0,
                           files=[FileResult("a.png", "o/a.png", "ok", "", 1.5, 0.5, fidelity_db=40.0),
                                  FileResult("b.png", "o/b.png", "skipped", "up to date")],
                           redone={"model changed": 1})
    assert report.exit_code == 0  # skipped is not failed
    d = report.to_dict()
    assert (d["ok"], d["skipped"], d["failed"], d["redone_files"]) == (1, 1, 0, 1)
    assert d["output_megapixels"] == 1.5 and d["megapixels_per_second"] == 0.75
    assert d["fidelity"] == {"median_db": 40.0, "worst_file": "a.png"} and d["shard"] == (0, 1)
    report.files.append(FileResult("c.png", "o/c.png", "failed", "corrupt"))
    assert report.exit_code == 1 and report.to_dict()["failed"] == 1


def test_configure_applies_table_then_set_then_options() -> None:
    table = ProcessConfig(tile=128, quality=90)
    cfg = configure(table, ["tile=256", "batch=2"], tile=512, overlap=None, format="png")
    assert (cfg.tile, cfg.batch, cfg.quality, cfg.overlap, cfg.format) == (512, 2, 90, 0, "png")
    assert configure(table) is table  # nothing given: the table itself
    assert configure(ExportConfig(fp16=True), fp16=False).fp16 is False  # False is given, None is not
    assert configure(PrepareConfig(), ["scales=[2]", "hr_size=96", "stride=48"]).scales == (2,)
    with pytest.raises(ConfigError, match=r"downscale\.scale: must be an integer >= 2, got 1"):
        configure(DownscaleConfig(), scale=1)
    with pytest.raises(ConfigError, match="unknown key 'nope'"):
        configure(ProcessConfig(), ["nope=1"])


def test_configure_reaches_one_table_of_a_pipeline() -> None:
    pipe = Pipeline(name="p", train=TrainConfig(lr=1e-4))
    got = configure(pipe, ["train.lr=2e-4", "model.n_feats=8"], table="train")
    assert got.train.lr == 2e-4 and got.train.model.n_feats == 8 and got.name == "p"
    assert got.process == pipe.process and pipe.train.lr == 1e-4  # the rest, and the original, untouched


def test_export_starts_from_the_runs_export_table(tmp_path: Path) -> None:
    from test_export import _checkpoint

    from srpipe.export import recorded_config
    from srpipe.train.rundir import write_config
    from srpipe.workspace import Workspace

    run = tmp_path / "run-20250101-000000"
    ckpt = _checkpoint(run, iteration=5, best_iteration=5, seed=4)
    write_config(run / "config.toml", Pipeline(name="shipped", export=ExportConfig(opset=18, fp16=True)))
    ws = Workspace(tmp_path / "ws")
    assert recorded_config(run, ws) == ExportConfig(opset=18, fp16=True)
    loose = tmp_path / "loose.pt"
    loose.write_bytes(ckpt.read_bytes())
    assert recorded_config(loose, ws) == ExportConfig()  # outside a run folder: the defaults

    def export(*options: str) -> tuple[dict, int]:
        out = tmp_path / f"m{len(options)}.onnx"
        res = CliRunner().invoke(cli, ["--workspace", str(ws.root), "export", str(run), "-o", str(out),
                                       "--json", *options])
        assert res.exit_code == 0, res.output
        return json.loads(res.stdout), onnx.load(str(out)).opset_import[0].version

    recorded, opset = export()
    assert recorded["precision"] == "fp16" and opset == 18
    overridden, opset = export("--no-fp16", "--opset", "17")
    assert overridden["precision"] == "fp32" and opset == 17
