"""Distributed training: two CPU processes on the gloo backend, launched the way torchrun launches them
(environment variables ``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``, ``MASTER_ADDR``/``PORT``; ``srpipe train``).

Two ranks with a global batch of 4 (2 each) must train exactly the model one process trains with a
batch of 4 — same patches, gradients averaged by DDP — up to float summation order. That can only
hold if each rank samples its own half of the batch and every rank applies the same update.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import torch
from test_train import rows, stores, tiny  # noqa: F401 (the module-scoped store fixture)

from srpipe.model.checkpoint import read_checkpoint
from srpipe.train.run import train
from srpipe.train.rundir import read_metrics, write_config
from srpipe.workspace import Workspace


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_two_ranks(recipe: Path, workspace: Path, run_dir: Path) -> list[tuple[str, str]]:
    """``srpipe train`` as two gloo ranks, as torchrun would start them; (stdout, stderr) of each,
    after asserting both exited 0."""
    port, procs = free_port(), []
    for rank in range(2):
        env = {**os.environ, "WORLD_SIZE": "2", "RANK": str(rank), "LOCAL_RANK": str(rank),
               "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "OMP_NUM_THREADS": "1"}
        cmd = [sys.executable, "-m", "srpipe.cli", "--workspace", str(workspace), "train", "-p", str(recipe),
               "--run-dir", str(run_dir), "--json"]
        procs.append(subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True))
    outputs = [p.communicate(timeout=180) for p in procs]
    for p, (_, err) in zip(procs, outputs, strict=True):
        assert p.returncode == 0, err[-3000:]
    return outputs


def test_two_gloo_ranks_match_one_process(stores: Path, tmp_path: Path) -> None:  # noqa: F811
    # fp32/NCHW: the comparison is exact only without bf16 rounding (auto picks bf16 on some CPUs)
    pipe = tiny(stores, iterations=4, val_every=2, checkpoint_every=2, ema_decay=0.5, precision="fp32",
                channels_last=False)
    write_config(tmp_path / "recipe.toml", pipe)
    single = train(pipe, workspace=Workspace(tmp_path / "ws1"), run_dir=tmp_path / "single")

    outputs = run_two_ranks(tmp_path / "recipe.toml", tmp_path / "ws2", tmp_path / "ddp")
    result = json.loads(outputs[0][0])  # rank 0 speaks for the job; rank 1 prints nothing
    assert result["world_size"] == 2 and result["rank"] == 0 and outputs[1][0].strip() == ""

    ddp_rows, single_rows = rows(tmp_path / "ddp" / "metrics.csv"), rows(single.metrics)
    assert [r[0] for r in ddp_rows] == ["1", "2", "3", "4"]  # only rank 0 wrote, once per iteration
    for (it_a, loss_a, lr_a), (it_b, loss_b, lr_b) in zip(ddp_rows, single_rows, strict=True):
        assert (it_a, lr_a) == (it_b, lr_b) and abs(float(loss_a) - float(loss_b)) < 1e-6
    val = [float(r["psnr_y"]) for r in read_metrics(tmp_path / "ddp" / "metrics.csv") if r["kind"] == "val"]
    assert len(val) == 2 and abs(val[-1] - single.last_psnr_y) < 1e-3  # sharded validation, gathered

    a = read_checkpoint(tmp_path / "ddp" / "checkpoints" / "last.pt")
    b = read_checkpoint(single.last_checkpoint)
    assert a["train"]["world_size"] == 2 and len(a["train"]["rng"]) == 2
    for key in ("model", "ema"):
        for name, tensor in a[key].items():
            torch.testing.assert_close(tensor, b[key][name], atol=1e-5, rtol=1e-4)


def test_two_gloo_ranks_train_in_bf16_with_channels_last(stores: Path, tmp_path: Path) -> None:  # noqa: F811
    """channels_last must leave the model's 1x3x1x1 mean buffer in plain strides: DDP's buffer broadcast
    refuses the channels_last view of it ("refer to a single memory location")."""
    write_config(tmp_path / "recipe.toml", tiny(stores, iterations=2, precision="bf16", channels_last=True))
    outputs = run_two_ranks(tmp_path / "recipe.toml", tmp_path / "ws", tmp_path / "ddp")
    result = json.loads(outputs[0][0])
    assert result["world_size"] == 2 and result["precision"] == "bf16" and result["iteration"] == 2
