from __future__ import annotations

import json
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


def test_an_early_failure_prints_exactly_one_line(tmp_path) -> None:
    result = CliRunner().invoke(cli, ["--workspace", str(tmp_path), "train"])
    assert result.exit_code == 1
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("srpipe: error: ") and "srpipe prepare" in lines[0]


def test_quiet_turns_progress_bars_off(tmp_path, rng) -> None:
    from conftest import smooth_image

    from srpipe.imaging.io import write_image

    (tmp_path / "hr").mkdir()
    write_image(tmp_path / "hr" / "a.png", smooth_image(rng, 24, 20))
    args = ["evaluate", "bicubic", "--hr", str(tmp_path / "hr"), "--scale", "2", "--json"]
    loud = CliRunner().invoke(cli, args)
    quiet = CliRunner().invoke(cli, ["-q", *args])
    assert loud.exit_code == quiet.exit_code == 0
    assert "evaluate" in loud.stderr and quiet.stderr == ""
    assert json.loads(loud.stdout)["mean"] == json.loads(quiet.stdout)["mean"]


def test_evaluate_takes_short_scale_and_max_pixels(tmp_path, rng) -> None:
    from conftest import smooth_image

    from srpipe.imaging.io import write_image

    (tmp_path / "hr").mkdir()
    write_image(tmp_path / "hr" / "a.png", smooth_image(rng, 24, 20))
    args = ["--workspace", str(tmp_path / "ws"), "evaluate", "bicubic", "--hr", str(tmp_path / "hr"),
            "-s", "3"]
    result = CliRunner().invoke(cli, [*args, "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["scale"] == 3
    result = CliRunner().invoke(cli, [*args, "--max-pixels", "400", "--json"])
    assert result.exit_code == 1 and "pass --max-pixels 480 if you trust this file" in result.output


def test_info_json_gives_numbers_as_numbers(tmp_path) -> None:
    result = CliRunner().invoke(cli, ["--workspace", str(tmp_path), "info", "default", "-s", "2", "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["scale"] == 2 and isinstance(info["n_resblocks"], int) and isinstance(info["parameters"], int)
    assert isinstance(info["mflop_per_lr_pixel"], float) and isinstance(info["tile_overlap"], int)
    assert isinstance(info["architecture"], str) and isinstance(info["srpipe_version"], str)
