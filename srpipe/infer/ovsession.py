"""OpenVINO on the CPU: the second ``Backend`` for ONNX models, chosen for speed where it wins.

ONNX Runtime's CPU provider computes convolutions in fp32 only. OpenVINO reads the same ONNX file and,
on CPUs with native bf16 dot products (AVX-512 BF16 or AMX), runs them in bf16 with fp32 accumulation:
about twice the convolution throughput, for outputs within about one 8-bit code of fp32
(docs/performance.md has the figures and the Set5 scores). ``precision``:

- ``"fp32"``: OpenVINO's fp32 path (``INFERENCE_PRECISION_HINT`` f32);
- ``"bf16"``: bf16 inference; a ``UsageError`` where the CPU has no native bf16;
- ``"auto"``: bf16 where the CPU has it, else fp32.

OpenVINO runs in a child process of its own (started with ``spawn``, gone with its parent even after
``kill -9``, see ``srpipe.parallel.die_with``). In one process with ONNX Runtime, PyTorch and HDF5 its
native libraries were seen to corrupt the heap (a crash later, elsewhere); a process boundary rules
that out for the cost of copying each batch in and out (milliseconds against seconds of compute).

The session honours the same contract as ``OrtSession``: ``descriptor`` from the file's metadata,
foreign models probed for their scale with the same checks and messages (``session.check_output``),
``provider`` naming what ran, e.g. ``OpenVINO CPU (bf16)``. The model is compiled once with its
dynamic height/width: one compiled model serves every tile shape.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import multiprocessing
import os
from dataclasses import replace
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Literal

import numpy as np

from srpipe.contract import ModelDescriptor, describe
from srpipe.errors import InputError, SrpipeError, UsageError
from srpipe.hardware import cpu_has_bf16
from srpipe.infer.session import PROBE_SHAPE, check_output, probe_input_spec
from srpipe.parallel import usable_cores

log = logging.getLogger(__name__)

Precision = Literal["auto", "fp32", "bf16"]


def available() -> bool:
    """True when the ``openvino`` package is installed (it is optional where it has no wheels)."""
    return importlib.util.find_spec("openvino") is not None


class OvSession:
    """One OpenVINO compiled model in a worker process; ``run`` maps NCHW float32 batches to upscaled
    ones. ``close()`` (or garbage collection) ends the worker."""

    def __init__(self, path: Path, *, precision: Precision = "auto", threads: int = 0) -> None:
        self.path = Path(path)
        desc = describe(self.path)
        if precision == "auto":
            precision = "bf16" if cpu_has_bf16() else "fp32"
        elif precision == "bf16" and not cpu_has_bf16():
            raise UsageError("--precision bf16: this CPU has no native bf16 support (AVX-512 BF16 or AMX); "
                             "use --precision fp32 or auto")
        self.precision: str = precision
        ctx = multiprocessing.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_serve, name="srpipe-openvino", daemon=True,
                                 args=(child, str(self.path), precision, threads or usable_cores(),
                                       os.getpid(), not desc.srpipe))
        self._proc.start()
        child.close()
        try:
            reply = self._receive()
        except BaseException:
            self.close()
            raise
        self.provider = f"OpenVINO CPU ({precision})"
        self.on_cuda = False
        if not desc.srpipe:
            probed = check_output(self.path, PROBE_SHAPE, tuple(reply["probe"]), desc.scale)
            desc = replace(desc, scale=probed)
        self.descriptor: ModelDescriptor = desc

    @property
    def scale(self) -> int:
        return self.descriptor.scale

    def run(self, x: np.ndarray) -> np.ndarray:
        """Run one batch; ``x`` is C-contiguous NCHW float32. Returns a new NCHW float32 array."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        try:
            self._conn.send(("run", x.shape))
            self._conn.send_bytes(x.data.cast("B"))
        except (OSError, ValueError) as exc:
            raise SrpipeError(f"{self.path}: the OpenVINO worker is gone ({exc})") from exc
        shape = self._receive()["shape"]
        y = np.empty(shape, dtype=np.float32)
        self._conn.recv_bytes_into(y.data.cast("B"))
        return y

    def _receive(self) -> dict[str, Any]:
        try:
            kind, payload = self._conn.recv()
        except (EOFError, OSError) as exc:
            code = self._proc.exitcode
            raise SrpipeError(f"{self.path}: the OpenVINO worker died (exit status {code})") from exc
        if kind == "ok":
            return dict(payload)
        error, message = payload
        raise {"InputError": InputError, "UsageError": UsageError}.get(error, SrpipeError)(message)

    def close(self) -> None:
        if getattr(self, "_proc", None) is not None and self._proc.is_alive():
            with contextlib.suppress(OSError, ValueError):
                self._conn.send(("close", None))
            self._proc.join(timeout=5)
            if self._proc.is_alive():
                self._proc.kill()
        self._conn.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):  # at shutdown the daemon worker dies with us anyway
            self.close()


def _serve(conn: Connection, path: str, precision: str, threads: int, owner: int, probe: bool) -> None:
    """The worker: compile, answer ``("ok", {...})`` or ``("error", (type, message))``, then run batches
    until told to close or the pipe ends."""
    from srpipe.parallel import die_with

    die_with(owner)
    try:
        import openvino as ov

        core = ov.Core()
        model = core.read_model(path)
        if len(model.inputs) != 1 or len(model.outputs) != 1:
            raise InputError(f"{path}: expected one input and one output, found {len(model.inputs)} and "
                             f"{len(model.outputs)}")
        config = {"INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" else "f32",
                  "INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY"}
        request = core.compile_model(model, "CPU", config).create_infer_request()
        ready: dict[str, Any] = {}
        if probe:
            spec = model.inputs[0]
            shape = [d.get_length() if d.is_static else "?" for d in spec.get_partial_shape()]
            kind = "tensor(float)" if spec.get_element_type() == ov.Type.f32 else str(spec.get_element_type())
            x = probe_input_spec(Path(path), spec.get_any_name(), kind, shape)
            try:
                ready["probe"] = tuple(request.infer({0: x})[0].shape)
            except Exception as exc:
                raise InputError(f"{path}: OpenVINO cannot run a 1x3x24x32 input through this model "
                                 f"({_first_line(exc)}); srpipe needs an RGB image-to-image model") from exc
    except Exception as exc:
        error = type(exc).__name__ if isinstance(exc, (InputError, UsageError)) else "InputError"
        message = str(exc) if isinstance(exc, SrpipeError) else \
            f"{path}: OpenVINO cannot load this model: {_first_line(exc)}"
        conn.send(("error", (error, message)))
        return
    conn.send(("ok", ready))
    while True:
        try:
            command, shape = conn.recv()
        except (EOFError, OSError):
            return
        if command == "close":
            return
        x = np.empty(shape, dtype=np.float32)
        conn.recv_bytes_into(x.data.cast("B"))
        try:
            y = np.ascontiguousarray(request.infer({0: x})[0], dtype=np.float32)
        except Exception as exc:
            conn.send(("error", ("SrpipeError", f"{path}: OpenVINO failed on a {shape} batch: "
                                                f"{_first_line(exc)}")))
            continue
        conn.send(("ok", {"shape": y.shape}))
        conn.send_bytes(y.data.cast("B"))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__

