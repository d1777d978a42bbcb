"""Configurations of the stages other than training: prepare, downscale, export, process, evaluate
(one frozen dataclass each; ``srpipe.config.train`` holds training's)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from srpipe.config.checks import (
    ABOVE_0,
    AT_LEAST_0,
    AT_LEAST_1,
    AUTO_OR_SCALE,
    STRENGTH,
    Boundary,
    Strength,
    Weights,
    check_values,
)
from srpipe.imaging.formats import IMAGE_SUFFIXES


@dataclass(frozen=True)
class PrepareConfig:
    """``srpipe prepare``: HR sub-images and aligned MATLAB-bicubic LR into HDF5 stores (docs/prepare.md).

    Checked by ``srpipe.prepare.check_config``: ``hr_size`` and ``stride`` are multiples of every
    scale's lcm and ``hr_size >= patch_size x max(scales)``.
    """

    scales: tuple[int, ...] = (2, 3, 4)
    hr_size: int = 480  # HR sub-image side; a multiple of every scale (lcm), >= patch_size x max scale
    stride: int = 240  # step between HR sub-images; a multiple of every scale (lcm)
    patch_size: int = 48  # LR training patch the sub-images must fit (only checked, not stored)
    boundary: Boundary = "mirror"  # imresize boundary; the official DIV2K/Set5 LR used "mirror"
    valid_count: int = 10  # images held out (deterministically) when the folder has no split
    max_pixels: int = 178_956_970  # decompression-bomb cap (Pillow's default)
    workers: int = 2  # decode/resize processes; 0 = one per CPU core
    seed: int = 0  # varies the held-out validation split of a plain folder

    def __post_init__(self) -> None:
        check_values(self, "prepare", {
            "scales": (lambda v: bool(v) and all(s >= 2 for s in v) and len(set(v)) == len(v),
                       "distinct integers >= 2"),
            "hr_size": AT_LEAST_1, "stride": AT_LEAST_1, "patch_size": AT_LEAST_1, "valid_count": AT_LEAST_0,
            "max_pixels": AT_LEAST_1, "workers": AT_LEAST_0})



@dataclass(frozen=True)
class DownscaleConfig:
    """``srpipe downscale``: MATLAB-bicubic LR copies of an image or a folder tree (docs/downscale.md)."""

    scale: int = 4  # shrink factor
    boundary: Boundary = "mirror"  # "mirror" = MATLAB imresize; "replicate" = the SelfExSR Set14 files
    overwrite: bool = False  # replace existing outputs (default: skip them)
    workers: int = 0  # image processes; 0 = one per usable CPU core, 1 = no extra process
    max_pixels: int = 178_956_970  # per input image (decompression-bomb guard)

    def __post_init__(self) -> None:
        check_values(self, "downscale", {
            "scale": (lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 2, "an integer >= 2"),
            "workers": AT_LEAST_0, "max_pixels": AT_LEAST_1})



@dataclass(frozen=True)
class ExportConfig:
    """``srpipe export``: ONNX export and its verification."""

    opset: int = 17  # 17 or newer
    fp16: bool = False  # half-precision weights and compute (GPUs); fp32 input/output kept
    atol: float = 1e-4  # max |ONNX Runtime - PyTorch| allowed for fp32, on [0, 1] outputs
    fp16_atol: float = 1e-2  # the same for --fp16 (against PyTorch fp32; 1e-2 = 2.55 8-bit codes)
    weights: Weights = "ema"  # a checkpoint's EMA weights (when it has them) or its raw weights

    def __post_init__(self) -> None:
        check_values(self, "export", {"atol": ABOVE_0, "fp16_atol": ABOVE_0})



@dataclass(frozen=True)
class ProcessConfig:
    """``srpipe process``: tiled ONNX Runtime upscaling of files and folders (docs/process.md)."""

    scale: int = 0  # 0 = the given model's scale (4 when the model is looked up)
    tile: int = 384  # LR tile side (at most); 0 = whole image at once
    overlap: int = 0  # LR pixels shared by neighbouring tiles; 0 = the model's measured recommendation
    batch: int = 0  # tiles per session call; 0 = auto (CPU: 1; CUDA: 4 for tiles up to 256, else 1)
    device: Literal["auto", "cuda", "cpu"] = "auto"
    format: Literal["same", "png", "jpg", "webp", "tiff"] = "same"
    quality: int = 95  # JPEG/WebP quality (WebP 100 = lossless)
    overwrite: bool = False  # redo files whose output exists (default: skip them)
    ensemble: bool = False  # average the 8 flips/rotations (EDSR+): 8x the compute
    extensions: tuple[str, ...] = IMAGE_SUFFIXES  # input suffixes (any case)
    max_pixels: int = 178_956_970  # per input image (decompression-bomb guard)
    memory_budget: int = 2048  # MiB of image data per file, estimated from its header (infer.budget)
    threads: int = 0  # inference threads; 0 = all cores
    backend: Literal["auto", "onnxruntime", "openvino"] = "auto"  # infer.backends.open_onnx_backend
    precision: Literal["auto", "fp32", "bf16"] = "auto"  # CPU: bf16 (OpenVINO) where the CPU has it
    strength: Strength = None  # --model photo: 0 = the default model ... 1 = the photo model; "auto"
    fidelity_fix: bool = False  # replace each output's low frequencies by the input's (photo.fidelity)

    def __post_init__(self) -> None:
        check_values(self, "process", {"strength": STRENGTH,
            "scale": AUTO_OR_SCALE, "tile": AT_LEAST_0, "overlap": AT_LEAST_0, "batch": AT_LEAST_0,
            "quality": (lambda v: 1 <= v <= 100, "in 1..100"), "max_pixels": AT_LEAST_1,
            "memory_budget": AT_LEAST_1,
            "extensions": (lambda v: bool(v) and all(e.startswith(".") for e in v),
                           "suffixes such as \".png\""),
            "threads": AT_LEAST_0})



@dataclass(frozen=True)
class EvaluateConfig:
    """``srpipe evaluate``: PSNR/SSIM of a model beside bicubic, the papers' protocol (docs/metrics.md)."""

    scale: int = 0  # 0 = the model's own scale (required for "bicubic")
    shave: int = -1  # border pixels ignored on each side; -1 = the scale, as the papers do
    boundary: Boundary = "mirror"  # imresize boundary when LR is generated from HR (no --lr)
    device: Literal["auto", "cuda", "cpu"] = "auto"
    tile: int = 0  # LR tile side; 0 = whole image at once
    tile_overlap: int = 0  # LR pixels shared by neighbouring tiles; 0 = the model's (ONNX metadata or
    #                        measured; checkpoints: 3 x the receptive radius, exact)
    backend: Literal["auto", "onnxruntime", "openvino"] = "auto"  # for ONNX models
    precision: Literal["auto", "fp32", "bf16"] = "fp32"  # fp32: scores comparable across machines
    ensemble: bool = False  # EDSR+ self-ensemble: mean over the 8 flips/rotations
    strength: Strength = None  # as process: only with the photo model (None = "auto" there)
    weights: Weights = "ema"  # training checkpoints: EMA weights (when present) or the raw weights
    max_pixels: int = 178_956_970
    compare_images: int = 2  # rows in the --compare picture (largest Y-PSNR gains)
    compare_crop: int = 96  # HR pixels per crop side

    def __post_init__(self) -> None:
        check_values(self, "evaluate", {"strength": STRENGTH,
            "scale": AUTO_OR_SCALE, "shave": (lambda v: v >= -1, ">= 0 (or -1: the scale)"),
            "tile": AT_LEAST_0, "tile_overlap": AT_LEAST_0, "max_pixels": AT_LEAST_1,
            "compare_images": AT_LEAST_0, "compare_crop": AT_LEAST_1})
