"""srpipe train: run layout, exact resume, NaN handling, schedule, options, data paths and the CLI.

Everything runs a 1-block × 8-feature EDSR on tiny stores that ``srpipe.prepare`` builds from
synthetic images, for a handful of iterations.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import signal
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from conftest import smooth_image

from srpipe.cli import cli
from srpipe.config import ModelConfig, Pipeline, PrepareConfig, TrainConfig, configure, load_pipeline
from srpipe.data.dataset import PatchDataset
from srpipe.errors import ConfigError, StoreError, TrainingError, UsageError
from srpipe.imaging.io import write_image
from srpipe.model.checkpoint import load_model, read_checkpoint, save_checkpoint
from srpipe.model.edsr import build_model
from srpipe.prepare import prepare
from srpipe.train import batches, optim
from srpipe.train import validate as validate_mod
from srpipe.train.run import train
from srpipe.train.rundir import MetricsLog, read_metrics
from srpipe.train.state import init_from_checkpoint
from srpipe.workspace import Workspace

TINY = ModelConfig(scale=2, n_resblocks=1, n_feats=8)


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """train.h5 (3 images → sub-images of 24 px) and valid.h5 (1 whole image), scales 2 and 3."""
    root = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(7)
    for i, (h, w) in enumerate([(61, 53), (47, 70), (58, 58), (40, 66)]):
        write_image(root / f"im{i}.png", smooth_image(rng, h, w))
    out = tmp_path_factory.mktemp("stores")
    prepare(root, out, PrepareConfig(scales=(2, 3), hr_size=24, stride=12, patch_size=4, valid_count=1,
                                     workers=1))
    return out


def tiny(stores: Path, **changes: object) -> Pipeline:
    cfg = TrainConfig(model=TINY, stores=str(stores), batch_size=4, patch_size=8, iterations=8, val_every=0,
                      log_every=1, checkpoint_every=4, workers=0, tensorboard=False)
    return Pipeline(name="tiny", train=dataclasses.replace(cfg, **changes))  # type: ignore[arg-type]


def rows(metrics: Path, kind: str = "train") -> list[tuple[str, str, str]]:
    return [(r["iteration"], r["loss"], r["lr"]) for r in read_metrics(metrics) if r["kind"] == kind]


class Killed(Exception):
    """Stands in for the process dying (no cleanup, no checkpoint)."""


def kill_at(monkeypatch: pytest.MonkeyPatch, iteration: int) -> None:
    real = optim.lr_at

    def lr_at(cfg: TrainConfig, it: int) -> float:
        if it == iteration:
            raise Killed(f"killed before iteration {it}")
        return real(cfg, it)

    monkeypatch.setattr(optim, "lr_at", lr_at)


def test_new_run_layout_metrics_and_checkpoints(stores: Path, tmp_path: Path) -> None:
    ws = Workspace(tmp_path / "ws")
    pipe = tiny(stores, val_every=4, ema_decay=0.5)
    result = train(configure(pipe, ["train.lr=2e-4"], table="train"), workspace=ws)
    run = result.run_dir
    assert run.parent == ws.runs and run.name.startswith("tiny-")
    expected = {"config.toml", "checkpoints", "metrics.csv", "compare", "train.log"}
    assert {p.name for p in run.iterdir()} >= expected
    saved = load_pipeline(run / "config.toml")
    assert saved.train == dataclasses.replace(pipe.train, lr=2e-4)  # resolved config, overrides applied
    assert [r[0] for r in rows(result.metrics)] == [str(i) for i in range(1, 9)]
    val = [r for r in read_metrics(result.metrics) if r["kind"] == "val"]
    assert [r["iteration"] for r in val] == ["4", "8"] and all(float(r["psnr_y"]) > 5 for r in val)
    assert sorted(p.name for p in (run / "compare").iterdir()) == ["iter-0000004.png", "iter-0000008.png"]
    assert "validation Y-PSNR" in (run / "train.log").read_text()
    assert result.iteration == 8 and result.best_psnr_y == max(float(r["psnr_y"]) for r in val)
    ckpt = read_checkpoint(run / "checkpoints" / "last.pt")
    assert ckpt["train"]["state"]["iteration"] == 8 and "ema" in ckpt and ckpt["train"]["optimizer"]["state"]
    model, cfg = load_model(run)  # run dir → best.pt, EMA weights
    assert cfg == TINY and not model.training
    best = read_checkpoint(run / "checkpoints" / "best.pt")
    assert torch.equal(model.head.weight, best["ema"]["head.weight"])


@pytest.mark.parametrize(("workers", "on_device"), [(0, False), (1, False), (0, True)])
def test_resume_after_kill_is_bitwise_exact(stores: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            workers: int, on_device: bool) -> None:
    ws = Workspace(tmp_path / "ws")
    pipe = tiny(stores, iterations=10, checkpoint_every=3, milestones=(5,), ema_decay=0.9, workers=workers,
                data_on_device=on_device)
    full = train(pipe, workspace=ws, run_dir=tmp_path / "full")
    kill_at(monkeypatch, 8)  # last checkpoint at 6, past the milestone at 5
    with pytest.raises(Killed):
        train(pipe, workspace=ws, run_dir=tmp_path / "killed")
    assert [r[0] for r in rows(tmp_path / "killed" / "metrics.csv")][-1] == "8"
    monkeypatch.undo()
    resumed = train(None, workspace=ws, resume=tmp_path / "killed")
    assert resumed.start_iteration == 6 and resumed.iteration == 10
    assert rows(resumed.metrics) == rows(full.metrics)  # same losses and lrs, no duplicated rows
    assert [r[2] for r in rows(resumed.metrics)][6:] == [repr(0.5e-4)] * 4  # decayed once, not twice (#296)
    a, b = read_checkpoint(full.last_checkpoint), read_checkpoint(resumed.last_checkpoint)
    for key in ("model", "ema"):
        assert all(torch.equal(a[key][k], b[key][k]) for k in a[key])


def test_interrupt_saves_then_resume_continues(stores: Path, tmp_path: Path) -> None:
    ws = Workspace(tmp_path / "ws")
    pipe = tiny(stores, iterations=6, checkpoint_every=100)
    full = train(pipe, workspace=ws)

    def interrupt(p: object) -> None:
        if getattr(p, "task", "") == "train" and getattr(p, "done", 0) == 2:
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C: finish the iteration, save, stop

    import srpipe.train.meter as meter

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(meter, "REPORT_INTERVAL_S", 0.0)
        with pytest.raises(KeyboardInterrupt):
            train(pipe, workspace=ws, progress=interrupt)
    (interrupted,) = [d for d in ws.runs.iterdir() if d != full.run_dir]  # new name, even in the same second
    assert read_checkpoint(interrupted / "checkpoints" / "last.pt")["train"]["state"]["iteration"] == 3
    resumed = train(None, workspace=ws, resume=True)  # the most recently saved run
    assert resumed.run_dir == interrupted and resumed.start_iteration == 3
    assert rows(resumed.metrics) == rows(full.metrics)


def test_device_batches_equal_loader_batches_and_ranks_partition(stores: Path) -> None:
    ds = PatchDataset(stores / "train.h5", scale=2, patch_size=8, seed=3, length=40)
    dev = batches.DeviceBatches(ds, torch.device("cpu"))
    loader = list(batches.loader_batches(ds, start=2, stop=5, batch_size=4, rank=0, world_size=1, workers=0,
                                         device=torch.device("cpu"), channels_last=False))
    for n, (lr, hr) in enumerate(loader):
        lr_d, hr_d = dev.batch(batches.iteration_indices(2 + n, batch_size=4, rank=0, world_size=1), True)
        assert torch.equal(lr, lr_d) and torch.equal(hr, hr_d)
        assert lr_d.is_contiguous(memory_format=torch.channels_last) and hr_d.is_contiguous(
            memory_format=torch.channels_last)
    parts = [list(batches.iteration_indices(7, batch_size=4, rank=r, world_size=2)) for r in range(2)]
    assert parts == [[28, 29], [30, 31]]


def test_tiled_validation_matches_whole_image(rng: np.random.Generator) -> None:
    from srpipe.model.edsr import receptive_radius

    cfg = dataclasses.replace(TINY, n_resblocks=2)
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    lr, cpu = smooth_image(rng, 61, 97), torch.device("cpu")
    whole = validate_mod.super_resolve(model, lr, scale=2, device=cpu)
    radius = receptive_radius(cfg)
    assert 2 * 3 * radius < 61  # the tile grows to twice the exact overlap and still cuts the image
    tiled = validate_mod.super_resolve(model, lr, scale=2, device=cpu, tile=8, radius=radius)
    assert whole.shape == tiled.shape == (122, 194, 3)
    diff = np.abs(whole.astype(int) - tiled.astype(int))
    assert diff.max() <= 1 and (diff == 0).mean() > 0.999  # same input per pixel; only float order differs
    short = validate_mod.super_resolve(model, lr, scale=2, device=cpu, tile=8, radius=1)
    assert np.abs(whole.astype(int) - short.astype(int)).max() > 1  # too little overlap shows seams
    gray = validate_mod.super_resolve(model, lr[..., 1], scale=2, device=cpu)
    assert gray.shape == (122, 194)  # gray stays gray (the channel mean), as in evaluate


def test_lr_schedule_is_a_pure_function_of_the_iteration() -> None:
    cfg = TrainConfig(lr=1e-4, milestones=(200_000,), gamma=0.5, iterations=300_000)
    assert [optim.lr_at(cfg, i) for i in (0, 199_999, 200_000, 299_999)] == [1e-4, 1e-4, 5e-5, 5e-5]
    cos = dataclasses.replace(cfg, scheduler="cosine", min_lr=1e-6, warmup_iterations=10, iterations=110)
    assert optim.lr_at(cos, 0) == pytest.approx(1e-5) and optim.lr_at(cos, 9) == pytest.approx(1e-4)
    assert optim.lr_at(cos, 60) == pytest.approx((1e-4 + 1e-6) / 2) and optim.lr_at(cos, 110) == 1e-6


def test_nan_losses_are_skipped_then_abort(stores: Path, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    real = optim.make_loss
    calls = {"n": 0}

    def make_loss(cfg: TrainConfig) -> optim.LossFn:
        fn = real(cfg)

        def loss(sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
            calls["n"] += 1
            value = fn(sr, hr)
            return value * math.nan if calls["n"] in bad else value

        return loss

    monkeypatch.setattr(optim, "make_loss", make_loss)
    bad = {3, 4}
    result = train(tiny(stores, iterations=6), workspace=Workspace(tmp_path / "a"))
    assert result.skipped_steps == 2 and result.iteration == 6
    assert [r[1] for r in rows(result.metrics)][2:4] == ["nan", "nan"]
    bad, calls["n"] = set(range(3, 100)), 0
    with pytest.raises(TrainingError, match=r"3 consecutive non-finite losses .*last good checkpoint .*"
                                            r"iteration 0.*grad_clip"):
        train(tiny(stores, iterations=8, max_bad_steps=3, checkpoint_every=100),
              workspace=Workspace(tmp_path / "b"))


def test_bf16_autocast_and_channels_last_on_cpu(stores: Path, tmp_path: Path) -> None:
    seen: set[tuple[torch.dtype, bool]] = set()

    def hook(module: torch.nn.Module, args: object, out: object) -> None:
        if isinstance(module, torch.nn.Conv2d) and module.training and isinstance(out, torch.Tensor):
            seen.add((out.dtype, out.is_contiguous(memory_format=torch.channels_last)))

    handle = torch.nn.modules.module.register_module_forward_hook(hook)
    try:
        result = train(tiny(stores, iterations=2, precision="bf16", channels_last=True),
                       workspace=Workspace(tmp_path))
    finally:
        handle.remove()
    assert result.precision == "bf16" and seen == {(torch.bfloat16, True)}  # every training conv
    assert all(math.isfinite(float(r[1])) for r in rows(result.metrics))


def test_fp16_scaler_adamw_cosine_charbonnier_clip(stores: Path, tmp_path: Path) -> None:
    pipe = tiny(stores, iterations=4, precision="fp16", optimizer="adamw", weight_decay=0.01,
                scheduler="cosine", loss="charbonnier", grad_clip=0.5)
    result = train(pipe, workspace=Workspace(tmp_path))
    ckpt = read_checkpoint(result.last_checkpoint)
    assert ckpt["train"]["scaler"]["scale"] > 0  # the GradScaler ran and is saved for resuming
    assert ckpt["train"]["optimizer"]["param_groups"][0]["weight_decay"] == 0.01
    lrs = [float(r[2]) for r in rows(result.metrics)]
    assert lrs == [optim.lr_at(pipe.train, i) for i in range(4)] and lrs[0] > lrs[-1]


def test_init_from_x2_weights_for_x3_and_x4(stores: Path, tmp_path: Path) -> None:
    torch.manual_seed(1)
    x2 = build_model(TINY)
    save_checkpoint(tmp_path / "x2.pt", model_config=TINY, model_state=x2.state_dict())
    x4 = build_model(dataclasses.replace(TINY, scale=4))
    rep = init_from_checkpoint(x4, tmp_path / "x2.pt")
    assert rep.absent == ("upsample.2.weight", "upsample.2.bias") and not rep.skipped
    assert torch.equal(x4.body[0].conv1.weight, x2.body[0].conv1.weight)
    x3 = build_model(dataclasses.replace(TINY, scale=3))
    rep = init_from_checkpoint(x3, tmp_path / "x2.pt")
    assert [s.split()[0] for s in rep.skipped] == ["upsample.0.weight", "upsample.0.bias"]
    assert torch.equal(x3.tail.weight, x2.tail.weight)
    result = train(tiny(stores, iterations=1, model=dataclasses.replace(TINY, scale=3),
                        init_from=str(tmp_path / "x2.pt")), workspace=Workspace(tmp_path / "ws"))
    assert "kept fresh (shape differs): upsample.0.weight" in str(result.init_report)


def test_early_stopping_after_patience(stores: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    scores = iter([30.0, 29.0, 29.5, 31.0])
    monkeypatch.setattr(validate_mod, "mean_scores", lambda s: (next(scores), 0.9))
    pipe = tiny(stores, iterations=20, val_every=1, early_stop_patience=2)
    result = train(pipe, workspace=Workspace(tmp_path))
    assert result.stopped_early and result.iteration == 3 and result.best_iteration == 1
    assert read_checkpoint(result.last_checkpoint)["train"]["state"]["iteration"] == 3


def test_bad_settings_and_missing_stores(stores: Path, tmp_path: Path) -> None:
    ws = Workspace(tmp_path / "ws")
    with pytest.raises(StoreError, match=r"no train\.h5 or valid\.h5; run `srpipe prepare"):
        train(Pipeline(train=TrainConfig()), workspace=ws)
    with pytest.raises(ConfigError, match=r"train\.batch_size: must be >= 1, got 0"):
        train(configure(tiny(stores), ["batch_size=0"], table="train"), workspace=ws)
    with pytest.raises(ConfigError, match="unknown key 'colour'"):
        train(configure(tiny(stores), ["colour=1"], table="train"), workspace=ws)
    done = train(tiny(stores, iterations=1), workspace=ws, run_dir=tmp_path / "r")
    with pytest.raises(UsageError, match="already holds a training run"):
        train(tiny(stores), workspace=ws, run_dir=done.run_dir)
    with pytest.raises(ConfigError, match="cannot change the model"):
        train(configure(load_pipeline(done.run_dir / "config.toml"), ["model.n_feats=16"], table="train"),
              workspace=ws, resume=done.run_dir)


@pytest.mark.slow
def test_torch_compile_on_cpu(stores: Path, tmp_path: Path) -> None:
    import shutil

    if shutil.which(os.environ.get("CXX", "g++")) is None:
        pytest.skip("torch.compile on the CPU needs a C++ compiler (g++), none found")
    if os.environ.get("SRPIPE_SKIP_COMPILE"):
        pytest.skip("SRPIPE_SKIP_COMPILE is set (the first CPU compile takes ~25 s)")
    result = train(tiny(stores, iterations=2, compile=True), workspace=Workspace(tmp_path))
    assert result.iteration == 2 and all(math.isfinite(float(r[1])) for r in rows(result.metrics))
    assert not any(k.startswith("_orig_mod") for k in read_checkpoint(result.last_checkpoint)["model"])


@pytest.mark.parametrize(("name", "params"), [
    ("edsr-baseline-x2", 1_369_859), ("edsr-baseline-x3", 1_554_499), ("edsr-baseline-x4", 1_517_571),
    ("edsr-x2", 40_729_603), ("edsr-x3", 43_680_003), ("edsr-x4", 43_089_923)])
def test_recipes_follow_the_paper(name: str, params: int) -> None:
    from srpipe.model.edsr import count_parameters

    cfg = load_pipeline(name).train
    assert (cfg.batch_size, cfg.patch_size, cfg.loss, cfg.optimizer, cfg.betas, cfg.eps) == (
        16, 48, "l1", "adam", (0.9, 0.999), 1e-8)
    schedule = (cfg.lr, cfg.scheduler, cfg.milestones, cfg.gamma, cfg.iterations)
    assert schedule == (1e-4, "step", (200_000,), 0.5, 300_000)
    with torch.device("meta"):  # parameter count without allocating 43 M floats
        assert count_parameters(build_model(cfg.model)) == params


# ---- CLI ----

def test_cli_train_resume_and_errors(stores: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    ws = tmp_path / "ws"
    out = runner.invoke(cli, ["--workspace", str(ws), "train"])
    assert out.exit_code == 1 and "srpipe prepare" in out.output and "train.h5" in out.output
    recipe = tmp_path / "recipe.toml"
    recipe.write_text(f'[train]\nstores = "{stores}"\niterations = 3\nbatch_size = 4\npatch_size = 8\n'
                      'val_every = 3\nlog_every = 1\nworkers = 0\ntensorboard = false\n'
                      "[train.model]\nscale = 2\nn_resblocks = 1\nn_feats = 8\n")
    out = runner.invoke(cli, ["--workspace", str(ws), "train", "-p", str(recipe), "--set", "colour=1"])
    assert out.exit_code == 2 and "unknown key 'colour'" in out.output
    out = runner.invoke(cli, ["--workspace", str(ws), "train", "--resume"])
    assert out.exit_code == 2 and "no run with a checkpoint to resume" in out.output
    smoke = ["--set", f"stores={json.dumps(str(stores))}", "--set", "iterations=3", "--set", "patch_size=8",
             "--set", "val_every=3", "--set", "log_every=1", "--set", "lr=3e-4"]  # the install-check recipe
    out = runner.invoke(cli, ["--workspace", str(ws), "train", "-p", "smoke", *smoke, "--json"])
    assert out.exit_code == 0, out.output
    res = json.loads(out.stdout)
    run = Path(res["run_dir"])
    assert run.parent == ws / "runs" and run.name.startswith("smoke-") and res["iteration"] == 3
    assert res["best_psnr_y"] > 5 and (run / "checkpoints" / "best.pt").is_file()
    saved = load_pipeline(run / "config.toml").train
    assert saved.lr == 3e-4 and (saved.model.n_resblocks, saved.model.n_feats) == (2, 16)
    out = runner.invoke(cli, ["--workspace", str(ws), "train", "--resume", "--set", "iterations=5"])
    assert out.exit_code == 0, out.output
    assert f"run:         {run}" in out.stdout and "iterations:  5 of 5, resumed at 3" in out.stdout
    assert [r[0] for r in rows(run / "metrics.csv")] == ["1", "2", "3", "4", "5"]
    out = runner.invoke(cli, ["--workspace", str(ws), "train", "--resume", str(run), "-p", str(recipe)])
    assert out.exit_code == 2 and "drop --pipeline" in out.output


def test_ema_warm_up_forgets_the_initial_weights() -> None:
    import torch

    from srpipe.train.optim import EMA

    model = torch.nn.Linear(1, 1, bias=False)
    torch.nn.init.zeros_(model.weight)
    ema = EMA(model, 0.999)
    assert ema.decay_at(0) == pytest.approx(0.1) and ema.decay_at(10**6) == 0.999
    with torch.no_grad():
        model.weight.fill_(1.0)
    for t in range(1000):
        ema.update(model, t)
    # Without warm-up 0.999 ** 1000 = 37 % of the zero initial weight would remain; with it, almost none.
    assert float(ema.module.weight) > 0.99


def test_tensorboard_event_files_hold_the_logged_scalars(tmp_path: Path) -> None:
    # The real writer (tensorboard is in the dev extra): what TensorBoard's own reader finds on disk.
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    log = MetricsLog(tmp_path / "metrics.csv", tensorboard_dir=tmp_path / "tb")
    for it, loss in ((1, 0.5), (2, 0.25), (3, 0.125)):
        log.append(iteration=it, kind="train", loss=loss, lr=1e-4)
    log.append(iteration=3, kind="valid", psnr_y=30.25, ssim_y=0.875)
    log.close()
    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    assert set(events.Tags()["scalars"]) == {"train/loss", "train/lr", "valid/psnr_y", "valid/ssim_y"}
    assert [(e.step, e.value) for e in events.Scalars("train/loss")] == [(1, 0.5), (2, 0.25), (3, 0.125)]
    assert [(e.step, e.value) for e in events.Scalars("valid/psnr_y")] == [(3, 30.25)]


def test_metrics_mirror_to_tensorboard_when_it_is_installed(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    # tensorboard is optional (not a dependency): a stand-in module records what srpipe sends it.
    calls: list[tuple[str, float, int]] = []

    class SummaryWriter:
        def __init__(self, log_dir: str) -> None:
            self.log_dir, self.closed = log_dir, False
            writers.append(self)

        def add_scalar(self, tag: str, value: float, step: int) -> None:
            calls.append((tag, value, step))

        def close(self) -> None:
            self.closed = True

    writers: list[SummaryWriter] = []
    fake = type(sys)("torch.utils.tensorboard")
    fake.SummaryWriter = SummaryWriter  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", fake)
    log = MetricsLog(tmp_path / "metrics.csv", tensorboard_dir=tmp_path / "tb")
    log.append(iteration=10, kind="train", loss=0.5, lr=1e-4, it_per_s=2.0)
    log.append(iteration=10, kind="valid", psnr_y=30.25, ssim_y=0.9)
    log.close()
    assert writers[0].log_dir == str(tmp_path / "tb") and writers[0].closed
    assert calls == [("train/loss", 0.5, 10), ("train/lr", 1e-4, 10), ("train/it_per_s", 2.0, 10),
                     ("valid/psnr_y", 30.25, 10), ("valid/ssim_y", 0.9, 10)]
    assert [r["kind"] for r in read_metrics(tmp_path / "metrics.csv")] == ["train", "valid"]  # csv too
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # not installed: csv only
    plain = MetricsLog(tmp_path / "m2.csv", tensorboard_dir=tmp_path / "tb2")
    plain.append(iteration=1, kind="train", loss=1.0)
    plain.close()
    assert len(calls) == 5 and not (tmp_path / "tb2").exists() and (tmp_path / "m2.csv").is_file()


def test_bad_values_are_refused_naming_the_key_before_anything_is_created(tmp_path: Path) -> None:
    runner = CliRunner()
    ws = tmp_path / "ws"
    for assignment, needle in (("lr=-1", "train.lr: must be > 0, got -1"),
                               ("model.n_feats=-3", "train.model.n_feats: must be >= 1, got -3"),
                               ("ema_decay=1.5", "train.ema_decay: must be in [0, 1)"),
                               ("batch_size=0", "train.batch_size: must be >= 1")):
        out = runner.invoke(cli, ["--workspace", str(ws), "train", "-p", "smoke", "--set", assignment])
        assert out.exit_code == 2, (assignment, out.output)
        assert needle in out.output and "Traceback" not in out.output
    assert not ws.exists()  # no run folder for `srpipe export` to pick up, no generated data
    with pytest.raises(ConfigError, match=r"train\.model\.scale: must be 2, 3 or 4"):
        ModelConfig(scale=5)
    recipe = tmp_path / "bad.toml"
    recipe.write_text("[prepare]\nworkers = -1\n")
    with pytest.raises(ConfigError, match=r"bad\.toml: prepare\.workers: must be >= 0, got -1"):
        load_pipeline(recipe)


def test_smoke_recipe_trains_on_a_fresh_workspace_with_generated_images(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    fast = ["--set", "iterations=3", "--set", "val_every=3", "--set", "log_every=1", "--set", "val_images=1"]
    out = CliRunner().invoke(cli, ["--workspace", str(ws), "train", "--pipeline", "smoke", *fast, "--json"])
    assert out.exit_code == 0, out.output
    assert "generated" in out.stderr and "srpipe prepare" in out.stderr  # it says what it did instead
    res = json.loads(out.stdout)
    assert res["iteration"] == 3 and Path(res["run_dir"]).parent == ws / "runs"
    stores = ws / "synthetic" / "smoke" / "stores"
    assert (stores / "train.h5").is_file() and (stores / "valid.h5").is_file()
    assert not (ws / "stores").exists()  # the workspace's real stores stay for real data
    images = sorted((ws / "synthetic" / "smoke" / "images").iterdir())
    assert len(images) == load_pipeline("smoke").synthetic_images
    mtimes = [p.stat().st_mtime_ns for p in images]
    out = CliRunner().invoke(cli, ["--workspace", str(ws), "train", "--pipeline", "smoke", *fast, "--json"])
    assert out.exit_code == 0, out.output
    assert [p.stat().st_mtime_ns for p in images] == mtimes  # found again, not regenerated


def test_auto_precision_follows_the_cpus_bf16_capability(monkeypatch: pytest.MonkeyPatch) -> None:
    from srpipe.train import runtime

    cfg, cpu = TrainConfig(), torch.device("cpu")
    monkeypatch.setattr(runtime, "cpu_has_bf16", lambda: True)
    assert runtime.autocast_dtype(cfg, cpu) == torch.bfloat16 and runtime.use_channels_last(cfg, cpu)
    assert runtime.autocast_dtype(dataclasses.replace(cfg, precision="fp32"), cpu) is None
    assert not runtime.use_channels_last(dataclasses.replace(cfg, channels_last=False), cpu)
    monkeypatch.setattr(runtime, "cpu_has_bf16", lambda: False)
    assert runtime.autocast_dtype(cfg, cpu) is None and not runtime.use_channels_last(cfg, cpu)
