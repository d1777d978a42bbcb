"""What a finished patch store holds, read back from it: images, patches, skipped inputs and the
official-LR check (:func:`summarise`), for ``srpipe prepare``'s report.

Summaries are read from the finished stores, not from the run's memory, so a resumed run and a no-op
re-run report the same images, patches, skipped files and official-LR check as the run that wrote them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from srpipe.data import store as st


@dataclass(frozen=True)
class OfficialCheck:
    """srpipe's LR against the official LR files for one scale (value differences, per pixel)."""

    scale: int
    images: int  # compared (same size as srpipe's LR)
    max_abs: int  # max |srpipe - official| over all compared values
    differing: int  # pixels where any channel differs
    pixels: int
    shape_mismatch: int  # files whose size differs from srpipe's LR (not compared)
    unreadable: int

    @property
    def share(self) -> float:
        return self.differing / self.pixels if self.pixels else 0.0


@dataclass(frozen=True)
class SplitSummary:
    """What one store holds after the run; ``status`` is "written", "resumed" or "up to date"."""

    split: str
    path: Path
    status: str
    images: int
    patches: int
    bytes: int
    skipped: tuple[tuple[str, str, str], ...]  # (relative path, "unreadable" | "too-small", reason)
    official: tuple[OfficialCheck, ...]


def summarise(split: str, final: Path, status: str) -> SplitSummary:
    """Read the summary of the finished store ``final``."""
    info = st.open_store(final)
    skipped = st.read_table(final, "skipped")
    rows = st.read_table(final, "official_lr")["rows"]
    checks = []
    for scale in info.scales:
        r = rows[rows[:, 1] == scale]
        ok = r[r[:, 2] >= 0]
        if len(r):
            checks.append(OfficialCheck(scale=scale, images=len(ok), max_abs=int(ok[:, 2].max(initial=0)),
                                        differing=int(ok[:, 3].sum()), pixels=int(ok[:, 4].sum()),
                                        shape_mismatch=int((r[:, 2] == -1).sum()),
                                        unreadable=int((r[:, 2] == -2).sum())))
    listed = tuple(zip(*(skipped[k].tolist() for k in ("path", "kind", "reason")), strict=True))
    return SplitSummary(split=split, path=final, status=status, images=info.n_images, patches=info.n_patches,
                        bytes=final.stat().st_size, skipped=listed, official=tuple(checks))
