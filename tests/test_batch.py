"""``srpipe.batch``: the one walker, the one output planner and the one failure reason."""

from __future__ import annotations

import errno
import os
from pathlib import Path, PurePosixPath
from typing import Any

import pytest

from srpipe.batch import IMAGE_SUFFIXES, Outcome, failure_reason, plan_outputs, walk
from srpipe.errors import ImageDecodeError, InputError, OutputError
from srpipe.imaging import formats


def touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")
    return path


def rels(root: Path, **kw: Any) -> list[str]:
    return [str(f.rel) for f in walk(root, **kw).files]


def test_the_one_suffix_list_is_the_imaging_one() -> None:
    assert IMAGE_SUFFIXES is formats.IMAGE_SUFFIXES


def test_walk_keeps_images_in_any_case_skips_hidden_and_sorts_by_relative_path(tmp_path: Path) -> None:
    for rel in ["b.PNG", "a.png", "a/z.jpg", "a-b.webp", "c.TIFF", "d.bmp", "e.jpeg", "notes.txt", "noext",
                ".hidden.png", ".git/x.png", "sub/.tmp.png", "sub/.cache/y.png", "sub/deep/ok.tif"]:
        touch(tmp_path / rel)
    assert rels(tmp_path) == ["a-b.webp", "a.png", "a/z.jpg", "b.PNG", "c.TIFF", "d.bmp", "e.jpeg",
                              "sub/deep/ok.tif"]
    assert rels(tmp_path, recursive=False) == ["a-b.webp", "a.png", "b.PNG", "c.TIFF", "d.bmp", "e.jpeg"]
    assert rels(tmp_path, suffixes=(".PNG",)) == ["a.png", "b.PNG"]
    found = walk(tmp_path / "a.png")  # a file is taken as given, whatever its name
    assert [(f.path, f.rel) for f in found.files] == [(tmp_path / "a.png", PurePosixPath("a.png"))]
    assert [f.path for f in walk(tmp_path / "notes.txt").files] == [tmp_path / "notes.txt"]


def test_walk_never_follows_symlinked_folders_so_it_cannot_loop_or_leave_the_tree(tmp_path: Path) -> None:
    root, outside = tmp_path / "in", tmp_path / "outside"
    touch(root / "a.png")
    touch(root / "sub" / "b.png")
    touch(outside / "secret.png")
    (root / "loop").symlink_to(root, target_is_directory=True)  # a loop back to the root
    (root / "sub" / "up").symlink_to(root / "sub", target_is_directory=True)  # a loop onto itself
    (root / "away").symlink_to(outside, target_is_directory=True)  # leaves the tree
    (root / "linked.png").symlink_to(outside / "secret.png")  # a symlinked file is an input
    (root / "broken.png").symlink_to(tmp_path / "missing.png")  # kept: it fails when read, with a reason
    (root / "x.png").symlink_to(root / "y.png")
    (root / "y.png").symlink_to(root / "x.png")  # a file symlink loop: kept, fails when read
    found = walk(root)
    assert [str(f.rel) for f in found.files] == ["a.png", "broken.png", "linked.png", "sub/b.png", "x.png",
                                                 "y.png"]
    assert found.unreadable == ()
    with pytest.raises(OSError) as info:
        (root / "x.png").read_bytes()
    assert failure_reason(info.value, root / "x.png") == "Too many levels of symbolic links"
    root_link = tmp_path / "link-to-in"  # the folder given may itself be a symlink
    root_link.symlink_to(root, target_is_directory=True)
    assert rels(root_link) == rels(root)


def refuse_listing(monkeypatch: pytest.MonkeyPatch, folder: Path) -> None:
    """Make ``folder`` unlistable as ``chmod 000`` does for a non-root user (tests run as root)."""
    real = os.scandir

    def scandir(path: Any = ".") -> Any:
        if os.fspath(path) == str(folder):
            raise PermissionError(errno.EACCES, "Permission denied", os.fspath(path))
        return real(path)

    monkeypatch.setattr(os, "scandir", scandir)


