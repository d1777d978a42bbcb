"""Which backend runs an ONNX model, and the OpenVINO backend against ONNX Runtime."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from tiny_onnx import tiny_model

from srpipe import hardware
from srpipe.errors import InputError, UsageError
from srpipe.infer import ovsession
from srpipe.infer.backends import open_onnx_backend
from srpipe.infer.ovsession import OvSession
from srpipe.infer.session import OrtSession

needs_openvino = pytest.mark.skipif(not ovsession.available(), reason="openvino is not installed")
needs_bf16 = pytest.mark.skipif(not hardware.cpu_has_bf16(), reason="this CPU has no native bf16")


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_model(tmp_path_factory, scale=2, n_resblocks=2)


def test_the_choice_follows_the_documented_rule(model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("srpipe.infer.backends.nvidia_driver_present", lambda: False)
    assert isinstance(open_onnx_backend(model, device="cpu", precision="fp32"), OrtSession)
    assert isinstance(open_onnx_backend(model, backend="onnxruntime"), OrtSession)
    monkeypatch.setattr(ovsession, "available", lambda: True)
    monkeypatch.setattr("srpipe.infer.backends.cpu_has_bf16", lambda: False)
    assert isinstance(open_onnx_backend(model, device="cpu"), OrtSession)  # no bf16: ONNX Runtime's fp32
    monkeypatch.setattr(ovsession, "available", lambda: False)
    monkeypatch.setattr("srpipe.infer.backends.cpu_has_bf16", lambda: True)
    assert isinstance(open_onnx_backend(model, device="auto"), OrtSession)  # not installed: fall back
    with pytest.raises(UsageError, match="OpenVINO is not installed"):
        open_onnx_backend(model, backend="openvino")
    with pytest.raises(UsageError, match="--backend openvino runs on the CPU"):
        open_onnx_backend(model, backend="openvino", device="cuda")
    with pytest.raises(UsageError, match="--precision bf16 needs --backend openvino"):
        open_onnx_backend(model, backend="onnxruntime", precision="bf16")


@needs_openvino
@needs_bf16
def test_auto_on_a_bf16_cpu_is_openvino_in_bf16(model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("srpipe.infer.backends.nvidia_driver_present", lambda: False)
    session = open_onnx_backend(model, device="auto")
    assert isinstance(session, OvSession) and session.provider == "OpenVINO CPU (bf16)"
    session.close()


@needs_openvino
def test_openvino_matches_onnx_runtime(model: Path, rng: np.random.Generator) -> None:
    ref = OrtSession(model, device="cpu")
    fp32 = OvSession(model, precision="fp32")
    assert fp32.provider == "OpenVINO CPU (fp32)" and fp32.scale == 2 and fp32.descriptor.srpipe
    for shape in ((1, 3, 17, 23), (2, 3, 40, 9)):
        x = rng.random(shape, dtype=np.float32)
        expected = ref.run(x)
        got = fp32.run(x)
        assert got.shape == expected.shape and got.dtype == np.float32
        assert np.abs(got - expected).max() < 1e-4
        if hardware.cpu_has_bf16():
            bf16 = OvSession(model, precision="bf16")
            gap = np.abs(bf16.run(x) - expected).max() * 255
            assert 1e-3 < gap < 3  # really bf16 arithmetic, and within a few 8-bit codes
            bf16.close()
    fp32.close()
    assert not fp32._proc.is_alive()


@needs_openvino
def test_openvino_probes_foreign_models_like_onnx_runtime(model: Path, tmp_path: Path) -> None:
    import onnx
    from test_foreign import classifier, same_size_conv

    proto = onnx.load(str(model))
    del proto.metadata_props[:]
    bare = tmp_path / "bare.onnx"
    onnx.save(proto, str(bare))
    session = OvSession(bare, precision="fp32")
    assert session.scale == 2 and not session.descriptor.srpipe
    session.close()
    with pytest.raises(InputError, match="the same size: not a super-resolution model"):
        OvSession(same_size_conv(tmp_path / "conv.onnx"), precision="fp32")
    with pytest.raises(InputError, match=r"gives an output of shape \(1, 10\)"):
        OvSession(classifier(tmp_path / "cls.onnx", fixed=False), precision="fp32")
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\x08\x07" + b"\xff" * 64)
    with pytest.raises(InputError, match=r"garbage\.onnx"):
        OvSession(garbage, precision="fp32")


def test_cpu_bf16_flag_is_read_from_cpuinfo(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    fake = tmp_path / "cpuinfo"
    monkeypatch.setattr(hardware, "CPUINFO", fake)
    for text, expected in (("processor : 0\nflags : fpu avx512f avx512_bf16\n", True),
                           ("processor : 0\nflags : fpu amx_bf16 amx_tile\n", True),
                           ("processor : 0\nflags : fpu avx512f avx2\n", False)):
        fake.write_text(text)
        hardware.cpu_flags.cache_clear()
        assert hardware.cpu_has_bf16() is expected
    fake.unlink()
    hardware.cpu_flags.cache_clear()
    assert not hardware.cpu_has_bf16()  # unreadable: the fp32 routes
    hardware.cpu_flags.cache_clear()


def test_resolve_device_is_the_one_device_rule(monkeypatch: pytest.MonkeyPatch) -> None:
    """``evaluate`` of checkpoints and training resolve ``device`` alike; each setting keeps its words."""
    import torch

    from srpipe.train import distributed

    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert hardware.resolve_device("auto") == hardware.resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(UsageError, match=r"^--device cuda: no CUDA GPU is available to PyTorch here; use "
                                         r"--device cpu$"):
        hardware.resolve_device("cuda")
    with pytest.raises(UsageError, match=r"^train\.device = 'cuda' but PyTorch sees no CUDA GPU"):
        distributed.setup("cuda")
    assert distributed.setup("auto").device == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert hardware.resolve_device("cuda") == torch.device("cuda")  # PyTorch's current GPU
    assert hardware.resolve_device("auto", 3) == torch.device("cuda", 1)  # one GPU per torchrun rank
    assert hardware.resolve_device("cpu", 3) == torch.device("cpu")
