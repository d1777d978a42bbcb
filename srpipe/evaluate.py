"""``srpipe evaluate``: score an upscaler against HR images, beside the bicubic baseline (docs/evaluate.md).

An **upscaler** is anything satisfying :class:`srpipe.upscale.Upscaler`: ``name``, ``scale``, ``notes``
and a call mapping an 8-bit gray or RGB LR image to the 8-bit SR image of the same layout. Models run
through the tiled engine (``srpipe.infer.upscaler``), which quantises once at the end, as saving would
(a self-ensemble averages its 8 flips/rotations in float before that); gray images go through the
model as RGB and come back as the channel mean. RGBA loses its alpha and 16-bit images are reduced to
8 bits, because the papers' protocol is defined on 8-bit images.

LR images come from ``lr_dir`` (paired by name, :func:`find_pairs`) or are generated from the HR
image with the MATLAB-exact bicubic (modcrop, then ``imresize(hr, 1/s)``), which is how the benchmark
LR files were made. Scores follow :mod:`srpipe.metrics`; a failing image is reported and skipped.
"""

from __future__ import annotations

import heapq
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from srpipe.batch import IMAGE_SUFFIXES, failure_reason, plan_outputs, walk
from srpipe.compare import Panel, make_panel, write_compare
from srpipe.config import EvaluateConfig
from srpipe.errors import InputError, OutputError, SrpipeError, UsageError
from srpipe.imaging.color import split_alpha, to_uint8
from srpipe.imaging.io import read_image, write_image
from srpipe.imaging.resize import imresize, modcrop
from srpipe.metrics import Scores, score
from srpipe.progress import ProgressFn, report
from srpipe.upscale import BicubicUpscaler, Upscaler, open_upscaler, upscale_image
from srpipe.workspace import Workspace

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Pair:
    """An HR image and its LR partner (``lr`` None: generate it from the HR image)."""

    name: str
    hr: Path
    lr: Path | None = None


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


def list_images(folder: Path) -> list[Path]:
    """Image files directly inside ``folder`` (:func:`srpipe.batch.walk`, not recursive), sorted."""
    if not folder.is_dir():
        raise InputError(f"{folder}: not a folder")
    files = [f.path for f in walk(folder, recursive=False).files]
    if not files:
        raise InputError(f"{folder}: no images ({', '.join(IMAGE_SUFFIXES)}) found")
    return files


def lr_candidates(hr_stem: str, scale: int) -> list[str]:
    """The LR stems that pair with an HR stem: ``<stem>x<s>`` (EDSR/DIV2K: ``babyx4``), ``_HR``→``_LR``
    (SelfExSR/Set14: ``img_001_SRF_4_LR``), the same stem."""
    names = [f"{hr_stem}x{scale}"]
    if "_HR" in hr_stem:
        i = hr_stem.rfind("_HR")
        names.append(hr_stem[:i] + "_LR" + hr_stem[i + 3 :])
    names.append(hr_stem)
    return names


def find_pairs(hr_dir: Path, lr_dir: Path | None, scale: int) -> list[Pair]:
    """Pair every HR image with the one LR file, of any image format, whose stem is one of
    :func:`lr_candidates` (``baby.png`` with ``babyx4.jpg``).

    Raises ``InputError`` naming the files when two LR files match one HR image, or one LR file two
    HR images, and listing the HR images without a partner; LR files nobody claims are logged.
    """
    hrs = list_images(hr_dir)
    if lr_dir is None:
        return [Pair(p.stem, p) for p in hrs]
    by_stem: dict[str, list[Path]] = {}
    for p in list_images(lr_dir):
        by_stem.setdefault(p.stem, []).append(p)
    pairs: list[Pair] = []
    missing: list[str] = []
    owner: dict[Path, Path] = {}  # LR file -> the HR image it pairs with
    for hr in hrs:
        matches = [lr for n in dict.fromkeys(lr_candidates(hr.stem, scale)) for lr in by_stem.get(n, [])]
        if len(matches) > 1:
            raise InputError(f"{lr_dir}: {len(matches)} LR files match the HR image {hr.name}: "
                             f"{', '.join(p.name for p in matches)}; keep one")
        if not matches:
            missing.append(hr.name)
            continue
        if matches[0] in owner:
            raise InputError(f"{lr_dir}: the LR file {matches[0].name} matches two HR images: "
                             f"{owner[matches[0]].name}, {hr.name}; rename one")
        owner[matches[0]] = hr
        pairs.append(Pair(hr.stem, hr, matches[0]))
    if missing:
        example = " or ".join(f"{n}.png" for n in lr_candidates(Path(missing[0]).stem, scale))
        raise InputError(f"{lr_dir}: no LR image for {len(missing)} HR image(s): {', '.join(missing[:5])}"
                         f"{' ...' if len(missing) > 5 else ''}; expected e.g. {example} (or omit --lr "
                         "to generate LR with MATLAB bicubic)")
    unclaimed = sorted({p for group in by_stem.values() for p in group} - owner.keys())
    if unclaimed:
        log.warning("%s: %d LR file(s) without an HR partner ignored, e.g. %s", lr_dir, len(unclaimed),
                    unclaimed[0].name)
    return pairs


