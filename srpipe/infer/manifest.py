"""The ``--out`` manifest of ``srpipe process``: what made each output, so that a rerun redoes exactly
the stale outputs (rules and reasons: docs/process.md, "Reruns and the manifest").

``<out>/.srpipe-manifest.json`` (``.srpipe-manifest-K-of-N.json`` under ``--shard K/N``) is hidden from
input walkers and never an output name (walked paths never start with a dot; a lone input file under
that name is refused). One file per shard, not one file under a lock: shards need no coordination
(``flock`` is missing or unreliable on the network file systems multi-node runs share) and none can
lose another's entries; reading merges every shard layout's files.

Entry per output: the source's path, size and mtime_ns (not a hash: that would read every source again
on a rerun with nothing to do), the output's size and mtime_ns as written, the ``Settings`` that decide
its bits (threads, device and batch only move float rounding and are left out), the srpipe version and
provider (information). An entry is added only after its output was written (atomically) and is
trusted only while the output keeps the recorded size and mtime; the file is replaced atomically at
the start, about once a second and at the end. So after a ``kill -9`` the manifest never vouches for a
file it did not see written, and such outputs are redone.
"""

from __future__ import annotations

import json
import logging
import os
import stat
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from srpipe import __version__
from srpipe.digest import file_sha256
from srpipe.errors import OutputError
from srpipe.imaging.atomic import atomic_path
from srpipe.infer.files import Job, remove_stale_temporaries

log = logging.getLogger(__name__)

MANIFEST_NAME = ".srpipe-manifest"
LAYOUT = 1  # the manifest file's own layout
OUTPUT_REVISION = 1  # bumped when srpipe writes different bits for the same settings
_LOSSY = (".jpg", ".jpeg", ".webp")
Recorded = Mapping[str, Sequence["Entry"]]  # output path → entries of every manifest file (merged)


@dataclass(frozen=True)
class Settings:
    """What decides an output's bits. The tile is the one asked for (an out-of-memory retry halves it
    again on the same device); ``revision`` is bumped when srpipe writes other bits for the same
    settings, so the srpipe version itself is not compared (a release would redo every folder)."""

    model: str  # "sha256:<hex>" of the model file, or "name:<name>" for an upscaler without a file
    scale: int
    tile: int
    overlap: int
    ensemble: bool
    quality: int | None  # JPEG/WebP quality; None for lossless outputs
    revision: int = OUTPUT_REVISION
    variant: str = ""  # photo mode and fidelity fix, e.g. "strength auto, fidelity-fix"; "" = neither

    @classmethod
    def current(cls, *, model: str, scale: int, tile: int, overlap: int, ensemble: bool,
                quality: int, variant: str = "") -> Settings:
        """This run's settings; ``model`` is the model file (hashed once, streamed) or a name."""
        return cls(model_fingerprint(model), scale, tile, overlap, ensemble, quality, variant=variant)

    def for_output(self, rel: PurePosixPath) -> Settings:
        return self if rel.suffix.lower() in _LOSSY else replace(self, quality=None)

    def changes_from(self, old: Settings) -> list[str]:
        """What differs, for the report: ``["model changed", "tile 384→128"]``."""
        why = ["model changed"] if old.model != self.model else []
        for name in ("scale", "tile", "overlap", "quality", "revision"):
            if getattr(old, name) != getattr(self, name):
                why.append(f"{name} {getattr(old, name)}→{getattr(self, name)}")
        if old.variant != self.variant:
            why.append(f"{old.variant or 'plain'}→{self.variant or 'plain'}")
        if old.ensemble != self.ensemble:
            why.append(f"ensemble {'on' if old.ensemble else 'off'}→{'on' if self.ensemble else 'off'}")
        return why


@dataclass(frozen=True)
class Entry:
    """One output as it was written (see the module docstring)."""

    source: str  # path relative to the input root
    source_size: int
    source_mtime_ns: int
    output_size: int
    output_mtime_ns: int
    settings: Settings
    srpipe: str = __version__
    provider: str = ""


