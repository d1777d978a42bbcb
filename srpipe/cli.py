"""Command-line interface: parse options, build a config, call one library function, render.

Every stage command does the same four things: its options (``srpipe.cli_options``) become the stage's
config through :func:`srpipe.config.configure` (the pipeline's table or the defaults, then ``--set``,
then the options given), it calls the stage's one entry function, and :func:`conclude` renders the
report (``--json``: ``report.to_dict()``; else ``srpipe.render``) and exits with ``report.exit_code``.

Heavy libraries (torch, onnxruntime, cv2, h5py) are imported inside commands so that
``srpipe --help`` and ``srpipe --version`` stay instant. Library errors (``SrpipeError``) become a
one-line ``srpipe: error: ...`` on stderr and the error's exit code. Logs and progress bars go to one
stderr console; stdout carries results only (``--json`` where a machine reads them).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import click

from srpipe import __version__, render
from srpipe.cli_options import (
    DOWNSCALE_OPTIONS,
    EVALUATE_OPTIONS,
    EXPORT_OPTIONS,
    INFO_OPTIONS,
    PREPARE_OPTIONS,
    PROCESS_OPTIONS,
    TRAIN_OPTIONS,
    conclude,
)
from srpipe.console import emit_json, json_props, progress_bars, stderr_console
from srpipe.errors import SrpipeError

log = logging.getLogger("srpipe")


class SrpipeGroup(click.Group):
    """Turns ``SrpipeError`` into a one-line message and its exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except SrpipeError as exc:
            click.echo(f"srpipe: error: {exc}", err=True)
            ctx.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.echo("srpipe: interrupted", err=True)
            ctx.exit(130)


@click.group(cls=SrpipeGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="srpipe")
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
@click.option("-q", "--quiet", is_flag=True, help="Only warnings and errors.")
@click.option("--workspace", type=click.Path(path_type=Path), default=None,
              help="Workspace root (default: $SRPIPE_WORKSPACE or ./srpipe-work).")
@click.pass_context
def cli(ctx: click.Context, verbose: int, quiet: bool, workspace: Path | None) -> None:
    """srpipe: EDSR super-resolution as a batch pipeline (prepare, train, export, process)."""
    from rich.logging import RichHandler

    level = logging.WARNING if quiet else (logging.DEBUG if verbose > 1 else logging.INFO)
    handler = RichHandler(console=stderr_console(), show_path=False, show_time=verbose > 0)
    logging.basicConfig(level=level, format="%(message)s", handlers=[handler], force=True)
    from srpipe.workspace import Workspace

    ctx.obj = Workspace.resolve(workspace)


# ---- stages: prepare, downscale, train (data and training) ----


@cli.command("prepare")
@PREPARE_OPTIONS
@click.pass_context
def prepare_command(ctx: click.Context, root: Path, out: Path | None, pipeline: str | None,
                    assignments: tuple[str, ...], force: bool, max_pixels: int | None, as_json: bool) -> None:
    """DIV2K (or any folder of photos) -> HDF5 patch stores with MATLAB-bicubic LR (docs/prepare.md).

    Exits 1 when an input could not be read or no training sub-image came out."""
    from srpipe.config import PrepareConfig, configure, load_pipeline
    from srpipe.prepare import prepare

    base = load_pipeline(pipeline).prepare if pipeline else PrepareConfig()
    cfg = configure(base, assignments, max_pixels=max_pixels)
    with progress_bars(not as_json) as progress:
        report = prepare(root, out or ctx.obj.stores, cfg, force=force, progress=progress)
    conclude(ctx, report, as_json, render.print_prepare)


@cli.command("downscale")
@DOWNSCALE_OPTIONS
@click.pass_context
def downscale_command(ctx: click.Context, src: Path, dst: Path, as_json: bool, **options: Any) -> None:
    """MATLAB-bicubic LR copies of an image or folder tree: modcrop to a multiple of S, then
    imresize(1/S), written as PNG under the same relative paths and stems."""
    from srpipe.config import DownscaleConfig, configure
    from srpipe.downscale import downscale

    cfg = configure(DownscaleConfig(), **options)
    with progress_bars(not as_json) as progress:
        report = downscale(src, dst, cfg, progress=progress)
    conclude(ctx, report, as_json, render.print_downscale)


