"""The bundled photo models (issue 16): package data, blendable with the default models, and scoring
what the model card's photo table says on the degraded Set5 inputs."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np
import pytest

from srpipe.config import EvaluateConfig
from srpipe.contract import MetaKey, describe
from srpipe.evaluate import evaluate
from srpipe.infer.session import BUNDLED_DIR, bundled_model
from srpipe.workspace import Workspace

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from photo_models import make_inputs  # the benchmark writes the card's inputs

CARD = Path(__file__).resolve().parents[1] / "docs" / "models.md"
PHOTO_SCALES = (2, 4)


def _weights(path: Path) -> dict[str, tuple[tuple[int, ...], str]]:
    import onnx
    from onnx import numpy_helper

    return {t.name: (numpy_helper.to_array(t).shape, str(numpy_helper.to_array(t).dtype))
            for t in onnx.load(str(path)).graph.initializer}


@pytest.mark.parametrize("scale", PHOTO_SCALES)
def test_photo_model_is_package_data_of_the_default_architecture(scale: int) -> None:
    photo, default = bundled_model("photo", scale), bundled_model("default", scale)
    assert photo.parent == BUNDLED_DIR and photo.stat().st_size < 4 << 20
    props = describe(photo).props
    assert props[MetaKey.SOURCE].startswith(f"training/photo-x{scale}/")
    assert props[MetaKey.PIPELINE] == f"photo-x{scale}"
    assert _weights(photo) == _weights(default)  # --strength can blend every weight
    assert not np.array_equal(*(np.fromfile(p, np.uint8)[-4096:] for p in (photo, default)))


def card_rows() -> dict[tuple[int, str, str], tuple[float, float, float]]:
    """The photo table: (scale, set, LR input) -> (default, photo at strength 1, photo auto) Y-PSNR."""
    rows = {}
    for line in CARD.read_text().splitlines():
        m = re.match(r"\| x(\d) \| (Set5|Set14) \| (\w+) \| ([\d.]+) \| ([\d.]+) \| ([\d.]+) \|", line)
        if m:
            rows[int(m[1]), m[2], m[3]] = float(m[4]), float(m[5]), float(m[6])
    return rows


@pytest.mark.parametrize("scale", PHOTO_SCALES)
def test_photo_card_rows_are_reproduced_on_set5(shared_dir: Path, tmp_path: Path, scale: int) -> None:
    """docs/models.md's photo rows for Set5 are what `benchmarks/photo_models.py` (srpipe evaluate) gives."""
    hr = shared_dir / "data" / "benchmarks" / "Set5" / "HR"
    rows = card_rows()
    for kind, lr in make_inputs("Set5", scale, tmp_path).items():
        want = rows[scale, "Set5", kind]
        for (model, strength), card in zip((("default", None), ("photo", 1.0), ("photo", "auto")), want,
                                           strict=True):
            report = evaluate(model, hr, EvaluateConfig(scale=scale, precision="fp32", strength=strength),
                              lr_dir=lr, workspace=Workspace(tmp_path / "ws"))
            assert report.model_mean is not None and not report.failures
            assert report.model_mean.psnr_y == pytest.approx(card, abs=0.006), (kind, model, strength)
