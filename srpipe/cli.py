"""Command-line interface: parse options, build a config, call one library function, render.

Heavy libraries (torch, onnxruntime, cv2, h5py) are imported inside commands so that
``srpipe --help`` and ``srpipe --version`` stay instant. Library errors (``SrpipeError``) become a
one-line ``srpipe: error: ...`` on stderr and the error's exit code. Logs and progress bars go to one
stderr console; stdout carries results only (``--json`` where a machine reads them).
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click

from srpipe import __version__
from srpipe.errors import SrpipeError
from srpipe.progress import Progress, ProgressFn

log = logging.getLogger("srpipe")


def _console() -> Any:
    from rich.console import Console

    return Console(stderr=True)


@contextlib.contextmanager
def progress_bars(enabled: bool = True) -> Iterator[ProgressFn]:
    """Yield a ``ProgressFn`` that draws one rich bar per ``Progress.task`` on stderr."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[info]}"))
    bars = {}
    with contextlib.ExitStack() as stack:
        if not enabled:
            yield lambda p: None
            return
        from rich.progress import Progress as RichProgress

        rich = stack.enter_context(RichProgress(*columns, console=_console(), transient=False))

        def update(p: Progress) -> None:
            if p.task not in bars:
                bars[p.task] = rich.add_task(p.task, total=p.total, info=p.info)
            rich.update(bars[p.task], completed=p.done, total=p.total, info=p.info)

        yield update


def emit_json(payload: Any) -> None:
    """Write a machine-readable result to stdout."""
    click.echo(json.dumps(payload, indent=2, default=str))


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
    handler = RichHandler(console=_console(), show_path=False, show_time=verbose > 0)
    logging.basicConfig(level=level, format="%(message)s", handlers=[handler], force=True)
    from srpipe.workspace import Workspace

    ctx.obj = Workspace.resolve(workspace)


# ---- commands: prepare, downscale (imaging + data) ----


# ---- commands: train, evaluate (model + metrics + training) ----


# ---- commands: export, info, process (export + inference) ----


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="srpipe")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
