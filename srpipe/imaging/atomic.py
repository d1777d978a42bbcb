"""Atomic file replacement: readers see the old file or the complete new one, never half a file.

``atomic_path`` serves every writer in srpipe (images, HDF5 stores, checkpoints, ONNX models); it is
re-exported by ``srpipe.imaging.io``.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

from srpipe.errors import OutputError


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
