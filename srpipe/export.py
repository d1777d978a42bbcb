"""``srpipe export``: a trained EDSR becomes a self-describing, verified ONNX model.

Contract (docs/export.md): one input ``INPUT_NAME`` and one output ``OUTPUT_NAME``
(``srpipe.infer.session``), NCHW float32 RGB in [0, 1], dynamic batch/height/width, opset
``ExportConfig.opset`` (>= 17); PixelShuffle becomes DepthToSpace. ``metadata_props`` carry
``contract.MetaKey``: scale, architecture and size, FLOPs, theoretical and *measured* receptive radius,
the recommended tile overlap derived from the measurement (``infer.receptive``), training recipe hash,
validation PSNR (when the checkpoint's weights are the validated best), precision, parity, version, and
the training pipeline's name with whether it is an install check (``synthetic_images`` set, as the
smoke recipe): ``infer.session.find_model`` never picks such an export on its own.

Verification before anything is written: ``onnx.checker`` (full), then ONNX Runtime (CPU) against
PyTorch fp32 on 1×3×17×31 and 2×3×64×48 inputs: max |Δ| must be <= ``atol`` (fp32) or ``fp16_atol``
(``--fp16``), else ``ExportError``. ``--fp16`` stores half-precision weights and computes in half,
with fp32 input/output kept by Casts at the boundary. Files are written atomically.

What is traced is ``export_graph.export_graph(model)``: the same function with the tail conv moved
before the last PixelShuffle (8 % faster in ONNX Runtime); verification compares it with the original.
Exporter: torch 2.13 defaults to the dynamo exporter, which needs the ``onnxscript`` package (not a
dependency); the TorchScript exporter (``dynamo=False``) gives a clean graph here (Sub, Conv, Relu, Add,
DepthToSpace; symbolic H/W), so that is the one used.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import logging
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from srpipe import __version__
from srpipe.config import ExportConfig, ModelConfig, Pipeline, load_pipeline
from srpipe.contract import INPUT_NAME, OUTPUT_NAME, MetaKey
from srpipe.errors import ExportError, InputError, SrpipeError
from srpipe.export_graph import Half, TailBeforeShuffle, export_graph, flops_per_lr_pixel, to_onnx_bytes
from srpipe.infer.receptive import ReceptiveField, measure, test_card
from srpipe.model.edsr import count_parameters, receptive_radius
from srpipe.progress import ProgressFn, report
from srpipe.workspace import Workspace

log = logging.getLogger(__name__)

VERIFY_SHAPES = ((1, 3, 17, 31), (2, 3, 64, 48))
# Trainer settings that do not change what the weights are (logistics); left out of the recipe hash.
_NOT_RECIPE = frozenset({"workers", "log_every", "checkpoint_every", "tensorboard", "device", "stores",
                         "val_every", "val_images", "val_tile"})


@dataclass(frozen=True)
class ExportResult:
    """What was written and how well it matched PyTorch (``parity`` None = not measurable here)."""

    path: Path
    source: str
    scale: int
    precision: str
    parity: float | None
    parity_note: str
    receptive: ReceptiveField
    metadata: dict[str, str]

    def to_dict(self) -> dict[str, object]:
        return {"path": str(self.path), "source": self.source, "scale": self.scale,
                "precision": self.precision, "parity": self.parity, "parity_note": self.parity_note,
                "receptive": dataclasses.asdict(self.receptive), "metadata": self.metadata}

    def lines(self) -> list[str]:
        rf = self.receptive
        return [f"wrote {self.path} (x{self.scale}, {self.precision}) from {self.source or 'a model'}",
                f"verified: {self.parity_note}",
                f"receptive radius: theoretical {rf.theoretical} LR px, measured effective {rf.effective} "
                f"(< 0.5 codes); recommended tile overlap {rf.overlap} LR px"]


def latest_run(workspace: Workspace) -> Path:
    """The most recently started run (``<pipeline>-<YYYYmmdd-HHMMSS>``; mtime breaks ties)."""
    runs = [p for p in workspace.runs.iterdir() if p.is_dir()] if workspace.runs.is_dir() else []
    if not runs:
        raise InputError(f"no training runs in {workspace.runs}; train one (srpipe train) or pass a run "
                         "folder or checkpoint file")

    def started(p: Path) -> tuple[str, float]:
        m = re.search(r"(\d{8}-\d{6})$", p.name)
        return (m.group(1) if m else "", p.stat().st_mtime)

    return max(runs, key=started)


@dataclass(frozen=True)
class TrainingRecord:
    """What an srpipe checkpoint says about how its weights were made (empty for foreign files).
    ``valid_psnr`` is quoted only when the exported weights are the ones that were validated."""

    recipe_hash: str = ""
    iteration: int | None = None
    weights: str = ""  # "ema" or "raw": which of the checkpoint's weights were exported
    valid_psnr: float | None = None


def training_record(obj: Any, *, use_ema: bool = True) -> TrainingRecord:
    """The :class:`TrainingRecord` of a loaded checkpoint exported with EMA (``use_ema``) or raw weights."""
    from srpipe.model.checkpoint import is_srpipe_checkpoint

    train = obj.get("train") if is_srpipe_checkpoint(obj) else None
    if not isinstance(train, dict):
        return TrainingRecord()
    recipe = ""
    if isinstance(train.get("config"), dict):
        kept = {k: v for k, v in train["config"].items() if k not in _NOT_RECIPE}
        recipe = hashlib.sha256(json.dumps(kept, sort_keys=True, default=str).encode()).hexdigest()[:16]
    found = train.get("state")
    state: dict[str, Any] = found if isinstance(found, dict) else {}
    has_ema = isinstance(obj.get("ema"), dict)
    weights = "ema" if use_ema and has_ema else "raw"
    psnr = state.get("best_psnr")
    # Only the checkpoint whose weights were the validated best carries their PSNR, and validation
    # scores the EMA weights whenever there are any.
    if state.get("best_iteration") != state.get("iteration") or not isinstance(psnr, float) \
            or not math.isfinite(psnr) or (has_ema and weights == "raw"):
        psnr = None
    iteration = state.get("iteration")
    return TrainingRecord(recipe_hash=recipe, iteration=iteration if isinstance(iteration, int) else None,
                          weights=weights, valid_psnr=psnr)


def verification_inputs() -> list[np.ndarray]:
    """The NCHW test-card batches of ``VERIFY_SHAPES`` (odd sizes, batch 2 checks the dynamic batch)."""
    return [np.stack([test_card(h, w, seed=10 * i + j).transpose(2, 0, 1) for j in range(n)])
            for i, (n, _, h, w) in enumerate(VERIFY_SHAPES)]


def max_gap(run: Callable[[np.ndarray], np.ndarray], reference: nn.Module) -> float:
    """max |run(x) − reference(x)| over ``verification_inputs()``; shapes must agree."""
    worst = 0.0
    for x in verification_inputs():
        with torch.no_grad():
            ref = reference(torch.from_numpy(x)).numpy()
        got = run(x)
        if got.shape != ref.shape:
            raise ExportError(f"output shape {got.shape} differs from PyTorch's {ref.shape} for {x.shape}")
        worst = max(worst, float(np.abs(got - ref).max()))
    return worst


def verify(data: bytes, reference: nn.Module) -> float:
    """max |ONNX Runtime (CPU) − PyTorch fp32|; raises what ONNX Runtime raises if it cannot run it."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    sess = ort.InferenceSession(data, so, providers=["CPUExecutionProvider"])
    return max_gap(lambda x: sess.run([OUTPUT_NAME], {INPUT_NAME: x})[0], reference)


