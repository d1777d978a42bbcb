"""Command-line interface: parse options, build a config, call one library function, render.

Heavy libraries (torch, onnxruntime, cv2, h5py) are imported inside commands so that
``srpipe --help`` and ``srpipe --version`` stay instant. Library errors (``SrpipeError``) become a
one-line ``srpipe: error: ...`` on stderr and the error's exit code. Logs and progress bars go to one
stderr console; stdout carries results only (``--json`` where a machine reads them).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Literal

import click

from srpipe import __version__, render
from srpipe.errors import SrpipeError
from srpipe.render import emit_json, progress_bars

log = logging.getLogger("srpipe")


def parse_strength(ctx: click.Context, param: click.Parameter, value: str | None) -> float | str | None:
    """``--strength``: ``auto`` or a number in [0, 1]."""
    if value is None or value == "auto":
        return value
    try:
        number = float(value)
    except ValueError:
        number = -1.0
    if not 0.0 <= number <= 1.0:
        raise click.BadParameter(f"'{value}' is neither 'auto' nor a number in [0, 1]")
    return number


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
    handler = RichHandler(console=render.stderr_console(), show_path=False, show_time=verbose > 0)
    logging.basicConfig(level=level, format="%(message)s", handlers=[handler], force=True)
    from srpipe.workspace import Workspace

    ctx.obj = Workspace.resolve(workspace)


# ---- commands: prepare, downscale (imaging + data) ----


@cli.command("prepare")
@click.argument("root", type=click.Path(path_type=Path))
@click.option("-o", "--out", type=click.Path(path_type=Path), default=None,
              help="Folder for train.h5 / valid.h5 (default: the workspace's stores/).")
@click.option("--pipeline", default=None, help="Take the [prepare] table of this pipeline name or file.")
@click.option("--set", "assignments", multiple=True, metavar="KEY=VALUE",
              help="Override a setting: scales=[2,4], hr_size=240, stride=120, boundary=replicate, "
                   "valid_count=20, workers=0, max_pixels=..., seed=1.")
@click.option("--force", is_flag=True, help="Rebuild stores made with other settings or inputs.")
@click.option("--max-pixels", type=click.IntRange(min=1), default=None,
              help="Refuse images with more pixels (decompression-bomb guard) [178956970].")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable summary on stdout.")
@click.pass_context
def prepare_command(ctx: click.Context, root: Path, out: Path | None, pipeline: str | None,
                    assignments: tuple[str, ...], force: bool, max_pixels: int | None, as_json: bool) -> None:
    """DIV2K (or any folder of photos) -> HDF5 patch stores with MATLAB-bicubic LR (docs/prepare.md).

    Exits 1 when an input could not be read or no training sub-image came out."""
    import dataclasses

    from srpipe.config import PrepareConfig, apply_overrides, load_pipeline
    from srpipe.data.prepare import prepare

    cfg = apply_overrides(load_pipeline(pipeline).prepare if pipeline else PrepareConfig(), assignments)
    if max_pixels is not None:
        cfg = dataclasses.replace(cfg, max_pixels=max_pixels)
    with progress_bars(not as_json) as progress:
        summary = prepare(root, out or ctx.obj.stores, cfg, force=force, progress=progress)
    if as_json:
        emit_json(summary.to_dict())
    else:
        render.print_prepare(summary)
    ctx.exit(1 if summary.failed or not summary.splits[0].patches else 0)


@cli.command("downscale")
@click.argument("src", type=click.Path(path_type=Path))
@click.option("-s", "--scale", type=click.IntRange(min=2), required=True, help="Shrink factor: 2, 3, 4, ...")
@click.option("-o", "--out", "dst", type=click.Path(path_type=Path), required=True,
              help="Output folder (or a .png file when SRC is one image); never inside SRC.")
@click.option("--boundary", type=click.Choice(["mirror", "replicate"]), default="mirror", show_default=True,
              help="mirror = MATLAB imresize (EDSR benchmark files); replicate = SelfExSR Set14 files.")
@click.option("--overwrite", is_flag=True, help="Replace existing outputs (default: skip them).")
@click.option("-j", "--workers", type=click.IntRange(min=0), default=0, show_default=True,
              help="Image processes; 0 = one per CPU core, 1 = no extra process.")
@click.option("--max-pixels", type=click.IntRange(min=1), default=None,
              help="Refuse images with more pixels (decompression-bomb guard) [178956970].")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable result on stdout.")
@click.pass_context
def downscale_command(ctx: click.Context, src: Path, scale: int, dst: Path, boundary: str, overwrite: bool,
                      workers: int, max_pixels: int | None, as_json: bool) -> None:
    """MATLAB-bicubic LR copies of an image or folder tree: modcrop to a multiple of S, then
    imresize(1/S), written as PNG under the same relative paths and stems."""
    from srpipe.downscale import downscale_tree
    from srpipe.imaging.io import DEFAULT_MAX_PIXELS

    with progress_bars(not as_json) as progress:
        result = downscale_tree(src, dst, scale=scale, boundary=boundary,  # type: ignore[arg-type]
                                overwrite=overwrite, max_pixels=max_pixels or DEFAULT_MAX_PIXELS,
                                workers=workers, progress=progress)
    if as_json:
        emit_json(result.as_dict())
    render.print_downscale(result, dst, summary=not as_json)
    if result.failed:
        ctx.exit(1)


# ---- commands: train, evaluate (model + metrics + training) ----


@cli.command("train")
@click.option("-p", "--pipeline", default=None, metavar="NAME|FILE",
              help="Recipe in pipelines/ or a TOML file (default: edsr-baseline-x4).")
@click.option("--set", "assignments", multiple=True, metavar="KEY=VALUE",
              help="Override a [train] setting: iterations=1000, lr=2e-4, model.n_feats=32, ...")
@click.option("--resume", is_flag=False, flag_value="", default=None, metavar="[RUN_DIR]",
              help="Continue a run exactly where it stopped (no value: the latest run).")
@click.option("--run-dir", type=click.Path(path_type=Path, file_okay=False), default=None,
              help="Folder of a new run (default: <workspace>/runs/<pipeline>-<YYYYmmdd-HHMMSS>).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable summary on stdout.")
@click.pass_context
def train_command(ctx: click.Context, pipeline: str | None, assignments: tuple[str, ...], resume: str | None,
                  run_dir: Path | None, as_json: bool) -> None:
    """Train EDSR on the stores `srpipe prepare` wrote (docs/train.md).

    Multi-GPU: torchrun --nproc-per-node N -m srpipe.cli train ...  (batch_size is the global batch)."""
    from srpipe.config import load_pipeline
    from srpipe.errors import UsageError
    from srpipe.train.run import train

    if resume is not None and run_dir is not None:
        raise UsageError("--run-dir starts a new run; to continue one use --resume RUN_DIR")
    resume_arg = None if resume is None else (Path(resume) if resume else True)
    pipe = load_pipeline(pipeline or "edsr-baseline-x4") if resume is None or pipeline else None
    with progress_bars(not as_json) as progress:
        result = train(pipe, workspace=ctx.obj, overrides=assignments, run_dir=run_dir, resume=resume_arg,
                       progress=progress)
    if result.rank != 0:  # under torchrun, rank 0 speaks for the job
        return
    if as_json:
        emit_json(result.to_dict())
    else:
        click.echo("\n".join(result.lines()))


@cli.command("evaluate")
@click.argument("model", required=False, default=None)
@click.option("--hr", "hr_dir", required=True, type=click.Path(path_type=Path, file_okay=False, exists=True),
              help="Folder of HR (ground-truth) images.")
@click.option("--lr", "lr_dir", type=click.Path(path_type=Path, file_okay=False, exists=True), default=None,
              help="Folder of LR images paired by name (<name>x<s>, _HR->_LR, or the same name). "
                   "Default: made from HR with MATLAB bicubic.")
@click.option("-s", "--scale", type=click.IntRange(2, 8), default=None, help="Scale (default: the model's).")
@click.option("--shave", type=click.IntRange(0), default=None, help="Border px ignored (default: the scale).")
@click.option("--boundary", type=click.Choice(["mirror", "replicate"]), default=None,
              help="imresize boundary when generating LR (default mirror, as MATLAB).")
@click.option("--device", type=click.Choice(["auto", "cuda", "cpu"]), default=None)
@click.option("--tile", type=click.IntRange(0), default=None, help="LR tile side (0 = whole image).")
@click.option("--overlap", type=click.IntRange(0), default=None, help="LR tile overlap [the model's].")
@click.option("--backend", type=click.Choice(["auto", "onnxruntime", "openvino"]), default=None,
              help="What runs an ONNX model [auto: CUDA, else OpenVINO bf16 where the CPU has it, else ORT].")
@click.option("--precision", type=click.Choice(["auto", "fp32", "bf16"]), default=None,
              help="CPU arithmetic: bf16 (OpenVINO) is about 2x faster where the CPU supports it [fp32].")
@click.option("--ensemble", is_flag=True, help="Self-ensemble (EDSR+): mean of 8 flips/rotations.")
@click.option("--strength", callback=parse_strength, default=None, metavar="auto|0..1",
              help="With MODEL photo: 0 = default model ... 1 = photo model [auto: per image, as process].")
@click.option("--weights", type=click.Choice(["ema", "raw"]), default=None,
              help="Training checkpoints: EMA weights (when present) or raw weights [ema].")
@click.option("--save", "save_dir", type=click.Path(path_type=Path), default=None, help="Write SR PNGs here.")
@click.option("--compare", "compare_path", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="Write a bicubic | model | HR crop picture (e.g. compare.png).")
@click.option("--max-pixels", type=click.IntRange(min=1), default=None,
              help="Refuse images with more pixels (decompression-bomb guard) [178956970].")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable results on stdout.")
@click.pass_context
def evaluate_command(ctx: click.Context, model: str | None, hr_dir: Path, lr_dir: Path | None,
                     scale: int | None, shave: int | None, boundary: str | None, device: str | None,
                     tile: int | None, overlap: int | None, backend: str | None, precision: str | None,
                     ensemble: bool, strength: float | str | None, weights: str | None,
                     save_dir: Path | None, compare_path: Path | None, max_pixels: int | None,
                     as_json: bool) -> None:
    """PSNR/SSIM of MODEL beside bicubic, the papers' protocol (Y and RGB, shave = scale).

    MODEL: an srpipe checkpoint or run directory, an EDSR-PyTorch .pt or BasicSR .pth file, an exported
    .onnx model, 'bicubic', 'default' or 'photo' (the bundled models of --scale). Left out: the model process
    would choose (the newest workspace export of --scale that is not an install check, else the bundled).
    """
    import dataclasses

    from srpipe.config import EvaluateConfig
    from srpipe.evaluate import evaluate

    given: dict[str, Any] = {"scale": scale, "shave": shave, "boundary": boundary, "device": device,
                             "tile": tile, "tile_overlap": overlap, "backend": backend,
                             "precision": precision, "ensemble": ensemble or None, "strength": strength,
                             "weights": weights, "max_pixels": max_pixels}
    cfg = dataclasses.replace(EvaluateConfig(), **{k: v for k, v in given.items() if v is not None})
    with progress_bars() as progress:
        result = evaluate(model, hr_dir, lr_dir=lr_dir, cfg=cfg, save_dir=save_dir, compare=compare_path,
                          progress=progress, workspace=ctx.obj)
    if as_json:
        emit_json(result.to_dict())
    else:
        render.print_evaluation(result)
    if result.failures:
        click.echo(f"srpipe: error: {len(result.failures)} image(s) could not be evaluated: "
                   + ", ".join(str(p) for p, _ in result.failures), err=True)
        ctx.exit(1)


# ---- commands: export, info, process (export + inference) ----


@cli.command("export")
@click.argument("source", required=False, type=click.Path(path_type=Path))
@click.option("-o", "--out", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="ONNX file to write (default: <workspace>/models/<run>-x<scale>[-fp16].onnx).")
@click.option("--fp16", is_flag=True, help="Half-precision weights and compute for GPUs (fp32 I/O kept).")
@click.option("--opset", type=click.IntRange(min=17), default=None, help="ONNX opset (default 17).")
@click.option("--weights", type=click.Choice(["ema", "raw"]), default="ema", show_default=True,
              help="The checkpoint's EMA weights (when present) or its raw weights.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable result on stdout.")
@click.pass_context
def export_command(ctx: click.Context, source: Path | None, out: Path | None, fp16: bool, opset: int | None,
                   weights: Literal["ema", "raw"], as_json: bool) -> None:
    """Export a run or checkpoint to ONNX, verified against PyTorch (docs/export.md).

    SOURCE: a run folder or checkpoint file (default: the best checkpoint of the latest run)."""
    import dataclasses

    from srpipe.config import ExportConfig
    from srpipe.export import export_checkpoint

    opsets = {"opset": opset} if opset else {}
    cfg = dataclasses.replace(ExportConfig(), fp16=fp16, weights=weights, **opsets)
    with progress_bars(not as_json) as progress:
        result = export_checkpoint(source, workspace=ctx.obj, out=out, cfg=cfg, progress=progress)
    if as_json:
        emit_json(result.to_dict())
    else:
        click.echo("\n".join(result.lines()))


@cli.command("info")
@click.argument("model")
@click.option("-s", "--scale", type=click.IntRange(2, 8), default=4, show_default=True,
              help="Scale of the bundled model when MODEL is 'default'.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable metadata on stdout.")
@click.pass_context
def info_command(ctx: click.Context, model: str, scale: int, as_json: bool) -> None:
    """Print what an ONNX model says about itself (scale, size, receptive field, overlap, PSNR, ...).

    MODEL: an .onnx file, or 'default' for the bundled model of --scale."""
    from srpipe.infer.measured import describe_model
    from srpipe.infer.session import find_model

    info = describe_model(find_model(scale, model=model, workspace=ctx.obj), ctx.obj.cache)
    if as_json:
        emit_json({"path": str(info.path), "srpipe": info.srpipe, **render.json_props(info.props),
                   "scale": info.scale, "tile_overlap": info.overlap,
                   "tile_overlap_source": info.overlap_source})
    else:
        render.print_info(info)


@cli.command("process")
@click.argument("source", type=click.Path(path_type=Path))
@click.option("-o", "--out", type=click.Path(path_type=Path, file_okay=False), required=True,
              help="Output folder; the input tree is mirrored under it (never inside the input).")
@click.option("-s", "--scale", type=click.IntRange(2, 8), default=None, help="Default: the model's, else 4.")
@click.option("-m", "--model", default=None, metavar="FILE|default|photo",
              help="ONNX model (default: newest export of the scale in the workspace, then the bundled one; "
                   "photo: the bundled photo model, for JPEGs and noisy photos).")
@click.option("--strength", callback=parse_strength, default=None, metavar="auto|0..1",
              help="With --model photo: 0 = default model ... 1 = photo model [auto: per photo].")
@click.option("--fidelity-fix", is_flag=True, default=None,
              help="Replace each output's low frequencies (colour) by the input's; reports before/after.")
@click.option("--tile", type=click.IntRange(0), default=None, help="LR tile side, 0 = whole image [384].")
@click.option("--overlap", type=click.IntRange(0), default=None, help="LR overlap [the model's measured].")
@click.option("--batch", type=click.IntRange(0), default=None, help="Tiles per call [auto].")
@click.option("--device", type=click.Choice(["auto", "cuda", "cpu"]), default=None, help="[auto]")
@click.option("--format", "fmt", type=click.Choice(["same", "png", "jpg", "webp", "tiff"]), default=None,
              help="Output format [same as the input].")
@click.option("--quality", type=click.IntRange(1, 100), default=None, help="JPEG/WebP quality [95].")
@click.option("--overwrite", is_flag=True, default=None, help="Redo files whose output exists.")
@click.option("--ensemble", is_flag=True, default=None, help="Average 8 flips/rotations (8x slower).")
@click.option("--threads", type=click.IntRange(0), default=None, help="Inference threads [all cores].")
@click.option("--backend", type=click.Choice(["auto", "onnxruntime", "openvino"]), default=None,
              help="What runs an ONNX model [auto: CUDA, else OpenVINO bf16 where the CPU has it, else ORT].")
@click.option("--precision", type=click.Choice(["auto", "fp32", "bf16"]), default=None,
              help="CPU arithmetic: bf16 (OpenVINO) is about 2x faster where the CPU supports it [auto].")
@click.option("--max-pixels", type=click.IntRange(min=1), default=None,
              help="Refuse images with more pixels (decompression-bomb guard) [178956970].")
@click.option("--memory-budget", type=click.IntRange(min=1), default=None, metavar="MIB",
              help="Refuse files whose image data would need more memory (estimated from the header) [2048].")
@click.option("--shard", default=None, metavar="K/N", help="Do shard K of N (0-based) [RANK/WORLD_SIZE].")
@click.option("--pipeline", default=None, help="Start from the [process] table of this pipeline.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable report on stdout.")
@click.pass_context
def process_command(ctx: click.Context, source: Path, out: Path, model: str | None, shard: str | None,
                    pipeline: str | None, as_json: bool, **options: Any) -> None:
    """Upscale an image or a folder tree through ONNX Runtime in blended tiles (docs/process.md).

    Exit 0: all files ok or skipped; 1: some failed (listed with reasons); 2: usage error."""
    import dataclasses

    from srpipe.config import ProcessConfig, load_pipeline
    from srpipe.infer.files import parse_shard
    from srpipe.infer.runner import process

    names = {"fmt": "format"}
    given = {names.get(k, k): v for k, v in options.items() if v is not None}
    cfg = dataclasses.replace(load_pipeline(pipeline).process if pipeline else ProcessConfig(), **given)
    with progress_bars(not as_json) as progress:
        report = process(source, out, cfg, workspace=ctx.obj, model=model, shard=parse_shard(shard),
                         progress=progress)
    if as_json:
        emit_json(report.to_dict())
    else:
        render.print_process(report)
    ctx.exit(1 if report.count("failed") else 0)


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="srpipe")


if __name__ == "__main__":  # pragma: no cover
    main()
