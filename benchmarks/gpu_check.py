"""GPU check in one go: every GPU path of srpipe that the CPU-only tests cannot prove, with figures.

Run from the repository root (an installed srpipe is not needed; nothing is downloaded)::

    python benchmarks/gpu_check.py            # full run: a couple of minutes on one modern GPU
    python benchmarks/gpu_check.py --quick    # smaller images and fewer iterations

It prints one header line (Python, torch and ONNX Runtime versions, the GPU, the providers ONNX Runtime
reports), then one table, ``check | result | figure | seconds``, and the full reason of every row that did
not pass. Everything runs on synthetic data in a temporary folder, with a random-weight EDSR-baseline x4
(16 × 64) exported by ``srpipe.export.export_model``; each check is time-boxed (a few images or
iterations) and the whole run stops starting new checks after ``--budget`` seconds (default 420).

The checks (each one calls the library's own API; none re-implements it):

- **export fp32 + fp16**: ``export_model`` twice (its own verification runs on the CPU). Other rows use
  the two files; when this fails they are skipped.
- **ORT CUDA EP + IO binding**: ``TiledUpscaler.open(device="cuda", io_binding=True)`` on a few images:
  output MP/s (first image excluded: cuDNN algorithm choice, arena growth). Parity of the CUDA session
  against the CPU EP and against itself with IO binding off, on ``export_verify.verification_inputs()``.
- **ORT CUDA fp16 parity**: the fp16 file on the CUDA EP against PyTorch fp32 (CPU) on the same inputs
  (``export_verify.max_gap``); must be within ``ExportConfig.fp16_atol``. Also its tiled MP/s.
- **process() on CUDA**: ``srpipe.process.process`` over a folder of PNGs, ``device="cuda"``:
  the report's provider, MP/s (first image's warm-up included) and ok count.
- **OOM halving, ORT arena**: a CUDA session whose arena is capped with ONNX Runtime's ``gpu_mem_limit``
  (injected into the provider options ``OrtSession`` passes, see ``cuda_arena_limit``) upscales a whole
  large image (``tile=0``): the out-of-memory error must halve the tile until it fits; the result must
  equal an unlimited session run with the final tile (±1 code).
- **fp16 graph, PyTorch CUDA**: ``export_graph.Half`` (the fp16 arithmetic the export traces) on the GPU
  against fp32 on the CPU: on-GPU fp16 parity even where ONNX Runtime has no CUDA EP.
- **TorchBackend tiled (cuda)**: ``TiledUpscaler(TorchBackend(device="cuda"))`` (evaluate of
  checkpoints, training validation): MP/s and parity against the CPU.
- **OOM halving, torch**: the same halving against ``torch.cuda.set_per_process_memory_fraction``
  (restored afterwards).
- **PatchLoader(device=cuda)**: batches/s, layout (channels_last), and equality with the CPU loader.
- **train bf16, PatchLoader / data on device; train fp32**: ``srpipe.train.run.train`` on a synthetic
  store (``train_step.make_store``): it/s (median of 10-iteration windows from metrics.csv, the first
  window, with its warm-up, left out), precision and data source as reported, finite losses.
- **DDP NCCL, 2 ranks**: with two or more GPUs, ``torchrun --standalone --nproc_per_node=2 -m srpipe.cli
  train`` on the same store; with one GPU the row says "skipped: 1 GPU".

Result column: ``pass``; ``FAIL`` (exit status 1); ``skipped`` (by design: one GPU, ``--quick``, the time
budget, a failed prerequisite); ``unavailable`` (this environment cannot run it: a CPU-only torch
wheel, onnxruntime without the CUDA EP or unable to load it). Exit status 0 unless a check failed. On a
machine without a GPU it prints ``no CUDA GPU: ...; nothing to check`` and exits 0.

ONNX Runtime logs its own errors for the deliberate out-of-memory attempts; they are expected.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import gc
import importlib.util
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

PASS, FAIL, SKIPPED, UNAVAILABLE = "pass", "FAIL", "skipped", "unavailable"
COLUMNS = ("check", "result", "figure", "seconds")
RESULT_WIDTH = 44  # the result column shows the reason up to this width; the full text follows the table
SCALE = 4


class Skip(Exception):
    """The check is not run, by design (one GPU, --quick, time budget, a failed prerequisite)."""


class Unavailable(Exception):
    """This environment cannot run the check (CPU-only torch, onnxruntime without the CUDA EP...)."""


class CheckFailed(Exception):
    """The check ran and its result is wrong."""


def expect(condition: bool, message: str) -> None:
    """Raise ``CheckFailed(message)`` unless ``condition``."""
    if not condition:
        raise CheckFailed(message)


def one_line(exc: BaseException, limit: int = 300) -> str:
    """``Type: first non-empty line`` of an exception (its type alone when it has no text), at most
    ``limit`` characters; the check's own exceptions give their text without the type."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = lines[0] if lines else ""
    if not isinstance(exc, (Skip, Unavailable, CheckFailed)):
        text = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return text if len(text) <= limit else text[: limit - 1] + "…"


