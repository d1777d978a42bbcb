"""Benchmark: the bundled photo models against the default ones on degraded Set5/Set14 LR (issue 16).

Run from the repository root, beside ``../shared`` (about 5 minutes on 2 cores)::

    python benchmarks/photo_models.py [--scales 2 4] [--sets Set5 Set14] [--out srpipe-work/photo-sets]

It first writes the test inputs from the official LR of ``../shared/data/benchmarks/<set>/LR_bicubic/X<s>``
(never from HR): ``jpeg50`` and ``jpeg75`` (OpenCV JPEG re-encoding at that quality, ``.jpg`` files),
``noise5`` (Gaussian noise σ = 5 on [0, 255], independent per channel, seed 0, rounded and clipped,
``.png``), and ``clean`` (the official LR as it is). Then it scores, with ``srpipe.evaluate.evaluate``
in fp32 (the paper protocol: Y, shave = scale), the default model, the photo model at ``--strength 1``
and at ``--strength auto``, and prints one Markdown table row per (scale, set, input) with the
``srpipe evaluate`` command that prints each score, plus the differences the issue's targets are about.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np

from srpipe.config import EvaluateConfig
from srpipe.data.degrade import add_noise
from srpipe.evaluate import evaluate
from srpipe.imaging.io import read_image, write_image
from srpipe.workspace import Workspace

BENCH = Path(__file__).resolve().parents[2] / "shared" / "data" / "benchmarks"
KINDS = ("clean", "jpeg50", "jpeg75", "noise5")


def make_inputs(set_name: str, scale: int, out: Path) -> dict[str, Path]:
    """The four LR folders of one set and scale (module docstring); existing files are rewritten."""
    src = BENCH / set_name / "LR_bicubic" / f"X{scale}"
    folders = {"clean": src}
    rng = np.random.default_rng(0)
    for kind in KINDS[1:]:
        folder = folders[kind] = out / set_name / f"X{scale}" / kind
        folder.mkdir(parents=True, exist_ok=True)
    for path in sorted(src.glob("*.png")):
        pixels = read_image(path).pixels
        bgr = pixels if pixels.ndim == 2 else np.ascontiguousarray(pixels[..., ::-1])
        for q in (50, 75):
            cv2.imwrite(str(folders[f"jpeg{q}"] / f"{path.stem}.jpg"), bgr, [cv2.IMWRITE_JPEG_QUALITY, q])
        write_image(folders["noise5"] / path.name, add_noise(pixels, 5.0, False, rng))
    return folders


def score(model: str, set_name: str, scale: int, lr: Path, strength: float | str | None) -> float:
    cfg = EvaluateConfig(scale=scale, precision="fp32", strength=strength)
    hr = BENCH / set_name / "HR" / f"X{scale}"  # Set14 keeps one HR folder per scale, Set5 one for all
    hr = hr if hr.is_dir() else hr.parent
    report = evaluate(model, hr, lr_dir=lr, cfg=cfg, workspace=Workspace.resolve())
    if report.failures:
        raise SystemExit(f"{set_name} x{scale} {lr}: {report.failures}")
    assert report.model_mean is not None
    return report.model_mean.psnr_y


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--scales", type=int, nargs="+", default=[2, 4])
    ap.add_argument("--sets", nargs="+", default=["Set5", "Set14"])
    ap.add_argument("--out", type=Path, default=Path("srpipe-work/photo-sets"))
    args = ap.parse_args()
    if not BENCH.is_dir():
        sys.exit(f"{BENCH}: not found (the benchmark sets live in ../shared/data/benchmarks)")
    print("| scale | set | LR input | default | photo (strength 1) | photo (auto) | photo − default "
          "| auto − default | auto − photo |")
    print("|---|---|---|---|---|---|---|---|---|")
    for scale in args.scales:
        for set_name in args.sets:
            for kind, lr in make_inputs(set_name, scale, args.out).items():
                d = score("default", set_name, scale, lr, None)
                p = score("photo", set_name, scale, lr, 1.0)
                a = score("photo", set_name, scale, lr, "auto")
                print(f"| x{scale} | {set_name} | {kind} | {d:.2f} | {p:.2f} | {a:.2f} | {p - d:+.2f} "
                      f"| {a - d:+.2f} | {a - p:+.2f} |", flush=True)
    print("\nEach score: srpipe evaluate {default|photo} -s S --hr ../shared/data/benchmarks/SET/HR/XS "
          "--lr LR_FOLDER [--strength 1|auto] (LR folders as written under --out; clean = the official "
          "LR_bicubic/XS)")


if __name__ == "__main__":
    main()