@cli.command("train")
@TRAIN_OPTIONS
@click.pass_context
def train_command(ctx: click.Context, pipeline: str | None, assignments: tuple[str, ...], resume: str | None,
                  run_dir: Path | None, as_json: bool) -> None:
    """Train EDSR on the stores `srpipe prepare` wrote (docs/train.md).

    Multi-GPU: torchrun --nproc-per-node N -m srpipe.cli train ...  (batch_size is the global batch)."""
    from srpipe.config import configure
    from srpipe.errors import UsageError
    from srpipe.train.run import starting_point, train

    if resume is not None and run_dir is not None:
        raise UsageError("--run-dir starts a new run; to continue one use --resume RUN_DIR")
    base, run = starting_point(pipeline, None if resume is None else (Path(resume) if resume else True),
                               ctx.obj)
    cfg = configure(base, assignments, table="train")
    with progress_bars(not as_json) as progress:
        report = train(cfg, workspace=ctx.obj, run_dir=run_dir, resume=run, progress=progress)
    if report.rank == 0:  # under torchrun, rank 0 speaks for the job
        conclude(ctx, report, as_json, render.print_train)


# ---- stages: evaluate, export, process (models) and info ----


@cli.command("evaluate")
@EVALUATE_OPTIONS
@click.pass_context
def evaluate_command(ctx: click.Context, model: str | None, hr_dir: Path, lr_dir: Path | None,
                     save_dir: Path | None, compare_path: Path | None, as_json: bool, **options: Any) -> None:
    """PSNR/SSIM of MODEL beside bicubic, the papers' protocol (Y and RGB, shave = scale).

    MODEL: an srpipe checkpoint or run directory, an EDSR-PyTorch .pt or BasicSR .pth file, an exported
    .onnx model, 'bicubic', 'default' or 'photo' (the bundled models of --scale). Left out: the model process
    would choose (the newest workspace export of --scale that is not an install check, else the bundled).
    """
    from srpipe.config import EvaluateConfig, configure
    from srpipe.evaluate import evaluate

    cfg = configure(EvaluateConfig(), **options)
    with progress_bars() as progress:
        report = evaluate(model, hr_dir, cfg, lr_dir=lr_dir, save_dir=save_dir, compare=compare_path,
                          progress=progress, workspace=ctx.obj)
    conclude(ctx, report, as_json, render.print_evaluation)


@cli.command("export")
@EXPORT_OPTIONS
@click.pass_context
def export_command(ctx: click.Context, source: Path | None, out: Path | None, as_json: bool,
                   **options: Any) -> None:
    """Export a run or checkpoint to ONNX, verified against PyTorch (docs/export.md).

    SOURCE: a run folder or checkpoint file (default: the best checkpoint of the latest run). Settings
    start from the [export] table in the run's config.toml; options override it."""
    from srpipe.config import configure
    from srpipe.export import export, recorded_config

    cfg = configure(recorded_config(source, ctx.obj), **options)
    with progress_bars(not as_json) as progress:
        report = export(source, cfg, workspace=ctx.obj, out=out, progress=progress)
    conclude(ctx, report, as_json, render.print_export)


@cli.command("info")
@INFO_OPTIONS
@click.pass_context
def info_command(ctx: click.Context, model: str, scale: int, as_json: bool) -> None:
    """Print what an ONNX model says about itself (scale, size, receptive field, overlap, PSNR, ...).

    MODEL: an .onnx file, or 'default' for the bundled model of --scale."""
    from srpipe.infer.measured import describe_model
    from srpipe.infer.session import find_model

    info = describe_model(find_model(scale, model=model, workspace=ctx.obj), ctx.obj.cache)
    if as_json:
        emit_json({"path": str(info.path), "srpipe": info.srpipe, **json_props(info.props),
                   "scale": info.scale, "tile_overlap": info.overlap,
                   "tile_overlap_source": info.overlap_source})
    else:
        render.print_info(info)


@cli.command("process")
@PROCESS_OPTIONS
@click.pass_context
def process_command(ctx: click.Context, source: Path, out: Path, model: str | None, shard: str | None,
                    pipeline: str | None, as_json: bool, **options: Any) -> None:
    """Upscale an image or a folder tree through ONNX Runtime in blended tiles (docs/process.md).

    Exit 0: all files ok or skipped; 1: some failed (listed with reasons); 2: usage error."""
    from srpipe.config import ProcessConfig, configure, load_pipeline
    from srpipe.infer.files import parse_shard
    from srpipe.process import process

    cfg = configure(load_pipeline(pipeline).process if pipeline else ProcessConfig(), **options)
    with progress_bars(not as_json) as progress:
        report = process(source, out, cfg, workspace=ctx.obj, model=model, shard=parse_shard(shard),
                         progress=progress)
    conclude(ctx, report, as_json, render.print_process)


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="srpipe")


if __name__ == "__main__":  # pragma: no cover
    main()