@dataclass
class Row:
    """One line of the table."""

    check: str
    status: str  # PASS, FAIL, SKIPPED or UNAVAILABLE
    figure: str = ""
    seconds: float | None = None
    why: str = ""  # the reason for anything but PASS

    @property
    def result(self) -> str:
        return f"{self.status}: {self.why}" if self.why else self.status


def clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def format_table(rows: Sequence[Row], *, result_width: int = RESULT_WIDTH) -> str:
    """The plain-text table: a header, a rule, one aligned line per row (seconds right-aligned, one
    decimal, ``-`` when not run), then ``why:`` lines with the full reason of rows whose result was
    clipped or that failed."""
    cells = [COLUMNS] + [(r.check, clip(r.result, result_width), r.figure,
                          "-" if r.seconds is None else f"{r.seconds:.1f}") for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(COLUMNS))]

    def line(c: Sequence[str]) -> str:
        return " | ".join([c[0].ljust(widths[0]), c[1].ljust(widths[1]), c[2].ljust(widths[2]),
                           c[3].rjust(widths[3])]).rstrip()

    out = [line(cells[0]), "-+-".join("-" * w for w in widths)] + [line(c) for c in cells[1:]]
    reasons: dict[str, list[str]] = {}  # one line per reason, naming every row it applies to
    for r in rows:
        if r.why and (r.status == FAIL or len(r.result) > result_width):
            reasons.setdefault(r.why, []).append(r.check)
    return "\n".join(out + [f"why ({'; '.join(names)}): {why}" for why, names in reasons.items()])


def summary_line(rows: Sequence[Row]) -> str:
    counts = {s: sum(r.status == s for r in rows) for s in (PASS, FAIL, SKIPPED, UNAVAILABLE)}
    return ", ".join(f"{n} {'failed' if s == FAIL else s}" for s, n in counts.items())


def exit_code(rows: Sequence[Row]) -> int:
    """1 when any check failed, else 0 (skipped and unavailable checks do not fail the run)."""
    return 1 if any(r.status == FAIL for r in rows) else 0


def run_check(name: str, fn: Callable[[], str], *, deadline: float,
              clock: Callable[[], float] = time.monotonic) -> Row:
    """Run one check; its figure, or its failure as a row (never an exception, Ctrl-C aside)."""
    if clock() > deadline:
        return Row(name, SKIPPED, why="time budget spent")
    print(f"... {name}", file=sys.stderr, flush=True)
    start = time.perf_counter()
    try:
        figure = fn()
        status, why = PASS, ""
    except Skip as exc:
        figure, status, why = "", SKIPPED, one_line(exc)
    except Unavailable as exc:
        figure, status, why = "", UNAVAILABLE, one_line(exc)
    except Exception as exc:
        if not isinstance(exc, CheckFailed):
            traceback.print_exc(file=sys.stderr)
        figure, status, why = "", FAIL, one_line(exc)
    seconds = time.perf_counter() - start
    gc.collect()  # drop this check's sessions and loaders (and their threads) before the next one
    return Row(name, status, figure, seconds, why)


def parse_json_tail(text: str) -> dict[str, Any]:
    """The last top-level JSON object printed in ``text`` (``srpipe ... --json`` among other lines);
    ``ValueError`` when there is none."""
    decoder = json.JSONDecoder()
    found: dict[str, Any] | None = None
    pos = text.find("{")
    while pos >= 0:
        try:
            obj, end = decoder.raw_decode(text, pos)
        except ValueError:
            pos = text.find("{", pos + 1)
            continue
        if isinstance(obj, dict):
            found = obj
        pos = text.find("{", end)  # past the whole object: its nested objects are not candidates
    if found is None:
        raise ValueError("no JSON object in the output")
    return found


@contextlib.contextmanager
def cuda_arena_limit(limit_bytes: int) -> Iterator[list[int]]:
    """Within the block, every ``onnxruntime.InferenceSession`` made with a ``("CUDAExecutionProvider",
    options)`` entry gets ``gpu_mem_limit`` (bytes ORT's CUDA arena may hold) added to its options.
    Yields a one-item list counting those sessions, so a caller can tell the limit really went in."""
    import onnxruntime as ort

    real = ort.InferenceSession
    injected = [0]

    def limited(path_or_bytes: Any, sess_options: Any = None, providers: Any = None,
                provider_options: Any = None, **kwargs: Any) -> Any:
        changed = []
        for p in providers or []:
            if isinstance(p, tuple) and p[0] == "CUDAExecutionProvider":
                p = (p[0], {**p[1], "gpu_mem_limit": str(int(limit_bytes))})
                injected[0] += 1
            changed.append(p)
        return real(path_or_bytes, sess_options, providers=changed or providers,
                    provider_options=provider_options, **kwargs)

    ort.InferenceSession = limited  # type: ignore[misc]
    try:
        yield injected
    finally:
        ort.InferenceSession = real  # type: ignore[misc]


