"""ONNX Runtime sessions for srpipe models: metadata, model discovery, providers, options, IO binding.

Model contract (what ``srpipe export`` writes, docs/export.md): one input ``INPUT_NAME`` and one output
``OUTPUT_NAME``, NCHW float32 RGB in [0, 1], dynamic batch/height/width, output ``scale`` × the input;
``metadata_props`` hold the keys in ``MetaKey`` as strings. Models without srpipe metadata (foreign
exports) still run: their scale is probed with a tiny input and their overlap must be given.

``OrtSession`` runs batches. Providers are chosen deliberately (``--device auto|cuda|cpu``); what
*really* runs is ``session.get_providers()[0]``, because onnxruntime-gpu silently falls back to the CPU
when the CUDA libraries are missing. CUDA errors that mean "out of memory" are recognised by
``is_out_of_memory`` so callers can shrink their work and retry.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from srpipe.errors import InputError, ModelNotFoundError, UsageError
from srpipe.workspace import Workspace

log = logging.getLogger(__name__)

INPUT_NAME, OUTPUT_NAME = "input", "output"
Device = Literal["auto", "cuda", "cpu"]
BUNDLED_DIR = Path(__file__).resolve().parents[1] / "models"  # package data (issue 5)


class MetaKey:
    """``metadata_props`` keys written by ``srpipe export``."""

    SCALE = "scale"
    ARCH = "architecture"
    BLOCKS = "n_resblocks"
    FEATS = "n_feats"
    RES_SCALE = "res_scale"
    PARAMS = "parameters"
    MFLOP = "mflop_per_lr_pixel"
    RF_THEORY = "receptive_radius_theoretical"
    RF_EFFECTIVE = "receptive_radius_effective"
    RF_PROFILE = "receptive_error_profile"
    OVERLAP = "tile_overlap"
    RECIPE = "recipe_hash"
    ITERATIONS = "trained_iterations"
    WEIGHTS = "weights"
    PSNR = "valid_psnr"
    VERSION = "srpipe_version"
    PRECISION = "precision"
    PARITY = "parity_max_abs_diff"
    SOURCE = "source"
    GRAPH = "graph_rewrite"


@dataclass(frozen=True)
class ModelInfo:
    """What a model file says about itself. ``overlap`` 0 with ``srpipe`` False means "unknown"."""

    path: Path
    scale: int
    overlap: int
    precision: str = "fp32"
    srpipe: bool = True
    props: dict[str, str] = field(default_factory=dict)


def info_from_props(path: Path, props: dict[str, str]) -> ModelInfo:
    """Build ``ModelInfo`` from metadata; raises ``InputError`` naming the file on malformed values."""
    if MetaKey.SCALE not in props:
        return ModelInfo(path=path, scale=0, overlap=0, srpipe=False, props=dict(props))
    try:
        return ModelInfo(path=path, scale=int(props[MetaKey.SCALE]), overlap=int(props[MetaKey.OVERLAP]),
                         precision=props.get(MetaKey.PRECISION, "fp32"), props=dict(props))
    except (KeyError, ValueError) as exc:
        raise InputError(f"{path}: malformed srpipe metadata ({exc}); re-export the model") from exc


def read_model_info(path: Path) -> ModelInfo:
    """Read a model's metadata without creating a session."""
    import onnx

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such model file")
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf raises assorted types on garbage
        raise InputError(f"{path}: not a readable ONNX model: {exc}") from exc
    return info_from_props(path, {p.key: p.value for p in proto.metadata_props})


def find_model(scale: int, *, model: str | Path | None, workspace: Workspace) -> Path:
    """The model to use: ``model`` itself, ``"default"`` = the bundled one, else the newest workspace
    export of ``scale``, else the bundled one; ``ModelNotFoundError`` with what to do otherwise."""
    scale = scale or 4
    if model is not None and str(model) != "default":
        path = Path(model)
        if not path.is_file():
            raise InputError(f"{path}: no such model file")
        if path.suffix.lower() in (".pt", ".pth"):
            raise UsageError(f"{path}: is a PyTorch checkpoint; export it first: srpipe export {path}")
        return path
    searched = [BUNDLED_DIR] if model is not None else [workspace.models, BUNDLED_DIR]
    for folder in searched:
        files = sorted(folder.glob("*.onnx"), key=lambda p: p.stat().st_mtime, reverse=True) \
            if folder.is_dir() else []
        for path in files:
            try:
                if read_model_info(path).scale == scale:
                    return path
            except InputError as exc:
                log.warning("skipping %s", exc)
    raise ModelNotFoundError(
        f"no x{scale} model found in {workspace.models} or among the bundled models; pass --model "
        f"FILE.onnx, or train and export one: srpipe train ... && srpipe export (writes {workspace.models})")


def is_out_of_memory(exc: BaseException) -> bool:
    """True when an ONNX Runtime error means the device ran out of memory (CUDA or arena)."""
    text = str(exc).lower()
    signs = ("out of memory", "failed to allocate memory", "bfcarena", "cudaerrormemory")
    return any(s in text for s in signs)


def cpu_threads() -> int:
    """Cores this process may use (respects affinity masks and container CPU sets)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


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
        so.intra_op_num_threads = threads if threads > 0 else cpu_threads()
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
        props = dict(self._sess.get_modelmeta().custom_metadata_map)
        info = info_from_props(self.path, props)
        if not info.srpipe:
            info = ModelInfo(path=self.path, scale=self._probe_scale(), overlap=0, srpipe=False, props=props)
        self.info = info

    def _probe_scale(self) -> int:
        y = self.run(np.zeros((1, 3, 8, 8), dtype=np.float32))
        if y.ndim != 4 or y.shape[2] % 8 or y.shape[2] != y.shape[3]:
            raise InputError(f"{self.path}: output shape {y.shape} for an 8×8 input is not an integer "
                             "upscale")
        return y.shape[2] // 8

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
        scale = self.info.scale if hasattr(self, "info") else 0
        if not scale:  # output shape unknown before the first run (probing a foreign model)
            binding.bind_output(self.output_name, "cpu")
            self._sess.run_with_iobinding(binding)
            return binding.copy_outputs_to_cpu()[0]
        # ORT writes straight into our array: no allocation inside ORT and no copy back out.
        y = np.empty((x.shape[0], 3, x.shape[2] * scale, x.shape[3] * scale), dtype=np.float32)
        binding.bind_output(self.output_name, "cpu", element_type=np.float32, shape=y.shape,
                            buffer_ptr=y.ctypes.data)
        self._sess.run_with_iobinding(binding)
        return y
