"""The command-line options of each stage command, and what every command does with its report.

Each ``*_OPTIONS`` decorator carries one command's arguments and options, in ``--help`` order. Option
destinations are the stage config's field names (``--overlap`` of evaluate is ``tile_overlap``,
``--format`` is ``format``), and options a user did not give are None, so a command builds its config
with one call, :func:`srpipe.config.configure` (the pipeline's table or the defaults, then ``--set``,
then the options given). :func:`conclude` renders the stage's report and exits with its ``exit_code``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, TypeVar

import click

from srpipe.console import emit_json

F = TypeVar("F", bound=Callable[..., Any])
R = TypeVar("R", bound="StageReport")


class StageReport(Protocol):
    """What every stage's entry function returns (``PrepareReport``, ``DownscaleReport``, ...)."""

    @property
    def exit_code(self) -> int: ...

    def to_dict(self) -> Any: ...


def conclude(ctx: click.Context, report: R, as_json: bool, render: Callable[..., None]) -> None:
    """``--json``: the report's ``to_dict()`` on stdout; then ``render(report, as_json=...)`` (the
    people's view, and failures on stderr); exit with ``report.exit_code``."""
    if as_json:
        emit_json(report.to_dict())
    render(report, as_json=as_json)
    ctx.exit(report.exit_code)


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


def options(*decorators: Callable[[Any], Any]) -> Callable[[F], F]:
    """One decorator applying ``decorators`` so that they appear in ``--help`` in the order given."""

    def apply(f: F) -> F:
        for decorator in reversed(decorators):
            f = decorator(f)
        return f

    return apply


def _path(**kwargs: Any) -> click.Path:
    return click.Path(path_type=Path, **kwargs)


JSON = click.option("--json", "as_json", is_flag=True, help="Machine-readable result on stdout.")
MAX_PIXELS = click.option("--max-pixels", type=click.IntRange(min=1), default=None,
                          help="Refuse images with more pixels (decompression-bomb guard) [178956970].")
DEVICE = click.option("--device", type=click.Choice(["auto", "cuda", "cpu"]), default=None)
BACKEND = click.option("--backend", type=click.Choice(["auto", "onnxruntime", "openvino"]), default=None,
                       help="What runs an ONNX model [auto: CUDA, else OpenVINO bf16 where the CPU has it, "
                            "else ORT].")


def _precision(default: str) -> Callable[[Any], Any]:
    return click.option("--precision", type=click.Choice(["auto", "fp32", "bf16"]), default=None,
                        help="CPU arithmetic: bf16 (OpenVINO) is about 2x faster where the CPU supports it "
                             f"[{default}].")


PREPARE_OPTIONS = options(
    click.argument("root", type=_path()),
    click.option("-o", "--out", type=_path(), default=None,
                 help="Folder for train.h5 / valid.h5 (default: the workspace's stores/)."),
    click.option("--pipeline", default=None, help="Take the [prepare] table of this pipeline name or file."),
    click.option("--set", "assignments", multiple=True, metavar="KEY=VALUE",
                 help="Override a setting: scales=[2,4], hr_size=240, stride=120, boundary=replicate, "
                      "valid_count=20, workers=0, max_pixels=..., seed=1."),
    click.option("--force", is_flag=True, help="Rebuild stores made with other settings or inputs."),
    MAX_PIXELS,
    click.option("--json", "as_json", is_flag=True, help="Machine-readable summary on stdout."),
)

DOWNSCALE_OPTIONS = options(
    click.argument("src", type=_path()),
    click.option("-s", "--scale", type=click.IntRange(min=2), required=True,
                 help="Shrink factor: 2, 3, 4, ..."),
    click.option("-o", "--out", "dst", type=_path(), required=True,
                 help="Output folder (or a .png file when SRC is one image); never inside SRC."),
    click.option("--boundary", type=click.Choice(["mirror", "replicate"]), default="mirror",
                 show_default=True,
                 help="mirror = MATLAB imresize (EDSR benchmark files); replicate = SelfExSR Set14 files."),
    click.option("--overwrite", is_flag=True, help="Replace existing outputs (default: skip them)."),
    click.option("-j", "--workers", type=click.IntRange(min=0), default=0, show_default=True,
                 help="Image processes; 0 = one per CPU core, 1 = no extra process."),
    MAX_PIXELS,
    JSON,
)

TRAIN_OPTIONS = options(
    click.option("-p", "--pipeline", default=None, metavar="NAME|FILE",
                 help="Recipe in pipelines/ or a TOML file (default: edsr-baseline-x4)."),
    click.option("--set", "assignments", multiple=True, metavar="KEY=VALUE",
                 help="Override a [train] setting: iterations=1000, lr=2e-4, model.n_feats=32, ..."),
    click.option("--resume", is_flag=False, flag_value="", default=None, metavar="[RUN_DIR]",
                 help="Continue a run exactly where it stopped (no value: the latest run)."),
    click.option("--run-dir", type=_path(file_okay=False), default=None,
                 help="Folder of a new run (default: <workspace>/runs/<pipeline>-<YYYYmmdd-HHMMSS>)."),
    click.option("--json", "as_json", is_flag=True, help="Machine-readable summary on stdout."),
)

