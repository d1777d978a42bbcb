"""Rich rendering for the CLI: progress bars and notes on stderr, result tables and JSON on stdout.

Only the CLI imports this module; rich is imported inside the functions so ``srpipe --help`` stays
instant.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import sys
from collections.abc import Iterator
from typing import Any

import click

from srpipe.progress import Progress, ProgressFn


@functools.cache
def stderr_console() -> Any:
    """The one stderr console shared by logs, progress bars and notes (so bars and logs never tear)."""
    from rich.console import Console

    return Console(stderr=True)


@contextlib.contextmanager
def progress_bars(enabled: bool = True) -> Iterator[ProgressFn]:
    """Yield a ``ProgressFn`` that draws one rich bar per ``Progress.task`` on stderr.

    The bars start at the first update (a command that fails early prints only its error) and are off
    under ``srpipe -q``.
    """
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )
    from rich.progress import Progress as RichProgress

    ctx = click.get_current_context(silent=True)
    if not enabled or (ctx is not None and ctx.find_root().params.get("quiet")):
        yield lambda p: None
        return
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[info]}"))
    rich = RichProgress(*columns, console=stderr_console(), transient=False)
    bars: dict[str, Any] = {}

    def update(p: Progress) -> None:
        if not bars:
            rich.start()
        if p.task not in bars:
            bars[p.task] = rich.add_task(p.task, total=p.total, info=p.info)
        rich.update(bars[p.task], completed=p.done, total=p.total, info=p.info)

    try:
        yield update
    finally:
        if bars:
            rich.stop()


def json_props(props: dict[str, str]) -> dict[str, Any]:
    """ONNX metadata (always strings) for JSON: numbers and arrays of numbers as such, everything else
    (text, and hashes however many of their digits are decimal) unchanged."""
    return {key: text if key.endswith("hash") else _json_number(text) for key, text in props.items()}


def _json_number(text: str) -> Any:
    try:
        value = json.loads(text)
    except ValueError:
        return text
    numbers = value if isinstance(value, list) else [value]
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in numbers):
        return value
    return text


def emit_json(payload: Any) -> None:
    """Write a machine-readable result to stdout: valid UTF-8 JSON (ASCII, escapes for the rest) even
    when a file name is not valid UTF-8 (see ``json_text``)."""
    click.echo(json.dumps(_json_safe(payload), indent=2, default=lambda v: json_text(str(v))))


def json_text(text: str) -> str:
    """``text`` with the bytes of a file name that are not valid UTF-8 written as ``\\xNN``.

    Python decodes such bytes on Linux to lone surrogates (``surrogateescape``), which no strict JSON
    reader accepts; ``a\\xff.png`` in a report names the file whose bytes are ``a``, 0xFF, ``.png``
    (``os.fsencode`` of the input path). Other lone surrogates become ``\\udXXX``."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        pass
    try:
        raw = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return raw.decode("utf-8", "backslashreplace")


