"""Checkpoints: format, atomic writes, strict loading, prefixes, run directories, clear errors."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from srpipe.config import ModelConfig
from srpipe.errors import CheckpointError
from srpipe.model import checkpoint as ck
from srpipe.model.edsr import build_model

TINY = ModelConfig(scale=2, n_resblocks=1, n_feats=8)


def tiny_model(seed: int = 0, cfg: ModelConfig = TINY) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model(cfg)


def test_round_trip_carries_config_and_weights(tmp_path: Path) -> None:
    cfg = dataclasses.replace(TINY, scale=3, res_scale=0.5, rgb_mean=(0.5, 0.4, 0.3))
    model = tiny_model(cfg=cfg)
    path = ck.save_checkpoint(tmp_path / "m.pt", model_config=cfg, model_state=model.state_dict())
    raw = torch.load(path, weights_only=True)  # the documented format needs no unpickling
    assert raw["format"] == "srpipe-checkpoint" and raw["version"] == 1
    assert raw["model_config"] == dataclasses.asdict(cfg)
    loaded, loaded_cfg = ck.load_model(path)
    assert loaded_cfg == cfg and not loaded.training
    x = torch.rand(1, 3, 11, 7)
    with torch.no_grad():
        assert torch.equal(loaded(x), model.eval()(x))
    assert [p.name for p in tmp_path.iterdir()] == ["m.pt"]  # no temporary file left behind


def test_prefixed_keys_from_ddp_and_compile_load(tmp_path: Path) -> None:
    model = tiny_model()
    state = {f"module._orig_mod.{k}": v for k, v in model.state_dict().items()}
    payload = {"format": "srpipe-checkpoint", "version": 1, "srpipe_version": "x",
               "model_config": dataclasses.asdict(TINY), "model": state}
    torch.save(payload, tmp_path / "p.pt")  # written by hand: save_checkpoint would strip them itself
    loaded, _ = ck.load_model(tmp_path / "p.pt")
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), model.state_dict().values(),
                                                strict=True))


def test_strict_load_names_missing_and_mismatched_keys(tmp_path: Path) -> None:
    state = tiny_model().state_dict()
    del state["tail.bias"]
    ck.save_checkpoint(tmp_path / "a.pt", model_config=TINY, model_state=state)
    with pytest.raises(CheckpointError, match=r"a\.pt: weights do not fit the model: missing \['tail\.bias'"):
        ck.load_model(tmp_path / "a.pt")
    wider = tiny_model(cfg=dataclasses.replace(TINY, n_feats=16)).state_dict()
    ck.save_checkpoint(tmp_path / "b.pt", model_config=TINY, model_state=wider)
    with pytest.raises(CheckpointError, match=r"b\.pt: .*shape mismatch.*head\.weight"):
        ck.load_model(tmp_path / "b.pt")


def test_ema_weights_preferred_unless_disabled(tmp_path: Path) -> None:
    model, ema = tiny_model(0), tiny_model(1)
    ck.save_checkpoint(tmp_path / "e.pt", model_config=TINY, model_state=model.state_dict(),
                       extra={"ema": ema.state_dict()})
    with_ema, _ = ck.load_model(tmp_path / "e.pt")
    raw, _ = ck.load_model(tmp_path / "e.pt", use_ema=False)
    assert torch.equal(with_ema.head.weight, ema.head.weight)
    assert torch.equal(raw.head.weight, model.head.weight)


def test_run_directory_prefers_best_then_last(tmp_path: Path) -> None:
    run = tmp_path / "run"
    with pytest.raises(CheckpointError, match="no such checkpoint file or run directory"):
        ck.load_model(run)
    (run / "checkpoints").mkdir(parents=True)
    with pytest.raises(CheckpointError, match=r"no best\.pt or last\.pt"):
        ck.load_model(run)
    last, best = tiny_model(0), tiny_model(1)
    ck.save_checkpoint(run / "checkpoints" / "last.pt", model_config=TINY, model_state=last.state_dict())
    assert torch.equal(ck.load_model(run)[0].head.weight, last.head.weight)
    ck.save_checkpoint(run / "checkpoints" / "best.pt", model_config=TINY, model_state=best.state_dict())
    assert torch.equal(ck.load_model(run)[0].head.weight, best.head.weight)


@pytest.mark.parametrize("content", [b"", b"not a checkpoint at all", b"PK\x03\x04truncated zip"])
def test_corrupt_files_raise_checkpoint_error_naming_the_file(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "broken.pt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=r"broken\.pt: not a readable checkpoint"):
        ck.load_model(path)


def test_truncated_real_checkpoint_is_rejected(tmp_path: Path) -> None:
    path = ck.save_checkpoint(tmp_path / "t.pt", model_config=TINY, model_state=tiny_model().state_dict())
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"t\.pt"):
        ck.load_model(path)


def test_foreign_and_newer_files(tmp_path: Path) -> None:
    torch.save({"weights": [1, 2, 3]}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match=r"other\.pt: no tensors found"):
        ck.load_model(tmp_path / "other.pt")
    torch.save({"format": "srpipe-checkpoint", "version": 99, "model_config": {}, "model": {}},
               tmp_path / "future.pt")
    with pytest.raises(CheckpointError, match=r"future\.pt: checkpoint version 99 is newer"):
        ck.load_model(tmp_path / "future.pt")
    torch.save({"format": "srpipe-checkpoint", "version": 1, "model_config": {"scale": 2, "colour": 1},
                "model": {}}, tmp_path / "badcfg.pt")
    with pytest.raises(CheckpointError, match=r"badcfg\.pt: unknown key 'model_config\.colour'"):
        ck.load_model(tmp_path / "badcfg.pt")


def test_failed_save_keeps_the_previous_checkpoint(tmp_path: Path) -> None:
    path = ck.save_checkpoint(tmp_path / "last.pt", model_config=TINY, model_state=tiny_model(0).state_dict())
    before = path.read_bytes()
    with pytest.raises(Exception, match=r"pickle|lambda|local object"):
        ck.save_checkpoint(path, model_config=TINY, model_state=tiny_model(1).state_dict(),
                           extra={"bad": lambda: None})
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]
    with pytest.raises(ValueError, match="reserved"):
        ck.save_checkpoint(path, model_config=TINY, model_state={}, extra={"model": {}})
