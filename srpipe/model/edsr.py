"""EDSR (Lim et al. 2017): residual blocks without batch norm, global skip, PixelShuffle upsampler.

Tensor contract: input and output are NCHW float RGB in [0, 1] (the output is not clamped, so that
the L1 loss sees the raw prediction); output spatial size is exactly ``scale`` × the input's. The
RGB mean shift (DIV2K mean, on the [0, 1] scale) lives in a buffer, so ``forward`` is pure and
the module traces cleanly to ONNX. Parameter counts match the paper's models exactly (see
``PRESETS``; the mean shift holds no parameters).
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from srpipe.config import ModelConfig


class ResBlock(nn.Module):
    """conv-ReLU-conv with a scaled identity skip (no batch norm)."""

    def __init__(self, n_feats: int, res_scale: float) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(n_feats, n_feats, 3, padding=1)
        self.act = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(n_feats, n_feats, 3, padding=1)
        self.res_scale = res_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        res = self.conv2(self.act(self.conv1(x)))
        return x + res * self.res_scale if self.res_scale != 1.0 else x + res


class Upsampler(nn.Sequential):
    """conv → PixelShuffle(2), repeated for ×2/×4; one conv → PixelShuffle(3) for ×3."""

    def __init__(self, scale: int, n_feats: int) -> None:
        layers: list[nn.Module] = []
        if scale in (2, 4):
            for _ in range(scale.bit_length() - 1):
                layers += [nn.Conv2d(n_feats, 4 * n_feats, 3, padding=1), nn.PixelShuffle(2)]
        elif scale == 3:
            layers += [nn.Conv2d(n_feats, 9 * n_feats, 3, padding=1), nn.PixelShuffle(3)]
        else:
            raise ValueError(f"EDSR supports scale 2, 3 or 4, not {scale}")
        super().__init__(*layers)


class EDSR(nn.Module):
    """Enhanced Deep Super-Resolution network.

    Input ``(N, 3, H, W)`` float RGB in [0, 1]; output ``(N, 3, H·scale, W·scale)`` in roughly [0, 1].
    """

    def __init__(
        self,
        *,
        scale: int = 4,
        n_resblocks: int = 16,
        n_feats: int = 64,
        res_scale: float = 1.0,
        rgb_mean: tuple[float, float, float] = (0.4488, 0.4371, 0.4040),
    ) -> None:
        super().__init__()
        if n_resblocks < 1 or n_feats < 1:
            raise ValueError("n_resblocks and n_feats must be positive")
        self.scale = scale
        self.rgb_mean: torch.Tensor  # a buffer: moves with .to(), saved in the state dict
        self.register_buffer("rgb_mean", torch.tensor(rgb_mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.head = nn.Conv2d(3, n_feats, 3, padding=1)
        self.body = nn.Sequential(*(ResBlock(n_feats, res_scale) for _ in range(n_resblocks)))
        self.body_tail = nn.Conv2d(n_feats, n_feats, 3, padding=1)
        self.upsample = Upsampler(scale, n_feats)
        self.tail = nn.Conv2d(n_feats, 3, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = self.rgb_mean.to(x.dtype)
        x = self.head(x - mean)
        x = x + self.body_tail(self.body(x))
        return self.tail(self.upsample(x)) + mean


PRESETS: dict[str, dict[str, float]] = {
    "baseline": {"n_resblocks": 16, "n_feats": 64, "res_scale": 1.0},
    "paper": {"n_resblocks": 32, "n_feats": 256, "res_scale": 0.1},
}


def preset_config(name: str, scale: int) -> ModelConfig:
    """The ``ModelConfig`` of a named preset (``baseline`` or ``paper``) at ``scale``."""
    if name not in PRESETS:
        raise ValueError(f"unknown EDSR preset '{name}'; known: {', '.join(PRESETS)}")
    p = PRESETS[name]
    return dataclasses.replace(
        ModelConfig(), scale=scale, n_resblocks=int(p["n_resblocks"]), n_feats=int(p["n_feats"]),
        res_scale=float(p["res_scale"]),
    )


def build_model(cfg: ModelConfig) -> EDSR:
    """Instantiate the model a ``ModelConfig`` describes."""
    return EDSR(scale=cfg.scale, n_resblocks=cfg.n_resblocks, n_feats=cfg.n_feats, res_scale=cfg.res_scale,
                rgb_mean=cfg.rgb_mean)


def count_parameters(model: nn.Module) -> int:
    """Trainable parameters (buffers such as the mean shift excluded)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def receptive_radius(cfg: ModelConfig) -> int:
    """Theoretical receptive radius in LR pixels (rounded up).

    Head, two convs per block, body tail and the first upsampler conv each add one LR pixel; the convs
    at sub-pixel resolution add less than one more in total.
    """
    return 2 * cfg.n_resblocks + 3 + 1