# ---- the environment ----

@dataclass(frozen=True)
class Env:
    """What this machine offers; empty strings where something is missing."""

    python: str = platform.python_version()
    torch_version: str = ""
    torch_error: str = ""
    torch_cuda_build: str = ""  # torch.version.cuda; "" = a CPU-only wheel
    cuda_available: bool = False
    gpu_count: int = 0
    gpu_names: tuple[str, ...] = ()
    gpu_memory_gib: float = 0.0
    ort_version: str = ""
    ort_error: str = ""
    ort_providers: tuple[str, ...] = ()
    nvidia_smi: tuple[str, ...] = ()  # `nvidia-smi -L` lines

    @property
    def gpu_seen(self) -> bool:
        """A GPU is there, whether or not torch can use it."""
        return self.cuda_available or bool(self.nvidia_smi)

    def torch_problem(self) -> str | None:
        """Why PyTorch cannot run CUDA here (None when it can)."""
        if not self.torch_version:
            return f"torch is not importable ({self.torch_error})"
        if not self.torch_cuda_build:
            return f"torch {self.torch_version} is a CPU-only build (torch.version.cuda is None)"
        if not self.cuda_available:
            return (f"torch {self.torch_version} (CUDA {self.torch_cuda_build}) cannot use the GPU: "
                    "torch.cuda.is_available() is False (driver too old for this CUDA build?)")
        return None

    def ort_problem(self) -> str | None:
        """Why ONNX Runtime certainly cannot run CUDA here (None when it may: loading can still fail)."""
        if not self.ort_version:
            return f"onnxruntime is not importable ({self.ort_error})"
        if "CUDAExecutionProvider" not in self.ort_providers:
            return (f"onnxruntime {self.ort_version} has no CUDA EP (providers: "
                    f"{', '.join(self.ort_providers)}); install onnxruntime-gpu")
        return None

    def header(self) -> str:
        torch_text = (f"torch {self.torch_version} (CUDA build {self.torch_cuda_build or 'none'})"
                      if self.torch_version else f"torch: not importable ({self.torch_error})")
        ort_text = f"onnxruntime {self.ort_version}" if self.ort_version else \
            f"onnxruntime: not importable ({self.ort_error})"
        if self.gpu_names:
            gpu = f"{self.gpu_names[0]} x{self.gpu_count} ({self.gpu_memory_gib:.0f} GiB each)"
        elif self.nvidia_smi:
            gpu = "; ".join(self.nvidia_smi) + " (not usable by torch)"
        else:
            gpu = "none"
        return (f"python {self.python}; {torch_text}; {ort_text}; GPU: {gpu}; "
                f"ORT providers: {', '.join(self.ort_providers) or 'none'}")

    def no_gpu_line(self) -> str:
        torch_text = "torch.cuda.is_available() is False" if self.torch_version else \
            f"torch is not importable ({self.torch_error})"
        providers = ", ".join(self.ort_providers) if self.ort_version else f"not importable: {self.ort_error}"
        return f"no CUDA GPU: {torch_text} (onnxruntime providers: {providers}); nothing to check"


def probe_env() -> Env:
    """Look without failing. torch is imported first: ONNX Runtime's CUDA EP then finds the CUDA and
    cuDNN libraries torch has already loaded."""
    info: dict[str, Any] = {}
    try:
        import torch

        info.update(torch_version=torch.__version__, torch_cuda_build=torch.version.cuda or "")
        if torch.cuda.is_available():
            n = torch.cuda.device_count()
            info.update(cuda_available=True, gpu_count=n,
                        gpu_names=tuple(torch.cuda.get_device_name(i) for i in range(n)),
                        gpu_memory_gib=torch.cuda.get_device_properties(0).total_memory / 2**30)
    except Exception as exc:  # ImportError, or a broken CUDA install raising on the query
        info["torch_error"] = one_line(exc)
    try:
        import onnxruntime as ort

        info.update(ort_version=ort.__version__, ort_providers=tuple(ort.get_available_providers()))
    except Exception as exc:
        info["ort_error"] = one_line(exc)
    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            done = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=20)
            info["nvidia_smi"] = tuple(x.strip() for x in done.stdout.splitlines() if x.startswith("GPU "))
        except (OSError, subprocess.SubprocessError):
            pass
    return Env(**info)


# ---- shared material, made once and only when a check needs it ----

