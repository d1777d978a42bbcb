"""Importing EDSR-PyTorch and BasicSR weights: reference modules rebuilt here, outputs compared."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import nn

from srpipe.errors import CheckpointError
from srpipe.model.checkpoint import load_model
from srpipe.model.convert import convert_state_dict
from srpipe.model.edsr import build_model

MEAN = (0.4488, 0.4371, 0.4040)


# ---- EDSR-PyTorch (sanghyun-son/EDSR-PyTorch src/model/{common,edsr}.py), rebuilt ----
class MeanShift(nn.Conv2d):
    def __init__(self, rgb_range: float, sign: int) -> None:
        super().__init__(3, 3, kernel_size=1)
        self.weight.data = torch.eye(3).view(3, 3, 1, 1)
        self.bias.data = sign * rgb_range * torch.tensor(MEAN)


class PtResBlock(nn.Module):
    def __init__(self, f: int, res_scale: float) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(f, f, 3, padding=1), nn.ReLU(True), nn.Conv2d(f, f, 3, padding=1))
        self.res_scale = res_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x).mul(self.res_scale) + x


def _shuffle_upsampler(scale: int, f: int) -> list[nn.Module]:
    if scale == 3:
        return [nn.Conv2d(f, 9 * f, 3, padding=1), nn.PixelShuffle(3)]
    layers: list[nn.Module] = []
    for _ in range(int(math.log2(scale))):
        layers += [nn.Conv2d(f, 4 * f, 3, padding=1), nn.PixelShuffle(2)]
    return layers


class PtEDSR(nn.Module):
    """Input/output on [0, rgb_range]."""

    def __init__(self, scale: int, n: int, f: int, res_scale: float, rgb_range: float = 255) -> None:
        super().__init__()
        self.sub_mean = MeanShift(rgb_range, -1)
        self.add_mean = MeanShift(rgb_range, 1)
        self.head = nn.Sequential(nn.Conv2d(3, f, 3, padding=1))
        blocks = [PtResBlock(f, res_scale) for _ in range(n)]
        self.body = nn.Sequential(*blocks, nn.Conv2d(f, f, 3, padding=1))
        self.tail = nn.Sequential(nn.Sequential(*_shuffle_upsampler(scale, f)), nn.Conv2d(f, 3, 3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.head(self.sub_mean(x))
        res = self.body(x)
        res += x
        return self.add_mean(self.tail(res))


# ---- BasicSR (XPixelGroup/BasicSR basicsr/archs/edsr_arch.py), rebuilt ----
class BsResBlock(nn.Module):
    def __init__(self, f: int, res_scale: float) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(f, f, 3, 1, 1)
        self.conv2 = nn.Conv2d(f, f, 3, 1, 1)
        self.relu = nn.ReLU(inplace=True)
        self.res_scale = res_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(self.relu(self.conv1(x))) * self.res_scale


class BsEDSR(nn.Module):
    """Input/output on [0, 1]; the network runs on (x - mean) * img_range."""

    def __init__(self, scale: int, n: int, f: int, res_scale: float, img_range: float = 255.0) -> None:
        super().__init__()
        self.img_range = img_range
        self.mean = torch.tensor(MEAN).view(1, 3, 1, 1)
        self.conv_first = nn.Conv2d(3, f, 3, 1, 1)
        self.body = nn.Sequential(*[BsResBlock(f, res_scale) for _ in range(n)])
        self.conv_after_body = nn.Conv2d(f, f, 3, 1, 1)
        self.upsample = nn.Sequential(*_shuffle_upsampler(scale, f))
        self.conv_last = nn.Conv2d(f, 3, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (x - self.mean) * self.img_range
        x = self.conv_first(x)
        res = self.conv_after_body(self.body(x))
        res += x
        return self.conv_last(self.upsample(res)) / self.img_range + self.mean


def _randomise(module: nn.Module, seed: int) -> None:
    """Random weights keeping activations O(1) on the [0, 255] scale, with biases big enough that a
    wrong bias scale would show (every test also checks that a wrong conversion is caught)."""
    g = torch.Generator().manual_seed(seed)
    for name, p in module.named_parameters():
        if "mean" in name:
            continue
        if name.endswith("weight"):
            p.data = torch.randn(p.shape, generator=g) * 0.7 / math.sqrt(p[0].numel())
        else:
            p.data = torch.randn(p.shape, generator=g) * 2.0


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_edsr_pytorch_weights_give_identical_outputs(tmp_path: Path, scale: int) -> None:
    ref = PtEDSR(scale, n=2, f=8, res_scale=0.5).eval()
    _randomise(ref, scale)
    path = tmp_path / f"edsr_x{scale}.pt"
    torch.save(ref.state_dict(), path)
    model, cfg = load_model(path, res_scale=0.5)
    assert (cfg.scale, cfg.n_resblocks, cfg.n_feats, cfg.res_scale) == (scale, 2, 8, 0.5)
    assert cfg.rgb_mean == pytest.approx(MEAN, abs=1e-6)
    x = torch.rand(1, 3, 13, 9, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = ref(x * 255) / 255
        got = model(x)
    assert got.shape == expected.shape == (1, 3, 13 * scale, 9 * scale)
    assert (got - expected).abs().max().item() <= 1e-5
    wrong, _ = load_model(path)  # res_scale not stored: the default (1.0) is not this model's 0.5
    with torch.no_grad():
        assert (wrong(x) - expected).abs().max().item() > 1e-2


def test_edsr_pytorch_rgb_range_1_is_detected(tmp_path: Path) -> None:
    ref = PtEDSR(2, n=1, f=8, res_scale=1.0, rgb_range=1).eval()
    _randomise(ref, 7)
    cfg, state = convert_state_dict(ref.state_dict())
    model = build_model(cfg)
    model.load_state_dict(state)
    x = torch.rand(1, 3, 11, 7)
    with torch.no_grad():
        assert (model.eval()(x) - ref(x)).abs().max().item() <= 1e-5


@pytest.mark.parametrize(("scale", "key"), [(2, "params"), (3, "params_ema"), (4, "params")])
def test_basicsr_weights_give_identical_outputs(tmp_path: Path, scale: int, key: str) -> None:
    ref = BsEDSR(scale, n=2, f=8, res_scale=1.0).eval()
    _randomise(ref, 10 + scale)
    path = tmp_path / f"edsr_x{scale}.pth"
    # DDP-trained files carry "module." prefixes; BasicSR keeps both entries, the EMA is preferred.
    state = {f"module.{k}": v for k, v in ref.state_dict().items()}
    zeros = {k: v * 0 for k, v in state.items()}
    payload = {key: state} if key == "params" else {"params": zeros, key: state}
    torch.save(payload, path)
    model, cfg = load_model(path)
    assert (cfg.scale, cfg.n_resblocks, cfg.n_feats, cfg.res_scale) == (scale, 2, 8, 1.0)
    x = torch.rand(2, 3, 9, 15, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected = ref(x)
        assert (model(x) - expected).abs().max().item() <= 1e-5
        # The check has teeth: biases left on BasicSR's 255 scale give a visibly different output.
        cfg_wrong, state_wrong = convert_state_dict(ref.state_dict(), img_range=1.0)
        wrong = build_model(cfg_wrong)
        wrong.load_state_dict(state_wrong)
        assert (wrong.eval()(x) - expected).abs().max().item() > 1e-2


def test_res_scale_defaults_by_width() -> None:
    wide = BsEDSR(2, n=1, f=256, res_scale=0.1)
    cfg, _ = convert_state_dict(wide.state_dict())
    assert cfg.res_scale == 0.1
    cfg, _ = convert_state_dict(BsEDSR(2, n=1, f=16, res_scale=1.0).state_dict())
    assert cfg.res_scale == 1.0


def test_bare_srpipe_state_dict_and_compile_prefix(tmp_path: Path) -> None:
    src = build_model(convert_state_dict(BsEDSR(3, n=2, f=8, res_scale=1.0).state_dict())[0])
    path = tmp_path / "bare.pth"
    torch.save({f"_orig_mod.{k}": v for k, v in src.state_dict().items()}, path)
    model, cfg = load_model(path)
    assert (cfg.scale, cfg.n_resblocks, cfg.n_feats) == (3, 2, 8)
    for k, v in src.state_dict().items():
        assert torch.equal(model.state_dict()[k], v)


def test_unknown_layout_names_file_and_keys(tmp_path: Path) -> None:
    path = tmp_path / "mystery.pth"
    torch.save({"encoder.conv.weight": torch.zeros(3, 3, 3, 3), "decoder.fc.bias": torch.zeros(2)}, path)
    with pytest.raises(CheckpointError) as info:
        load_model(path)
    msg = str(info.value)
    assert "mystery.pth" in msg and "encoder.conv.weight" in msg and "decoder.fc.bias" in msg


def test_unsupported_variants_and_bad_files(tmp_path: Path) -> None:
    x8 = PtEDSR(8, n=1, f=8, res_scale=1.0)
    with pytest.raises(CheckpointError, match=r"unexpected keys.*tail\.0\.4"):
        convert_state_dict(x8.state_dict(), source="x8.pt")
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a torch file")
    with pytest.raises(CheckpointError, match=r"garbage\.pt: not a readable checkpoint"):
        load_model(garbage)
    with pytest.raises(CheckpointError, match=r"missing\.pt: no such checkpoint file"):
        load_model(tmp_path / "missing.pt")
