"""ONNX Runtime session, model discovery and the upscaler (fidelity, ensemble, OOM retry)."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import smooth_image
from tiny_onnx import tiny_model

from srpipe.contract import describe
from srpipe.errors import InputError, ModelNotFoundError, UsageError
from srpipe.infer.backends import is_out_of_memory
from srpipe.infer.session import OrtSession, find_model
from srpipe.infer.upscaler import TiledUpscaler
from srpipe.workspace import Workspace


@pytest.fixture(scope="session")
def model_x2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_model(tmp_path_factory, scale=2)


@pytest.fixture(scope="session")
def model_x3(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_model(tmp_path_factory, scale=3)


def test_cpu_session_reports_what_ran_and_io_binding_matches_plain_run(model_x2: Path,
                                                                       rng: np.random.Generator) -> None:
    bound = OrtSession(model_x2, device="cpu", io_binding=True)
    plain = OrtSession(model_x2, device="cpu", io_binding=False)
    assert bound.providers == ["CPUExecutionProvider"] and bound.provider == "CPUExecutionProvider"
    assert bound.descriptor.scale == 2 and bound.descriptor.overlap > 0
    for shape in ((1, 3, 17, 23), (3, 3, 8, 5)):
        x = rng.random(shape, dtype=np.float32)
        y = bound.run(x)
        assert y.shape == (shape[0], 3, shape[2] * 2, shape[3] * 2) and y.dtype == np.float32
        np.testing.assert_array_equal(y, plain.run(x))


def test_device_cuda_fails_clearly_without_the_cuda_provider(model_x2: Path) -> None:
    auto = OrtSession(model_x2, device="auto")
    if auto.provider == "CUDAExecutionProvider":
        pytest.skip("CUDA really works here")
    with pytest.raises(UsageError, match="CUDA execution provider"):
        OrtSession(model_x2, device="cuda")


def test_find_model_prefers_the_newest_export_of_the_scale(tmp_path: Path, model_x2: Path, model_x3: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("srpipe.infer.session.BUNDLED_DIR", tmp_path / "no-bundled-models")
    ws = Workspace(tmp_path / "ws")
    with pytest.raises(ModelNotFoundError, match="srpipe export"):
        find_model(2, model=None, workspace=ws)
    ws.models.mkdir(parents=True)
    old, new, other = ws.models / "old-x2.onnx", ws.models / "new-x2.onnx", ws.models / "run-x3.onnx"
    for src, dst in ((model_x2, old), (model_x2, new), (model_x3, other)):
        dst.write_bytes(src.read_bytes())
    now = time.time()
    os.utime(old, (now - 100, now - 100))
    os.utime(other, (now + 100, now + 100))
    assert find_model(2, model=None, workspace=ws) == new
    assert find_model(3, model=None, workspace=ws) == other
    assert find_model(2, model=old, workspace=ws) == old
    with pytest.raises(InputError, match="no such model"):
        find_model(2, model=tmp_path / "missing.onnx", workspace=ws)
    ckpt = tmp_path / "best.pt"
    ckpt.write_bytes(b"x")
    with pytest.raises(UsageError, match="srpipe export"):
        find_model(2, model=ckpt, workspace=ws)


def test_foreign_model_without_metadata_gets_its_scale_probed(tmp_path: Path, model_x3: Path) -> None:
    import onnx

    proto = onnx.load(str(model_x3))
    del proto.metadata_props[:]
    path = tmp_path / "foreign.onnx"
    onnx.save(proto, str(path))
    assert not describe(path).srpipe
    session = OrtSession(path, device="cpu")
    assert session.descriptor.scale == 3 and session.descriptor.overlap == 0


def test_out_of_memory_messages_are_recognised() -> None:
    assert is_out_of_memory(RuntimeError("CUDA failure 2: out of memory ; GPU=0"))
    assert is_out_of_memory(RuntimeError("BFCArena::AllocateRawInternal Failed to allocate memory"))
    assert not is_out_of_memory(RuntimeError("Invalid input shape"))


class NearestSession:
    """A fake session (srpipe's retry logic under test, not a GPU): nearest-neighbour x2 upscale, and an
    OOM-like error whenever a batch holds more than ``limit`` LR pixels."""

    provider = "FakeCUDA"
    scale = 2

    def __init__(self, limit: int) -> None:
        self.limit, self.calls = limit, []

    def run(self, x: np.ndarray) -> np.ndarray:
        self.calls.append(x.shape)
        if x.shape[2] * x.shape[3] > self.limit:
            raise RuntimeError("[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION : CUDA failure 2: out of memory")
        return np.repeat(np.repeat(x, 2, axis=2), 2, axis=3)


def test_oom_halves_the_tile_retries_and_says_so(caplog: pytest.LogCaptureFixture,
                                                 rng: np.random.Generator) -> None:
    session = NearestSession(limit=40 * 40)
    up = TiledUpscaler(session, overlap=4, tile=128)
    img = smooth_image(rng, 70, 90)
    with caplog.at_level(logging.WARNING):
        out = up(img)
    np.testing.assert_array_equal(out, np.repeat(np.repeat(img, 2, axis=0), 2, axis=1))
    assert up.tile == 32 and up.stats.oom_retries == 2  # 128 -> 64 -> 32
    assert "out of memory" in caplog.text and "tile 32" in caplog.text
    small = NearestSession(limit=4)
    with pytest.raises(RuntimeError, match="out of memory"):  # below the minimum tile: give up, loudly
        TiledUpscaler(small, overlap=4, tile=64)(img)


def test_ensemble_averages_eight_transforms_of_every_tile(model_x2: Path, rng: np.random.Generator) -> None:
    img = smooth_image(rng, 37, 29)
    plain = TiledUpscaler(NearestSession(limit=10**9), overlap=4, tile=16)(img)
    fake = NearestSession(limit=10**9)
    ens = TiledUpscaler(fake, overlap=4, tile=16, ensemble=True)
    np.testing.assert_array_equal(ens(img), plain)  # nearest upscaling is equivariant: same result
    assert len(fake.calls) == 8 * ens.stats.tiles  # batch 1: 8 transforms per tile
    th, tw = fake.calls[0][2:]
    assert th != tw and fake.calls.count((1, 3, tw, th)) == 4 * ens.stats.tiles  # rotated tiles ran too
    real_plain = TiledUpscaler.open(model_x2, device="cpu", tile=24)(img)
    real_ens = TiledUpscaler.open(model_x2, device="cpu", tile=24, ensemble=True)(img)
    diff = np.abs(real_plain.astype(int) - real_ens.astype(int))
    assert real_ens.shape == real_plain.shape and 0 < diff.mean() < 40  # a different, related estimate


@pytest.mark.parametrize("kind", ["gray", "rgb", "rgba", "gray16", "rgb16", "rgba16"])
def test_every_pixel_layout_keeps_its_kind_and_tiles_match_whole(kind: str, model_x2: Path,
                                                                 rng: np.random.Generator) -> None:
    dtype = np.uint16 if kind.endswith("16") else np.uint8
    channels = {"gray": 1, "rgb": 3, "rgba": 4}[kind.removesuffix("16")]
    img = smooth_image(rng, 41, 53, c=channels, dtype=dtype)
    img = img[..., 0] if channels == 1 else img
    tiled = TiledUpscaler.open(model_x2, device="cpu", tile=28)(img)
    whole = TiledUpscaler.open(model_x2, device="cpu", tile=0)(img)
    assert tiled.dtype == dtype and tiled.shape == (82, 106, *img.shape[2:])
    top = 65535 if dtype == np.uint16 else 255
    assert np.abs(tiled.astype(np.int64) - whole.astype(np.int64)).max() <= 2 * top / 255
    if dtype == np.uint16:  # float path: values are not 8-bit levels scaled up
        assert np.count_nonzero(tiled % 257) > tiled.size // 2
    if channels == 4:  # alpha went through the model exactly as a gray image would
        alpha_alone = TiledUpscaler.open(model_x2, device="cpu", tile=28)(np.ascontiguousarray(img[..., 3]))
        np.testing.assert_array_equal(tiled[..., 3], alpha_alone)


def framed_rgba(rng: np.random.Generator, dtype: type) -> np.ndarray:
    """RGBA with a fully transparent 10-px border, an opaque interior and a soft band between them."""
    img = smooth_image(rng, 48, 56, c=4, dtype=dtype)
    top = np.iinfo(dtype).max
    alpha = np.zeros((48, 56), dtype=np.float64)
    alpha[10:-10, 10:-10] = 0.5
    alpha[14:-14, 14:-14] = 1.0
    img[..., 3] = np.round(alpha * top).astype(dtype)
    return img


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
@pytest.mark.parametrize("which", ["tiny", "bundled"])
def test_transparent_stays_transparent_and_opaque_stays_opaque(which: str, dtype: type, model_x2: Path,
                                                               rng: np.random.Generator) -> None:
    from srpipe.infer.session import BUNDLED_DIR

    path = model_x2 if which == "tiny" else BUNDLED_DIR / "default-x2.onnx"
    img = framed_rgba(rng, dtype)
    top = np.iinfo(dtype).max
    for tile in (0, 24):
        out = TiledUpscaler.open(path, device="cpu", backend="onnxruntime", tile=tile, overlap=6)(img)
        alpha = out[..., 3]
        # LR alpha is 0 within 2 px of rows/columns 0..7, and max within 2 px of 16..31 (x2: HR 32..63)
        assert alpha[:16].max() == 0 and alpha[:, :16].max() == 0
        assert alpha[-16:].max() == 0 and alpha[:, -16:].max() == 0
        assert alpha[32:64, 32:80].min() == top
        assert 0 < alpha[24, 56] < top  # the soft band itself still goes through the model


def with_props(src: Path, dst: Path, **props: str) -> Path:
    import onnx

    proto = onnx.load(str(src))
    current = {p.key: p.value for p in proto.metadata_props}
    onnx.helper.set_model_props(proto, {**current, **props})
    dst.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(proto, str(dst))
    return dst


def test_automatic_choice_passes_over_install_check_exports_in_process_and_evaluate(
        tmp_path: Path, model_x2: Path, caplog: pytest.LogCaptureFixture) -> None:
    from srpipe.infer.session import BUNDLED_DIR
    from srpipe.upscale import open_upscaler

    ws = Workspace(tmp_path / "ws")
    smoke = with_props(model_x2, ws.models / "smoke-20250101-120000-x2.onnx", pipeline="smoke",
                       install_check="true")
    # an export made before the pipeline was recorded: the run folder in `source` names it
    old = with_props(model_x2, ws.models / "old-smoke-x2.onnx",
                     source=str(tmp_path / "runs" / "smoke-20240101-120000" / "checkpoints" / "best.pt"))
    now = time.time()
    os.utime(old, (now - 10, now - 10))
    bundled = BUNDLED_DIR / "default-x2.onnx"
    with caplog.at_level("INFO", logger="srpipe.infer.session"):
        assert find_model(2, model=None, workspace=ws) == bundled
    assert f"not choosing {smoke}: exported from the install-check pipeline 'smoke'" in caplog.text
    assert f"not choosing {old}: trained by the install-check pipeline 'smoke'" in caplog.text
    assert find_model(2, model=smoke, workspace=ws) == smoke  # asked for by name: used
    assert open_upscaler(None, workspace=ws, scale=2, backend="onnxruntime").name == "default-x2"
    real = with_props(model_x2, ws.models / "edsr-baseline-x2-20250101-120000-x2.onnx",
                      pipeline="edsr-baseline-x2", install_check="false")
    os.utime(smoke, (now + 10, now + 10))  # newer than the real export, still passed over
    caplog.clear()
    with caplog.at_level("INFO", logger="srpipe.infer.session"):
        assert find_model(2, model=None, workspace=ws) == real
    assert f"using {real}: the newest x2 export in {ws.models}" in caplog.text
    assert open_upscaler(None, workspace=ws, scale=2, backend="onnxruntime").name == real.stem
    assert find_model(2, model="default", workspace=ws) == bundled


def test_export_records_the_pipeline_and_whether_it_is_an_install_check(tmp_path: Path) -> None:
    from srpipe.config import ExportConfig, ModelConfig, load_pipeline
    from srpipe.contract import MetaKey
    from srpipe.export import export_model
    from srpipe.model.edsr import build_model

    cfg = ModelConfig(scale=2, n_resblocks=1, n_feats=8)
    for name, flag in (("smoke", "true"), ("edsr-baseline-x2", "false")):
        res = export_model(build_model(cfg).eval(), cfg, tmp_path / f"{name}.onnx", ExportConfig(),
                           pipeline=load_pipeline(name))
        assert res.metadata[MetaKey.PIPELINE] == name and res.metadata[MetaKey.INSTALL_CHECK] == flag
        assert describe(res.path).props[MetaKey.INSTALL_CHECK] == flag
