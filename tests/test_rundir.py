"""The workspace's latest run (``srpipe.train.rundir.latest_run``): the one rule ``srpipe train --resume``
and ``srpipe export`` share (docs/train.md, "The latest run")."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from srpipe.errors import InputError
from srpipe.train.rundir import RunDir, latest_run
from srpipe.workspace import Workspace

T0 = 1_750_000_000 * 10**9  # a fixed time in ns; the tests set every file's time explicitly


def _write(path: Path, at_s: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("")
    os.utime(path, ns=(T0 + at_s * 10**9,) * 2)


def test_latest_is_the_run_trained_last_not_the_one_started_last(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    assert latest_run(runs) is None  # no runs folder
    runs.mkdir()
    (runs / "notes").mkdir()  # neither config.toml nor a checkpoint: not a run
    assert latest_run(runs) is None
    old, new = RunDir(runs / "x4-20250101-090000"), RunDir(runs / "x4-20250301-090000")
    _write(old.config, 0)
    _write(old.last, 10)
    _write(new.config, 20)
    _write(new.last, 30)
    _write(new.best, 25)
    os.utime(old.root, ns=(T0 + 99 * 10**9,) * 2)  # a folder's own time does not count
    assert latest_run(runs) == new.root
    _write(old.last, 40)  # the older run resumed and saved again: it is the one being trained
    assert latest_run(runs) == old.root
    started = RunDir(runs / "smoke-20250401-090000")  # started (an install check counts), nothing saved
    _write(started.config, 50)
    assert latest_run(runs) == started.root


def test_a_tie_goes_to_the_later_name(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    first, second = RunDir(runs / "x2-20250101-090000"), RunDir(runs / "x2-20250101-090000-2")
    for run in (second, first):  # the same second, written in the other order
        _write(run.config, 0)
        _write(run.last, 5)
    assert latest_run(runs) == second.root


def test_resume_takes_the_latest_run_and_refuses_one_without_last_pt(tmp_path: Path) -> None:
    from srpipe.train.run import find_resume_dir

    ws = Workspace(tmp_path / "ws")
    with pytest.raises(InputError, match="no run with a checkpoint to resume"):
        find_resume_dir(True, ws)
    done = RunDir(ws.runs / "x4-20250101-090000")
    _write(done.config, 0)
    _write(done.last, 10)
    assert find_resume_dir(True, ws) == done.root
    crashed = RunDir(ws.runs / "x4-20250301-090000")
    _write(crashed.config, 20)
    _write(crashed.best, 30)  # validated, then killed before checkpoints/last.pt was written
    with pytest.raises(InputError, match=r"x4-20250301-090000: the latest run has no checkpoints/last\.pt"):
        find_resume_dir(True, ws)
    assert find_resume_dir(done.root, ws) == done.root  # named explicitly, an older run still resumes
