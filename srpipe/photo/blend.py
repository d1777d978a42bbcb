"""Weight interpolation between two ONNX models of one architecture: the ``--strength`` models.

Contract of :func:`blend`: the ONNX file whose every floating-point initializer is
``(1 − s) · a + s · b`` (computed in float64, stored in the initializer's own dtype) and whose graph,
other initializers and metadata are ``b``'s, plus ``srpipe.strength``. ``s`` 0 and 1 return ``a`` and
``b`` themselves. The two models must have the same graph (node types in order) and the same
initializers (names, shapes, dtypes): ``UsageError`` naming the first difference otherwise. Blends are
written once, atomically, to ``<cache_dir>/blend/<sha a>-<sha b>-s<strength>.onnx`` and reused.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

from srpipe.digest import file_sha256
from srpipe.errors import UsageError

STRENGTH_KEY = "srpipe.strength"


def blend_path(a: Path, b: Path, strength: float, cache_dir: Path) -> Path:
    return cache_dir / "blend" / f"{file_sha256(a)[:16]}-{file_sha256(b)[:16]}-s{strength:.3f}.onnx"


def blend(a: Path, b: Path, strength: float, cache_dir: Path) -> Path:
    """The model ``strength`` of the way from ``a`` to ``b`` (module docstring)."""
    if not 0.0 <= strength <= 1.0:
        raise UsageError(f"strength must be in [0, 1], got {strength}")
    if strength == 0.0:
        return a
    if strength == 1.0:
        return b
    target = blend_path(a, b, strength, cache_dir)
    if target.is_file():
        return target
    import onnx
    from onnx import numpy_helper

    ma, mb = onnx.load(str(a)), onnx.load(str(b))
    _check_same_graph(a, b, ma, mb)
    weights_a = {t.name: t for t in ma.graph.initializer}
    for tb in mb.graph.initializer:
        ta = weights_a.get(tb.name)
        wa = numpy_helper.to_array(ta) if ta is not None else None
        wb = numpy_helper.to_array(tb)
        if wa is None or wa.shape != wb.shape or wa.dtype != wb.dtype:
            raise UsageError(f"{a} and {b} differ in weight '{tb.name}' ({_desc(wa)} vs {_desc(wb)}): "
                             "--strength needs two models of one architecture")
        if np.issubdtype(wb.dtype, np.floating):
            mixed = (1 - strength) * wa.astype(np.float64) + strength * wb.astype(np.float64)
            tb.CopyFrom(numpy_helper.from_array(mixed.astype(wb.dtype), tb.name))
    meta = {p.key: p for p in mb.metadata_props}
    if STRENGTH_KEY in meta:
        meta[STRENGTH_KEY].value = f"{strength:g}"
    else:
        mb.metadata_props.add(key=STRENGTH_KEY, value=f"{strength:g}")
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".blend-", suffix=".onnx")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(mb.SerializeToString())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def _desc(w: np.ndarray | None) -> str:
    return "missing" if w is None else f"{w.dtype} {list(w.shape)}"


def _check_same_graph(a: Path, b: Path, ma: object, mb: object) -> None:
    ops_a = [n.op_type for n in ma.graph.node]  # type: ignore[attr-defined]
    ops_b = [n.op_type for n in mb.graph.node]  # type: ignore[attr-defined]
    if ops_a != ops_b:
        at = next((i for i, (x, y) in enumerate(zip(ops_a, ops_b, strict=False)) if x != y),
                  min(len(ops_a), len(ops_b)))
        raise UsageError(f"{a} and {b} have different graphs ({len(ops_a)} vs {len(ops_b)} nodes, first "
                         f"difference at node {at}): --strength needs two models of one architecture")
