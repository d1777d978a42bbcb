"""The model contract: what ``srpipe export`` writes, ``srpipe info`` prints and ``srpipe process`` reads.

An srpipe model is an ONNX graph with one input ``INPUT_NAME`` and one output ``OUTPUT_NAME``: NCHW
float32 RGB in [0, 1], dynamic batch/height/width, output ``scale`` × the input. Its
``metadata_props`` hold the keys of :class:`MetaKey` as strings (docs/export.md).

Models from other exporters ("foreign" models) are welcome: no metadata, or only some keys (a lone
``scale`` is common). :func:`describe` reads what the file says without running it; what it cannot
say (scale when absent, tile overlap) is measured by ``srpipe.infer.measured``. This module depends on
nothing but ``onnx`` (imported lazily), so any part of srpipe may import it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

from srpipe.errors import InputError

INPUT_NAME, OUTPUT_NAME = "input", "output"
OverlapSource = Literal["metadata", "measured", "given", "unknown"]


class MetaKey:
    """``metadata_props`` keys written by ``srpipe export``."""

    SCALE = "scale"
    ARCH = "architecture"
    BLOCKS = "n_resblocks"
    FEATS = "n_feats"
    RES_SCALE = "res_scale"
    PARAMS = "parameters"
    MFLOP = "mflop_per_lr_pixel"
    RF_THEORY = "receptive_radius_theoretical"
    RF_EFFECTIVE = "receptive_radius_effective"
    RF_PROFILE = "receptive_error_profile"
    OVERLAP = "tile_overlap"
    RECIPE = "recipe_hash"
    ITERATIONS = "trained_iterations"
    WEIGHTS = "weights"
    PSNR = "valid_psnr"
    VERSION = "srpipe_version"
    PRECISION = "precision"
    PARITY = "parity_max_abs_diff"
    SOURCE = "source"
    GRAPH = "graph_rewrite"
    PIPELINE = "pipeline"  # the training recipe's name ("" when not known)
    INSTALL_CHECK = "install_check"  # "true": the recipe only checks an install (smoke); "" = unknown


@dataclass(frozen=True)
class ModelDescriptor:
    """What is known about one model file.

    ``scale`` 0 means "not stated" (to be probed); ``overlap`` 0 with ``overlap_source`` "unknown"
    means "not stated" (to be measured). ``srpipe`` is True when the file carries srpipe's own metadata
    (written by ``srpipe export``); a foreign model that states only its scale has ``srpipe`` False and
    that scale. ``props`` is the raw metadata, strings as stored.
    """

    path: Path
    scale: int
    overlap: int
    overlap_source: OverlapSource = "unknown"
    precision: str = "fp32"
    srpipe: bool = False
    props: dict[str, str] = field(default_factory=dict)

    def with_overlap(self, overlap: int, source: OverlapSource) -> ModelDescriptor:
        return replace(self, overlap=overlap, overlap_source=source)

    @property
    def kind(self) -> str:
        """"srpipe" or "foreign" (for reports)."""
        return "srpipe" if self.srpipe else "foreign"


def _int_prop(path: Path, props: dict[str, str], key: str, *, minimum: int) -> int:
    try:
        value = int(props[key])
    except ValueError as exc:
        raise InputError(f"{path}: metadata '{key}' is {props[key]!r}, not an integer; fix or remove "
                         "the key (or re-export the model)") from exc
    if value < minimum:
        raise InputError(f"{path}: metadata '{key}' is {value}; it must be at least {minimum}")
    return value


def describe_props(path: Path, props: dict[str, str]) -> ModelDescriptor:
    """The descriptor a model's metadata gives; ``InputError`` naming the file and key on bad values.

    Full srpipe metadata is recognised by ``srpipe_version``; any other file is foreign, and of its keys
    only ``scale`` (and ``tile_overlap`` when present) are used.
    """
    props = dict(props)
    scale = _int_prop(path, props, MetaKey.SCALE, minimum=2) if MetaKey.SCALE in props else 0
    srpipe = MetaKey.VERSION in props and MetaKey.OVERLAP in props
    desc = ModelDescriptor(path=path, scale=scale, overlap=0, srpipe=srpipe,
                           precision=props.get(MetaKey.PRECISION, "fp32") or "fp32", props=props)
    if MetaKey.OVERLAP in props:
        desc = desc.with_overlap(_int_prop(path, props, MetaKey.OVERLAP, minimum=0), "metadata")
    return desc


def describe(path: Path) -> ModelDescriptor:
    """Read a model file's metadata without running it; ``InputError`` when it is not an ONNX model.

    The metadata is read straight from the protobuf wire format (:func:`read_metadata`) rather than
    through the ``onnx`` package, whose import alone costs about a second: every ``srpipe process`` and
    ``srpipe info`` starts with this call.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such model file")
    try:
        props = read_metadata(path.read_bytes())
    except ValueError as exc:
        raise InputError(f"{path}: not a readable ONNX model ({exc})") from exc
    return describe_props(path, props)


_GRAPH, _METADATA = 7, 14  # ModelProto field numbers (onnx.proto): graph, metadata_props


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        if pos >= len(data) or shift > 63:
            raise ValueError("truncated varint")
        byte = data[pos]
        value |= (byte & 0x7F) << shift
        pos, shift = pos + 1, shift + 7
        if not byte & 0x80:
            return value, pos


def _fields(data: bytes) -> list[tuple[int, int, bytes | int]]:
    """Top-level ``(field number, wire type, value)`` of one protobuf message; ``ValueError`` on damage."""
    out: list[tuple[int, int, bytes | int]] = []
    pos = 0
    while pos < len(data):
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise ValueError("field number 0")
        if wire == 0:
            value, pos = _varint(data, pos)
            out.append((number, wire, value))
        elif wire == 2:
            size, pos = _varint(data, pos)
            if pos + size > len(data):
                raise ValueError("a field runs past the end of the file (truncated?)")
            out.append((number, wire, data[pos:pos + size]))
            pos += size
        elif wire in (1, 5):
            pos += 8 if wire == 1 else 4
            if pos > len(data):
                raise ValueError("truncated fixed-size field")
        else:
            raise ValueError(f"unsupported wire type {wire}")
    return out


def read_metadata(data: bytes) -> dict[str, str]:
    """``metadata_props`` of a serialised ONNX ``ModelProto``; ``ValueError`` when ``data`` is not one
    (damaged, or without a graph: protobuf would parse an empty file as an empty model)."""
    fields = _fields(data)
    if not any(n == _GRAPH and w == 2 for n, w, _ in fields):
        raise ValueError("no graph: the file is empty, truncated or not ONNX")
    props: dict[str, str] = {}
    for number, wire, value in fields:
        if number == _METADATA and wire == 2 and isinstance(value, bytes):
            entry = {n: v for n, w, v in _fields(value) if w == 2 and isinstance(v, bytes)}
            try:
                props[entry.get(1, b"").decode()] = entry.get(2, b"").decode()
            except UnicodeDecodeError as exc:
                raise ValueError("metadata that is not UTF-8") from exc
    return props
