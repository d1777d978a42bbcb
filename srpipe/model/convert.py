"""Import EDSR weights that users already have: EDSR-PyTorch ``.pt`` and BasicSR ``.pth`` files.

This module only translates weights; loading files is :func:`srpipe.model.checkpoint.load_model`'s
job, which hands every file that is not an srpipe checkpoint to :func:`convert_state_dict`. Contract:
the translated ``(ModelConfig, state dict)`` builds an srpipe EDSR producing the same outputs (on
srpipe's [0, 1] scale) as the original network did on its own scale. The layout is detected from the
state dict itself:

- **srpipe**: a bare srpipe state dict (``head.weight`` ...).
- **EDSR-PyTorch** (``sanghyun-son/EDSR-PyTorch``): ``sub_mean``/``add_mean`` 1×1 MeanShift convs,
  ``head.0``, ``body.N.body.{0,2}``, ``body.{n}`` (conv after the body), ``tail.0.{0,2}``, ``tail.1``.
  The network runs on [0, rgb_range]; rgb_range (255 for the official weights, 1 for some user runs)
  is read off the MeanShift bias, which is ``±rgb_range · mean``.
- **BasicSR** (``params_ema`` preferred over ``params``): ``conv_first``, ``body.N.conv{1,2}``,
  ``conv_after_body``, ``upsample.{0,2}``, ``conv_last``; input ``(x - mean) · img_range``.

Why dividing every bias by the range is exact: both foreign networks compute ``N(k·(x - m))/k + m``
for input ``x`` in [0, 1] and range ``k``, where ``N`` is built from convolutions, ReLUs, scaled
residual sums and PixelShuffle. All of those commute with a positive scale once the biases are
scaled too, so ``N(k·u)/k == N'(u)`` where ``N'`` has the same weights and biases ÷ k — srpipe's
EDSR with its mean buffer ``m``.

Scale, n_resblocks and n_feats are inferred from shapes; res_scale is not stored anywhere, so it
defaults by size (256 features → 0.1 as in the paper model, else 1.0) unless given. ``module.`` and
``_orig_mod.`` key prefixes (DataParallel/DDP, torch.compile) are stripped.
"""

from __future__ import annotations

import logging
import re
from typing import Any, Literal

import torch

from srpipe.config import DIV2K_RGB_MEAN, ModelConfig
from srpipe.errors import CheckpointError

log = logging.getLogger(__name__)
_PREFIXES = ("module.", "_orig_mod.")

Layout = Literal["srpipe", "edsr-pytorch", "basicsr"]
StateDict = dict[str, torch.Tensor]

# (foreign module prefix, srpipe module prefix); body blocks are handled by regex below.
_FIXED: dict[str, tuple[tuple[str, str], ...]] = {
    "edsr-pytorch": (("head.0", "head"), ("tail.0.0", "upsample.0"), ("tail.0.2", "upsample.2"),
                     ("tail.1", "tail")),
    "basicsr": (("conv_first", "head"), ("conv_after_body", "body_tail"), ("upsample.0", "upsample.0"),
                ("upsample.2", "upsample.2"), ("conv_last", "tail")),
}
_BLOCK = {"edsr-pytorch": re.compile(r"^body\.(\d+)\.body\.([02])\.(weight|bias)$"),
          "basicsr": re.compile(r"^body\.(\d+)\.conv([12])\.(weight|bias)$")}


def strip_prefixes(state: dict[str, Any]) -> dict[str, Any]:
    """Remove leading ``module.`` / ``_orig_mod.`` (in any combination) from every key."""
    out: dict[str, Any] = {}
    for key, value in state.items():
        while key.startswith(_PREFIXES):
            key = key.split(".", 1)[1]
        out[key] = value
    return out


def detect_layout(state: StateDict) -> Layout | None:
    """The layout a (prefix-stripped) state dict is in, or None when it is none of the known ones."""
    if "head.0.weight" in state and "tail.1.weight" in state:
        return "edsr-pytorch"
    if "conv_first.weight" in state and "conv_last.weight" in state:
        return "basicsr"
    if "head.weight" in state and "body_tail.weight" in state and "tail.weight" in state:
        return "srpipe"
    return None


def _infer_config(srp: StateDict, *, source: str, res_scale: float | None,
                  rgb_mean: tuple[float, float, float]) -> ModelConfig:
    """ModelConfig from the shapes of an srpipe-named state dict."""
    n_feats, in_ch = srp["head.weight"].shape[:2]
    if in_ch != 3 or srp["tail.weight"].shape[0] != 3:
        raise CheckpointError(f"{source}: only 3-channel (RGB) EDSR models are supported, this one has "
                              f"{in_ch} input and {srp['tail.weight'].shape[0]} output channels")
    blocks = {int(m.group(1)) for k in srp if (m := re.match(r"^body\.(\d+)\.conv1\.weight$", k))}
    if not blocks or blocks != set(range(len(blocks))):
        raise CheckpointError(f"{source}: residual blocks are missing or not numbered 0..n-1")
    up0 = srp.get("upsample.0.weight")
    if up0 is None:
        raise CheckpointError(f"{source}: no upsampler convolution found")
    if "upsample.2.weight" in srp:
        scale = 4
    elif up0.shape[0] == 9 * n_feats:
        scale = 3
    elif up0.shape[0] == 4 * n_feats:
        scale = 2
    else:
        raise CheckpointError(f"{source}: upsampler conv has {up0.shape[0]} outputs for {n_feats} features; "
                              "only x2, x3 and x4 EDSR models are supported")
    if res_scale is None:
        res_scale = 0.1 if n_feats == 256 else 1.0
        log.info("%s: res_scale not stored in the file; using %s for %d features", source, res_scale,
                 n_feats)
    return ModelConfig(scale=scale, n_resblocks=len(blocks), n_feats=int(n_feats), res_scale=res_scale,
                       rgb_mean=rgb_mean)


