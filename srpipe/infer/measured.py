"""Tile overlap for models that do not state it: measured the way ``srpipe export`` measures, and cached.

A foreign model (no ``tile_overlap`` in its metadata) gets its effective receptive field measured with
``receptive.measure``, on its own weights, in fp32 on ONNX Runtime's CPU provider (whatever backend will
run it). Its theoretical radius is
unknown, so the search starts at ``START_RADIUS`` LR px and doubles while the error profile is still
above the threshold at the far end (the field reaches past the cut), up to ``MAX_RADIUS``. The result is
cached as JSON under ``<workspace>/cache/overlap/<sha256 of the file>.json``, so each model file is
measured once; an unreadable cache entry is measured again.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from srpipe import __version__
from srpipe.contract import ModelDescriptor
from srpipe.digest import file_sha256
from srpipe.infer.backends import Backend
from srpipe.infer.receptive import ReceptiveField, measure

log = logging.getLogger(__name__)

START_RADIUS, MAX_RADIUS = 16, 128


@dataclass(frozen=True)
class MeasuredOverlap:
    """What was measured (LR px): the overlap to use, the effective radius, the largest radius searched."""

    overlap: int
    effective: int
    searched: int
    capped: bool


def measure_backend(backend: Backend) -> MeasuredOverlap:
    """Measure a backend whose receptive radius is unknown (see the module docstring)."""
    radius = START_RADIUS
    while True:
        rf: ReceptiveField = measure(backend.run, scale=backend.scale, theoretical=radius)
        reaches_past = rf.effective > radius  # still above the threshold at the cut itself + 1
        if not reaches_past or radius >= MAX_RADIUS:
            return MeasuredOverlap(rf.overlap, rf.effective, radius, capped=reaches_past)
        radius *= 2


def overlap_for(desc: ModelDescriptor, cache_dir: Path | None) -> ModelDescriptor:
    """``desc`` with its overlap filled in: as stated, else from the cache, else measured (and cached).

    Measured in fp32 on ONNX Runtime's CPU provider whatever backend will run the model, as export
    measures in PyTorch fp32: the result is a property of the file, and bf16 rounding noise (about half
    a code) would otherwise blur the 0.5-code threshold.
    """
    from srpipe.infer.session import OrtSession

    if desc.overlap_source != "unknown":
        return desc
    sha = file_sha256(desc.path)
    entry = cache_dir / f"{sha}.json" if cache_dir is not None else None
    if entry is not None and entry.is_file():
        try:
            data = json.loads(entry.read_text())
            if int(data["scale"]) == desc.scale:
                return desc.with_overlap(int(data["overlap"]), "measured")
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("%s: unreadable cache entry (%s); measuring again", entry, exc)
    log.info("%s states no tile overlap: measuring its receptive field (once per file)", desc.path)
    backend = OrtSession(desc.path, device="cpu")
    found = measure_backend(backend)
    if found.capped:
        log.warning("%s: the receptive field reaches past %d LR px; tile overlap capped at %d LR px "
                    "(use --tile 0 for whole images if tiles show seams)", desc.path, found.searched,
                    found.overlap)
    log.info("%s: effective receptive radius %d LR px; tile overlap %d", desc.path, found.effective,
             found.overlap)
    if entry is not None:
        _write_entry(entry, {"scale": backend.scale, "overlap": found.overlap, "effective": found.effective,
                             "searched": found.searched, "capped": found.capped, "file": str(desc.path),
                             "srpipe_version": __version__})
    return desc.with_overlap(found.overlap, "measured")


def describe_model(path: Path, cache_dir: Path | None) -> ModelDescriptor:
    """What ``srpipe info`` shows: the metadata of an srpipe model; for a foreign one, its probed scale
    and its measured (or cached) overlap, from a CPU session."""
    from srpipe.contract import describe
    from srpipe.infer.session import OrtSession

    desc = describe(path)
    if desc.srpipe:
        return desc
    return overlap_for(OrtSession(path, device="cpu").descriptor, cache_dir)


def _write_entry(entry: Path, data: dict[str, object]) -> None:
    from srpipe.imaging.atomic import atomic_path

    try:
        entry.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(entry) as tmp:
            tmp.write_text(json.dumps(data, indent=1) + "\n")
    except OSError as exc:  # a cache is a convenience: measuring again next time is the only cost
        log.warning("could not cache the measured overlap in %s: %s", entry, exc)