@dataclass(frozen=True)
class Settings:
    quick: bool = False
    budget_s: float = 420.0
    oom_limit_mib: int = 512

    @property
    def image_side(self) -> int:  # LR side of the throughput images
        return 256 if self.quick else 512

    @property
    def images(self) -> int:  # first one is the warm-up
        return 2 if self.quick else 4

    @property
    def oom_side(self) -> int:
        return 768 if self.quick else 1024

    @property
    def train_iterations(self) -> int:
        return 40 if self.quick else 100

    @property
    def loader_batches(self) -> int:
        return 20 if self.quick else 60


@dataclass
class Context:
    """Lazily built inputs shared by the checks; a failure to build one skips the checks needing it."""

    env: Env
    settings: Settings
    tmp: Path
    deadline: float
    _cache: dict[str, Any] = field(default_factory=dict)
    _errors: dict[str, str] = field(default_factory=dict)
    ort_cuda_error: str = ""  # why the CUDA EP could not be loaded, once seen

    def once(self, key: str, make: Callable[[], Any]) -> Any:
        if key in self._errors:
            raise Skip(f"{key} failed earlier: {self._errors[key]}")
        if key not in self._cache:
            try:
                self._cache[key] = make()
            except (Skip, Unavailable):
                raise
            except Exception as exc:
                self._errors[key] = one_line(exc, 160)
                raise
        return self._cache[key]

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    # -- requirements --
    def need_torch(self) -> None:
        if not self.env.torch_version:
            raise Unavailable(f"torch is not importable ({self.env.torch_error})")

    def need_torch_cuda(self) -> None:
        problem = self.env.torch_problem()
        if problem:
            raise Unavailable(problem)

    def need_ort_cuda(self) -> None:
        problem = self.env.ort_problem() or self.ort_cuda_error
        if problem:
            raise Unavailable(problem)

    @contextlib.contextmanager
    def ort_cuda(self) -> Iterator[None]:
        """Around anything that opens a CUDA session: srpipe's UsageError for a CUDA EP that would not
        load becomes ``Unavailable`` (and later ORT checks are not tried again)."""
        from srpipe.errors import UsageError

        self.need_ort_cuda()
        try:
            yield
        except UsageError as exc:
            if "CUDA execution provider" not in str(exc):
                raise
            self.ort_cuda_error = (f"onnxruntime {self.env.ort_version} could not load its CUDA EP "
                                   "(CUDA/cuDNN libraries it was built for missing?); " + one_line(exc, 240))
            raise Unavailable(self.ort_cuda_error) from exc

    # -- material --
    def model(self) -> Any:
        """The random-weight EDSR-baseline x4 (fp32, CPU, eval mode), the same for every check."""
        def make() -> Any:
            import torch

            from srpipe.model.edsr import build_model

            torch.manual_seed(0)
            return build_model(model_config()).eval()

        self.need_torch()
        return self.once("model", make)

    def exports(self) -> tuple[Any, Any]:
        """``(fp32, fp16)`` ``ExportResult`` of ``model()``."""
        def make() -> tuple[Any, Any]:
            from srpipe.config import ExportConfig
            from srpipe.export import export_model

            model = self.model()
            source = "benchmarks/gpu_check.py (random weights)"
            r32 = export_model(model, model_config(), self.tmp / "edsr-x4.onnx", ExportConfig(),
                               source=source)
            r16 = export_model(model, model_config(), self.tmp / "edsr-x4-fp16.onnx",
                               ExportConfig(fp16=True), source=source)
            return r32, r16

        self.need_torch()
        return cast("tuple[Any, Any]", self.once("export", make))

    def onnx(self, fp16: bool = False) -> Path:
        return Path(self.exports()[1 if fp16 else 0].path)

    def images(self) -> list[np.ndarray]:
        from srpipe.data.synthetic import synthetic_image

        side, n = self.settings.image_side, self.settings.images
        made = self.once("images", lambda: [synthetic_image(side, seed=i) for i in range(n)])
        return cast("list[np.ndarray]", made)

    def store(self) -> Path:
        """A synthetic x4 train store (``benchmarks/train_step.py``'s ``make_store``)."""
        def make() -> Path:
            if str(HERE) not in sys.path:
                sys.path.insert(0, str(HERE))
            from train_step import make_store

            folder = self.tmp / "stores"
            folder.mkdir(exist_ok=True)
            return Path(make_store(folder / "train.h5", 32 if self.settings.quick else 64, SCALE))

        self.need_torch()
        return cast(Path, self.once("store", make))


def model_config() -> Any:
    from srpipe.config import ModelConfig

    return ModelConfig(scale=SCALE, n_resblocks=16, n_feats=64)


def output_mp(image: np.ndarray, scale: int = SCALE) -> float:
    return image.shape[0] * image.shape[1] * scale * scale / 1e6


