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
PyTorch fp32 on 1×3×17×31 and 2×3×64×48 inputs (``srpipe.export_verify``): max |Δ| must be <= ``atol``
(fp32) or ``fp16_atol`` (``--fp16``), else ``ExportError``. ``--fp16`` stores half-precision weights
and computes in half, with fp32 input/output kept by Casts at the boundary. Files are written
atomically.

The stage: :func:`export` takes an :class:`~srpipe.config.ExportConfig` and returns an
:class:`ExportReport`; the command starts from the run's recorded ``[export]`` table
(:func:`recorded_config`). :func:`export_model` exports a model already in memory.

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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from srpipe import __version__, export_verify
from srpipe.config import ExportConfig, ModelConfig, Pipeline, load_pipeline
from srpipe.contract import MetaKey
from srpipe.errors import ExportError, InputError, SrpipeError
from srpipe.export_graph import Half, TailBeforeShuffle, export_graph, flops_per_lr_pixel, to_onnx_bytes
from srpipe.infer.receptive import ReceptiveField, measure
from srpipe.model.edsr import count_parameters, receptive_radius
from srpipe.progress import ProgressFn, report
from srpipe.train.rundir import latest_run
from srpipe.workspace import Workspace

log = logging.getLogger(__name__)

# Trainer settings that do not change what the weights are (logistics); left out of the recipe hash.
_NOT_RECIPE = frozenset({"workers", "log_every", "checkpoint_every", "tensorboard", "device", "stores",
                         "val_every", "val_images", "val_tile"})


@dataclass(frozen=True)
class ExportReport:
    """What was written and how well it matched PyTorch (``parity`` None = not measurable here). An
    export that fails raises instead, so a report always means a verified model was written."""

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

    @property
    def exit_code(self) -> int:
        """0: a report exists only for a model that was verified and written."""
        return 0


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


def export_model(model: nn.Module, model_config: ModelConfig, out: Path, cfg: ExportConfig, *,
                 source: str = "", record: TrainingRecord | None = None, pipeline: Pipeline | None = None,
                 progress: ProgressFn | None = None) -> ExportReport:
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
    parity, note = export_verify.parity(data, model, cfg)
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
    return ExportReport(path=out, source=source, scale=model_config.scale,
                        precision=metadata[MetaKey.PRECISION], parity=parity, parity_note=note,
                        receptive=rf, metadata=metadata)


def default_output(workspace: Workspace, checkpoint: Path, scale: int, fp16: bool) -> Path:
    """``<workspace>/models/<run name or file stem>-x<scale>[-fp16].onnx``."""
    name = checkpoint.parents[1].name if checkpoint.parent.name == "checkpoints" else checkpoint.stem
    if not name.endswith(f"x{scale}"):
        name += f"-x{scale}"
    return workspace.models / f"{name}{'-fp16' if fp16 else ''}.onnx"


def find_checkpoint(source: Path | None, workspace: Workspace) -> Path:
    """The checkpoint file ``srpipe export [RUN|CHECKPOINT]`` exports: ``source`` None = the best
    checkpoint of the latest run (``train.rundir.latest_run``; one that has saved none yet is an error,
    not an older run's export)."""
    from srpipe.model.checkpoint import resolve_checkpoint

    if source is None and (source := latest_run(workspace.runs)) is None:
        raise InputError(f"no training runs in {workspace.runs}; train one (srpipe train) or pass a run "
                         "folder or checkpoint file")
    return resolve_checkpoint(source)


def recorded_config(source: Path | None, workspace: Workspace) -> ExportConfig:
    """The ``[export]`` table recorded with the training run of ``source`` (its ``config.toml``), or the
    defaults for a checkpoint outside a run folder: what ``srpipe export`` starts from."""
    config = _run_config(find_checkpoint(source, workspace))
    if config is None:
        return ExportConfig()
    try:
        return load_pipeline(config).export
    except SrpipeError as exc:
        log.warning("%s: cannot read its [export] table, using the defaults: %s", config, exc)
        return ExportConfig()


def export(source: Path | None, cfg: ExportConfig, *, workspace: Workspace, out: Path | None = None,
           progress: ProgressFn | None = None) -> ExportReport:
    """``srpipe export [RUN|CHECKPOINT]``: export the checkpoint :func:`find_checkpoint` picks with
    ``cfg`` to ``out`` (default: :func:`default_output`)."""
    from srpipe.model.checkpoint import model_from, read_file

    file = find_checkpoint(source, workspace)
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
    config = _run_config(checkpoint)
    if config is None:
        return None
    try:
        return load_pipeline(config)
    except SrpipeError as exc:
        log.warning("%s: the run's recipe is not recorded in the model: %s", checkpoint, exc)
        return None


def _run_config(checkpoint: Path) -> Path | None:
    """``<run>/config.toml`` of the run folder holding ``checkpoint``, when there is one."""
    config = checkpoint.parents[1] / "config.toml" if checkpoint.parent.name == "checkpoints" else None
    return config if config is not None and config.is_file() else None
