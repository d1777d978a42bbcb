from __future__ import annotations

import subprocess
import sys

from click.testing import CliRunner

from srpipe import __version__
from srpipe.cli import cli


def test_version_and_help() -> None:
    runner = CliRunner()
    result = runner.invoke(cli, ["--version"])
    assert result.exit_code == 0 and __version__ in result.output
    result = runner.invoke(cli, ["--help"], prog_name="srpipe")
    assert result.exit_code == 0 and "Usage: srpipe" in result.output


def test_help_does_not_import_heavy_libraries() -> None:
    code = ("import sys; from srpipe.cli import cli\n"
            "try:\n    cli(['--help'], prog_name='srpipe')\nexcept SystemExit:\n    pass\n"
            "heavy = [m for m in ('torch', 'onnxruntime', 'cv2', 'h5py', 'onnx') if m in sys.modules]\n"
            "print('HEAVY', heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "HEAVY []" in out
