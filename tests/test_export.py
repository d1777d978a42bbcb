"""srpipe export: graph contract, metadata, verification, fp16, default source, and the CLI."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from click.testing import CliRunner

from srpipe.cli import cli
from srpipe.config import ExportConfig, ModelConfig, TrainConfig
from srpipe.contract import INPUT_NAME, OUTPUT_NAME, MetaKey
from srpipe.errors import CheckpointError, ExportError, InputError
from srpipe.export import export, export_model
from srpipe.export_graph import export_graph, fuse_conv_after_shuffle
from srpipe.model import checkpoint
from srpipe.model.checkpoint import save_checkpoint
from srpipe.model.edsr import build_model, count_parameters
from srpipe.train.rundir import latest_run
from srpipe.train.state import TrainState, capture_rng, checkpoint_extra
from srpipe.workspace import Workspace

TINY = ModelConfig(scale=2, n_resblocks=1, n_feats=8)


def tiny(cfg: ModelConfig = TINY, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model(cfg).eval()


def test_graph_contract_metadata_and_parity(tmp_path: Path) -> None:
    cfg = dataclasses.replace(TINY, scale=3)
    model = tiny(cfg)
    result = export_model(model, cfg, tmp_path / "m.onnx", ExportConfig(), source="test")
    proto = onnx.load(str(result.path))
    onnx.checker.check_model(proto, full_check=True)
    assert proto.opset_import[0].version >= 17
    assert [i.name for i in proto.graph.input] == [INPUT_NAME] and [o.name for o in proto.graph.output] == [
        OUTPUT_NAME]
    dims = [d.dim_param or d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim]
    assert dims[1] == 3 and all(isinstance(d, str) and d for d in (dims[0], dims[2], dims[3]))  # dynamic
    assert "DepthToSpace" in {n.op_type for n in proto.graph.node}
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta[MetaKey.SCALE] == "3" and meta[MetaKey.PARAMS] == str(count_parameters(model))
    assert meta[MetaKey.PRECISION] == "fp32" and float(meta[MetaKey.PARITY]) <= 1e-4
    assert 0 < int(meta[MetaKey.RF_EFFECTIVE]) <= int(meta[MetaKey.RF_THEORY]) == 6
    assert int(meta[MetaKey.OVERLAP]) == result.receptive.overlap >= int(meta[MetaKey.RF_EFFECTIVE])
    assert len(json.loads(meta[MetaKey.RF_PROFILE])) == 8 and float(meta[MetaKey.MFLOP]) > 0
    assert meta[MetaKey.GRAPH] == "tail-conv-before-shuffle"
    sess = ort.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
    for shape in ((1, 3, 17, 31), (3, 3, 9, 4)):  # odd sizes and a batch the trace never saw
        x = np.random.default_rng(0).random(shape, dtype=np.float32)
        with torch.no_grad():
            ref = model(torch.from_numpy(x)).numpy()
        assert np.abs(sess.run(None, {INPUT_NAME: x})[0] - ref).max() <= 1e-4
    assert [p.name for p in tmp_path.iterdir()] == ["m.onnx"]  # no temporary left behind


@pytest.mark.parametrize("r", [2, 3])
def test_tail_conv_moves_before_the_shuffle_exactly(r: int) -> None:
    torch.manual_seed(r)
    conv = torch.nn.Conv2d(5, 3, 3, padding=1)
    u = torch.randn(2, 5 * r * r, 7, 6)
    shuffle = torch.nn.PixelShuffle(r)
    with torch.no_grad():
        expected = conv(shuffle(u))
        got = shuffle(fuse_conv_after_shuffle(conv, r)(u))
    assert got.shape == expected.shape and torch.allclose(got, expected, atol=1e-5)
    model = tiny(dataclasses.replace(TINY, scale=4))
    x = torch.rand(1, 3, 9, 11)
    with torch.no_grad():
        assert torch.allclose(export_graph(model)(x), model(x), atol=1e-5)


def test_failed_verification_raises_and_writes_nothing(tmp_path: Path) -> None:
    with pytest.raises(ExportError, match=r"disagree.*nothing was written"):
        export_model(tiny(), TINY, tmp_path / "m.onnx", ExportConfig(atol=1e-12))
    assert not any(tmp_path.iterdir())
    with pytest.raises(ExportError, match="opset"):
        export_model(tiny(), TINY, tmp_path / "m.onnx", ExportConfig(opset=13))


def test_fp16_keeps_fp32_io_and_states_its_parity(tmp_path: Path) -> None:
    result = export_model(tiny(), TINY, tmp_path / "h.onnx", ExportConfig(fp16=True))
    proto = onnx.load(str(result.path))
    f32 = onnx.TensorProto.FLOAT
    assert proto.graph.input[0].type.tensor_type.elem_type == f32
    assert proto.graph.output[0].type.tensor_type.elem_type == f32
    assert {t.data_type for t in proto.graph.initializer} == {onnx.TensorProto.FLOAT16}
    assert proto.graph.node[0].op_type == "Cast" and proto.graph.node[-1].op_type == "Cast"
    assert result.precision == "fp16" and "fp16" in result.parity_note
    assert result.parity is not None and result.parity <= 1e-2  # measurable here via PyTorch fp16 at least


def _checkpoint(run: Path, *, iteration: int, best_iteration: int, seed: int) -> Path:
    model = tiny(seed=seed)
    state = TrainState(iteration=iteration, best_iteration=best_iteration, best_psnr=31.25)
    extra = checkpoint_extra(state=state, optimizer=torch.optim.Adam(model.parameters()), scaler_state=None,
                             lr=1e-4, schedule="step", rng=[capture_rng()], ema_state=None,
                             config=dataclasses.asdict(TrainConfig(model=TINY)))
    return save_checkpoint(run / "checkpoints" / "best.pt", model_config=TINY, model_state=model.state_dict(),
                           extra=extra)


def test_default_source_is_the_best_checkpoint_of_the_latest_run(tmp_path: Path) -> None:
    ws = Workspace(tmp_path / "ws")
    with pytest.raises(InputError, match="no training runs"):
        export(None, workspace=ws, out=None, cfg=ExportConfig())
    older = _checkpoint(ws.runs / "edsr-20250301-090000", iteration=10, best_iteration=10, seed=1)
    newest = ws.runs / "edsr-20250101-090000"  # started earlier, trained (resumed) later
    written = _checkpoint(newest, iteration=100, best_iteration=100, seed=2)
    os.utime(older, ns=(written.stat().st_mtime_ns - 10**9,) * 2)
    os.utime(ws.runs / "edsr-20250301-090000")  # a folder's own time does not count
    assert latest_run(ws.runs) == newest
    result = export(None, workspace=ws, out=None, cfg=ExportConfig())
    assert result.path == ws.models / "edsr-20250101-090000-x2.onnx" and result.path.is_file()
    meta = result.metadata
    assert meta[MetaKey.PSNR] == "31.2500" and len(meta[MetaKey.RECIPE]) == 16
    assert meta[MetaKey.SOURCE].endswith("edsr-20250101-090000/checkpoints/best.pt")
    (ws.runs / "notes").mkdir()  # not a run: ignored
    started = ws.runs / "edsr-20250401-090000"  # started, no checkpoint saved yet: not an older run's
    started.mkdir()
    (started / "config.toml").write_text("")
    with pytest.raises(CheckpointError, match=r"no best\.pt or last\.pt"):
        export(None, workspace=ws, out=None, cfg=ExportConfig())


def test_psnr_is_omitted_when_the_weights_are_not_the_validated_best(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    ckpt = _checkpoint(tmp_path / "run", iteration=150, best_iteration=100, seed=3)
    reads: list[Path] = []
    real_read = checkpoint.read_file
    monkeypatch.setattr(checkpoint, "read_file", lambda path: reads.append(path) or real_read(path))
    result = export(ckpt, workspace=Workspace(tmp_path), out=tmp_path / "x.onnx",
                               cfg=ExportConfig())
    assert result.metadata[MetaKey.PSNR] == "" and result.metadata[MetaKey.RECIPE]
    assert reads == [ckpt]  # weights and training record come from one read of the file


def test_ema_or_raw_weights_are_exported_and_said_so(tmp_path: Path) -> None:
    raw, ema = tiny(seed=5), tiny(seed=6)
    state = TrainState(iteration=40, best_iteration=40, best_psnr=30.5)
    extra = checkpoint_extra(state=state, optimizer=torch.optim.Adam(raw.parameters()), scaler_state=None,
                             lr=1e-4, schedule="step", rng=[capture_rng()], ema_state=ema.state_dict(),
                             config=dataclasses.asdict(TrainConfig(model=TINY)))
    ckpt = save_checkpoint(tmp_path / "run" / "checkpoints" / "best.pt", model_config=TINY,
                           model_state=raw.state_dict(), extra=extra)
    x = np.random.default_rng(0).random((1, 3, 9, 13), dtype=np.float32)
    for weights, model in (("ema", ema), ("raw", raw)):
        out = tmp_path / f"{weights}.onnx"
        result = export(ckpt, workspace=Workspace(tmp_path), out=out,
                                   cfg=ExportConfig(weights=weights))
        meta = result.metadata
        assert meta[MetaKey.WEIGHTS] == weights and meta[MetaKey.ITERATIONS] == "40"
        # validation scored the EMA weights, so only their export may quote its PSNR
        assert meta[MetaKey.PSNR] == ("30.5000" if weights == "ema" else "")
        got = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(None, {INPUT_NAME: x})[0]
        with torch.no_grad():
            want = model(torch.from_numpy(x)).numpy()
        assert np.abs(got - want).max() < 1e-4
    args = ["export", str(ckpt), "--out", str(tmp_path / "c.onnx"), "--weights", "raw", "--json"]
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert result.exit_code == 0 and json.loads(result.stdout)["metadata"][MetaKey.WEIGHTS] == "raw"


def test_cli_export_then_info(tmp_path: Path) -> None:
    ckpt = _checkpoint(tmp_path / "run-20250101-000000", iteration=5, best_iteration=5, seed=4)
    runner = CliRunner()
    out = tmp_path / "model.onnx"
    res = runner.invoke(cli, ["--workspace", str(tmp_path / "ws"), "export", str(ckpt.parents[1]), "-o",
                              str(out), "--json"])
    assert res.exit_code == 0, res.output
    payload = json.loads(res.stdout)
    assert payload["path"] == str(out) and payload["parity"] <= 1e-4
    res = runner.invoke(cli, ["info", str(out), "--json"])
    assert res.exit_code == 0 and json.loads(res.stdout)[MetaKey.SCALE] == 2
    res = runner.invoke(cli, ["info", str(out)])
    assert res.exit_code == 0 and "tile_overlap" in res.stdout and "receptive_radius_effective" in res.stdout
    res = runner.invoke(cli, ["info", str(tmp_path / "nope.onnx")])
    assert res.exit_code == 2 and "no such model file" in res.stderr
