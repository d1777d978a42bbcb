"""Stage configurations, and loading them from pipeline files (the typed loader itself, which
rejects unknown keys, is :mod:`srpipe.typed_toml`).

A pipeline file (``pipelines/<name>.toml``) holds one table per stage::

    description = "EDSR-baseline x4, the paper's recipe"
    [prepare]
    scales = [2, 3, 4]
    [train]
    iterations = 300000
    [train.model]
    scale = 4

Each table becomes the stage's frozen dataclass. Unknown keys, wrong types and bad values raise
``ConfigError`` naming the file and the dotted key. Every dataclass checks its own values when it is
built (``__post_init__``: ranges, choices), so a bad value is refused however it arrives (file,
``--set``, command-line option, library call) and before any command creates anything. Overrides
(``--set model.n_feats=32``) are parsed as
TOML values and applied with ``dataclasses.replace``. Nothing else flows around as a dict.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from srpipe.errors import ConfigError
from srpipe.imaging.formats import IMAGE_SUFFIXES
from srpipe.typed_toml import apply_overrides, from_dict

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

__all__ = ["DIV2K_RGB_MEAN", "Boundary", "DegradeConfig", "EvaluateConfig", "ExportConfig", "ModelConfig",
           "Pipeline",
           "PrepareConfig", "ProcessConfig", "TrainConfig", "Weights", "apply_overrides", "find_pipeline",
           "from_dict", "load_pipeline", "pipeline_dirs"]

Boundary = Literal["mirror", "replicate"]
Weights = Literal["ema", "raw"]  # which weights of a training checkpoint: its EMA average or the raw ones
DIV2K_RGB_MEAN = (0.4488, 0.4371, 0.4040)

Rule = tuple[Callable[[Any], bool], str]  # (accepts the value, what "must be" says otherwise)


def _finite(v: Any) -> bool:
    return not isinstance(v, float) or math.isfinite(v)


AT_LEAST_0: Rule = (lambda v: _finite(v) and v >= 0, ">= 0")
AT_LEAST_1: Rule = (lambda v: v >= 1, ">= 1")
ABOVE_0: Rule = (lambda v: _finite(v) and v > 0, "> 0")
AUTO_OR_SCALE: Rule = (lambda v: v == 0 or v >= 2, "0 (automatic) or an integer >= 2")
UNIT_OPEN: Rule = (lambda v: 0 <= v < 1, "in [0, 1)")
STRENGTH: Rule = (lambda v: v is None or v == "auto" or (isinstance(v, float) and 0 <= v <= 1),
                  "\"auto\" or a number in [0, 1]")
Strength = float | Literal["auto"] | None  # photo models: None = "auto" with --model photo, else unused


_HINTS: dict[type, dict[str, Any]] = {}


def _hints(cls: type) -> dict[str, Any]:
    if cls not in _HINTS:
        _HINTS[cls] = typing.get_type_hints(cls)
    return _HINTS[cls]


def check_values(obj: Any, section: str, rules: dict[str, Rule]) -> None:
    """Raise ``ConfigError`` "<section>.<key>: must be ..., got ..." for the first field of dataclass
    ``obj`` outside its ``Literal`` choices or failing its rule."""
    hints = _hints(type(obj))
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        hint = hints[f.name]
        if typing.get_origin(hint) is Literal and value not in typing.get_args(hint):
            choices = ", ".join(repr(a) for a in typing.get_args(hint))
            raise ConfigError(f"{section}.{f.name}: must be one of {choices}, got {value!r}")
        rule = rules.get(f.name)
        if rule is not None and not rule[0](value):
            raise ConfigError(f"{section}.{f.name}: must be {rule[1]}, got {value!r}")


@dataclass(frozen=True)
class PrepareConfig:
    """``srpipe prepare``: HR sub-images and aligned MATLAB-bicubic LR into HDF5 stores (docs/prepare.md).

    Checked by ``srpipe.data.prepare.check_config``: ``hr_size`` and ``stride`` are multiples of every
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
class ModelConfig:
    """EDSR hyperparameters (``srpipe.model.edsr.preset_config`` gives the paper's presets)."""

    arch: Literal["edsr"] = "edsr"
    scale: int = 4
    n_resblocks: int = 16
    n_feats: int = 64
    res_scale: float = 1.0
    rgb_mean: tuple[float, float, float] = DIV2K_RGB_MEAN

    def __post_init__(self) -> None:
        check_values(self, "train.model", {
            "scale": (lambda v: v in (2, 3, 4), "2, 3 or 4 (EDSR's upsamplers)"),
            "n_resblocks": AT_LEAST_1, "n_feats": AT_LEAST_1, "res_scale": ABOVE_0,
            "rgb_mean": (lambda v: all(_finite(m) and 0 <= m <= 1 for m in v), "three values in [0, 1]")})