def throughput(upscale: Callable[[np.ndarray], np.ndarray], images: Sequence[np.ndarray]) -> float:
    """Output MP/s of ``upscale`` over ``images[1:]`` after one warm-up call on ``images[0]``; each call
    returns host memory, so it has finished on the device when it returns."""
    upscale(images[0])
    start, mp = time.perf_counter(), 0.0
    for img in images[1:]:
        out = upscale(img)
        expect(out.shape[:2] == (img.shape[0] * SCALE, img.shape[1] * SCALE),
               f"output shape {out.shape} for input {img.shape}")
        mp += out.shape[0] * out.shape[1] / 1e6
    return mp / max(time.perf_counter() - start, 1e-9)


def max_code_diff(a: np.ndarray, b: np.ndarray) -> int:
    expect(a.shape == b.shape and a.dtype == b.dtype, f"outputs differ in shape/dtype: {a.shape} {b.shape}")
    return int(np.abs(a.astype(np.int32) - b.astype(np.int32)).max())


# ---- the checks ----

def check_export(ctx: Context) -> str:
    r32, r16 = ctx.exports()

    def gap(r: Any) -> str:
        return "n/a" if r.parity is None else f"{r.parity:.1e}"

    return (f"CPU-side |Δ| fp32 {gap(r32)}, fp16 {gap(r16)}; overlap {r32.receptive.overlap} px "
            f"(effective radius {r32.receptive.effective})")


def check_ort_cuda(ctx: Context) -> str:
    from srpipe.export_verify import verification_inputs
    from srpipe.infer.session import OrtSession
    from srpipe.infer.upscaler import TiledUpscaler

    path = ctx.onnx()
    with ctx.ort_cuda():
        up = TiledUpscaler.open(path, device="cuda", tile=256, io_binding=True)
    session = up.backend
    expect(isinstance(session, OrtSession), f"backend is {type(session).__name__}, not OrtSession")
    assert isinstance(session, OrtSession)
    expect(up.provider == "CUDAExecutionProvider" and session.on_cuda,
           f"ran on {up.provider} (providers {session.providers})")
    expect(session.io_binding, "the session was opened without IO binding")
    mps = throughput(up, ctx.images())
    expect(up.stats.oom_retries == 0, f"{up.stats.oom_retries} out-of-memory retries at tile 256")
    cpu = OrtSession(path, device="cpu")
    gap_cpu = gap_binding = 0.0
    for x in verification_inputs():
        bound = session.run(x)
        session.io_binding = False
        try:
            plain = session.run(x)
        finally:
            session.io_binding = True
        gap_cpu = max(gap_cpu, float(np.abs(bound - cpu.run(x)).max()))
        gap_binding = max(gap_binding, float(np.abs(bound - plain).max()))
    # TF32 convolutions (ORT's CUDA EP default) stay far inside 1e-2 on [0, 1] outputs; a wrong binding
    # (buffer, shape, device) gives errors of order 1.
    expect(gap_cpu <= 1e-2, f"CUDA EP vs CPU EP: max |Δ| {gap_cpu:.3g} > 1e-2")
    expect(gap_binding <= 1e-3, f"IO binding on vs off: max |Δ| {gap_binding:.3g} > 1e-3")
    return (f"{mps:.1f} MP/s out (tile 256, batch {up.batch}); |Δ| vs CPU EP {gap_cpu:.1e}, "
            f"binding on/off {gap_binding:.1e}")


def check_ort_fp16(ctx: Context) -> str:
    from srpipe.config import ExportConfig
    from srpipe.export_verify import max_gap
    from srpipe.infer.session import OrtSession
    from srpipe.infer.upscaler import TiledUpscaler

    path = ctx.onnx(fp16=True)
    with ctx.ort_cuda():
        session = OrtSession(path, device="cuda", io_binding=True)
    expect(session.on_cuda, f"ran on {session.provider}")
    gap = max_gap(session.run, ctx.model())  # PyTorch fp32 on the CPU is the reference
    limit = ExportConfig().fp16_atol
    up = TiledUpscaler(session, overlap=session.descriptor.overlap, tile=256, batch=4)
    mps = throughput(up, ctx.images())
    expect(gap <= limit, f"fp16 on the CUDA EP vs PyTorch fp32: max |Δ| {gap:.3g} > {limit:g}")
    return f"max |Δ| {gap:.1e} vs PyTorch fp32 (limit {limit:g}); {mps:.1f} MP/s out (tile 256, batch 4)"


