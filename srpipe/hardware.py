"""What this machine's CPU can do, read once from the operating system (no benchmark, no guess by model).

:func:`cpu_has_bf16` answers whether the cores have native bf16 dot products (AVX-512 BF16 or AMX), the
one fact behind two ``auto`` choices: OpenVINO in bf16 for inference (``srpipe.infer.backends``) and
bf16 autocast with channels_last for CPU training (``srpipe.train.runtime``). Both were measured about
twice as fast as fp32 on such a CPU and slower than fp32 on CPUs without it (docs/performance.md,
docs/train.md).
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

BF16_FLAGS = ("avx512_bf16", "amx_bf16")
CPUINFO = Path("/proc/cpuinfo")


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