def _range(lo: float, hi: float) -> Rule:
    return (lambda v: len(v) == 2 and lo <= v[0] <= v[1] <= hi,
            f"[low, high] with {lo} <= low <= high <= {hi}")


PROBABILITY: Rule = (lambda v: _finite(v) and 0 <= v <= 1, "in [0, 1]")


@dataclass(frozen=True)
class DegradeConfig:
    """``[train.degrade]``: on-the-fly degradations of training LR patches (docs/train.md, "Photo models").

    Per patch, in this order, each with its probability: Gaussian blur of the HR patch (then the LR is
    its MATLAB bicubic downscale, made on the fly), Gaussian noise on the LR (σ on the 0-255 scale; luma
    noise, the same on R, G and B, with ``noise_gray``), JPEG re-encoding of the LR through OpenCV
    (quality drawn from the range). Stores stay clean; every draw is a pure function of ``(seed, item)``.
    """

    blur: float = 0.0  # probability of blurring the HR patch before the bicubic
    blur_sigma: tuple[float, float] = (0.2, 1.2)  # HR pixels
    noise: float = 0.0  # probability of Gaussian noise
    noise_sigma: tuple[float, float] = (1.0, 10.0)
    noise_gray: float = 0.4  # share of noisy patches with luma-only noise
    jpeg: float = 0.0  # probability of JPEG re-encoding
    jpeg_quality: tuple[int, int] = (30, 95)

    def __post_init__(self) -> None:
        check_values(self, "train.degrade", {
            "blur": PROBABILITY, "noise": PROBABILITY, "noise_gray": PROBABILITY, "jpeg": PROBABILITY,
            "blur_sigma": _range(0.1, 5.0), "noise_sigma": _range(0.0, 50.0),
            "jpeg_quality": _range(1, 100)})

    @property
    def enabled(self) -> bool:
        return self.blur > 0 or self.noise > 0 or self.jpeg > 0


