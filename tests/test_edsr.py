from __future__ import annotations

import pytest
import torch

from srpipe.config import ModelConfig
from srpipe.model.edsr import EDSR, build_model, count_parameters, preset_config, receptive_radius

PUBLISHED = {
    ("baseline", 2): 1_369_859, ("baseline", 3): 1_554_499, ("baseline", 4): 1_517_571,
    ("paper", 2): 40_729_603, ("paper", 3): 43_680_003, ("paper", 4): 43_089_923,
}


@pytest.mark.parametrize(("preset", "scale"), sorted(PUBLISHED))
def test_parameter_counts_match_the_paper(preset: str, scale: int) -> None:
    with torch.device("meta"):
        model = build_model(preset_config(preset, scale))
    assert count_parameters(model) == PUBLISHED[(preset, scale)]


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_output_shape_and_contract(scale: int) -> None:
    torch.manual_seed(0)
    model = EDSR(scale=scale, n_resblocks=1, n_feats=8).eval()
    x = torch.rand(2, 3, 17, 23)
    with torch.no_grad():
        y = model(x)
    assert y.shape == (2, 3, 17 * scale, 23 * scale)
    assert y.dtype == torch.float32


def test_forward_is_pure_and_buffers_move() -> None:
    model = EDSR(scale=2, n_resblocks=1, n_feats=8).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.rand(1, 3, 9, 11)
    with torch.no_grad():
        a, b = model(x), model(x)
    assert torch.equal(a, b)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert "rgb_mean" in dict(model.named_buffers())
    model.to(torch.float64)
    assert model(x.double()).dtype == torch.float64


def test_zero_body_and_tail_returns_input_mean_shifted_identity() -> None:
    # With every conv zeroed the net outputs exactly the mean it subtracted: the mean shift is symmetric.
    model = EDSR(scale=2, n_resblocks=1, n_feats=8)
    for p in model.parameters():
        torch.nn.init.zeros_(p)
    y = model(torch.rand(1, 3, 5, 5))
    assert torch.allclose(y, model.rgb_mean.expand_as(y))


def test_bad_hyperparameters() -> None:
    with pytest.raises(ValueError, match="scale 2, 3 or 4"):
        EDSR(scale=5)
    with pytest.raises(TypeError):
        EDSR(4)  # type: ignore[misc]  # keyword-only


def test_receptive_radius_baseline_and_paper() -> None:
    assert receptive_radius(ModelConfig(n_resblocks=16)) == 36
    assert receptive_radius(ModelConfig(n_resblocks=32)) == 68