@dataclass(frozen=True)
class Plan:
    """``plan_reruns``'s answer, by job index."""

    todo: tuple[int, ...]  # to run: new outputs and stale ones
    settled: Mapping[int, tuple[Literal["skipped", "failed"], str]]  # not to run, with the reason
    redo: Mapping[int, str]  # the part of ``todo`` that replaces an existing output, and why
    keep: Mapping[str, Entry] = field(default_factory=dict)  # entries of the up-to-date outputs
    sources: Mapping[str, tuple[int, int]] = field(default_factory=dict)  # output → source size, mtime
    outputs: frozenset[str] = frozenset()  # every output of the jobs (planned or not)


def model_fingerprint(model: str) -> str:
    """``sha256:<hex>`` of the file ``model`` (read in 1 MiB chunks), else ``name:<model>``."""
    path = Path(model)
    if not path.is_file():
        return f"name:{model}"
    return f"sha256:{file_sha256(path)}"


def manifest_path(out: Path, shard: tuple[int, int]) -> Path:
    k, n = shard
    return out / (f"{MANIFEST_NAME}.json" if n == 1 else f"{MANIFEST_NAME}-{k}-of-{n}.json")


def is_reserved(rel: PurePosixPath) -> bool:
    """Whether an output at ``rel`` could clobber a manifest."""
    return len(rel.parts) == 1 and rel.name.startswith(MANIFEST_NAME)


def read_manifests(out: Path) -> dict[str, list[Entry]] | None:
    """Entries of every manifest file in ``out``, merged by output path; None when there is none.
    A file that cannot be read or parsed is left out with a warning (its outputs are then redone)."""
    paths = sorted(out.glob(f"{MANIFEST_NAME}*.json")) if out.is_dir() else []
    if not paths:
        return None
    merged: dict[str, list[Entry]] = {}
    for path in paths:
        for rel, entry in _load(path).items():
            merged.setdefault(rel, []).append(entry)
    return merged


def plan_reruns(jobs: Sequence[Job], targets: Sequence[Path], settings: Settings, recorded: Recorded | None,
                *, overwrite: bool) -> Plan:
    """Which jobs to run and why; reads file status, writes nothing. An existing output is skipped
    only when an entry recorded exactly this output file (size, mtime) from this source (path, size,
    mtime) with these settings; otherwise, or under ``overwrite``, it is redone with the reason."""
    todo: list[int] = []
    settled: dict[int, tuple[Literal["skipped", "failed"], str]] = {}
    redo: dict[int, str] = {}
    keep: dict[str, Entry] = {}
    sources: dict[str, tuple[int, int]] = {}
    for i, (job, target) in enumerate(zip(jobs, targets, strict=True)):
        rel = job.out_rel.as_posix()
        if is_reserved(job.out_rel):
            settled[i] = ("failed", f"the output name {rel} is reserved for srpipe's manifest; rename "
                                    "the input")
            continue
        source = _fingerprint(job.source, follow=True)
        if source is not None:
            sources[rel] = source
        output = _fingerprint(target, follow=False)
        if output is None:  # new; a symlink or folder in the way fails when written
            todo.append(i)
            continue
        if overwrite:
            why: str | None = "--overwrite"
        elif recorded is None:
            why = "no manifest (written by an older srpipe or another tool)"
        else:
            why, entry = _staleness(job, source, output, settings.for_output(job.out_rel),
                                    recorded.get(rel, ()))
            if why is None and entry is not None:
                settled[i] = ("skipped", "up to date")
                keep[rel] = entry
                continue
        todo.append(i)
        redo[i] = why or "not in the manifest"
    return Plan(tuple(todo), settled, redo, keep, sources, frozenset(j.out_rel.as_posix() for j in jobs))


