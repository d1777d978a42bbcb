"""``srpipe evaluate``'s inputs: HR images paired with their LR partners by name, loaded as the 8-bit
pairs the papers' protocol scores (LR read and checked against HR, or generated from it with the
MATLAB-exact bicubic)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from srpipe.batch import IMAGE_SUFFIXES, walk
from srpipe.config import EvaluateConfig
from srpipe.errors import InputError
from srpipe.imaging.color import split_alpha, to_uint8
from srpipe.imaging.io import read_image
from srpipe.imaging.resize import imresize, modcrop

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Pair:
    """An HR image and its LR partner (``lr`` None: generate it from the HR image)."""

    name: str
    hr: Path
    lr: Path | None = None



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


def load_pair(pair: Pair, scale: int, cfg: EvaluateConfig) -> tuple[np.ndarray, np.ndarray]:
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
