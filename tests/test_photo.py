"""Photo mode: degradation estimates, default↔photo weight blending, --strength, the fidelity check."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner
from conftest import smooth_image
from PIL import Image as PILImage
from tiny_onnx import tiny_model

from srpipe.cli import cli
from srpipe.data.degrade import add_noise
from srpipe.errors import UsageError
from srpipe.imaging.io import write_image
from srpipe.imaging.resize import imresize
from srpipe.infer.upscaler import TiledUpscaler
from srpipe.photo import estimate as est
from srpipe.photo.blend import STRENGTH_KEY, blend
from srpipe.photo.fidelity import back_project, consistency_db
from srpipe.photo.strength import StrengthUpscaler


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Two srpipe exports of one tiny x2 architecture with different weights: 'default' and 'photo'."""
    import torch

    from srpipe.config import ExportConfig, ModelConfig
    from srpipe.export import export_model
    from srpipe.model.edsr import build_model

    default = tiny_model(tmp_path_factory, scale=2)
    torch.manual_seed(99)
    cfg = ModelConfig(scale=2, n_resblocks=1, n_feats=8)
    photo = tmp_path_factory.mktemp("photo") / "photo-x2.onnx"
    export_model(build_model(cfg).eval(), cfg, photo, ExportConfig(), source="random weights (tests)")
    return default, photo


def _weights(path: Path) -> dict[str, np.ndarray]:
    import onnx
    from onnx import numpy_helper

    return {t.name: numpy_helper.to_array(t) for t in onnx.load(str(path)).graph.initializer}


# ---- estimates ----