def test_an_unreadable_subfolder_is_reported_with_the_system_reason(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    touch(tmp_path / "a.png")
    touch(tmp_path / "locked" / "b.png")
    touch(tmp_path / "z" / "c.png")
    refuse_listing(monkeypatch, tmp_path / "locked")
    found = walk(tmp_path)
    assert [str(f.rel) for f in found.files] == ["a.png", "z/c.png"]
    assert found.unreadable == (Outcome(tmp_path / "locked", "failed",
                                        "cannot list the folder: Permission denied"),)
    refuse_listing(monkeypatch, tmp_path)
    with pytest.raises(InputError, match="cannot list the folder: Permission denied"):
        walk(tmp_path)
    with pytest.raises(InputError, match="no such file or folder"):
        walk(tmp_path / "missing")


def plan(names: list[str], suffix: str | None = None) -> list[str]:
    return [str(p) for p in plan_outputs([PurePosixPath(n) for n in names], suffix)]


def test_plan_mirrors_the_tree_and_changes_only_the_suffix() -> None:
    assert plan(["a/b/photo.jpg", "x.PNG", "y.tif"], ".png") == ["a/b/photo.png", "x.png", "y.png"]
    assert plan(["a/b/photo.jpg", "x.PNG"]) == ["a/b/photo.jpg", "x.PNG"]
    assert plan([]) == []


def test_plan_never_gives_two_inputs_one_output() -> None:
    # a file whose name does not change keeps it; another format keeps its suffix in the name
    assert plan(["a.jpg", "a.png"], ".png") == ["a.jpg.png", "a.png"]
    assert plan(["a.jpg", "a.jpeg", "a.png", "a.webp"], ".png") == [
        "a.jpg.png", "a.jpeg.png", "a.png", "a.webp.png"]
    # compared case-insensitively (macOS, Windows); same-format clashes get a counter
    assert plan(["A.PNG", "a.jpg", "a.png"], ".png") == ["A-2.png", "a.jpg.png", "a.png"]
    assert plan(["A.png", "a.png"]) == ["A.png", "a-2.png"]
    # a counter never takes a name another file keeps
    assert plan(["a-2.png", "A.png", "a.png"]) == ["a-2.png", "A.png", "a-3.png"]
    # the jpg would take a.jpg.png, which a real file keeps: it goes on to a counter
    assert plan(["a.jpg", "a.jpg.png", "a.png"], ".png") == ["a-2.png", "a.jpg.png", "a.png"]
    # folders are part of the name: the same file name in two folders is no clash
    assert plan(["x/a.jpg", "y/a.png"], ".png") == ["x/a.png", "y/a.png"]


def test_plan_does_not_depend_on_the_order_of_its_input() -> None:
    names = ["a.jpg", "A.PNG", "a.png", "b/a.jpg", "b/a.tif", "a-2.png", "c.webp"]
    first = dict(zip(names, plan(names, ".png"), strict=True))
    again = dict(zip(reversed(names), plan(list(reversed(names)), ".png"), strict=True))
    assert first == again and len({v.casefold() for v in first.values()}) == len(names)


def test_failure_reason_is_one_line_without_the_files_own_path(tmp_path: Path) -> None:
    src = tmp_path / "in" / "a.png"
    assert failure_reason(ImageDecodeError(src, "not a valid PNG file"), src) == "not a valid PNG file"
    other = tmp_path / "out" / "a.png"
    assert failure_reason(OutputError(f"{other}: is a symlink"), src) == f"{other}: is a symlink"
    assert failure_reason(ImageDecodeError(src, "bad"), None) == f"{src}: bad"
    assert failure_reason(ValueError("image of 3x9 pixels is smaller than the scale 4"), src) == \
        "image of 3x9 pixels is smaller than the scale 4"
    denied = PermissionError(errno.EACCES, "Permission denied", str(src))
    assert failure_reason(denied, src) == "Permission denied"
    assert failure_reason(NotADirectoryError(errno.ENOTDIR, "Not a directory", str(other)), src) == \
        f"Not a directory: {other}"
    assert failure_reason(RuntimeError("two\nlines"), src) == "RuntimeError: two lines"
    assert failure_reason(KeyError(), src) == "KeyError"
    assert failure_reason(OSError("plain"), src) == "plain"
