"""``srpipe evaluate``: score an upscaler against HR images, beside the bicubic baseline (docs/evaluate.md).

An **upscaler** is anything satisfying :class:`srpipe.upscale.Upscaler`: ``name``, ``scale``, ``notes``
and a call mapping an 8-bit gray or RGB LR image to the 8-bit SR image of the same layout. Models run
through the tiled engine (``srpipe.infer.upscaler``), which quantises once at the end, as saving would
(a self-ensemble averages its 8 flips/rotations in float before that); gray images go through the
model as RGB and come back as the channel mean. RGBA loses its alpha and 16-bit images are reduced to
8 bits, because the papers' protocol is defined on 8-bit images.

LR images come from ``lr_dir`` (paired by name, :func:`srpipe.pairs.find_pairs`) or are generated
from the HR image with the MATLAB-exact bicubic (modcrop, then ``imresize(hr, 1/s)``), which is how the
benchmark LR files were made. Scores follow :mod:`srpipe.metrics`; a failing image is reported and
skipped.

The stage: :func:`evaluate` takes an :class:`~srpipe.config.EvaluateConfig` and returns an
:class:`EvaluationReport`.
"""

from __future__ import annotations

import heapq
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from srpipe.batch import IMAGE_SUFFIXES, failure_reason, plan_outputs
from srpipe.compare import Panel, make_panel, write_compare
from srpipe.config import EvaluateConfig
from srpipe.errors import OutputError, SrpipeError, UsageError
from srpipe.imaging.io import write_image
from srpipe.metrics import Scores, score
from srpipe.pairs import Pair, find_pairs, load_pair
from srpipe.progress import ProgressFn, report
from srpipe.upscale import BicubicUpscaler, Upscaler, open_upscaler, upscale_image
from srpipe.workspace import Workspace

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ImageResult:
    """Scores of one image for the model and for bicubic; ``seconds``: the model's upscaling time."""

    name: str
    hr: Path
    lr: Path | None
    size: tuple[int, int]  # scored SR size (width, height)
    model: Scores
    bicubic: Scores
    seconds: float
    strength: float | None = None  # the photo model's strength for this image (photo mode only)