def export_model(model: nn.Module, model_config: ModelConfig, out: Path, cfg: ExportConfig, *,
                 source: str = "", record: TrainingRecord | None = None, pipeline: Pipeline | None = None,
                 progress: ProgressFn | None = None) -> ExportResult:
    """Measure, export, verify and atomically write ``model`` (any EDSR in eval mode) to ``out``."""
    import onnx

    from srpipe.imaging.atomic import atomic_path

    if cfg.opset < 17:
        raise ExportError(f"opset {cfg.opset} is too old: srpipe exports opset 17 or newer")
    model = model.float().eval().cpu()
    record = record or TrainingRecord()
    report(progress, "export", 0, 4, "measuring receptive field")

    def forward(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return model(torch.from_numpy(x)).numpy()

    rf = measure(forward, scale=model_config.scale, theoretical=receptive_radius(model_config))
    log.info("receptive radius: theoretical %d, effective %d LR px (< 0.5 codes); tile overlap %d",
             rf.theoretical, rf.effective, rf.overlap)
    report(progress, "export", 1, 4, "exporting")
    graph = export_graph(copy.deepcopy(model))
    traced = Half(graph) if cfg.fp16 else graph
    data = to_onnx_bytes(traced, opset=cfg.opset)
    proto = onnx.load_from_string(data)
    try:
        onnx.checker.check_model(proto, full_check=True)
    except onnx.checker.ValidationError as exc:
        raise ExportError(f"the exported graph fails onnx.checker: {exc}") from exc
    report(progress, "export", 2, 4, "verifying against PyTorch")
    parity, note = _parity(data, model, cfg)
    meta = {
        MetaKey.SCALE: model_config.scale, MetaKey.ARCH: model_config.arch,
        MetaKey.BLOCKS: model_config.n_resblocks, MetaKey.FEATS: model_config.n_feats,
        MetaKey.RES_SCALE: model_config.res_scale, MetaKey.PARAMS: count_parameters(model),
        MetaKey.MFLOP: round(flops_per_lr_pixel(model) / 1e6, 4),
        MetaKey.RF_THEORY: rf.theoretical, MetaKey.RF_EFFECTIVE: rf.effective,
        MetaKey.RF_PROFILE: json.dumps(list(rf.profile)), MetaKey.OVERLAP: rf.overlap,
        MetaKey.RECIPE: record.recipe_hash, MetaKey.WEIGHTS: record.weights,
        MetaKey.ITERATIONS: "" if record.iteration is None else record.iteration,
        MetaKey.PSNR: "" if record.valid_psnr is None else f"{record.valid_psnr:.4f}",
        MetaKey.VERSION: __version__, MetaKey.PRECISION: "fp16" if cfg.fp16 else "fp32",
        MetaKey.PARITY: "" if parity is None else f"{parity:.3g}", MetaKey.SOURCE: source,
        MetaKey.GRAPH: "tail-conv-before-shuffle" if isinstance(graph, TailBeforeShuffle) else "",
        MetaKey.PIPELINE: pipeline.name if pipeline else "",
        MetaKey.INSTALL_CHECK: "" if pipeline is None else "true" if pipeline.synthetic_images else "false",
    }
    metadata = {k: str(v) for k, v in meta.items()}
    onnx.helper.set_model_props(proto, metadata)
    proto.producer_name, proto.producer_version = "srpipe", __version__
    report(progress, "export", 3, 4, "writing")
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        tmp.write_bytes(proto.SerializeToString())
    report(progress, "export", 4, 4, "done")
    return ExportResult(path=out, source=source, scale=model_config.scale,
                        precision=metadata[MetaKey.PRECISION], parity=parity, parity_note=note,
                        receptive=rf, metadata=metadata)


def _parity(data: bytes, model: nn.Module, cfg: ExportConfig) -> tuple[float | None, str]:
    """Check ONNX Runtime against PyTorch fp32; returns (max |Δ| or None, a sentence saying what it is)."""
    if not cfg.fp16:
        parity = verify(data, model)
        if parity > cfg.atol:
            raise ExportError(f"ONNX Runtime and PyTorch disagree: max |Δ| = {parity:.3g} > {cfg.atol:g} on "
                              f"{VERIFY_SHAPES}; nothing was written")
        return parity, f"fp32: max |ONNX Runtime - PyTorch| = {parity:.2g} (limit {cfg.atol:g})"
    half = Half(copy.deepcopy(model))

    def run_half(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return half(torch.from_numpy(x)).numpy()

    try:  # PyTorch rounds every activation to fp16 between layers, as a GPU fp16 run does
        torch_gap: float | None = max_gap(run_half, model)
    except RuntimeError as exc:
        log.info("PyTorch cannot run fp16 on this CPU: %s", exc)
        torch_gap = None
    try:
        ort_gap: float | None = verify(data, model)
    except ExportError:
        raise
    except Exception as exc:  # an EP without fp16 kernels: say so rather than invent a figure
        log.warning("the fp16 model cannot run on this machine's ONNX Runtime CPU provider: %s", exc)
        ort_gap = None
    worst = max((g for g in (ort_gap, torch_gap) if g is not None), default=None)
    if worst is not None and worst > cfg.fp16_atol:
        raise ExportError(f"fp16 differs from PyTorch fp32 by max |Δ| = {worst:.3g} > {cfg.fp16_atol:g}; "
                          "nothing was written (export fp32 instead)")
    ort_text = "not measurable on this machine" if ort_gap is None else f"{ort_gap:.2g}"
    torch_text = "not measurable on this machine" if torch_gap is None else f"{torch_gap:.2g}"
    # ORT's CPU provider has no fp16 Conv: it inserts Casts and computes in fp32 (fp16 weights only).
    note = (f"fp16: max |Δ| vs PyTorch fp32: ONNX Runtime CPU {ort_text} (fp16 weights, fp32 arithmetic: "
            f"the CPU provider casts up), PyTorch fp16 arithmetic {torch_text}; limit {cfg.fp16_atol:g}; "
            "on-GPU parity not measured here")
    return worst, note


def default_output(workspace: Workspace, checkpoint: Path, scale: int, fp16: bool) -> Path:
    """``<workspace>/models/<run name or file stem>-x<scale>[-fp16].onnx``."""
    name = checkpoint.parents[1].name if checkpoint.parent.name == "checkpoints" else checkpoint.stem
    if not name.endswith(f"x{scale}"):
        name += f"-x{scale}"
    return workspace.models / f"{name}{'-fp16' if fp16 else ''}.onnx"


def export_checkpoint(source: Path | None, *, workspace: Workspace, out: Path | None, cfg: ExportConfig,
                      progress: ProgressFn | None = None) -> ExportResult:
    """``srpipe export [RUN|CHECKPOINT]``: ``source`` None = the best checkpoint of the latest run."""
    from srpipe.model.checkpoint import model_from, read_file, resolve_checkpoint

    file = resolve_checkpoint(source if source is not None else latest_run(workspace))
    obj = read_file(file)  # once: a large checkpoint takes seconds to read
    model, model_config = model_from(obj, file, use_ema=cfg.weights == "ema")  # in eval mode
    record = training_record(obj, use_ema=cfg.weights == "ema")  # empty for EDSR-PyTorch/BasicSR files
    target = out if out is not None else default_output(workspace, file, model_config.scale, cfg.fp16)
    log.info("exporting %s -> %s", file, target)
    return export_model(model, model_config, target, cfg, source=str(file), record=record,
                        pipeline=run_pipeline(file), progress=progress)


def run_pipeline(checkpoint: Path) -> Pipeline | None:
    """The resolved pipeline of the training run ``checkpoint`` belongs to (``<run>/config.toml``), or
    None for a checkpoint outside a run folder or a run without a readable config."""
    config = checkpoint.parents[1] / "config.toml" if checkpoint.parent.name == "checkpoints" else None
    if config is None or not config.is_file():
        return None
    try:
        return load_pipeline(config)
    except SrpipeError as exc:
        log.warning("%s: the run's recipe is not recorded in the model: %s", checkpoint, exc)
        return None
