"""The result of ``srpipe prepare``: per-store summaries read back from the stores, and plain rows for
display (the CLI turns them into a rich table; the library never imports rich).

Summaries are read from the finished stores, not from the run's memory, so a resumed run and a no-op
re-run report the same images, patches, skipped files and official-LR check as the run that wrote them.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
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


@dataclass(frozen=True)
class PrepareSummary:
    root: Path
    out: Path
    layout: str  # "div2k" or "folder"
    splits: tuple[SplitSummary, ...]  # train, then valid
    seconds: float
    megapixels: float  # HR megapixels decoded by this run (0 for a no-op)

    @property
    def failed(self) -> int:
        """Inputs skipped because they could not be read (not those merely too small)."""
        return sum(kind == "unreadable" for split in self.splits for _, kind, _ in split.skipped)

    def to_dict(self) -> dict[str, object]:
        d = asdict(self)
        for s, split in zip(d["splits"], self.splits, strict=True):
            s["official"] = [dict(asdict(o), share=o.share) for o in split.official]
        d["failed"] = self.failed
        return json.loads(json.dumps(d, default=str))

    def table(self) -> tuple[list[str], list[list[str]]]:
        """Header and one row per store (file name, status, images, patches, size, skipped); the folder
        is :attr:`out`."""
        header = ["store", "status", "images", "patches", "size", "skipped"]
        rows = [[s.path.name, s.status, str(s.images), str(s.patches) if s.split == "train" else "-",
                 f"{s.bytes / 1e6:.1f} MB", str(len(s.skipped))] for s in self.splits]
        return header, rows

    def notes(self, max_listed: int = 20) -> list[str]:
        """Lines after the table: skipped files (first ``max_listed``), official-LR check, timing."""
        lines = []
        for s in self.splits:
            for rel, kind, reason in s.skipped[:max_listed]:
                lines.append(f"skipped ({s.split}, {kind}): {rel}: {reason}")
            if len(s.skipped) > max_listed:
                lines.append(f"... and {len(s.skipped) - max_listed} more skipped in {s.split} (see --json)")
            for o in s.official:
                extra = "".join([f", {o.shape_mismatch} of other size" if o.shape_mismatch else "",
                                 f", {o.unreadable} unreadable" if o.unreadable else ""])
                lines.append(f"official LR x{o.scale} ({s.split}): {o.images} images, max |Δ| {o.max_abs}, "
                             f"{o.share:.4%} of pixels differ{extra}")
        if self.splits and not self.splits[0].patches:
            lines.append("no training sub-images: every training image was skipped; smaller images need a "
                         "smaller hr_size, e.g. --set hr_size=240 --set stride=120 (multiples of every "
                         "scale, hr_size at least patch_size x the largest scale; docs/prepare.md)")
        rate = f", {self.megapixels / self.seconds:.1f} MP/s" if self.megapixels and self.seconds else ""
        lines.append(f"{self.megapixels:.1f} HR megapixels in {self.seconds:.1f} s{rate}")
        return lines


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