def to_8bit(pixels: np.ndarray, path: Path) -> np.ndarray:
    """8-bit gray or RGB for scoring: alpha dropped, 16-bit rounded to 8 (round(x / 257))."""
    pixels, alpha = split_alpha(pixels)
    if alpha is not None:
        log.warning("%s: alpha channel ignored for scoring", path)
    if pixels.dtype == np.uint16:
        log.warning("%s: 16-bit image reduced to 8 bits for scoring", path)
    return to_uint8(pixels)


def _load_pair(pair: Pair, scale: int, cfg: EvaluateConfig) -> tuple[np.ndarray, np.ndarray]:
    """(HR, LR) 8-bit arrays; LR generated or read and checked against HR/scale."""
    hr = to_8bit(read_image(pair.hr, max_pixels=cfg.max_pixels).pixels, pair.hr)
    if pair.lr is None:
        try:
            hr = np.ascontiguousarray(modcrop(hr, scale))
        except ValueError as exc:
            raise InputError(f"{pair.hr}: {exc}") from exc
        return hr, imresize(hr, 1 / scale, boundary=cfg.boundary)
    lr = to_8bit(read_image(pair.lr, max_pixels=cfg.max_pixels).pixels, pair.lr)
    (hh, hw), (lh, lw) = hr.shape[:2], lr.shape[:2]
    if not (0 <= hh - lh * scale < scale and 0 <= hw - lw * scale < scale):
        raise InputError(f"{pair.lr}: LR {lw}x{lh} is not HR {hw}x{hh} / {scale} "
                         f"(expected {hw // scale}x{hh // scale}); wrong --scale or wrong pairing?")
    if hr.ndim != lr.ndim:
        kind = "gray" if lr.ndim == 2 else "colour"
        raise InputError(f"{pair.lr}: LR is {kind} but its HR image {pair.hr.name} is not")
    return hr, lr


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
    model: str | Path | Upscaler | None, hr_dir: Path, *, lr_dir: Path | None = None,
    cfg: EvaluateConfig | None = None, save_dir: Path | None = None, compare: Path | None = None,
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
    if model is None or isinstance(model, (str, Path)):
        upscaler = open_upscaler(None if model is None else str(model),
                                 workspace=workspace or Workspace.resolve(), scale=cfg.scale,
                                 device=cfg.device, tile=cfg.tile,
                                 tile_overlap=cfg.tile_overlap, ensemble=cfg.ensemble,
                                 backend=cfg.backend, precision=cfg.precision,
                                 use_ema=cfg.weights == "ema", strength=cfg.strength)
    else:
        upscaler = model
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
            hr, lr = _load_pair(pair, scale, cfg)
            strength = _choose_strength(upscaler, pair, lr)
            t0 = time.perf_counter()
            sr = upscale_image(upscaler, lr)
            seconds = time.perf_counter() - t0
            bic = sr if bicubic is upscaler else upscale_image(bicubic, lr)
            s_model, s_bic = score(sr, hr, shave=shave), score(bic, hr, shave=shave)
        except (SrpipeError, ValueError) as exc:
            log.error("%s", exc)
            failures.append((pair.hr, failure_reason(exc)))
            continue
        results.append(ImageResult(pair.name, pair.hr, pair.lr, (sr.shape[1], sr.shape[0]), s_model, s_bic,
                                   seconds, strength))
        if save_dir is not None:
            write_image(save_dir / save_as[i].name, sr)
        if compare is not None and cfg.compare_images > 0:
            panel = make_panel(pair.name, sr=sr, bicubic=bic, hr=hr, crop=cfg.compare_crop, shave=shave,
                               psnr_bicubic=s_bic.psnr_y, psnr_model=s_model.psnr_y)
            heapq.heappush(best, (panel.gain, -i, panel))
            if len(best) > cfg.compare_images:
                heapq.heappop(best)
    report(progress, "evaluate", len(pairs), len(pairs), "done")
    written = None
    if compare is not None and best:
        panels = [p for _, _, p in sorted(best, key=lambda t: (-t[0], -t[1]))]
        written = write_compare(compare, panels, upscaler.name)
    return EvaluationReport(
        model=upscaler.name, scale=scale, shave=shave,
        lr_source="files" if lr_dir is not None else f"generated ({cfg.boundary})",
        images=tuple(results), failures=tuple(failures), saved_to=save_dir, compare=written,
        notes=tuple(getattr(upscaler, "notes", ())) + _strength_note(results),
    )


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
