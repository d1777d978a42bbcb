"""ONNX Runtime sessions (a ``Backend`` of the tiled engine) and model discovery.

The model contract (input/output names, metadata keys, ``ModelDescriptor``) lives in
``srpipe.contract``. A session reads the descriptor from the loaded model; a model without srpipe's
metadata (a foreign export) is probed once with a small input, which confirms a stated ``scale`` or
finds it, and turns anything that is not an RGB integer-factor upscaler into an ``InputError`` naming
the file and the shapes found.

``OrtSession`` runs batches. Providers are chosen deliberately (``--device auto|cuda|cpu``); what
*really* runs is ``session.get_providers()[0]``, because onnxruntime-gpu silently falls back to the CPU
when the CUDA libraries are missing. CUDA errors that mean "out of memory" are recognised by
``is_out_of_memory`` so callers can shrink their work and retry.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import replace
from pathlib import Path
from typing import Literal

import numpy as np

from srpipe.contract import MetaKey, ModelDescriptor, describe, describe_props
from srpipe.errors import InputError, ModelNotFoundError, UsageError
from srpipe.parallel import usable_cores
from srpipe.workspace import Workspace

log = logging.getLogger(__name__)

Device = Literal["auto", "cuda", "cpu"]
BUNDLED_DIR = Path(__file__).resolve().parents[1] / "models"  # package data (issue 5)
PROBE_SHAPE = (1, 3, 24, 32)  # unequal sides: a transposing or square-only model shows itself


def install_check_reason(desc: ModelDescriptor) -> str:
    """Why ``desc`` is an install-check export that an automatic choice must not pick ("" if it is not).

    ``srpipe export`` records the training pipeline and whether it is an install check (``MetaKey``);
    where that is not recorded (older exports, models exported from a bare checkpoint), the run folder
    named in ``source`` (``<pipeline>-<YYYYmmdd-HHMMSS>/checkpoints/...``) gives the pipeline, looked up
    by name."""
    props = desc.props
    flag = props.get(MetaKey.INSTALL_CHECK)
    if flag:
        name = props.get(MetaKey.PIPELINE) or "?"
        return f"exported from the install-check pipeline '{name}'" if flag == "true" else ""
    source = Path(props.get(MetaKey.SOURCE, ""))
    if source.parent.name != "checkpoints":
        return ""
    match = re.fullmatch(r"(.+)-\d{8}-\d{6}(?:-\d+)?", source.parents[1].name)
    if match is None:
        return ""
    from srpipe.config import load_pipeline
    from srpipe.errors import SrpipeError

    try:
        recipe = load_pipeline(match.group(1))
    except SrpipeError:
        return ""
    return f"trained by the install-check pipeline '{recipe.name}'" if recipe.synthetic_images else ""


BUNDLED_NAMES = ("default", "photo")  # bundled families: srpipe/models/<name>-x<scale>.onnx


def bundled_model(name: str, scale: int) -> Path:
    """The bundled ``name`` (``default`` or ``photo``) model of ``scale``; ``ModelNotFoundError`` naming
    the scales that exist otherwise."""
    path = BUNDLED_DIR / f"{name}-x{scale}.onnx"
    if path.is_file():
        return path
    have = sorted(int(p.stem.rsplit("x", 1)[1]) for p in BUNDLED_DIR.glob(f"{name}-x*.onnx"))
    raise ModelNotFoundError(f"no bundled {name} model for x{scale}; srpipe ships {name} models for "
                             f"{', '.join(f'x{s}' for s in have) or 'no scale'}")


def find_model(scale: int, *, model: str | Path | None, workspace: Workspace) -> Path:
    """The model to use: ``model`` itself; ``"default"`` / ``"photo"`` = that bundled model of ``scale``
    (4 when 0); None (the automatic choice of ``process`` and ``evaluate``) = the newest workspace export
    of ``scale`` that is not an install check (``install_check_reason``), else the bundled default one;
    the choice and anything passed over are logged. ``ModelNotFoundError`` with what to do otherwise."""
    scale = scale or 4
    if model is not None and str(model) in BUNDLED_NAMES:
        return bundled_model(str(model), scale)
    if model is not None:
        path = Path(model)
        if not path.is_file():
            raise InputError(f"{path}: no such model file")
        if path.suffix.lower() in (".pt", ".pth"):
            raise UsageError(f"{path}: is a PyTorch checkpoint; export it first: srpipe export {path}")
        return path
    folder = workspace.models
    files = sorted(folder.glob("*.onnx"), key=lambda p: p.stat().st_mtime, reverse=True) \
        if folder.is_dir() else []
    for path in files:
        try:
            desc = describe(path)
        except InputError as exc:
            log.warning("skipping %s", exc)
            continue
        if desc.scale != scale:
            continue
        if why := install_check_reason(desc):
            log.info("not choosing %s: %s (pass --model %s to use it)", path, why, path)
            continue
        log.info("using %s: the newest x%d export in %s (--model default: the bundled model)",
                 path, scale, folder)
        return path
    try:
        return bundled_model("default", scale)
    except ModelNotFoundError:
        raise ModelNotFoundError(
            f"no x{scale} model found in {workspace.models} or among the bundled models; pass --model "
            f"FILE.onnx, or train and export one: srpipe train ... && srpipe export (writes "
            f"{workspace.models})") from None


def probe_input_spec(path: Path, name: str, kind: str, shape: list[object]) -> np.ndarray:
    """The probe input for a foreign model, after checking its declared input (``kind`` in ONNX
    Runtime's spelling, e.g. ``tensor(float)``; fixed dimensions as ints); ``InputError`` otherwise."""
    where = f"{path}: input {name} {kind} {shape}"
    if kind != "tensor(float)" or len(shape) != 4 or (isinstance(shape[1], int) and shape[1] != 3):
        raise InputError(f"{where}: srpipe needs one float32 NCHW RGB input (N, 3, H, W)")
    if isinstance(shape[2], int) or isinstance(shape[3], int):
        raise InputError(f"{where}: the height and width are fixed; srpipe needs a model exported with "
                         "dynamic height and width")
    return np.zeros(PROBE_SHAPE, dtype=np.float32)


def check_output(path: Path, in_shape: tuple[int, ...], out_shape: tuple[int, ...], stated: int) -> int:
    """The scale a probe run shows (``in_shape`` → ``out_shape``); ``InputError`` naming the file and the
    shapes when it is not an RGB integer upscale of 2 or more, or disagrees with the ``stated`` scale."""
    h, w = in_shape[2:]
    shape_in, got = "x".join(map(str, in_shape)), tuple(out_shape)
    if len(got) != 4 or got[1] != 3 or got[2] % h or got[3] % w or got[2] // h != got[3] // w:
        raise InputError(f"{path}: a {shape_in} input gives an output of shape {got}: not an RGB image "
                         "enlarged by one integer factor")
    scale = got[2] // h
    if scale < 2:
        raise InputError(f"{path}: a {shape_in} input gives {got}, the same size: not a super-resolution "
                         "model (srpipe needs a scale of 2 or more)")
    if stated and stated != scale:
        raise InputError(f"{path}: the metadata says scale {stated}, but a {shape_in} input gives {got} "
                         f"(x{scale}); fix the model's 'scale' metadata")
    return scale


class OrtSession:
    """One ONNX Runtime session; ``run`` maps NCHW float32 batches to their upscaled outputs.

    ``device``: "cpu" uses the CPU EP only; "cuda" requires the CUDA EP (``UsageError`` if ONNX Runtime
    cannot load it); "auto" tries CUDA then CPU and says which ran. ``threads``: intra-op threads, 0 =
    all usable cores. ``io_binding``: bind inputs/outputs explicitly (on CUDA the input is copied once
    to the device and the output fetched once; on the CPU the output is written straight into a numpy array).
    """

    def __init__(self, path: Path, *, device: Device = "auto", threads: int = 0, device_id: int | None = None,
                 io_binding: bool = True) -> None:
        import onnxruntime as ort

        self.path = Path(path)
        if device_id is None:  # under torchrun each local rank takes its own GPU
            device_id = int(os.environ.get("LOCAL_RANK", "0"))
        self.device_id = device_id
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL  # fusions, NCHWc on CPU
        so.intra_op_num_threads = threads if threads > 0 else usable_cores()
        so.inter_op_num_threads = 1  # EDSR is one chain of convs: nothing to run side by side
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.enable_mem_pattern = True
        so.enable_cpu_mem_arena = True
        so.log_severity_level = 3
        cuda_options = {
            "device_id": str(device_id),
            # EXHAUSTIVE benchmarks every conv for every new input shape; tile shapes change per image size.
            "cudnn_conv_algo_search": "HEURISTIC",
            "cudnn_conv_use_max_workspace": "1",
            # Grow the arena by what is asked, not by powers of two, so a big tile cannot double-reserve.
            "arena_extend_strategy": "kSameAsRequested",
            "do_copy_in_default_stream": "1",
        }
        providers: list[str | tuple[str, dict[str, str]]] = ["CPUExecutionProvider"]
        if device in ("auto", "cuda"):
            providers.insert(0, ("CUDAExecutionProvider", cuda_options))
        # In "auto" the CUDA loader's error spew on a CPU-only machine is noise (we report the fallback
        # ourselves); it goes through the process-wide logger, so silence that for the load only.
        if device == "auto":
            ort.set_default_logger_severity(4)
        try:
            self._sess = ort.InferenceSession(str(self.path), so, providers=providers)
        except Exception as exc:
            raise InputError(f"{self.path}: ONNX Runtime cannot load this model: {exc}") from exc
        finally:
            ort.set_default_logger_severity(2)
        self.providers: list[str] = list(self._sess.get_providers())
        self.provider = self.providers[0]
        if device == "cuda" and self.provider != "CUDAExecutionProvider":
            raise UsageError("--device cuda: ONNX Runtime could not use the CUDA execution provider (it "
                             "needs CUDA 13 and cuDNN 9 libraries on the library path); use --device cpu "
                             "or auto")
        if device == "auto" and self.provider != "CUDAExecutionProvider":
            log.info("CUDA execution provider unavailable; running on %s", self.provider)
        self.on_cuda = self.provider == "CUDAExecutionProvider"
        inputs, outputs = self._sess.get_inputs(), self._sess.get_outputs()
        if len(inputs) != 1 or len(outputs) != 1:
            raise InputError(f"{self.path}: expected one input and one output, found {len(inputs)} and "
                             f"{len(outputs)}")
        self.input_name, self.output_name = inputs[0].name, outputs[0].name
        self.io_binding = io_binding
        self._scale = 0  # unknown until the metadata is read or the probe has run
        desc = describe_props(self.path, dict(self._sess.get_modelmeta().custom_metadata_map))
        if not desc.srpipe:
            desc = replace(desc, scale=self._probe(desc.scale, inputs[0]))
        self.descriptor: ModelDescriptor = desc
        self._scale = desc.scale

    @property
    def scale(self) -> int:
        return self._scale

    def _probe(self, stated: int, spec: object) -> int:
        shape = list(getattr(spec, "shape", []) or [])
        x = probe_input_spec(self.path, getattr(spec, "name", "?"), getattr(spec, "type", ""), shape)
        try:
            y = np.asarray(self._sess.run([self.output_name], {self.input_name: x})[0])
        except Exception as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise InputError(f"{self.path}: ONNX Runtime cannot run a 1x3x24x32 input through this model "
                             f"({first}); srpipe needs an RGB image-to-image model") from exc
        return check_output(self.path, x.shape, y.shape, stated)

    def run(self, x: np.ndarray) -> np.ndarray:
        """Run one batch; ``x`` is C-contiguous NCHW float32. Returns a new NCHW float32 array."""
        if not self.io_binding:
            return self._sess.run([self.output_name], {self.input_name: x})[0]
        binding = self._sess.io_binding()
        if self.on_cuda:
            import onnxruntime as ort

            x_dev = ort.OrtValue.ortvalue_from_numpy(x, "cuda", self.device_id)
            binding.bind_ortvalue_input(self.input_name, x_dev)
            binding.bind_output(self.output_name, "cuda", self.device_id)
            self._sess.run_with_iobinding(binding)
            return binding.copy_outputs_to_cpu()[0]
        binding.bind_cpu_input(self.input_name, x)
        scale = self._scale
        # ORT writes straight into our array: no allocation inside ORT and no copy back out.
        y = np.empty((x.shape[0], 3, x.shape[2] * scale, x.shape[3] * scale), dtype=np.float32)
        binding.bind_output(self.output_name, "cpu", element_type=np.float32, shape=y.shape,
                            buffer_ptr=y.ctypes.data)
        self._sess.run_with_iobinding(binding)
        return y