def check_process(ctx: Context) -> str:
    from srpipe.config import ProcessConfig
    from srpipe.data.synthetic import synthetic_image
    from srpipe.imaging.io import write_image
    from srpipe.process import process
    from srpipe.workspace import Workspace

    path = ctx.onnx()
    src, out = ctx.tmp / "process-in", ctx.tmp / "process-out"
    n, side = (3, 256) if ctx.settings.quick else (6, 384)
    src.mkdir(exist_ok=True)
    for i in range(n):
        write_image(src / f"img{i}.png", synthetic_image(side, seed=100 + i))
    with ctx.ort_cuda():
        rep = process(src, out, ProcessConfig(device="cuda", tile=256), workspace=Workspace(ctx.tmp / "ws"),
                      model=path)
    failed = [f"{f.input}: {f.reason}" for f in rep.files if f.status == "failed"]
    expect(not failed, f"{len(failed)} failed: {'; '.join(failed)[:300]}")
    expect(rep.provider == "CUDAExecutionProvider", f"process ran on {rep.provider}")
    expect(rep.count("ok") == n, f"{rep.count('ok')} of {n} ok")
    for f in rep.files:
        expect(Path(f.output).is_file(), f"missing output {f.output}")
    expect(abs(rep.output_megapixels - n * side * side * SCALE * SCALE / 1e6) < 1e-6,
           f"{rep.output_megapixels} output MP, expected {n} x {side * SCALE}²")
    return (f"{rep.megapixels_per_second:.1f} MP/s out ({n} PNGs {side}² incl. warm-up, batch {rep.batch}); "
            f"{rep.count('ok')}/{n} ok")


def check_ort_oom(ctx: Context) -> str:
    from srpipe.data.synthetic import synthetic_image
    from srpipe.infer.session import OrtSession
    from srpipe.infer.upscaler import TiledUpscaler

    path, mib, side = ctx.onnx(), ctx.settings.oom_limit_mib, ctx.settings.oom_side
    with ctx.ort_cuda(), cuda_arena_limit(mib << 20) as injected:
        session = OrtSession(path, device="cuda", io_binding=True)
    expect(injected[0] >= 1, "OrtSession made no CUDAExecutionProvider entry through "
                             "onnxruntime.InferenceSession: gpu_mem_limit could not be set")
    expect(session.on_cuda, f"ran on {session.provider}")
    overlap = session.descriptor.overlap
    img = synthetic_image(side, seed=7)
    up = TiledUpscaler(session, overlap=overlap, tile=0, batch=1)
    out = up(img)
    retries, final = up.stats.oom_retries, up.tile
    expect(retries >= 1, f"a whole {side}² image fitted in a {mib} MiB arena: the retry path did not run")
    expect(0 < final < side, f"final tile {final}")
    del up, session  # free the capped arena before the reference session grows its own
    with ctx.ort_cuda():
        reference = TiledUpscaler(OrtSession(path, device="cuda"), overlap=overlap, tile=final, batch=1)(img)
    diff = max_code_diff(out, reference)
    expect(diff <= 2, f"after halving: {diff} codes from an unlimited session at tile {final}")
    return f"arena {mib} MiB: whole {side}² -> tile {final} after {retries} retries; Δ vs unlimited {diff}"


def check_torch_fp16(ctx: Context) -> str:
    import torch

    from srpipe.config import ExportConfig
    from srpipe.export_graph import Half, export_graph
    from srpipe.export_verify import verification_inputs

    ctx.need_torch_cuda()
    model = ctx.model()
    half = Half(export_graph(copy.deepcopy(model))).to("cuda").eval()  # what --fp16 traces
    gap = 0.0
    with torch.inference_mode():
        for x in verification_inputs():
            ref = model(torch.from_numpy(x)).numpy()
            got = half(torch.from_numpy(x).to("cuda")).cpu().numpy()
            expect(got.shape == ref.shape, f"shape {got.shape} vs {ref.shape}")
            gap = max(gap, float(np.abs(got - ref).max()))
    limit = ExportConfig().fp16_atol
    expect(gap <= limit, f"PyTorch fp16 on the GPU vs fp32: max |Δ| {gap:.3g} > {limit:g}")
    return f"max |Δ| {gap:.1e} vs fp32 CPU (limit {limit:g})"


def torch_backend(ctx: Context) -> Any:
    from srpipe.infer.backends import TorchBackend

    ctx.need_torch_cuda()
    model = copy.deepcopy(ctx.model()).to("cuda").eval()
    return TorchBackend(model, scale=SCALE, device="cuda")


def check_torch_tiled(ctx: Context) -> str:
    from srpipe.export_verify import max_gap
    from srpipe.infer.upscaler import TiledUpscaler

    backend = torch_backend(ctx)
    overlap = ctx.exports()[0].receptive.overlap
    up = TiledUpscaler(backend, overlap=overlap, tile=256, batch=4)
    mps = throughput(up, ctx.images())
    gap = max_gap(backend.run, ctx.model())  # the same model in fp32 on the CPU
    expect(gap <= 1e-2, f"PyTorch CUDA vs CPU: max |Δ| {gap:.3g} > 1e-2")  # TF32 convs stay far inside
    return f"{mps:.1f} MP/s out (tile 256, batch 4); |Δ| vs CPU {gap:.1e}"