EVALUATE_OPTIONS = options(
    click.argument("model", required=False, default=None),
    click.option("--hr", "hr_dir", required=True, type=_path(file_okay=False, exists=True),
                 help="Folder of HR (ground-truth) images."),
    click.option("--lr", "lr_dir", type=_path(file_okay=False, exists=True), default=None,
                 help="Folder of LR images paired by name (<name>x<s>, _HR->_LR, or the same name). "
                      "Default: made from HR with MATLAB bicubic."),
    click.option("-s", "--scale", type=click.IntRange(2, 8), default=None,
                 help="Scale (default: the model's)."),
    click.option("--shave", type=click.IntRange(0), default=None,
                 help="Border px ignored (default: the scale)."),
    click.option("--boundary", type=click.Choice(["mirror", "replicate"]), default=None,
                 help="imresize boundary when generating LR (default mirror, as MATLAB)."),
    DEVICE,
    click.option("--tile", type=click.IntRange(0), default=None, help="LR tile side (0 = whole image)."),
    click.option("--overlap", "tile_overlap", type=click.IntRange(0), default=None,
                 help="LR tile overlap [the model's]."),
    BACKEND,
    _precision("fp32"),
    click.option("--ensemble", is_flag=True, default=None,
                 help="Self-ensemble (EDSR+): mean of 8 flips/rotations."),
    click.option("--strength", callback=parse_strength, default=None, metavar="auto|0..1",
                 help="With MODEL photo: 0 = default model ... 1 = photo model [auto: per image, as "
                      "process]."),
    click.option("--weights", type=click.Choice(["ema", "raw"]), default=None,
                 help="Training checkpoints: EMA weights (when present) or raw weights [ema]."),
    click.option("--save", "save_dir", type=_path(), default=None, help="Write SR PNGs here."),
    click.option("--compare", "compare_path", type=_path(dir_okay=False), default=None,
                 help="Write a bicubic | model | HR crop picture (e.g. compare.png)."),
    MAX_PIXELS,
    click.option("--json", "as_json", is_flag=True, help="Machine-readable results on stdout."),
)

EXPORT_OPTIONS = options(
    click.argument("source", required=False, type=_path()),
    click.option("-o", "--out", type=_path(dir_okay=False), default=None,
                 help="ONNX file to write (default: <workspace>/models/<run>-x<scale>[-fp16].onnx)."),
    click.option("--fp16/--no-fp16", default=None,
                 help="Half-precision weights and compute for GPUs (fp32 I/O kept) [the run's [export] "
                      "table, else no]."),
    click.option("--opset", type=click.IntRange(min=17), default=None,
                 help="ONNX opset [the run's [export] table, else 17]."),
    click.option("--weights", type=click.Choice(["ema", "raw"]), default=None,
                 help="The checkpoint's EMA weights (when present) or its raw weights [the run's [export] "
                      "table, else ema]."),
    JSON,
)

INFO_OPTIONS = options(
    click.argument("model"),
    click.option("-s", "--scale", type=click.IntRange(2, 8), default=4, show_default=True,
                 help="Scale of the bundled model when MODEL is 'default'."),
    click.option("--json", "as_json", is_flag=True, help="Machine-readable metadata on stdout."),
)

PROCESS_OPTIONS = options(
    click.argument("source", type=_path()),
    click.option("-o", "--out", type=_path(file_okay=False), required=True,
                 help="Output folder; the input tree is mirrored under it (never inside the input)."),
    click.option("-s", "--scale", type=click.IntRange(2, 8), default=None,
                 help="Default: the model's, else 4."),
    click.option("-m", "--model", default=None, metavar="FILE|default|photo",
                 help="ONNX model (default: newest export of the scale in the workspace, then the bundled "
                      "one; photo: the bundled photo model, for JPEGs and noisy photos)."),
    click.option("--strength", callback=parse_strength, default=None, metavar="auto|0..1",
                 help="With --model photo: 0 = default model ... 1 = photo model [auto: per photo]."),
    click.option("--fidelity-fix", is_flag=True, default=None,
                 help="Replace each output's low frequencies (colour) by the input's; reports before/after."),
    click.option("--tile", type=click.IntRange(0), default=None, help="LR tile side, 0 = whole image [384]."),
    click.option("--overlap", type=click.IntRange(0), default=None,
                 help="LR overlap [the model's measured]."),
    click.option("--batch", type=click.IntRange(0), default=None, help="Tiles per call [auto]."),
    click.option("--device", type=click.Choice(["auto", "cuda", "cpu"]), default=None, help="[auto]"),
    click.option("--format", "format", type=click.Choice(["same", "png", "jpg", "webp", "tiff"]),
                 default=None,
                 help="Output format [same as the input]."),
    click.option("--quality", type=click.IntRange(1, 100), default=None, help="JPEG/WebP quality [95]."),
    click.option("--overwrite", is_flag=True, default=None, help="Redo files whose output exists."),
    click.option("--ensemble", is_flag=True, default=None, help="Average 8 flips/rotations (8x slower)."),
    click.option("--threads", type=click.IntRange(0), default=None, help="Inference threads [all cores]."),
    BACKEND,
    _precision("auto"),
    MAX_PIXELS,
    click.option("--memory-budget", type=click.IntRange(min=1), default=None, metavar="MIB",
                 help="Refuse files whose image data would need more memory (estimated from the header) "
                      "[2048]."),
    click.option("--shard", default=None, metavar="K/N", help="Do shard K of N (0-based) [RANK/WORLD_SIZE]."),
    click.option("--pipeline", default=None, help="Start from the [process] table of this pipeline."),
    click.option("--json", "as_json", is_flag=True, help="Machine-readable report on stdout."),
)
