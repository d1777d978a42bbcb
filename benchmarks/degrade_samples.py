"""Picture of what ``[train.degrade]`` does to training LR patches (docs/img/degrade-samples.png).

Run from the repository root, beside ``../shared``::

    python benchmarks/degrade_samples.py [--pipeline photo-x4] [--out docs/img/degrade-samples.png]

Takes 64×64-px LR crops of three training photos (``../shared/data/train/BSD200``; MATLAB bicubic of the
HR, as the stores hold them) and shows each clean, then as items 0-5 of the recipe's degradations
(``srpipe.data.degrade.degrade`` with the recipe's seed: exactly what training draws for those items),
every panel enlarged 3× (nearest) and labelled with the draw.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

from srpipe.config import load_pipeline
from srpipe.data import degrade as deg
from srpipe.imaging.io import read_image, write_image
from srpipe.imaging.resize import imresize

TRAIN = Path(__file__).resolve().parents[2] / "shared" / "data" / "train" / "BSD200"
SIDE, ZOOM = 64, 3


def label(d: deg.Draw | None) -> str:
    if d is None:
        return "clean"
    parts = [f"blur {d.blur_sigma:.1f}" if d.blur_sigma else "",
             f"noise {d.noise_sigma:.1f}{' luma' if d.noise_gray else ''}" if d.noise_sigma else "",
             f"jpeg q{d.jpeg_quality}" if d.jpeg_quality else ""]
    return ", ".join(p for p in parts if p) or "clean (no step drawn)"


def panel(lr: np.ndarray, text: str) -> np.ndarray:
    big = cv2.resize(lr, None, fx=ZOOM, fy=ZOOM, interpolation=cv2.INTER_NEAREST)
    bar = np.full((22, big.shape[1], 3), 255, np.uint8)
    cv2.putText(bar, text, (4, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.42, (0, 0, 0), 1, cv2.LINE_AA)
    return np.concatenate([big, bar], axis=0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pipeline", default="photo-x4")
    ap.add_argument("--out", type=Path, default=Path("docs/img/degrade-samples.png"))
    args = ap.parse_args()
    recipe = load_pipeline(args.pipeline)
    cfg, s, seed = recipe.train.degrade, recipe.train.model.scale, recipe.train.seed
    rows = []
    for path in sorted(TRAIN.glob("*.png"))[:3]:
        hr_img = read_image(path).pixels
        y, x = (hr_img.shape[0] - SIDE * s) // 2, (hr_img.shape[1] - SIDE * s) // 2
        hr = np.ascontiguousarray(hr_img[y : y + SIDE * s, x : x + SIDE * s])
        lr = imresize(hr, 1 / s)
        tiles = [panel(lr, "clean")]
        for item in range(6):
            d, rng = deg.draw(cfg, seed, item)
            tiles.append(panel(deg.apply(lr, hr, s, d, rng), label(d)))
        rows.append(np.concatenate(tiles, axis=1))
    write_image(args.out, np.concatenate(rows, axis=0))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
