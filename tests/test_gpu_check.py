"""benchmarks/gpu_check.py: its no-GPU behaviour end to end, and its pure helpers.

The GPU checks themselves need a CUDA GPU; here we prove what a CPU-only machine can: the script says
there is no GPU and exits 0, importing it does nothing, its table, outcomes, exit status and JSON parsing
are right, and the ``gpu_mem_limit`` injection used by its out-of-memory check really reaches the
provider options ``OrtSession`` hands to ONNX Runtime.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"


def load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gpu_check_under_test", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is made
    spec.loader.exec_module(module)
    return module


gc_mod = load()


def no_gpu_here() -> bool:
    import torch

    return not torch.cuda.is_available() and shutil.which("nvidia-smi") is None


@pytest.mark.skipif(not no_gpu_here(), reason="this machine has a GPU: the script would run its checks")
def test_script_without_gpu_says_so_and_exits_0() -> None:
    import onnxruntime as ort

    done = subprocess.run([sys.executable, str(SCRIPT), "--quick"], capture_output=True, text=True,
                          timeout=180, cwd=SCRIPT.parents[1])
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 1, done.stdout  # the one line, no table
    providers = ", ".join(ort.get_available_providers())
    assert lines[0] == (f"no CUDA GPU: torch.cuda.is_available() is False (onnxruntime providers: "
                        f"{providers}); nothing to check")


def test_import_has_no_side_effects(capsys: pytest.CaptureFixture[str]) -> None:
    path_before = list(sys.path)
    module = load()
    assert capsys.readouterr() == ("", "")
    assert sys.path == path_before  # the checkout is put on sys.path by main() only
    assert callable(module.main)


def test_table_columns_line_up_and_seconds_are_right_aligned() -> None:
    rows = [gc_mod.Row("short", gc_mod.PASS, "123.4 MP/s out", 12.345),
            gc_mod.Row("a much longer check name", gc_mod.SKIPPED, "", None, why="1 GPU"),
            gc_mod.Row("mid", gc_mod.PASS, "x", 0.04)]
    lines = gc_mod.format_table(rows).splitlines()
    assert len(lines) == 2 + len(rows)  # header, rule, rows; nothing clipped or failed: no why lines
    header, rule, *body = lines
    assert header.split(" | ") == ["check".ljust(24), "result".ljust(14), "figure".ljust(14), "seconds"]
    bars = [i for i, ch in enumerate(header) if ch == "|"]
    assert [i for i, ch in enumerate(rule) if ch == "+"] == bars
    for line in body:
        assert [i for i, ch in enumerate(line) if ch == "|"] == bars
    assert body[0].endswith("   12.3") and body[1].endswith("      -") and body[2].endswith("    0.0")
    assert "skipped: 1 GPU" in body[1]
    assert len(rule) == len(header)


def test_long_reasons_are_clipped_in_the_table_and_given_once_below() -> None:
    long_why = "onnxruntime 1.30.0 has no CUDA EP (providers: CPUExecutionProvider); install onnxruntime-gpu"
    rows = [gc_mod.Row("ort a", gc_mod.UNAVAILABLE, why=long_why, seconds=0.0),
            gc_mod.Row("ort b", gc_mod.UNAVAILABLE, why=long_why, seconds=0.0),
            gc_mod.Row("train", gc_mod.FAIL, why="3 non-finite losses", seconds=1.0)]
    text = gc_mod.format_table(rows, result_width=30)
    table, notes = text.splitlines()[:5], text.splitlines()[5:]
    assert all(len(line.split(" | ")[1]) == 30 for line in table[2:4])
    assert table[2].split(" | ")[1].endswith("…")
    assert notes == [f"why (ort a; ort b): {long_why}", "why (train): 3 non-finite losses"]


def test_exit_code_is_1_only_when_a_check_failed() -> None:
    ok = [gc_mod.Row("a", gc_mod.PASS), gc_mod.Row("b", gc_mod.SKIPPED, why="1 GPU"),
          gc_mod.Row("c", gc_mod.UNAVAILABLE, why="CPU-only torch")]
    assert gc_mod.exit_code(ok) == 0
    assert gc_mod.exit_code([]) == 0
    assert gc_mod.exit_code([*ok, gc_mod.Row("d", gc_mod.FAIL, why="x")]) == 1
    assert gc_mod.summary_line([*ok, gc_mod.Row("d", gc_mod.FAIL)]) == \
        "1 pass, 1 failed, 1 skipped, 1 unavailable"


def test_run_check_turns_every_outcome_into_a_row() -> None:
    far = float("inf")

    def boom() -> str:
        raise ValueError("bad shape\nsecond line")

    def wrong() -> str:
        gc_mod.expect(1 + 1 == 3, "arithmetic is off")
        return "never"

    def skip() -> str:
        raise gc_mod.Skip("1 GPU")

    def unavailable() -> str:
        raise gc_mod.Unavailable("torch 2.13.0+cpu is a CPU-only build")

    got = {name: gc_mod.run_check(name, fn, deadline=far) for name, fn in
           [("ok", lambda: "9.5 it/s"), ("boom", boom), ("wrong", wrong), ("skip", skip),
            ("unavailable", unavailable)]}
    assert (got["ok"].status, got["ok"].figure, got["ok"].why) == (gc_mod.PASS, "9.5 it/s", "")
    assert got["ok"].seconds is not None and got["ok"].seconds >= 0
    assert (got["boom"].status, got["boom"].why) == (gc_mod.FAIL, "ValueError: bad shape")
    assert (got["wrong"].status, got["wrong"].why) == (gc_mod.FAIL, "arithmetic is off")
    assert got["skip"].result == "skipped: 1 GPU"
    assert got["unavailable"].result == "unavailable: torch 2.13.0+cpu is a CPU-only build"

    called: list[int] = []

    def record() -> str:
        called.append(1)
        return ""

    late = gc_mod.run_check("late", record, deadline=10.0, clock=lambda: 11.0)
    assert called == [] and late.result == "skipped: time budget spent" and late.seconds is None


def test_one_line_keeps_the_type_for_foreign_errors_and_clips() -> None:
    assert gc_mod.one_line(RuntimeError("\n  first\nsecond")) == "RuntimeError: first"
    assert gc_mod.one_line(KeyError()) == "KeyError"
    assert gc_mod.one_line(gc_mod.Skip("1 GPU")) == "1 GPU"
    clipped = gc_mod.one_line(ValueError("x" * 500), limit=40)
    assert len(clipped) == 40 and clipped.startswith("ValueError: xxx") and clipped.endswith("…")


def test_parse_json_tail_finds_the_last_top_level_object() -> None:
    noisy = ('W1204 torchrun: setting OMP_NUM_THREADS {not json}\n{"rank": 1}\n'
             '{\n  "world_size": 2,\n  "nested": {"a": {"b": 1}},\n  "device": "cuda:0"\n}\ntrailing {')
    assert gc_mod.parse_json_tail(noisy) == {"world_size": 2, "nested": {"a": {"b": 1}}, "device": "cuda:0"}
    with pytest.raises(ValueError, match="no JSON object"):
        gc_mod.parse_json_tail("no braces at all {oops")


def test_no_gpu_line_and_environment_problems() -> None:
    env = gc_mod.Env(torch_version="2.13.0+cpu", ort_version="1.30.0",
                     ort_providers=("AzureExecutionProvider", "CPUExecutionProvider"))
    assert not env.gpu_seen
    assert env.no_gpu_line() == ("no CUDA GPU: torch.cuda.is_available() is False (onnxruntime providers: "
                                 "AzureExecutionProvider, CPUExecutionProvider); nothing to check")
    assert env.torch_problem() == "torch 2.13.0+cpu is a CPU-only build (torch.version.cuda is None)"
    problem = env.ort_problem()
    assert problem is not None and "no CUDA EP" in problem and "onnxruntime-gpu" in problem

    gpu = gc_mod.Env(torch_version="2.11.0+cu130", torch_cuda_build="13.0", cuda_available=True, gpu_count=1,
                     gpu_names=("NVIDIA H200",), gpu_memory_gib=139.8, ort_version="1.31.1",
                     ort_providers=("CUDAExecutionProvider", "CPUExecutionProvider"))
    assert gpu.gpu_seen and gpu.torch_problem() is None and gpu.ort_problem() is None
    assert "NVIDIA H200 x1 (140 GiB each)" in gpu.header() and "CUDAExecutionProvider" in gpu.header()

    driver_only = gc_mod.Env(torch_version="2.11.0+cu130", torch_cuda_build="13.0",
                             nvidia_smi=("GPU 0: NVIDIA H200 (UUID: x)",), ort_error="No module named 'x'")
    assert driver_only.gpu_seen  # a GPU torch cannot use still runs the table, with reasons
    assert "torch.cuda.is_available() is False" in (driver_only.torch_problem() or "")
    assert "not importable" in (driver_only.ort_problem() or "")
    assert gc_mod.Env(torch_error="No module named 'torch'").no_gpu_line().startswith(
        "no CUDA GPU: torch is not importable (No module named 'torch')")


class Recorder:
    """Stands in for ``onnxruntime.InferenceSession``: records the providers, then refuses to load."""

    def __init__(self) -> None:
        self.calls: list[list[object]] = []

    def __call__(self, path: object, sess_options: object = None, providers: Any = None,
                 provider_options: object = None, **kwargs: object) -> object:
        self.calls.append(list(providers or []))
        raise RuntimeError("recorded")


def test_cuda_arena_limit_adds_gpu_mem_limit_to_cuda_entries_only(monkeypatch: pytest.MonkeyPatch) -> None:
    import onnxruntime as ort

    rec = Recorder()
    monkeypatch.setattr(ort, "InferenceSession", rec)
    options = {"device_id": "0"}
    with gc_mod.cuda_arena_limit(1 << 20) as injected:
        for providers in ([("CUDAExecutionProvider", options), "CPUExecutionProvider"],
                          ["CPUExecutionProvider"]):
            with pytest.raises(RuntimeError, match="recorded"):
                ort.InferenceSession("m.onnx", None, providers=providers)
    assert ort.InferenceSession is rec  # restored
    assert injected == [1]
    assert rec.calls == [[("CUDAExecutionProvider", {"device_id": "0", "gpu_mem_limit": "1048576"}),
                          "CPUExecutionProvider"], ["CPUExecutionProvider"]]
    assert options == {"device_id": "0"}  # the caller's dict is not modified


def test_the_arena_limit_reaches_the_options_ortsession_builds(monkeypatch: pytest.MonkeyPatch,
                                                               tmp_path: Path) -> None:
    """The GPU check caps ORT's CUDA arena through OrtSession; if OrtSession stops passing a CUDA
    provider entry through onnxruntime.InferenceSession, this fails here rather than on the GPU."""
    import onnxruntime as ort

    from srpipe.errors import InputError
    from srpipe.infer.session import OrtSession

    rec = Recorder()
    monkeypatch.setattr(ort, "InferenceSession", rec)
    with gc_mod.cuda_arena_limit(512 << 20) as injected, pytest.raises(InputError, match="recorded"):
        OrtSession(tmp_path / "model.onnx", device="cuda")
    assert injected == [1]
    cuda = [p for p in rec.calls[0] if isinstance(p, tuple) and p[0] == "CUDAExecutionProvider"]
    assert len(cuda) == 1 and cuda[0][1]["gpu_mem_limit"] == str(512 << 20)
