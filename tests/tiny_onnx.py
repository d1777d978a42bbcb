"""Tiny exported ONNX models shared by the export/session/tiling/process tests.

``tiny_model(factory, ...)`` exports a seeded random EDSR once per test session (cached), so every
test module's session-scoped fixture reuses the same file.
"""

from __future__ import annotations

from pathlib import Path

import pytest

_CACHE: dict[tuple[int, int, int], Path] = {}


def tiny_model(factory: pytest.TempPathFactory, scale: int = 2, n_resblocks: int = 1,
               n_feats: int = 8) -> Path:
    """Path to an srpipe-exported random EDSR (fp32) of the given size; exported on first use."""
    key = (scale, n_resblocks, n_feats)
    if key not in _CACHE:
        import torch

        from srpipe.config import ExportConfig, ModelConfig
        from srpipe.export import export_model
        from srpipe.model.edsr import build_model

        torch.manual_seed(sum(key))
        cfg = ModelConfig(scale=scale, n_resblocks=n_resblocks, n_feats=n_feats)
        path = factory.mktemp("onnx") / f"edsr-{n_resblocks}x{n_feats}-x{scale}.onnx"
        export_model(build_model(cfg).eval(), cfg, path, ExportConfig(), source="random weights (tests)")
        _CACHE[key] = path
    return _CACHE[key]
