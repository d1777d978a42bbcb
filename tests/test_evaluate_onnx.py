"""``srpipe evaluate`` with ONNX models (the process session code), ``default``, and the self-ensemble."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from conftest import smooth_image

from srpipe.cli import cli
from srpipe.config import ExportConfig, ModelConfig
from srpipe.errors import ModelNotFoundError, UsageError
from srpipe.export import export_model
from srpipe.imaging.io import write_image
from srpipe.infer.upscaler import dihedral_mean
from srpipe.model.checkpoint import save_checkpoint
from srpipe.model.edsr import build_model
from srpipe.upscale import open_upscaler
from srpipe.workspace import Workspace


@pytest.fixture
def hr_dir(tmp_path: Path, rng: np.random.Generator) -> Path:
    folder = tmp_path / "hr"
    folder.mkdir()
    for name, (h, w) in {"a": (38, 30), "b": (42, 34)}.items():
        write_image(folder / f"{name}.png", smooth_image(rng, h, w))
    return folder


@pytest.fixture
def exported(tmp_path: Path) -> tuple[Path, Path]:
    torch.manual_seed(3)
    cfg = ModelConfig(scale=2, n_resblocks=1, n_feats=8)
    model = build_model(cfg).eval()
    ckpt = save_checkpoint(tmp_path / "ckpt.pt", model_config=cfg, model_state=model.state_dict())
    onnx_path = tmp_path / "m-x2.onnx"
    export_model(model, cfg, onnx_path, ExportConfig(), source="test")
    return ckpt, onnx_path


def scores(*args: str) -> dict:
    result = CliRunner().invoke(cli, [*args, "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_onnx_scores_equal_the_checkpoint_it_came_from(hr_dir: Path, exported: tuple[Path, Path]) -> None:
    ckpt, onnx_path = exported
    a = scores("evaluate", str(ckpt), "--hr", str(hr_dir), "--device", "cpu")
    b = scores("evaluate", str(onnx_path), "--hr", str(hr_dir), "--device", "cpu")
    ma, mb = a["mean"]["model"], b["mean"]["model"]
    assert abs(ma["psnr_y"] - mb["psnr_y"]) < 0.01  # 8-bit rounding of a 1e-5 float difference at most
    assert a["mean"]["bicubic"] == b["mean"]["bicubic"]


def test_ensemble_changes_scores_and_runtimes_agree(hr_dir: Path, exported: tuple[Path, Path]) -> None:
    ckpt, onnx_path = exported
    def psnr(*args: str) -> float:
        return scores("evaluate", *args, "--hr", str(hr_dir))["mean"]["model"]["psnr_y"]

    plain = psnr(str(onnx_path))
    ens_onnx, ens_torch = psnr(str(onnx_path), "--ensemble"), psnr(str(ckpt), "--ensemble")
    assert ens_onnx != plain
    assert abs(ens_onnx - ens_torch) < 0.02  # the same ensemble through two runtimes


def test_ensemble_keeps_alignment_and_averages_the_8_transforms(rng: np.random.Generator) -> None:
    x = rng.random((2, 3, 7, 5), dtype=np.float32)

    def nearest(b: np.ndarray) -> np.ndarray:  # equivariant: the ensemble must give it back unchanged
        return b.repeat(2, 2).repeat(2, 3)

    def ramp(b: np.ndarray) -> np.ndarray:  # not equivariant: adds a left-to-right ramp in its frame
        y = nearest(b)
        return y + np.linspace(0, 1, y.shape[3], dtype=np.float32)[None, None, None, :]

    assert np.allclose(dihedral_mean(nearest, x), nearest(x), atol=1e-6)
    # Over the 8 frames the ramp points along +x, -x, +y, -y equally often: it averages to its mean 0.5.
    assert np.allclose(dihedral_mean(ramp, x), nearest(x) + 0.5, atol=1e-5)


def test_onnx_and_default_errors(tmp_path: Path, exported: tuple[Path, Path], monkeypatch) -> None:
    _, onnx_path = exported
    ws = Workspace(tmp_path / "ws")
    with pytest.raises(UsageError, match="the model is x2 but --scale 3"):
        open_upscaler(str(onnx_path), workspace=ws, scale=3)
    assert open_upscaler("default", workspace=ws).scale == 4  # as process and info choose
    with pytest.raises(UsageError, match="bicubic has nothing to ensemble"):
        open_upscaler("bicubic", workspace=ws, scale=2, ensemble=True)
    monkeypatch.setattr("srpipe.infer.session.BUNDLED_DIR", tmp_path / "empty")
    with pytest.raises(ModelNotFoundError, match="no bundled default model for x4"):
        open_upscaler("default", workspace=ws, scale=4)


def test_a_tile_too_small_for_the_overlap_is_one_usage_error_before_any_image(
        hr_dir: Path, exported: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from srpipe.model.edsr import receptive_radius

    ckpt, onnx_path = exported
    reads: list[Path] = []
    real_read = __import__("srpipe.pairs", fromlist=["read_image"]).read_image

    def counting_read(path: Path, **kw: object) -> object:
        reads.append(path)
        return real_read(path, **kw)

    monkeypatch.setattr("srpipe.pairs.read_image", counting_read)
    overlap = 3 * receptive_radius(ModelConfig(scale=2, n_resblocks=1, n_feats=8))
    for model in (str(ckpt), str(onnx_path)):
        res = CliRunner().invoke(cli, ["--workspace", str(tmp_path / "ws"), "evaluate", model, "--hr",
                                       str(hr_dir), "--tile", "8", "--device", "cpu"])
        assert res.exit_code == 2, res.output
        assert "--tile 8 is smaller than twice the tile overlap" in res.stderr
        assert res.stderr.count("srpipe: error") == 1
    assert reads == []  # refused before any image was read
    big = tmp_path / "big"
    big.mkdir()
    write_image(big / "c.png", smooth_image(np.random.default_rng(5), 4 * overlap + 6, 5 * overlap + 2))
    tiled = scores("--workspace", str(tmp_path / "ws"), "evaluate", str(ckpt), "--hr", str(big),
                   "--tile", str(2 * overlap), "--device", "cpu")
    whole = scores("--workspace", str(tmp_path / "ws"), "evaluate", str(ckpt), "--hr", str(big),
                   "--device", "cpu")
    assert "tiles of" in " ".join(tiled["notes"]) and tiled["notes"] != whole["notes"]
    assert abs(tiled["mean"]["model"]["psnr_y"] - whole["mean"]["model"]["psnr_y"]) < 0.01