def _rename(state: StateDict, layout: Layout, *, source: str) -> StateDict:
    """Foreign names → srpipe names; every foreign key must be accounted for."""
    out: StateDict = {}
    fixed = dict(_FIXED[layout])
    if layout == "edsr-pytorch":
        tail_idx = max((int(m.group(1)) for k in state if (m := _BLOCK[layout].match(k))), default=-1) + 1
        fixed[f"body.{tail_idx}"] = "body_tail"
    leftover = []
    for key, value in state.items():
        module, _, param = key.rpartition(".")
        if (m := _BLOCK[layout].match(key)) is not None:
            conv = {"0": "1", "2": "2"}.get(m.group(2), m.group(2))
            out[f"body.{m.group(1)}.conv{conv}.{m.group(3)}"] = value
        elif module in fixed and param in ("weight", "bias"):
            out[f"{fixed[module]}.{param}"] = value
        elif layout == "edsr-pytorch" and module in ("sub_mean", "add_mean"):
            continue
        else:
            leftover.append(key)
    if leftover:
        raise CheckpointError(f"{source}: {layout} layout with unexpected keys {leftover[:5]} "
                              "(an EDSR variant srpipe cannot represent, e.g. x8 or a different body?)")
    return out


def _edsr_pytorch_mean(state: StateDict, *, source: str) -> tuple[tuple[float, float, float], float]:
    """(rgb_mean on [0, 1], rgb_range) from the MeanShift convs; they must be a plain shift."""
    try:
        w, b = state["add_mean.weight"].double(), state["add_mean.bias"].double()
        sub_b = state["sub_mean.bias"].double()
    except KeyError as exc:
        raise CheckpointError(f"{source}: EDSR-PyTorch layout without {exc.args[0]}") from exc
    if not torch.allclose(w.reshape(3, 3), torch.eye(3, dtype=w.dtype), atol=1e-6) or not torch.allclose(
        b, -sub_b, atol=1e-4
    ):
        raise CheckpointError(f"{source}: MeanShift with a non-unit std or asymmetric bias is not supported")
    rgb_range = 255.0 if float(b.abs().max()) > 1.5 else 1.0
    mean = tuple(float(v) / rgb_range for v in b)
    return (mean[0], mean[1], mean[2]), rgb_range


def convert_state_dict(
    state: StateDict, *, source: str = "state dict", res_scale: float | None = None,
    rgb_mean: tuple[float, float, float] | None = None, img_range: float = 255.0,
) -> tuple[ModelConfig, StateDict]:
    """Convert a state dict in any known layout into ``(ModelConfig, srpipe state dict)``.

    ``rgb_mean`` overrides the mean (BasicSR files do not store it: DIV2K's is assumed);
    ``img_range`` is BasicSR's ``img_range`` (255 in every BasicSR EDSR config). Raises
    ``CheckpointError`` naming ``source`` on an unknown layout or unsupported variant.
    """
    state = strip_prefixes(state)
    layout = detect_layout(state)
    if layout is None:
        keys = ", ".join(list(state)[:6]) or "none"
        raise CheckpointError(f"{source}: not an EDSR state dict srpipe knows (srpipe, EDSR-PyTorch or "
                              f"BasicSR layout); first keys: {keys}")
    if layout == "srpipe":
        buf = state.get("rgb_mean")
        stored = DIV2K_RGB_MEAN if buf is None else (float(buf.flatten()[0]), float(buf.flatten()[1]),
                                                     float(buf.flatten()[2]))
        srp = {k: v for k, v in state.items() if k != "rgb_mean"}
        cfg = _infer_config(srp, source=source, res_scale=res_scale, rgb_mean=rgb_mean or stored)
        return cfg, {**srp, "rgb_mean": torch.tensor(cfg.rgb_mean).view(1, 3, 1, 1)}
    if layout == "edsr-pytorch":
        mean, k = _edsr_pytorch_mean(state, source=source)
        mean = rgb_mean or mean
    else:
        mean, k = rgb_mean or DIV2K_RGB_MEAN, img_range
    srp = _rename(state, layout, source=source)
    srp = {name: (t.float() / k if name.endswith(".bias") else t.float()) for name, t in srp.items()}
    cfg = _infer_config(srp, source=source, res_scale=res_scale, rgb_mean=mean)
    srp["rgb_mean"] = torch.tensor(cfg.rgb_mean, dtype=torch.float32).view(1, 3, 1, 1)
    log.info("%s: %s layout, x%d, %d blocks, %d features", source, layout, cfg.scale, cfg.n_resblocks,
             cfg.n_feats)
    return cfg, srp


def extract_state_dict(obj: Any, *, source: str) -> StateDict:
    """The tensor dict inside a loaded file: BasicSR ``params_ema``/``params``, ``state_dict``, or itself."""
    if not isinstance(obj, dict):
        raise CheckpointError(f"{source}: expected a dict of tensors, found {type(obj).__name__}")
    for key in ("params_ema", "params", "state_dict", "model"):
        if isinstance(obj.get(key), dict):
            log.debug("%s: using the '%s' entry", source, key)
            obj = obj[key]
            break
    state = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not state:
        raise CheckpointError(f"{source}: no tensors found; top-level keys: {', '.join(map(str, obj))[:200]}")
    return state
