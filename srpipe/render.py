"""Rich rendering for the CLI: one renderer per stage report (a table or lines on stdout, notes and
failures on stderr) and ``srpipe info``'s listing. Each takes the report and ``as_json`` (the command
wrote ``report.to_dict()`` to stdout already; then only the stderr lines are left to say).

Only the CLI imports this module; rich is imported inside the functions so ``srpipe --help`` stays
instant.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

import click

from srpipe.console import stderr_console

if TYPE_CHECKING:
    from srpipe.downscale import DownscaleReport
    from srpipe.evaluate import EvaluationReport
    from srpipe.export import ExportReport
    from srpipe.prepare import PrepareReport
    from srpipe.process import ProcessReport
    from srpipe.train.report import TrainReport


def print_prepare(report: PrepareReport, *, as_json: bool = False, max_listed: int = 20) -> None:
    """Store table (file name, status, images, patches, size, skipped) and notes: skipped files (the
    first ``max_listed``), the official-LR check, timing."""
    from rich.console import Console
    from rich.table import Table

    if as_json:
        return
    table = Table("store", "status", "images", "patches", "size", "skipped",
                  title=f"{report.out} ({report.layout} layout)")
    for s in report.splits:
        table.add_row(s.path.name, s.status, str(s.images), str(s.patches) if s.split == "train" else "-",
                      f"{s.bytes / 1e6:.1f} MB", str(len(s.skipped)))
    notes = []
    for s in report.splits:
        notes += [f"skipped ({s.split}, {kind}): {rel}: {reason}"
                  for rel, kind, reason in s.skipped[:max_listed]]
        if len(s.skipped) > max_listed:
            notes.append(f"... and {len(s.skipped) - max_listed} more skipped in {s.split} (see --json)")
        for o in s.official:
            extra = "".join([f", {o.shape_mismatch} of other size" if o.shape_mismatch else "",
                             f", {o.unreadable} unreadable" if o.unreadable else ""])
            notes.append(f"official LR x{o.scale} ({s.split}): {o.images} images, max |Δ| {o.max_abs}, "
                         f"{o.share:.4%} of pixels differ{extra}")
    if report.splits and not report.splits[0].patches:
        notes.append("no training sub-images: every training image was skipped; smaller images need a "
                     "smaller hr_size, e.g. --set hr_size=240 --set stride=120 (multiples of every "
                     "scale, hr_size at least patch_size x the largest scale; docs/prepare.md)")
    rate = f", {report.megapixels / report.seconds:.1f} MP/s" if report.megapixels and report.seconds else ""
    notes.append(f"{report.megapixels:.1f} HR megapixels in {report.seconds:.1f} s{rate}")
    Console(soft_wrap=True).print(table, *notes, sep="\n", highlight=False, markup=False)


def print_downscale(report: DownscaleReport, *, as_json: bool = False) -> None:
    """The one-line summary on stdout (not under ``--json``), and every failed file with its reason on
    stderr."""
    if not as_json:
        hint = " (outputs exist; --overwrite replaces them)" if report.skipped else ""
        click.echo(f"{len(report.written)} written, {len(report.skipped)} skipped{hint}, "
                   f"{len(report.failed)} failed; {report.megapixels:.1f} HR MP in {report.seconds:.1f} s "
                   f"-> {report.out}")
    for path, reason in report.failed:
        click.echo(f"srpipe: failed: {path}: {reason}", err=True)


def print_train(report: TrainReport, *, as_json: bool = False) -> None:
    """A short summary: what ran, where everything went, what to do next."""
    if as_json:
        return
    run = report.run_dir
    resumed = f", resumed at {report.start_iteration}" if report.start_iteration else ""
    ranks = f" × {report.world_size} processes" if report.world_size > 1 else ""
    early = " (stopped early: no improvement)" if report.stopped_early else ""
    out = [f"run:         {run}",
           f"iterations:  {report.iteration} of {report.iterations}{resumed}{early}",
           f"speed:       {report.it_per_s:.2f} it/s on {report.device}{ranks}, {report.precision}, "
           f"{report.data_source} data; {report.seconds:.1f} s this sitting"]
    if report.best_psnr_y is not None:
        out.append(f"validation:  best {report.best_psnr_y:.3f} dB Y-PSNR at iteration "
                   f"{report.best_iteration} (last {report.last_psnr_y:.3f} dB)")
    if report.skipped_steps:
        out.append(f"skipped:     {report.skipped_steps} steps with a non-finite loss")
    if report.init_report:
        out.append(f"init:        {report.init_report}")
    best = report.best_checkpoint.relative_to(run) if report.best_checkpoint else "none yet"
    out += [f"checkpoints: {report.last_checkpoint.relative_to(run)} (resumable), best: {best}",
            f"metrics:     {report.metrics.relative_to(run)}; pictures in compare/; log in train.log",
            f"next:        srpipe evaluate {run} --hr HR_DIR --scale S ; srpipe export {run}"
            if report.finished else f"continue:    srpipe train --resume {run}"]
    click.echo("\n".join(out))


def print_export(report: ExportReport, *, as_json: bool = False) -> None:
    """What was written, its verification, and its measured receptive field."""
    if as_json:
        return
    rf = report.receptive
    click.echo("\n".join([
        f"wrote {report.path} (x{report.scale}, {report.precision}) from {report.source or 'a model'}",
        f"verified: {report.parity_note}",
        f"receptive radius: theoretical {rf.theoretical} LR px, measured effective {rf.effective} "
        f"(< 0.5 codes); recommended tile overlap {rf.overlap} LR px"]))


def print_evaluation(report: EvaluationReport, *, as_json: bool = False) -> None:
    """Rich table on stdout; notes and output paths on stderr; images that failed on stderr."""
    if not as_json:
        _evaluation_table(report)
    if report.failures:
        click.echo(f"srpipe: error: {len(report.failures)} image(s) could not be evaluated: "
                   + ", ".join(str(p) for p, _ in report.failures), err=True)


def _evaluation_table(result: EvaluationReport) -> None:
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


def print_process(report: ProcessReport, *, as_json: bool = False) -> None:
    """Summary table on stdout; failed files with their reasons on stderr (not under ``--json``, whose
    report lists them)."""
    from rich.console import Console
    from rich.table import Table

    if as_json:
        return
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


def _photo_lines(report: ProcessReport) -> list[str]:
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
