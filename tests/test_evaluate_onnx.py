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
from srpipe.model.checkpoint import save_checkpoint
from srpipe.model.edsr import build_model
from srpipe.upscale import EnsembleUpscaler, open_upscaler


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
    lr = smooth_image(rng, 7, 5)

    class Nearest:  # equivariant under flips/rotations: the ensemble must give it back unchanged
        name, scale = "nearest", 2

        def __call__(self, x: np.ndarray) -> np.ndarray:
            return x.repeat(2, 0).repeat(2, 1).astype(np.float32) / 255

    class Ramp(Nearest):  # not equivariant: adds a left-to-right ramp in the frame it is given
        def __call__(self, x: np.ndarray) -> np.ndarray:
            y = super().__call__(x)
            return y + np.linspace(0, 1, y.shape[1], dtype=np.float32)[None, :, None]

    assert np.allclose(EnsembleUpscaler(Nearest())(lr), Nearest()(lr), atol=1e-6)
    # Over the 8 frames the ramp points along +x, -x, +y, -y equally often: it averages to its mean 0.5.
    out = EnsembleUpscaler(Ramp())(lr)
    assert np.allclose(out, Nearest()(lr) + 0.5, atol=1e-5)


def test_onnx_and_default_errors(tmp_path: Path, exported: tuple[Path, Path], monkeypatch) -> None:
    _, onnx_path = exported
    with pytest.raises(UsageError, match="the model is x2 but --scale 3"):
        open_upscaler(str(onnx_path), scale=3)
    with pytest.raises(UsageError, match="'default' needs --scale"):
        open_upscaler("default")
    with pytest.raises(UsageError, match="bicubic has nothing to ensemble"):
        open_upscaler("bicubic", scale=2, ensemble=True)
    monkeypatch.setattr("srpipe.infer.session.BUNDLED_DIR", tmp_path / "empty")
    with pytest.raises(ModelNotFoundError, match="no x4 model found"):
        open_upscaler("default", scale=4)