@dataclass(frozen=True)
class EvaluationReport:
    """What ``evaluate`` found: per-image results, failures (path, reason) and where outputs went."""

    model: str
    scale: int
    shave: int
    lr_source: str  # "files" or "generated (<boundary>)"
    images: tuple[ImageResult, ...]
    failures: tuple[tuple[Path, str], ...] = ()
    saved_to: Path | None = None
    compare: Path | None = None
    notes: tuple[str, ...] = field(default=())

    @property
    def model_mean(self) -> Scores | None:
        return Scores.mean([r.model for r in self.images]) if self.images else None

    @property
    def bicubic_mean(self) -> Scores | None:
        return Scores.mean([r.bicubic for r in self.images]) if self.images else None

    @property
    def exit_code(self) -> int:
        """1 when an image could not be evaluated, else 0."""
        return 1 if self.failures else 0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict; an infinite PSNR (identical images) becomes ``null``."""

        def scores(s: Scores | None) -> dict[str, float | None] | None:
            return None if s is None else {k: (v if np.isfinite(v) else None) for k, v in asdict(s).items()}

        return {
            "model": self.model, "scale": self.scale, "shave": self.shave, "lr_source": self.lr_source,
            "mean": {"model": scores(self.model_mean), "bicubic": scores(self.bicubic_mean),
                     "images": len(self.images)},
            "images": [{"name": r.name, "hr": str(r.hr), "lr": None if r.lr is None else str(r.lr),
                        "width": r.size[0], "height": r.size[1], "seconds": round(r.seconds, 4),
                        "model": scores(r.model), "bicubic": scores(r.bicubic),
                        **({"strength": r.strength} if r.strength is not None else {})}
                       for r in self.images],
            "failures": [{"path": str(p), "error": e} for p, e in self.failures],
            "saved_to": None if self.saved_to is None else str(self.saved_to),
            "compare": None if self.compare is None else str(self.compare), "notes": list(self.notes),
        }


def _check_outputs(save_dir: Path | None, compare: Path | None, inputs: list[Path]) -> None:
    if compare is not None and compare.suffix.lower() not in IMAGE_SUFFIXES:
        raise UsageError(f"{compare}: the comparison picture needs an image suffix, e.g. .png")
    if save_dir is not None:
        if save_dir.exists() and not save_dir.is_dir():
            raise OutputError(f"{save_dir}: exists and is not a folder")
        if any(save_dir.resolve() == d.resolve() for d in inputs):
            raise OutputError(f"{save_dir}: is an input folder; SR images would overwrite your files, "
                              "choose another --save folder")
        save_dir.mkdir(parents=True, exist_ok=True)


def evaluate(
    model: str | Path | Upscaler | None, hr_dir: Path, cfg: EvaluateConfig | None = None, *,
    lr_dir: Path | None = None, save_dir: Path | None = None, compare: Path | None = None,
    progress: ProgressFn | None = None, workspace: Workspace | None = None,
) -> EvaluationReport:
    """Upscale every LR image with ``model`` and bicubic, score both against HR (see module docstring).

    ``model``: an :class:`Upscaler` or a spec for :func:`srpipe.upscale.open_upscaler` (None: the
    model ``process`` would choose). ``save_dir``
    receives ``<name>.png`` SR images (atomic writes); ``compare`` the side-by-side picture of the
    ``cfg.compare_images`` images with the largest Y-PSNR gain. Bad images are recorded in
    ``failures`` and skipped; input-level problems (no images, unpaired files) raise ``SrpipeError``.
    """
    cfg = cfg or EvaluateConfig()
    upscaler = _open(model, cfg, workspace) if model is None or isinstance(model, (str, Path)) else model
    scale = upscaler.scale
    shave = scale if cfg.shave < 0 else cfg.shave
    pairs = find_pairs(hr_dir, lr_dir, scale)
    _check_outputs(save_dir, compare, [hr_dir] + ([lr_dir] if lr_dir else []))
    bicubic = upscaler if isinstance(upscaler, BicubicUpscaler) else BicubicUpscaler(scale)
    save_as = plan_outputs([PurePosixPath(p.hr.name) for p in pairs], ".png")  # <stem>.png, never twice
    results: list[ImageResult] = []
    failures: list[tuple[Path, str]] = []
    best: list[tuple[float, int, Panel]] = []  # min-heap of the largest gains
    for i, pair in enumerate(pairs):
        report(progress, "evaluate", i, len(pairs), pair.name)
        try:
            result, sr, bic, hr = _score(pair, upscaler, bicubic, scale=scale, shave=shave, cfg=cfg)
        except (SrpipeError, ValueError) as exc:
            log.error("%s", exc)
            failures.append((pair.hr, failure_reason(exc)))
            continue
        results.append(result)
        if save_dir is not None:
            write_image(save_dir / save_as[i].name, sr)
        if compare is not None and cfg.compare_images > 0:
            panel = make_panel(pair.name, sr=sr, bicubic=bic, hr=hr, crop=cfg.compare_crop, shave=shave,
                               psnr_bicubic=result.bicubic.psnr_y, psnr_model=result.model.psnr_y)
            heapq.heappush(best, (panel.gain, -i, panel))
            if len(best) > cfg.compare_images:
                heapq.heappop(best)
    report(progress, "evaluate", len(pairs), len(pairs), "done")
    panels = [p for _, _, p in sorted(best, key=lambda t: (-t[0], -t[1]))]
    return EvaluationReport(
        model=upscaler.name, scale=scale, shave=shave,
        lr_source="files" if lr_dir is not None else f"generated ({cfg.boundary})",
        images=tuple(results), failures=tuple(failures), saved_to=save_dir,
        compare=write_compare(compare, panels, upscaler.name) if compare is not None and panels else None,
        notes=tuple(getattr(upscaler, "notes", ())) + _strength_note(results),
    )


def _open(model: str | Path | None, cfg: EvaluateConfig, workspace: Workspace | None) -> Upscaler:
    """The upscaler of a model spec (:func:`srpipe.upscale.open_upscaler`) with ``cfg``'s settings."""
    return open_upscaler(None if model is None else str(model), workspace=workspace or Workspace.resolve(),
                         scale=cfg.scale, device=cfg.device, tile=cfg.tile, tile_overlap=cfg.tile_overlap,
                         ensemble=cfg.ensemble, backend=cfg.backend, precision=cfg.precision,
                         use_ema=cfg.weights == "ema", strength=cfg.strength)


def _score(pair: Pair, upscaler: Upscaler, bicubic: Upscaler, *, scale: int, shave: int,
           cfg: EvaluateConfig) -> tuple[ImageResult, np.ndarray, np.ndarray, np.ndarray]:
    """Upscale one pair's LR with the model and bicubic and score both: (result, SR, bicubic, HR)."""
    hr, lr = load_pair(pair, scale, cfg)
    strength = _choose_strength(upscaler, pair, lr)
    t0 = time.perf_counter()
    sr = upscale_image(upscaler, lr)
    seconds = time.perf_counter() - t0
    bic = sr if bicubic is upscaler else upscale_image(bicubic, lr)
    result = ImageResult(pair.name, pair.hr, pair.lr, (sr.shape[1], sr.shape[0]), score(sr, hr, shave=shave),
                         score(bic, hr, shave=shave), seconds, strength)
    return result, sr, bic, hr


def _choose_strength(upscaler: Upscaler, pair: Pair, lr: np.ndarray) -> float | None:
    """Photo mode: pick this image's strength (from the LR file and pixels, as ``process`` does)."""
    from srpipe.photo.strength import StrengthUpscaler

    if not isinstance(upscaler, StrengthUpscaler):
        return None
    return upscaler.choose(pair.lr, lr).strength


def _strength_note(results: list[ImageResult]) -> tuple[str, ...]:
    used = [r.strength for r in results if r.strength is not None]
    if not used:
        return ()
    counts = {s: used.count(s) for s in sorted(set(used))}
    return ("photo strength per image: " + ", ".join(f"{s:g} ×{n}" for s, n in counts.items()),)
