"""``srpipe export``'s verification: the exported ONNX graph run by ONNX Runtime (CPU) against the
PyTorch fp32 model on test-card inputs of ``VERIFY_SHAPES`` (odd sizes; batch 2 checks the dynamic
batch). fp32 must agree to ``ExportConfig.atol``; ``--fp16`` states ONNX Runtime's and PyTorch fp16's
figures and the larger must stay within ``fp16_atol``. Failing raises ``ExportError`` before anything is
written (docs/export.md, "Verification")."""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from srpipe.config import ExportConfig
from srpipe.contract import INPUT_NAME, OUTPUT_NAME
from srpipe.errors import ExportError
from srpipe.export_graph import Half
from srpipe.infer.receptive import test_card

log = logging.getLogger(__name__)

VERIFY_SHAPES = ((1, 3, 17, 31), (2, 3, 64, 48))


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


def parity(data: bytes, model: nn.Module, cfg: ExportConfig) -> tuple[float | None, str]:
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