def check_torch_oom(ctx: Context) -> str:
    import torch

    from srpipe.data.synthetic import synthetic_image
    from srpipe.infer.upscaler import TiledUpscaler

    backend = torch_backend(ctx)
    overlap = ctx.exports()[0].receptive.overlap
    side = ctx.settings.oom_side
    img = synthetic_image(side, seed=8)
    torch.cuda.empty_cache()
    total = torch.cuda.get_device_properties(0).total_memory
    limit = torch.cuda.memory_reserved(0) + (2 << 30)
    up = TiledUpscaler(backend, overlap=overlap, tile=0, batch=1)
    torch.cuda.set_per_process_memory_fraction(min(1.0, limit / total), 0)
    try:
        out = up(img)
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0, 0)
        torch.cuda.empty_cache()
    retries, final = up.stats.oom_retries, up.tile
    expect(retries >= 1,
           f"a whole {side}² image fitted in {limit / 2**30:.1f} GiB: the retry path did not run")
    reference = TiledUpscaler(backend, overlap=overlap, tile=final, batch=1)(img)
    diff = max_code_diff(out, reference)
    expect(diff <= 2, f"after halving: {diff} codes from an unlimited run at tile {final}")
    return (f"limit {limit / 2**30:.1f} GiB: whole {side}² -> tile {final} after {retries} retries; "
            f"Δ vs unlimited {diff}")


def check_patch_loader(ctx: Context) -> str:
    import torch

    from srpipe.data.dataset import PatchDataset, PatchLoader

    ctx.need_torch_cuda()
    batch, patch, n = 16, 48, ctx.settings.loader_batches
    ds = PatchDataset(ctx.store(), scale=SCALE, patch_size=patch, seed=0, length=n * batch)
    reference = []
    for i, item in enumerate(PatchLoader(ds, batch_size=batch, workers=0)):
        reference.append(item)
        if i == 1:
            break
    loader = PatchLoader(ds, batch_size=batch, workers=2, device="cuda", channels_last=True)
    count, gap, start = 0, 0.0, 0.0
    for lr, hr in loader:
        if count == 0:
            expect(lr.device.type == "cuda" and hr.device.type == "cuda", f"batches on {lr.device}")
            expect(lr.dtype == torch.float32 and hr.dtype == torch.float32, f"dtype {lr.dtype}")
            expect(tuple(lr.shape) == (batch, 3, patch, patch)
                   and tuple(hr.shape) == (batch, 3, patch * SCALE, patch * SCALE),
                   f"shapes {tuple(lr.shape)} {tuple(hr.shape)}")
            expect(lr.is_contiguous(memory_format=torch.channels_last), "lr is not channels_last")
            start = time.perf_counter()
        if count < len(reference):
            ref_lr, ref_hr = reference[count]
            gap = max(gap, float((lr.cpu() - ref_lr).abs().max()), float((hr.cpu() - ref_hr).abs().max()))
        count += 1
    torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    del loader
    expect(count == n, f"{count} batches, expected {n}")
    expect(gap <= 1e-6, f"device batches differ from the CPU loader's by {gap:.3g}")
    rate = (count - 1) / max(seconds, 1e-9)
    return f"{rate:.1f} batches/s ({batch}x{patch}² x4, 2 workers); |Δ| vs CPU {gap:.0e}"


def train_once(ctx: Context, name: str, *, precision: Literal["fp32", "bf16"], data_on_device: bool) -> str:
    import torch

    from srpipe.config import Pipeline, TrainConfig
    from srpipe.train.run import train
    from srpipe.train.rundir import read_metrics
    from srpipe.workspace import Workspace

    ctx.need_torch_cuda()
    n = ctx.settings.train_iterations
    cfg = TrainConfig(model=model_config(), stores=str(ctx.store().parent), batch_size=16, patch_size=48,
                      iterations=n, val_every=0, log_every=10, checkpoint_every=10**9, workers=2,
                      tensorboard=False, device="cuda", precision=precision, data_on_device=data_on_device)
    result = train(Pipeline(name="gpucheck", train=cfg), workspace=Workspace(ctx.tmp / "ws"),
                   run_dir=ctx.tmp / f"run-{name}")
    torch.cuda.synchronize()
    expect(result.device.startswith("cuda"), f"trained on {result.device}")
    expect(result.precision == precision, f"precision {result.precision}, asked for {precision}")
    source = "device" if data_on_device else "loader"
    expect(result.data_source == source, f"data source {result.data_source}, asked for {source}")
    expect(result.iteration == n, f"stopped at iteration {result.iteration} of {n}")
    expect(result.skipped_steps == 0, f"{result.skipped_steps} non-finite losses")
    rows = [r for r in read_metrics(result.metrics) if r["kind"] == "train"]
    losses = [float(r["loss"]) for r in rows if r["loss"]]
    expect(bool(losses) and all(math.isfinite(v) for v in losses), f"losses {losses}")
    windows = [float(r["it_per_s"]) for r in rows[1:] if r.get("it_per_s")]
    speed = statistics.median(windows) if windows else result.it_per_s
    return f"{speed:.1f} it/s (batch 16x48² x4); loss {losses[0]:.4f} -> {losses[-1]:.4f}"