def _json_safe(value: Any) -> Any:
    if isinstance(value, str):
        return json_text(value)
    if isinstance(value, dict):
        return {_json_safe(k) if isinstance(k, str) else k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def print_evaluation(result: Any) -> None:
    """Rich table of an ``EvaluationReport`` on stdout; notes and output paths on stderr."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{result.model} x{result.scale} · shave {result.shave} · LR {result.lr_source} · "
                        "PSNR dB (Y unless RGB)")
    for col in ("image", "bicubic", "SSIM", "model", "SSIM", "gain", "RGB", "SSIM", "s"):
        table.add_column(col, justify="left" if col == "image" else "right", no_wrap=True)

    def row(name: str, m: Any, b: Any, seconds: str = "", style: str = "") -> None:
        table.add_row(name, f"{b.psnr_y:.2f}", f"{b.ssim_y:.4f}", f"{m.psnr_y:.2f}", f"{m.ssim_y:.4f}",
                      f"{m.psnr_y - b.psnr_y:+.2f}", f"{m.psnr_rgb:.2f}", f"{m.ssim_rgb:.4f}", seconds,
                      style=style)

    for r in result.images:
        row(r.name, r.model, r.bicubic, f"{r.seconds:.2f}")
    if result.images:
        table.add_section()
        row(f"mean of {len(result.images)}", result.model_mean, result.bicubic_mean, style="bold")
    Console(width=None if sys.stdout.isatty() else 120).print(table)
    for line in (*result.notes, *(f"{what}: {p}" for what, p in (("SR images", result.saved_to),
                                                                  ("comparison", result.compare)) if p)):
        stderr_console().print(line)


def print_process(report: Any) -> None:
    """Summary table on stdout; failed files with their reasons on stderr."""
    from rich.console import Console
    from rich.table import Table

    table = Table("ok", "skipped", "failed", "output MP", "MP/s", "seconds",
                  title=f"srpipe process x{report.scale} · {report.model}")
    table.add_row(str(report.count("ok")), str(report.count("skipped")), str(report.count("failed")),
                  f"{report.output_megapixels:.2f}", f"{report.megapixels_per_second:.3f}",
                  f"{report.seconds:.1f}")
    console = Console(width=None if sys.stdout.isatty() else 120)
    console.print(table)
    # Free text below the table wraps at the terminal width instead of being cut with an ellipsis.
    tiles = f"tiles of {report.tile} LR px" if report.tile else "whole images"
    console.print(f"ran on {report.provider}, {tiles}, overlap {report.overlap}"
                  + (" (measured)" if report.overlap_source == "measured" else ""),
                  markup=False, highlight=False, soft_wrap=False)
    for line in _photo_lines(report):
        console.print(line, markup=False, highlight=False, soft_wrap=False)
    if report.redone:  # existing outputs made with other settings, model or source
        why = ", ".join(f"{n} {reason}" for reason, n in sorted(report.redone.items()))
        console.print(f"redone {sum(report.redone.values())} existing output(s): {why}", markup=False,
                      highlight=False)
    for f in report.files:
        if f.status == "failed":
            stderr_console().print(f"failed: {f.input!r}: {f.reason}", markup=False, highlight=False)


def _photo_lines(report: Any) -> list[str]:
    """Fidelity summary (median, worst file) and, in photo mode, the strengths used."""
    lines = []
    summary = report.fidelity()
    if summary is not None:
        median, worst = summary
        fixed = report.fidelity_fix
        after = f" (before the fix: {worst.fidelity_db:.2f})" if fixed else ""
        worst_db = worst.fidelity_fixed_db if fixed else worst.fidelity_db
        lines.append(f"fidelity (bicubic back-projection, Y-PSNR{' after --fidelity-fix' if fixed else ''}): "
                     f"median {median:.2f} dB, worst {worst_db:.2f} dB{after}: {worst.input}")
    used = [f.strength for f in report.files if f.strength is not None]
    if report.strength and used:
        counts = {s: used.count(s) for s in sorted(set(used))}
        lines.append(f"photo strength {report.strength}: "
                     + ", ".join(f"{s:g} on {n} file(s)" for s, n in counts.items()))
    return lines


def print_prepare(summary: Any) -> None:
    """Store table and notes of a ``PrepareSummary`` on stdout."""
    from rich.console import Console
    from rich.table import Table

    header, rows = summary.table()
    table = Table(*header, title=f"{summary.out} ({summary.layout} layout)")
    for row in rows:
        table.add_row(*row)
    Console(soft_wrap=True).print(table, *summary.notes(), sep="\n", highlight=False, markup=False)


def print_downscale(result: Any, dst: Any, *, summary: bool) -> None:
    """A ``DownscaleResult``: its one-line summary on stdout (unless ``summary`` is off, under
    ``--json``), and every failed file with its reason on stderr."""
    if summary:
        hint = " (outputs exist; --overwrite replaces them)" if result.skipped else ""
        click.echo(f"{len(result.written)} written, {len(result.skipped)} skipped{hint}, "
                   f"{len(result.failed)} failed; {result.megapixels:.1f} HR MP in {result.seconds:.1f} s "
                   f"-> {dst}")
    for path, reason in result.failed:
        click.echo(f"srpipe: failed: {path}: {reason}", err=True)


def print_info(info: Any) -> None:
    """A ``ModelDescriptor`` as aligned ``key value`` lines on stdout."""
    click.echo(f"{'file':30} {info.path}")
    if not info.srpipe:
        click.echo("(no srpipe metadata: not exported by srpipe export; scale probed, overlap "
                   f"{info.overlap_source})")
        click.echo(f"{'scale':30} {info.scale}")
        click.echo(f"{'tile_overlap':30} {info.overlap} ({info.overlap_source})")
    for key, value in info.props.items():
        if not info.srpipe and key in ("scale", "tile_overlap"):
            continue
        click.echo(f"{key:30} {value if value != '' else '-'}")
