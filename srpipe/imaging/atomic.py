"""Atomic file replacement: readers see the old file or the complete new one, never half a file.

``atomic_path`` serves every writer in srpipe (images, HDF5 stores, checkpoints, ONNX models); it is
re-exported by ``srpipe.imaging.io``.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from srpipe.errors import InputError, OutputError


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success fsync it and ``os.replace`` it onto ``path``.

    The temporary file (``.<name>.<random>.tmp``, created empty with the usual permissions so folder
    walkers can skip dot-files) is deleted if the block raises, and ``path`` is then left as it was:
    no reader ever sees half a file. Works for any writer that takes a path (Pillow, h5py,
    ``torch.save``, ONNX). Raises ``OutputError`` when the folder is not writable or the rename fails.
    """
    path = Path(path)
    tmp = _reserve_temp(path)
    try:
        yield tmp
        with open(tmp, "r+b") as f:
            os.fsync(f.fileno())
        try:
            os.replace(tmp, path)
        except OSError as exc:
            raise OutputError(f"{path}: cannot replace it: {exc.strerror or exc}") from exc
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    with contextlib.suppress(OSError):  # make the rename itself durable (POSIX)
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _reserve_temp(path: Path) -> Path:
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    for _ in range(100):
        tmp = path.with_name(f".{path.name[:120]}.{secrets.token_hex(4)}.tmp")
        try:
            os.close(os.open(tmp, flags, 0o666))
            return tmp
        except FileExistsError:
            continue
        except OSError as exc:
            raise OutputError(f"{path.parent}: cannot create a file there: {exc.strerror or exc}") from exc
    raise OutputError(f"{path.parent}: cannot create a unique temporary file")


def check_writable_folder(folder: str | Path, what: str = "--out") -> None:
    """Raise ``OutputError`` unless ``folder`` is, or could be created as, a folder this process can
    write to; creates nothing that stays. For commands to call before any work, so that a read-only or
    misspelt destination fails once, up front, instead of once per file after all the computing.

    The nearest existing ancestor must be a folder (not a file) that grants write access and in which
    a file can really be created and removed: permission bits alone miss read-only mounts and do not
    bind root.
    """
    folder = Path(folder)
    existing = folder
    while not existing.exists() and not existing.is_symlink() and existing.parent != existing:
        existing = existing.parent
    if existing.is_symlink() and not existing.exists():
        raise OutputError(f"{what} {folder}: {existing} is a broken symlink")
    if not existing.is_dir():
        where = "is a file" if existing == folder else f"cannot be created: {existing} is a file"
        raise OutputError(f"{what} {folder}: {where}, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        place = "" if existing == folder else f" (it would be created in {existing})"
        raise OutputError(f"{what} {folder}: not writable{place}: permission denied")
    try:
        fd, probe = tempfile.mkstemp(prefix=".srpipe-write-test-", dir=existing)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        place = "" if existing == folder else f" (nothing can be created in {existing})"
        raise OutputError(f"{what} {folder}: not writable{place}: {exc.strerror or exc}") from exc


def listing_errors(root: Path, unreadable: list[tuple[Path, str]] | None) -> Callable[[OSError], None]:
    """An ``os.walk(root, onerror=...)`` handler: a subfolder that cannot be listed is appended to
    ``unreadable`` as ``(folder, reason)`` and the walk goes on; ``root`` itself, or any folder when
    ``unreadable`` is None, raises ``InputError``."""
    def onerror(exc: OSError) -> None:
        folder = Path(exc.filename) if exc.filename else root
        reason = f"cannot list the folder: {exc.strerror or exc}"
        if unreadable is None or folder == root:
            raise InputError(f"{folder}: {reason}") from exc
        unreadable.append((folder, reason))

    return onerror