def check_ddp(ctx: Context) -> str:
    from srpipe.config import Pipeline, TrainConfig
    from srpipe.train.rundir import write_config

    ctx.need_torch_cuda()
    if ctx.env.gpu_count < 2:
        raise Skip(f"{ctx.env.gpu_count} GPU")
    n = max(20, ctx.settings.train_iterations // 2)
    cfg = TrainConfig(model=model_config(), stores=str(ctx.store().parent), batch_size=16, patch_size=48,
                      iterations=n, val_every=0, log_every=10, checkpoint_every=10**9, workers=2,
                      tensorboard=False, device="cuda", precision="bf16")
    recipe = ctx.tmp / "ddp.toml"
    write_config(recipe, Pipeline(name="gpucheck-ddp", train=cfg))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "srpipe.cli", "--workspace", str(ctx.tmp / "ws-ddp"), "train", "-p", str(recipe),
           "--run-dir", str(ctx.tmp / "run-ddp"), "--json"]
    env = {**os.environ, "OMP_NUM_THREADS": "4",
           "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)}
    timeout = max(30.0, min(300.0, ctx.remaining()))
    try:
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        raise CheckFailed(f"torchrun did not finish in {timeout:.0f} s") from exc
    if done.returncode != 0:
        tail = " | ".join(done.stderr.strip().splitlines()[-3:])
        raise CheckFailed(f"torchrun exit {done.returncode}: {tail}")
    result = parse_json_tail(done.stdout)
    expect(result.get("world_size") == 2, f"world_size {result.get('world_size')}")
    expect(str(result.get("device", "")).startswith("cuda"), f"device {result.get('device')}")
    expect(result.get("iteration") == n and result.get("skipped_steps") == 0,
           f"iteration {result.get('iteration')} of {n}, {result.get('skipped_steps')} skipped steps")
    return f"{float(result.get('it_per_s', 0.0)):.1f} it/s (global batch 16, 2 ranks, bf16, incl. warm-up)"


def checks(ctx: Context) -> list[tuple[str, Callable[[], str]]]:
    quick = ctx.settings.quick

    def fp32_train() -> str:
        if quick:
            raise Skip("--quick")
        return train_once(ctx, "fp32", precision="fp32", data_on_device=False)

    return [
        ("export fp32 + fp16 (CPU verify)", lambda: check_export(ctx)),
        ("ORT CUDA EP + IO binding", lambda: check_ort_cuda(ctx)),
        ("ORT CUDA fp16 parity", lambda: check_ort_fp16(ctx)),
        ("process() on CUDA", lambda: check_process(ctx)),
        ("OOM halving, ORT arena limit", lambda: check_ort_oom(ctx)),
        ("fp16 graph, PyTorch CUDA", lambda: check_torch_fp16(ctx)),
        ("TorchBackend tiled (cuda)", lambda: check_torch_tiled(ctx)),
        ("OOM halving, torch mem fraction", lambda: check_torch_oom(ctx)),
        ("PatchLoader(device=cuda)", lambda: check_patch_loader(ctx)),
        ("train bf16, PatchLoader", lambda: train_once(ctx, "bf16", precision="bf16", data_on_device=False)),
        ("train bf16, data on device",
         lambda: train_once(ctx, "bf16-device", precision="bf16", data_on_device=True)),
        ("train fp32, PatchLoader", fp32_train),
        ("DDP NCCL, 2 ranks", lambda: check_ddp(ctx)),
    ]


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="smaller images, fewer iterations, no fp32 training")
    ap.add_argument("--budget", type=float, default=420.0,
                    help="seconds after which no new check starts (default 420; the run must end in 8 min)")
    ap.add_argument("--oom-limit-mib", type=int, default=512,
                    help="ONNX Runtime CUDA arena cap for the tile-halving check (default 512)")
    args = ap.parse_args(argv)
    if importlib.util.find_spec("srpipe") is None:  # run from a checkout without `pip install -e .`
        sys.path.insert(0, str(ROOT))
    t0 = time.monotonic()
    env = probe_env()
    if not env.gpu_seen:
        print(env.no_gpu_line())
        return 0
    print(env.header(), flush=True)
    settings = Settings(quick=args.quick, budget_s=args.budget, oom_limit_mib=args.oom_limit_mib)
    with tempfile.TemporaryDirectory(prefix="srpipe-gpu-check-") as tmp:
        ctx = Context(env=env, settings=settings, tmp=Path(tmp), deadline=t0 + settings.budget_s)
        rows = [run_check(name, fn, deadline=ctx.deadline) for name, fn in checks(ctx)]
    print(format_table(rows))
    print(f"{summary_line(rows)}; {time.monotonic() - t0:.0f} s in all"
          + ("; quick run" if settings.quick else ""))
    return exit_code(rows)


if __name__ == "__main__":
    sys.exit(main())
