"""Reopening an HDF5 store that a killed writer left behind (``srpipe prepare``'s resume after ``kill -9``).

HDF5 marks a file "open for writing" in its superblock and refuses to open it again while the mark is
there; a killed writer never clears it. :func:`clear_open_for_write` does what ``h5clear -s`` does, only
for a superblock whose checksum verifies and only when no live process holds the file's lock.
:func:`opens_cleanly` then tries the file in a child process, because metadata left mid-write can be
inconsistent enough to crash the HDF5 library itself: a crash there costs a restart of the store, not
the caller.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from srpipe.errors import StoreError

log = logging.getLogger("srpipe.data.store")


_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


# lookup3's mix() on v = [a, b, c], one step per row (x, y, z, k): v[x] -= v[y]; v[x] ^= rot(v[y], k);
# v[y] += v[z]. Its final(), one step per row (x, y, k): v[x] ^= v[y]; v[x] -= rot(v[y], k).
_MIX = ((0, 2, 1, 4), (1, 0, 2, 6), (2, 1, 0, 8), (0, 2, 1, 16), (1, 0, 2, 19), (2, 1, 0, 4))
_FINAL = ((2, 1, 14), (0, 2, 11), (1, 0, 25), (2, 1, 16), (0, 2, 4), (1, 0, 14), (2, 1, 24))
_M = 0xFFFFFFFF


def _rotl(x: int, k: int) -> int:
    return ((x << k) | (x >> (32 - k))) & _M


def _add_words(v: list[int], block: bytes) -> None:
    for j in range(3):
        v[j] = (v[j] + int.from_bytes(block[4 * j : 4 * j + 4], "little")) & _M


def lookup3(data: bytes, initval: int = 0) -> int:
    """Bob Jenkins' lookup3 ``hashlittle``: the checksum HDF5 puts on its metadata (superblock v2+)."""
    v = [(0xDEADBEEF + len(data) + initval) & _M] * 3
    i = 0
    while len(data) - i > 12:
        _add_words(v, data[i : i + 12])
        for x, y, z, k in _MIX:
            v[x] = ((v[x] - v[y]) & _M) ^ _rotl(v[y], k)
            v[y] = (v[y] + v[z]) & _M
        i += 12
    if i == len(data):
        return v[2]
    _add_words(v, data[i:].ljust(12, b"\0"))
    for x, y, k in _FINAL:
        v[x] = ((v[x] ^ v[y]) - _rotl(v[y], k)) & _M
    return v[2]


def clear_open_for_write(path: Path) -> bool:
    """Clear the "open for writing" flags a killed writer leaves in an HDF5 file's superblock (what
    ``h5clear -s`` does), so that the file can be opened again; True when there was something to clear.

    HDF5 refuses to open such a file at all, which would turn every kill into a restart from scratch.
    Only a version 2/3 superblock at offset 0 whose checksum verifies is touched. Raises ``StoreError``
    while another process holds the file (HDF5 locks it with ``flock``): its flags are not stale.
    """
    with open(path, "r+b") as fh:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows: HDF5's own lock still refuses a live writer
            pass
        else:
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                raise StoreError(f"{path}: another srpipe prepare is writing this store") from exc
        head = fh.read(12 + 4 * 255 + 4)
        if len(head) < 12 or head[:8] != _HDF5_SIGNATURE or head[8] not in (2, 3) or head[11] == 0:
            return False
        end = 12 + 4 * head[9]  # flags byte, then 4 addresses of size_of_offsets bytes, then the checksum
        if len(head) < end + 4 or lookup3(head[:end]) != int.from_bytes(head[end : end + 4], "little"):
            return False
        cleared = head[:11] + b"\0" + head[12:end]
        fh.seek(0)
        fh.write(cleared + lookup3(cleared).to_bytes(4, "little"))
        fh.flush()
        os.fsync(fh.fileno())
    log.debug("%s: cleared the open-for-write flags of a killed writer", path)
    return True


_OPEN_CHECK = """
import sys
import h5py
with h5py.File(sys.argv[1], "r") as f:
    for name in f.attrs:
        f.attrs[name]
    def visit(name, obj):
        if isinstance(obj, h5py.Dataset):
            obj.shape
            for key in obj.attrs:
                obj.attrs[key]
    f.visititems(visit)
"""


def opens_cleanly(path: Path) -> bool:
    """Whether HDF5 opens ``path`` and reads its attributes and dataset headers without error, tried in a
    child process: the metadata a killed writer left can be inconsistent enough to crash the HDF5
    library itself, and a crash there must cost a restart, not this process."""
    import subprocess
    import sys

    try:
        done = subprocess.run([sys.executable, "-c", _OPEN_CHECK, str(path)], capture_output=True,
                              timeout=120, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    if done.returncode != 0:
        log.warning("%s: the leftover of a killed run does not open cleanly (%s)", path,
                    done.stderr.decode(errors="replace").strip().splitlines()[-1:] or
                    f"exit status {done.returncode}")
    return done.returncode == 0