@pytest.mark.parametrize("quality", [5, 20, 49, 50, 51, 75, 90, 100])
def test_jpeg_quality_is_exact_for_opencv_files(tmp_path: Path, rng: np.random.Generator,
                                                quality: int) -> None:
    path = tmp_path / "a.jpg"
    cv2.imwrite(str(path), smooth_image(rng, 23, 17), [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert est.jpeg_quality(path) == (quality, True)


def test_jpeg_quality_of_other_tables_and_other_files(tmp_path: Path, rng: np.random.Generator) -> None:
    table = [int(v) for v in (est.ijg_table(70) + 3)]  # not any IJG quality: nearest is 70-ish, not exact
    PILImage.fromarray(smooth_image(rng, 23, 17)).save(tmp_path / "c.jpg", qtables=[table, table])
    q, exact = est.jpeg_quality(tmp_path / "c.jpg")  # type: ignore[misc]
    assert not exact and 60 <= q <= 70
    write_image(tmp_path / "p.png", smooth_image(rng, 23, 17))
    (tmp_path / "t.jpg").write_bytes(b"\xff\xd8\xff")  # truncated
    assert est.jpeg_quality(tmp_path / "p.png") is None
    assert est.jpeg_quality(tmp_path / "t.jpg") is None
    assert est.jpeg_quality(tmp_path / "missing.jpg") is None


@pytest.mark.parametrize("sigma", [2.0, 5.0, 10.0])
def test_noise_sigma_reads_gaussian_noise(sigma: float) -> None:
    flat = np.full((120, 150, 3), 120, np.uint8)
    got = est.noise_sigma(add_noise(flat, sigma, False, np.random.default_rng(3)))
    assert abs(got - sigma) < 0.15 * sigma
    gray16 = (add_noise(flat[..., 0], sigma, False, np.random.default_rng(4)).astype(np.uint16) * 257)
    assert abs(est.noise_sigma(gray16) - sigma) < 0.15 * sigma  # 16-bit and gray on the same scale


def test_noise_sigma_ignores_clipped_areas_and_smooth_detail(rng: np.random.Generator) -> None:
    white = add_noise(np.full((60, 60, 3), 252, np.uint8), 5, False, rng)  # clipping hides the noise
    assert est.noise_sigma(white) == 0.0
    yy, xx = np.mgrid[0:120, 0:100] / 9.0
    edges = np.where(xx > 5, 80.0, 0.0) + np.where(yy > 7, 60.0, 0.0)  # flat areas and hard edges
    clean = np.stack([60 + 40 * np.sin(xx + k) * np.cos(yy) + edges for k in range(3)], axis=2)
    clean8 = np.clip(np.rint(clean), 0, 255).astype(np.uint8)
    assert est.noise_sigma(clean8) < 1.0
    assert est.noise_sigma(add_noise(clean8, 5, False, rng)) > est.NOISE_FULL * 0.9


def test_auto_strength_rule() -> None:
    assert est.auto_strength(None, 0.5) == 0.0
    assert est.auto_strength(est.JPEG_CLEAN, 0.5) == 0.0
    assert est.auto_strength(est.JPEG_FULL, 0.5) == 1.0 and est.auto_strength(30, 0.0) == 1.0
    assert est.auto_strength(None, est.NOISE_FULL) == 1.0
    mid = est.auto_strength((est.JPEG_CLEAN + est.JPEG_FULL) // 2, 0.0)
    assert 0.3 <= mid <= 0.7 and round(mid / est.STEP, 6) == round(mid / est.STEP)
    assert est.auto_strength(95, 4.0) == est.auto_strength(None, 4.0)  # the stronger sign wins


# ---- blending ----

def test_blend_interpolates_every_weight_and_is_cached(pair: tuple[Path, Path], tmp_path: Path) -> None:
    default, photo = pair
    assert blend(default, photo, 0.0, tmp_path) == default and blend(default, photo, 1.0, tmp_path) == photo
    path = blend(default, photo, 0.3, tmp_path)
    wa, wb, wm = _weights(default), _weights(photo), _weights(path)
    assert wm.keys() == wb.keys()
    for name, w in wm.items():
        want = ((1 - 0.3) * wa[name].astype(np.float64) + 0.3 * wb[name].astype(np.float64)).astype(w.dtype)
        np.testing.assert_array_equal(w, want)
    import onnx

    meta = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert meta[STRENGTH_KEY] == "0.3" and meta["scale"] == "2"
    stamp = path.stat().st_mtime_ns
    assert blend(default, photo, 0.3, tmp_path) == path and path.stat().st_mtime_ns == stamp


def test_blend_refuses_other_architectures(pair: tuple[Path, Path], tmp_path: Path,
                                           tmp_path_factory: pytest.TempPathFactory) -> None:
    other = tiny_model(tmp_path_factory, scale=2, n_feats=12)
    with pytest.raises(UsageError, match=r"differ in weight .*one architecture"):
        blend(pair[0], other, 0.5, tmp_path)


def test_strength_upscaler_matches_the_single_models(pair: tuple[Path, Path], tmp_path: Path,
                                                     rng: np.random.Generator) -> None:
    default, photo = pair

    def opener(p: Path) -> TiledUpscaler:
        return TiledUpscaler.open(p, device="cpu", tile=0, backend="onnxruntime", precision="fp32")

    img = smooth_image(rng, 23, 17)
    for strength, model in ((0.0, default), (1.0, photo)):
        engine = StrengthUpscaler(default, photo, strength=strength, opener=opener, cache_dir=tmp_path)
        engine.choose(None, img)
        np.testing.assert_array_equal(engine(img), opener(model)(img))
    auto = StrengthUpscaler(default, photo, strength=None, opener=opener, cache_dir=tmp_path, keep=1)
    cv2.imwrite(str(tmp_path / "q30.jpg"), img, [cv2.IMWRITE_JPEG_QUALITY, 30])
    assert auto.choose(tmp_path / "q30.jpg", img).strength == 1.0
    assert auto.choose(None, img).strength == 0.0  # a clean image without a JPEG file
    auto(img)
    assert len(auto._open) == 1 and auto.stats.image_lr_pixels == 23 * 17


# ---- fidelity ----

def test_fidelity_sees_a_colour_drift_and_back_projection_removes_it(rng: np.random.Generator) -> None:
    src = imresize(smooth_image(rng, 92, 68), 1 / 2)
    up = imresize(src, 2)
    clean = consistency_db(up, src, 2)
    drift = np.clip(up.astype(int) + np.array([12, 6, -12]), 0, 255).astype(np.uint8)
    drifted = consistency_db(drift, src, 2)
    assert clean > 40 and drifted < clean - 10
    fixed = back_project(drift, src, 2)
    assert fixed.shape == drift.shape and fixed.dtype == np.uint8
    assert consistency_db(fixed, src, 2) > drifted + 10
    colour_error = np.abs(imresize(fixed, 1 / 2).astype(int) - src).mean(axis=(0, 1))
    assert (colour_error < 1.0).all()  # every channel, not only the Y the score sees
    rgba = np.concatenate([drift, np.full((*drift.shape[:2], 1), 77, np.uint8)], axis=2)
    src_a = np.concatenate([src, np.full((*src.shape[:2], 1), 77, np.uint8)], axis=2)
    out = back_project(rgba, src_a, 2)
    assert (out[..., 3] == 77).all() and np.array_equal(out[..., :3], fixed)
    src16 = src.astype(np.uint16) * 257
    assert back_project(drift.astype(np.uint16) * 257, src16, 2).dtype == np.uint16


# ---- process and evaluate ----

@pytest.fixture
def bundled_pair(pair: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """The tiny pair stands in for the bundled default/photo x2 models."""
    from srpipe.photo import strength

    monkeypatch.setattr(strength, "bundled_model", lambda name, scale: pair[name == "photo"])
    return pair


def _process(tmp_path: Path, *args: str) -> tuple[int, dict, str]:
    res = CliRunner().invoke(cli, ["--workspace", str(tmp_path / "ws"), "process", str(tmp_path / "in"),
                                   "--out", str(tmp_path / "out"), "--scale", "2", "--json", *args])
    return res.exit_code, (json.loads(res.stdout) if res.stdout.startswith("{") else {}), res.stderr


def test_process_photo_mode_reports_estimates_strength_and_fidelity(bundled_pair: tuple[Path, Path],
                                                                    tmp_path: Path,
                                                                    rng: np.random.Generator) -> None:
    (tmp_path / "in").mkdir()
    img = smooth_image(rng, 23, 17)
    cv2.imwrite(str(tmp_path / "in" / "q40.jpg"), img[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 40])
    write_image(tmp_path / "in" / "clean.png", img)
    code, rep, err = _process(tmp_path, "--model", "photo", "--backend", "onnxruntime")
    assert code == 0, err
    files = {Path(f["input"]).name: f for f in rep["files"]}
    assert files["q40.jpg"]["jpeg_quality"] == 40 and files["q40.jpg"]["strength"] == 1.0
    assert files["clean.png"]["jpeg_quality"] is None and files["clean.png"]["strength"] == 0.0
    assert rep["strength"] == "auto" and all(f["fidelity_db"] > 0 for f in rep["files"])
    assert rep["fidelity"]["worst_file"] in {f["input"] for f in rep["files"]}
    code, rep, err = _process(tmp_path, "--model", "photo", "--backend", "onnxruntime", "--strength", "0.5",
                              "--fidelity-fix")
    assert code == 0, err
    assert all(f["reason"] == "redone: strength auto→strength 0.5, fidelity-fix" for f in rep["files"])
    assert all(f["strength"] == 0.5 and f["fidelity_fixed_db"] > f["fidelity_db"] for f in rep["files"])


def test_strength_needs_the_photo_model(tmp_path: Path, rng: np.random.Generator) -> None:
    (tmp_path / "in").mkdir()
    write_image(tmp_path / "in" / "a.png", smooth_image(rng, 23, 17))
    code, _, err = _process(tmp_path, "--model", "default", "--strength", "0.5")
    assert code == 2 and "--strength needs --model photo" in err
    code, _, err = _process(tmp_path, "--model", "photo", "--strength", "1.5")
    assert code == 2 and "neither 'auto' nor a number in [0, 1]" in err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_evaluate_photo_strength_per_image(bundled_pair: tuple[Path, Path], tmp_path: Path,
                                           rng: np.random.Generator) -> None:
    hr, lr = tmp_path / "hr", tmp_path / "lr"
    hr.mkdir()
    lr.mkdir()
    for i in range(2):
        img = smooth_image(rng, 46, 34)
        write_image(hr / f"im{i}.png", img)
        cv2.imwrite(str(lr / f"im{i}.jpg"), imresize(img, 1 / 2)[..., ::-1],
                    [cv2.IMWRITE_JPEG_QUALITY, 45 if i else 97])
    res = CliRunner().invoke(cli, ["--workspace", str(tmp_path / "ws"), "evaluate", "photo", "-s", "2",
                                   "--hr", str(hr), "--lr", str(lr), "--json", "--backend", "onnxruntime"])
    assert res.exit_code == 0, res.stderr
    got = {r["name"]: r["strength"] for r in json.loads(res.stdout)["images"]}
    assert got == {"im0": 0.0, "im1": 1.0}
    res = CliRunner().invoke(cli, ["--workspace", str(tmp_path / "ws"), "evaluate", "default", "-s", "2",
                                   "--hr", str(hr), "--strength", "auto"])
    assert res.exit_code == 2 and "--strength needs the photo model" in res.stderr
