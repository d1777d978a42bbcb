"""What the tiled engine runs: the ``Backend`` protocol and its PyTorch implementation.

A backend maps an NCHW float32 RGB batch in [0, 1] (C-contiguous numpy) to its ``scale``× upscaled
NCHW float32 batch (numpy, unclamped). Three exist: ``srpipe.infer.session.OrtSession`` (ONNX Runtime)
and ``srpipe.infer.ovsession.OvSession`` (OpenVINO) for ``.onnx`` files in ``process`` and ``evaluate``,
chosen by :func:`open_onnx_backend`, and :class:`TorchBackend` (an ``nn.Module``: ``evaluate`` of
checkpoints and training validation). ``provider`` names what really ran, for reports.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol

import numpy as np

from srpipe.errors import UsageError
from srpipe.hardware import cpu_has_bf16

if TYPE_CHECKING:
    import torch

    from srpipe.infer.ovsession import OvSession
    from srpipe.infer.session import OrtSession


class Backend(Protocol):
    """NCHW float32 batch → NCHW float32 batch at ``scale`` × the height and width."""

    @property
    def scale(self) -> int: ...

    @property
    def provider(self) -> str: ...

    def run(self, x: np.ndarray, /) -> np.ndarray: ...


def is_out_of_memory(exc: BaseException) -> bool:
    """True when a backend error means the device ran out of memory (CUDA, ORT's arena, PyTorch)."""
    text = str(exc).lower()
    signs = ("out of memory", "failed to allocate memory", "bfcarena", "cudaerrormemory")
    return type(exc).__name__ == "OutOfMemoryError" or any(s in text for s in signs)


class TorchBackend:
    """An SR ``nn.Module`` (NCHW float in [0, 1] in and out) as a backend, in fp32 inference mode.

    The module is put in eval mode for each call and restored afterwards, so training code can pass
    the model it is training. Batches go to ``device`` and come back as numpy float32.
    """

    def __init__(self, model: torch.nn.Module, *, scale: int, device: str | torch.device = "cpu") -> None:
        import torch

        self.model, self._scale = model, scale
        self.device = torch.device(device)

    @property
    def scale(self) -> int:
        return self._scale

    @property
    def provider(self) -> str:
        return f"PyTorch ({self.device})"

    def run(self, x: np.ndarray, /) -> np.ndarray:
        import torch

        was_training = self.model.training
        self.model.eval()
        try:
            with torch.inference_mode():
                y = self.model(torch.from_numpy(x).to(self.device))
            return y.float().cpu().numpy()
        finally:
            self.model.train(was_training)


BackendChoice = Literal["auto", "onnxruntime", "openvino"]
Precision = Literal["auto", "fp32", "bf16"]


def nvidia_driver_present() -> bool:
    """Whether the NVIDIA driver library loads: without it the CUDA provider cannot work, and trying it
    only costs a session build."""
    import ctypes

    try:
        ctypes.CDLL("libcuda.so.1" if os.name != "nt" else "nvcuda.dll")
    except OSError:
        return False
    return True


def open_onnx_backend(path: Path, *, device: Literal["auto", "cuda", "cpu"] = "auto",
                      backend: BackendChoice = "auto", precision: Precision = "auto", threads: int = 0,
                      io_binding: bool = True) -> OrtSession | OvSession:
    """The backend that runs an ONNX model (docs/process.md, "The engine and its backends"):

    - ``onnxruntime``: ONNX Runtime, CUDA provider when ``device`` allows and it works, else CPU (fp32);
    - ``openvino``: OpenVINO on the CPU, ``precision`` as in ``infer.ovsession``;
    - ``auto``: ONNX Runtime on CUDA when a GPU works; else OpenVINO in bf16 when it is installed, the
      CPU has native bf16 and ``precision`` is not ``fp32``; else ONNX Runtime on the CPU.
    """
    from srpipe.infer import ovsession
    from srpipe.infer.session import OrtSession

    if backend == "openvino" or (backend == "auto" and device == "cpu" and precision == "bf16"):
        if device == "cuda":
            raise UsageError("--backend openvino runs on the CPU; use --device cpu or auto")
        if not ovsession.available():
            raise UsageError("OpenVINO is not installed (pip install openvino); use --backend onnxruntime")
        return ovsession.OvSession(path, precision=precision, threads=threads)
    if backend == "onnxruntime" and precision == "bf16":
        raise UsageError("--precision bf16 needs --backend openvino (ONNX Runtime's CPU provider computes in "
                         "fp32)")
    bf16_cpu = backend == "auto" and device != "cuda" and precision != "fp32" and ovsession.available() \
        and cpu_has_bf16()
    if bf16_cpu and not (device == "auto" and nvidia_driver_present()):
        return ovsession.OvSession(path, precision="bf16", threads=threads)
    session = OrtSession(path, device=device, threads=threads, io_binding=io_binding)
    if bf16_cpu and not session.on_cuda:  # a driver, but no working CUDA provider
        return ovsession.OvSession(path, precision="bf16", threads=threads)
    return session
