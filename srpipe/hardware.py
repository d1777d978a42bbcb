"""What this machine can do, read from the operating system and PyTorch (no benchmark, no guess by model).

:func:`cpu_has_bf16` answers whether the cores have native bf16 dot products (AVX-512 BF16 or AMX), the
one fact behind two ``auto`` choices: OpenVINO in bf16 for inference (``srpipe.infer.backends``) and
bf16 autocast with channels_last for CPU training (``srpipe.train.runtime``). Both were measured about
twice as fast as fp32 on such a CPU and slower than fp32 on CPUs without it (docs/performance.md,
docs/train.md). :func:`resolve_device` is the one place a ``device`` setting (``auto``, ``cuda``,
``cpu``) becomes the PyTorch device that runs a model: ``evaluate`` of checkpoints and training.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

from srpipe.errors import UsageError

if TYPE_CHECKING:
    import torch

BF16_FLAGS = ("avx512_bf16", "amx_bf16")
CPUINFO = Path("/proc/cpuinfo")
NO_GPU = "--device cuda: no CUDA GPU is available to PyTorch here; use --device cpu"


@cache
def cpu_flags() -> frozenset[str]:
    """The CPU feature flags of the first core (Linux ``/proc/cpuinfo``); empty where unreadable."""
    try:
        text = CPUINFO.read_text()
    except OSError:
        return frozenset()
    lines = (line for line in text.splitlines() if line.startswith("flags"))
    return frozenset(next((line.split(":", 1)[1].split() for line in lines), []))


def cpu_has_bf16() -> bool:
    """Native bf16 dot products on this CPU; False where that cannot be read (fp32 routes are used)."""
    return any(f in cpu_flags() for f in BF16_FLAGS)


def resolve_device(preference: str, local_rank: int | None = None, *, no_gpu: str = NO_GPU) -> torch.device:
    """``auto`` → CUDA when PyTorch sees a GPU, else the CPU; ``cpu`` → the CPU; ``cuda`` without a GPU
    is a ``UsageError`` saying ``no_gpu`` (the setting's own words). ``local_rank`` picks the GPU
    ``local_rank`` modulo the GPU count (one per torchrun process); None = PyTorch's current one."""
    import torch

    if preference == "cpu":
        return torch.device("cpu")
    if torch.cuda.is_available():
        if local_rank is None:
            return torch.device("cuda")
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    if preference == "cuda":
        raise UsageError(no_gpu)
    return torch.device("cpu")