@dataclass(frozen=True)
class TrainConfig:
    """``srpipe train``: the EDSR recipe and its options (docs/train.md explains each).

    ``batch_size`` is the global batch: under torchrun each of the N processes takes ``batch_size / N``
    patches, so a recipe means the same thing on one GPU or eight. ``"auto"`` precision is bf16 autocast
    on CUDA (when the GPU supports it) and fp32 on the CPU; ``"auto"`` channels_last is on for CUDA
    and off on the CPU (measured ~20 % slower there). The learning rate is a pure function of the
    iteration (``scheduler``, ``milestones``/``gamma`` or cosine down to ``min_lr``, after
    ``warmup_iterations`` of linear warm-up), so resuming can never re-apply a decay.
    """

    model: ModelConfig = field(default_factory=ModelConfig)
    degrade: DegradeConfig = field(default_factory=DegradeConfig)  # off unless a probability is set
    stores: str = ""  # folder with train.h5/valid.h5; "" = the workspace's stores/
    batch_size: int = 16  # global batch (all processes together)
    patch_size: int = 48  # LR patch side
    iterations: int = 300_000
    lr: float = 1e-4
    optimizer: Literal["adam", "adamw"] = "adam"
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.0
    scheduler: Literal["step", "cosine"] = "step"
    milestones: tuple[int, ...] = (200_000,)
    gamma: float = 0.5
    min_lr: float = 0.0  # cosine floor
    warmup_iterations: int = 0  # linear warm-up from 0 to lr
    loss: Literal["l1", "charbonnier"] = "l1"
    charbonnier_eps: float = 1e-3  # sqrt((x - y)^2 + eps^2)
    grad_clip: float = 0.0  # max grad norm; 0 = off
    ema_decay: float = 0.0  # 0 = no EMA weights; e.g. 0.999 (validation and best.pt then use them)
    init_from: str = ""  # checkpoint or run dir to initialise from (e.g. x2 weights for x3/x4)
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"  # autocast dtype; fp16 adds a GradScaler
    channels_last: bool | Literal["auto"] = "auto"
    compile: bool = False  # torch.compile the model (first iterations are slow while it compiles)
    cudnn_benchmark: bool = True
    data_on_device: bool = False  # hold the whole store on the device and crop/augment there
    workers: int = 2  # DataLoader worker processes (0 = load in the training process)
    threads: int = 0  # CPU threads for torch ops; 0 = PyTorch's default (one per core)
    val_every: int = 5000  # 0 = never validate
    val_images: int = 0  # 0 = all validation images
    val_tile: int = 256  # LR tile side for validating large images (exact: tiles overlap by the
    #                      model's receptive radius); 0 = whole images
    early_stop_patience: int = 0  # validations without improvement before stopping; 0 = off
    log_every: int = 100  # metrics.csv train rows (mean loss over the window)
    checkpoint_every: int = 1000  # last.pt; also written after every validation and at the end
    max_bad_steps: int = 10  # consecutive non-finite losses before aborting
    tensorboard: bool = True  # also log to <run>/tensorboard when the tensorboard package is installed
    device: Literal["auto", "cuda", "cpu"] = "auto"
    seed: int = 0

    def __post_init__(self) -> None:
        check_values(self, "train", {
            "batch_size": AT_LEAST_1, "patch_size": AT_LEAST_1, "iterations": AT_LEAST_1, "lr": ABOVE_0,
            "betas": (lambda v: all(0 <= b < 1 for b in v), "two values in [0, 1)"), "eps": ABOVE_0,
            "weight_decay": AT_LEAST_0, "milestones": (lambda v: all(m >= 1 for m in v), "iterations >= 1"),
            "gamma": ABOVE_0, "min_lr": AT_LEAST_0, "warmup_iterations": AT_LEAST_0,
            "charbonnier_eps": ABOVE_0, "grad_clip": AT_LEAST_0, "ema_decay": UNIT_OPEN,
            "workers": AT_LEAST_0, "threads": AT_LEAST_0, "val_every": AT_LEAST_0, "val_images": AT_LEAST_0,
            "val_tile": AT_LEAST_0, "early_stop_patience": AT_LEAST_0, "log_every": AT_LEAST_1,
            "checkpoint_every": AT_LEAST_1, "max_bad_steps": AT_LEAST_1})


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


@dataclass(frozen=True)
class Pipeline:
    """A whole recipe: one config per stage, as read from one TOML file."""

    name: str = "default"
    description: str = ""
    # Install checks: when train finds no stores (and train.stores is unset), it prepares its own from
    # this many generated images (srpipe.data.synthetic) under <workspace>/synthetic/<name>/; 0 = never.
    synthetic_images: int = 0
    prepare: PrepareConfig = field(default_factory=PrepareConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    process: ProcessConfig = field(default_factory=ProcessConfig)

    def __post_init__(self) -> None:
        check_values(self, "pipeline", {"synthetic_images": AT_LEAST_0})


def pipeline_dirs() -> list[Path]:
    """Folders searched for ``<name>.toml``: ./pipelines, then the recipes shipped with srpipe
    (``srpipe/pipelines``, a link to the repository's ``pipelines/`` that wheels carry as files)."""
    return [Path.cwd() / "pipelines", Path(__file__).resolve().parent / "pipelines"]


def find_pipeline(name_or_path: str | Path) -> Path:
    """Resolve a pipeline name (``edsr-baseline-x4``) or a path to an existing TOML file."""
    candidate = Path(name_or_path)
    if candidate.suffix == ".toml" or candidate.exists():
        if not candidate.is_file():
            raise ConfigError(f"{candidate}: pipeline file not found")
        return candidate
    for folder in pipeline_dirs():
        path = folder / f"{name_or_path}.toml"
        if path.is_file():
            return path
    known = sorted({p.stem for d in pipeline_dirs() if d.is_dir() for p in d.glob("*.toml")})
    raise ConfigError(f"unknown pipeline '{name_or_path}'; known: {', '.join(known) or 'none'}")


def load_pipeline(name_or_path: str | Path) -> Pipeline:
    """Load a pipeline file into a ``Pipeline``; errors name the file and the dotted key."""
    path = find_pipeline(name_or_path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read pipeline: {exc}") from exc
    data.setdefault("name", path.stem)
    return from_dict(Pipeline, data, source=str(path))