class ManifestWriter:
    """This shard's manifest file: the up-to-date entries kept by the plan, plus one per output written.
    ``record`` is thread-safe; ``close`` saves what is pending."""

    def __init__(self, out: Path, shard: tuple[int, int], settings: Settings, *, provider: str = "") -> None:
        self.path = manifest_path(out, shard)
        self.settings, self.provider = settings, provider
        self._entries: dict[str, Entry] = {}
        self._sources: Mapping[str, tuple[int, int]] = {}
        self._lock = threading.Lock()
        self._dirty = False
        self._due = 0.0

    def begin(self, plan: Plan) -> None:
        """Keep the plan's up-to-date entries and this file's entries of outputs this run does not
        concern (another ``--format``, say); entries of outputs about to be redone are dropped (saved
        now, before any output is rewritten)."""
        remove_stale_temporaries(self.path)
        own = _load(self.path, quiet=True) if self.path.is_file() else {}
        self._entries = {rel: e for rel, e in own.items() if rel not in plan.outputs} | dict(plan.keep)
        self._sources = plan.sources
        self._dirty = self._entries != own
        if self._dirty and plan.todo:
            self._save()

    def record(self, job: Job, output: Path) -> None:
        """Note that ``output`` (job's output) has just been written completely."""
        rel = job.out_rel.as_posix()
        source, written = self._sources.get(rel), _fingerprint(output, follow=False)
        if source is None or written is None:
            return  # no entry: the output is redone next time
        entry = Entry(job.rel.as_posix(), *source, *written, self.settings.for_output(job.out_rel),
                      provider=self.provider)
        with self._lock:
            self._entries[rel] = entry
            self._dirty = True
            if time.monotonic() >= self._due:
                self._save()

    def close(self) -> None:
        with self._lock:
            if self._dirty:
                self._save()

    def _save(self) -> None:
        started = time.monotonic()
        data = {"format": "srpipe-manifest", "layout": LAYOUT, "entries": {
            rel: asdict(entry) for rel, entry in sorted(self._entries.items())}}
        try:
            with atomic_path(self.path) as tmp:
                tmp.write_text(json.dumps(data, indent=1), encoding="utf-8")
        except (OSError, OutputError) as exc:
            log.warning("%s: cannot save the manifest (%s); outputs it lacks are redone next time",
                        self.path, exc)
            return
        self._dirty = False
        self._due = time.monotonic() + max(1.0, 10 * (time.monotonic() - started))


def _staleness(job: Job, source: tuple[int, int] | None, output: tuple[int, int], settings: Settings,
               candidates: Sequence[Entry]) -> tuple[str | None, Entry | None]:
    """(None, entry) when an entry vouches for this output; else (the reason, None)."""
    if not candidates:
        return "not in the manifest", None
    same_file = [e for e in candidates if (e.output_size, e.output_mtime_ns) == output]
    if not same_file:
        return "output changed since it was recorded", None
    reasons: list[str] = []
    for entry in same_file:
        reasons = settings.changes_from(entry.settings)
        if entry.source != job.rel.as_posix() or source != (entry.source_size, entry.source_mtime_ns):
            reasons.insert(0, "source changed")
        if not reasons:
            return None, entry
    return ", ".join(reasons), None


def _fingerprint(path: Path, *, follow: bool) -> tuple[int, int] | None:
    """(size, mtime_ns) of a regular file (not a symlink unless ``follow``), else None."""
    try:
        st = os.stat(path) if follow else os.lstat(path)
    except OSError:
        return None
    return (st.st_size, st.st_mtime_ns) if stat.S_ISREG(st.st_mode) else None


def _load(path: Path, *, quiet: bool = False) -> dict[str, Entry]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if (data.get("format"), data.get("layout")) != ("srpipe-manifest", LAYOUT):
            raise ValueError(f"not an srpipe manifest of layout {LAYOUT}")
        return {str(rel): _entry(raw) for rel, raw in data["entries"].items()}
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
        if not quiet:
            log.warning("%s: unreadable manifest (%s); treated as absent, so its outputs are redone",
                        path, exc)
        return {}


def _entry(raw: dict[str, Any]) -> Entry:
    """An ``Entry`` from its JSON object (``TypeError`` when fields are missing or unknown). Values are
    not type-checked: a wrong one can only differ from this run's, which means a redo."""
    return Entry(**{**raw, "settings": Settings(**raw["settings"])})
