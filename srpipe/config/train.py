"""Training configurations: the ``[train]`` table of a pipeline, its ``[train.model]`` (EDSR
hyperparameters) and ``[train.degrade]`` (photo-mode degradations) tables."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from srpipe.config.checks import (
    ABOVE_0,
    AT_LEAST_0,
    AT_LEAST_1,
    PROBABILITY,
    UNIT_OPEN,
    check_values,
    finite,
    value_range,
)

DIV2K_RGB_MEAN = (0.4488, 0.4371, 0.4040)


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
            "rgb_mean": (lambda v: all(finite(m) and 0 <= m <= 1 for m in v), "three values in [0, 1]")})


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
            "blur_sigma": value_range(0.1, 5.0), "noise_sigma": value_range(0.0, 50.0),
            "jpeg_quality": value_range(1, 100)})

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
