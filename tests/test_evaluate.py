"""``srpipe evaluate``: CLI on synthetic images with a tiny EDSR checkpoint, pairing rules, output
safety, the upscaler protocol, tiling, and the bicubic figure on the real Set5."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from conftest import smooth_image

from srpipe import metrics
from srpipe.cli import cli
from srpipe.config import EvaluateConfig, ModelConfig
from srpipe.errors import InputError
from srpipe.evaluate import evaluate
from srpipe.imaging.io import read_image, write_image
from srpipe.imaging.resize import imresize, modcrop
from srpipe.infer.backends import TorchBackend
from srpipe.infer.upscaler import TiledUpscaler
from srpipe.model.checkpoint import save_checkpoint
from srpipe.model.edsr import build_model
from srpipe.pairs import find_pairs
from srpipe.upscale import upscale_image

SIZES = {"a": (37, 29, 3), "b": (41, 33, 3), "gray": (31, 27, 1)}


@pytest.fixture
def hr_dir(tmp_path: Path, rng: np.random.Generator) -> Path:
    folder = tmp_path / "hr"
    folder.mkdir()
    for name, (h, w, c) in SIZES.items():
        img = smooth_image(rng, h, w, c=c)
        write_image(folder / f"{name}.png", img[..., 0] if c == 1 else img)
    return folder


@pytest.fixture
def model_path(tmp_path: Path) -> tuple[Path, torch.nn.Module]:
    torch.manual_seed(0)
    cfg = ModelConfig(scale=2, n_resblocks=1, n_feats=8)
    model = build_model(cfg).eval()
    path = save_checkpoint(tmp_path / "run" / "checkpoints" / "best.pt", model_config=cfg,
                           model_state=model.state_dict())
    return path, model


def run(*args: str) -> object:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def expected_scores(model: torch.nn.Module, hr: np.ndarray, scale: int) -> tuple[np.ndarray, metrics.Scores]:
    """The SR image and scores computed here step by step, independently of srpipe.evaluate."""
    hr = modcrop(hr, scale)
    lr = imresize(np.ascontiguousarray(hr), 1 / scale)
    rgb = np.repeat(lr[..., None], 3, 2) if lr.ndim == 2 else lr
    with torch.no_grad():
        y = model(torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 255)[0].permute(1, 2, 0).numpy()
    if lr.ndim == 2:
        y = y.mean(axis=2)
    sr = np.rint(np.clip(y, 0, 1) * np.float32(255)).astype(np.uint8)  # float32, as saving does
    return sr, metrics.score(sr, hr, shave=scale)


def test_cli_json_save_and_compare(
    tmp_path: Path, hr_dir: Path, model_path: tuple[Path, torch.nn.Module]
) -> None:
    ckpt, model = model_path
    out, picture = tmp_path / "sr", tmp_path / "cmp.png"
    result = run("evaluate", str(ckpt.parents[1]), "--hr", str(hr_dir), "--scale", "2", "--json",
                 "--save", str(out), "--compare", str(picture), "--device", "cpu")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert (data["scale"], data["shave"], data["lr_source"]) == (2, 2, "generated (mirror)")
    assert [r["name"] for r in data["images"]] == ["a", "b", "gray"] and data["failures"] == []
    for r in data["images"]:
        hr = read_image(hr_dir / f"{r['name']}.png").pixels
        sr, want = expected_scores(model, hr, 2)
        got = r["model"]
        assert got["psnr_y"] == pytest.approx(want.psnr_y, abs=1e-9)
        assert got["ssim_rgb"] == pytest.approx(want.ssim_rgb, abs=1e-9)
        bic = metrics.score(imresize(imresize(modcrop(hr, 2).copy(), 0.5), 2), hr, shave=2)
        assert r["bicubic"]["psnr_y"] == pytest.approx(bic.psnr_y, abs=1e-9)
        np.testing.assert_array_equal(read_image(out / f"{r['name']}.png").pixels, sr)
        assert (r["width"], r["height"]) == (sr.shape[1], sr.shape[0])
    mean = data["mean"]["model"]["psnr_y"]
    assert mean == pytest.approx(np.mean([r["model"]["psnr_y"] for r in data["images"]]))
    pic = read_image(picture).pixels
    assert pic.ndim == 3 and pic.shape[0] > 2 * 96 and pic.shape[1] > 3 * 96  # two rows of three crops


def test_human_table_and_scale_from_model(hr_dir: Path, model_path: tuple[Path, torch.nn.Module]) -> None:
    result = run("evaluate", str(model_path[0]), "--hr", str(hr_dir))
    assert result.exit_code == 0, result.output
    assert "best x2" in result.stdout and "mean of 3" in result.stdout and "gray" in result.stdout


def test_lr_pairing_rules_and_errors(tmp_path: Path, hr_dir: Path) -> None:
    lr_dir = tmp_path / "lr"
    lr_dir.mkdir()
    for name in SIZES:
        hr = read_image(hr_dir / f"{name}.png").pixels
        write_image(lr_dir / f"{name}x2.png", imresize(modcrop(hr, 2).copy(), 0.5))
    (hr_dir / "img_007_SRF_2_HR.png").write_bytes((hr_dir / "a.png").read_bytes())
    (lr_dir / "img_007_SRF_2_LR.png").write_bytes((lr_dir / "ax2.png").read_bytes())
    pairs = find_pairs(hr_dir, lr_dir, 2)
    assert {p.name: p.lr.name for p in pairs if p.lr} == {
        "a": "ax2.png", "b": "bx2.png", "gray": "grayx2.png", "img_007_SRF_2_HR": "img_007_SRF_2_LR.png"}
    result = run("evaluate", "bicubic", "--hr", str(hr_dir), "--lr", str(lr_dir), "--scale", "2", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["lr_source"] == "files"
    (lr_dir / "bx2.png").unlink()
    result = run("evaluate", "bicubic", "--hr", str(hr_dir), "--lr", str(lr_dir), "--scale", "2")
    assert result.exit_code == 2
    assert "no LR image for 1 HR image(s): b.png" in result.stderr and "bx2.png" in result.stderr


def write_lr(lr_dir: Path, hr_dir: Path, names: dict[str, str], scale: int = 2) -> None:
    """LR files ``names[hr stem]`` made from the HR images the MATLAB way (JPEG at quality 100)."""
    lr_dir.mkdir(exist_ok=True)
    for stem, lr_name in names.items():
        hr = read_image(hr_dir / f"{stem}.png").pixels
        write_image(lr_dir / lr_name, imresize(modcrop(hr, scale).copy(), 1 / scale), quality=100)


def test_jpeg_lr_pairs_with_png_hr_by_every_naming_rule(tmp_path: Path, hr_dir: Path) -> None:
    (hr_dir / "img_007_SRF_2_HR.png").write_bytes((hr_dir / "a.png").read_bytes())
    names = {"a": "ax2.{}", "b": "b.{}", "gray": "grayx2.{}", "img_007_SRF_2_HR": "img_007_SRF_2_LR.{}"}
    write_lr(tmp_path / "png", hr_dir, {k: v.format("png") for k, v in names.items()})
    write_lr(tmp_path / "jpg", hr_dir, {k: v.format("jpg" if k != "b" else "JPEG") for k, v in names.items()})
    png, jpg = find_pairs(hr_dir, tmp_path / "png", 2), find_pairs(hr_dir, tmp_path / "jpg", 2)
    def key(pairs: list) -> list:
        return [(p.name, p.hr, p.lr and p.lr.stem) for p in pairs]

    assert key(jpg) == key(png) and len(jpg) == 4
    assert [p.lr.name for p in jpg if p.lr] == ["ax2.jpg", "b.JPEG", "grayx2.jpg", "img_007_SRF_2_LR.jpg"]
    result = run("evaluate", "bicubic", "--hr", str(hr_dir), "--lr", str(tmp_path / "jpg"), "--scale", "2",
                 "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert [r["lr"] for r in data["images"]] == [str(p.lr) for p in jpg] and data["failures"] == []
    assert 20 < data["mean"]["bicubic"]["psnr_y"] < 60
    (tmp_path / "jpg" / "grayx2.jpg").unlink()  # an HR image without LR: reported as before
    result = run("evaluate", "bicubic", "--hr", str(hr_dir), "--lr", str(tmp_path / "jpg"), "--scale", "2")
    assert result.exit_code == 2
    assert "no LR image for 1 HR image(s): gray.png" in result.stderr and "grayx2.png" in result.stderr


@pytest.mark.parametrize("lr_names", [["a.png", "a.jpg"], ["ax2.png", "a.jpg"], ["ax2.jpg", "ax2.webp"]])
def test_two_lr_files_for_one_hr_image_are_an_error_naming_both(tmp_path: Path, hr_dir: Path,
                                                                lr_names: list[str]) -> None:
    write_lr(tmp_path / "lr", hr_dir, {"b": "bx2.png", "gray": "gray.png"})
    for name in lr_names:
        write_lr(tmp_path / "lr", hr_dir, {"a": name})
    result = run("evaluate", "bicubic", "--hr", str(hr_dir), "--lr", str(tmp_path / "lr"), "--scale", "2")
    assert result.exit_code == 2
    assert "2 LR files match the HR image a.png" in result.stderr
    assert all(name in result.stderr for name in lr_names)


def test_one_lr_file_for_two_hr_images_is_an_error_and_save_names_never_collide(
        tmp_path: Path, hr_dir: Path) -> None:
    write_image(hr_dir / "a.bmp", read_image(hr_dir / "b.png").pixels)  # a second HR image named "a"
    write_lr(tmp_path / "lr", hr_dir, {"a": "ax2.png", "b": "bx2.png", "gray": "grayx2.png"})
    with pytest.raises(InputError, match=r"the LR file ax2.png matches two HR images: a.bmp, a.png"):
        find_pairs(hr_dir, tmp_path / "lr", 2)
    result = run("evaluate", "bicubic", "--hr", str(hr_dir), "--scale", "2", "--save", str(tmp_path / "sr"))
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "sr").iterdir()) == ["a.bmp.png", "a.png", "b.png", "gray.png"]
    assert read_image(tmp_path / "sr" / "a.bmp.png").pixels.shape[:2] == (40, 32)  # b's size, modcropped


def test_bad_image_is_reported_and_the_rest_scored(tmp_path: Path, hr_dir: Path) -> None:
    lr_dir = tmp_path / "lr"
    lr_dir.mkdir()
    for name in SIZES:
        hr = read_image(hr_dir / f"{name}.png").pixels
        write_image(lr_dir / f"{name}.png", imresize(modcrop(hr, 3).copy(), 1 / 3))  # x3 LR, asked x2
    hr_a = read_image(hr_dir / "a.png").pixels
    write_image(lr_dir / "a.png", imresize(modcrop(hr_a, 2).copy(), 0.5))
    result = run("evaluate", "bicubic", "--hr", str(hr_dir), "--lr", str(lr_dir), "--scale", "2", "--json")
    assert result.exit_code == 1
    data = json.loads(result.stdout)
    assert [r["name"] for r in data["images"]] == ["a"]
    assert len(data["failures"]) == 2 and "wrong --scale" in data["failures"][0]["error"]
    assert "2 image(s) could not be evaluated" in result.stderr


def test_refuses_to_save_into_an_input_folder(hr_dir: Path) -> None:
    before = {p.name: p.read_bytes() for p in hr_dir.iterdir()}
    result = run("evaluate", "bicubic", "--hr", str(hr_dir), "--scale", "2", "--save", str(hr_dir))
    assert result.exit_code == 1 and "is an input folder" in result.stderr
    assert {p.name: p.read_bytes() for p in hr_dir.iterdir()} == before


def test_model_errors(tmp_path: Path, hr_dir: Path, model_path: tuple[Path, torch.nn.Module]) -> None:
    result = run("evaluate", str(model_path[0]), "--hr", str(hr_dir), "--scale", "3")
    assert result.exit_code == 2 and "the model is x2 but --scale 3" in result.stderr
    result = run("evaluate", str(tmp_path / "nope.pt"), "--hr", str(hr_dir))
    assert result.exit_code == 2 and "nope.pt: no such model file" in result.stderr
    result = run("evaluate", "bicubic", "--hr", str(hr_dir))
    assert result.exit_code == 2 and "bicubic needs --scale" in result.stderr


def test_raw_or_ema_weights_of_a_checkpoint(tmp_path: Path, hr_dir: Path) -> None:
    cfg = ModelConfig(scale=2, n_resblocks=1, n_feats=8)
    torch.manual_seed(1)
    raw = build_model(cfg).eval()
    torch.manual_seed(2)
    ema = build_model(cfg).eval()
    path = save_checkpoint(tmp_path / "ck.pt", model_config=cfg, model_state=raw.state_dict(),
                           extra={"ema": ema.state_dict()})
    img = read_image(hr_dir / "a.png").pixels
    for weights, model in (("ema", ema), ("raw", raw)):
        report = evaluate(path, hr_dir, cfg=EvaluateConfig(weights=weights, device="cpu"))
        row = next(r for r in report.images if r.name == "a")
        assert row.model.psnr_y == pytest.approx(expected_scores(model, img, 2)[1].psnr_y, abs=1e-9)
    result = run("evaluate", "bicubic", "--hr", str(hr_dir), "--scale", "2", "--weights", "raw")
    assert result.exit_code == 2
    assert "raw weights can only be chosen for a training checkpoint" in result.stderr


class Oracle:
    """An upscaler that knows the answers: returns the HR image (uint8, same layout) for each LR image."""

    name, scale, notes = "oracle", 2, ()

    def __init__(self, answers: dict[bytes, np.ndarray]) -> None:
        self.answers = answers

    def __call__(self, lr: np.ndarray) -> np.ndarray:
        return self.answers[lr.tobytes()]


def test_upscaler_protocol_and_infinite_psnr(hr_dir: Path) -> None:
    answers = {}
    for p in hr_dir.iterdir():
        hr = modcrop(read_image(p).pixels, 2).copy()
        lr = imresize(hr, 0.5)
        answers[lr.tobytes()] = hr
    rep = evaluate(Oracle(answers), hr_dir, cfg=EvaluateConfig(scale=2))
    assert rep.model == "oracle" and len(rep.images) == 3
    assert all(r.model.psnr_y == np.inf and r.model.ssim_y == pytest.approx(1.0) for r in rep.images)
    assert rep.to_dict()["mean"]["model"]["psnr_y"] is None  # JSON has no inf
    assert json.dumps(rep.to_dict())  # serialisable as is


def test_tiled_torch_upscaler_matches_whole_image(rng: np.random.Generator) -> None:
    torch.manual_seed(1)
    model = build_model(ModelConfig(scale=3, n_resblocks=1, n_feats=8))
    lr = smooth_image(rng, 45, 38)
    backend = TorchBackend(model, scale=3)
    whole = TiledUpscaler(backend, overlap=0, tile=0, name="m")(lr)
    tiled = TiledUpscaler(backend, overlap=8, tile=16, name="m")(lr)
    assert tiled.shape == whole.shape == (135, 114, 3) and tiled.dtype == np.uint8
    # Blend ramps give small weights to the zero-padded edges of each tile, so not bit-equal, but close.
    diff = np.abs(tiled.astype(int) - whole.astype(int))
    assert diff.max() <= 2 and diff.mean() < 0.3 and (diff > 0).any()
    with torch.no_grad():
        ref = model(torch.from_numpy(lr).permute(2, 0, 1)[None].float() / 255)[0].permute(1, 2, 0).numpy()
    np.testing.assert_array_equal(upscale_image(TiledUpscaler(backend, overlap=0, tile=0), lr),
                                  np.rint(np.clip(ref, 0, 1) * np.float32(255)).astype(np.uint8))


@pytest.mark.shared
def test_bicubic_on_real_set5_x4(shared_dir: Path) -> None:
    set5 = shared_dir / "data" / "benchmarks" / "Set5"
    result = run("evaluate", "bicubic", "--hr", str(set5 / "HR"), "--lr", str(set5 / "LR_bicubic" / "X4"),
                 "--scale", "4", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["mean"]["images"] == 5
    assert abs(data["mean"]["bicubic"]["psnr_y"] - 28.42) <= 0.03
    assert abs(data["mean"]["model"]["ssim_y"] - 0.8104) <= 0.001
