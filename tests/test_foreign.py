"""Models srpipe did not export: accepted when they are upscalers (scale probed, overlap measured and
cached), refused with one clear line when they are not."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import smooth_image
from tiny_onnx import tiny_model

from srpipe.cli import cli
from srpipe.contract import MetaKey, describe
from srpipe.digest import file_sha256
from srpipe.errors import InputError
from srpipe.imaging.io import write_image
from srpipe.infer import measured
from srpipe.infer.session import OrtSession
from srpipe.infer.upscaler import TiledUpscaler


def _with_props(src: Path, dst: Path, props: dict[str, str]) -> Path:
    import onnx

    proto = onnx.load(str(src))
    del proto.metadata_props[:]
    onnx.helper.set_model_props(proto, props)
    onnx.save(proto, str(dst))
    return dst


@pytest.fixture(scope="module")
def srpipe_x2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_model(tmp_path_factory, scale=2, n_resblocks=2)


@pytest.fixture
def foreign(tmp_path: Path, srpipe_x2: Path) -> Path:
    """The same network as another exporter would ship it: only a ``scale`` key."""
    return _with_props(srpipe_x2, tmp_path / "foreign.onnx", {"scale": "2"})


def _graph_model(path: Path, nodes: list, inputs: list, outputs: list, inits: list | None = None) -> Path:
    import onnx
    from onnx import helper

    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=inits or [])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.save(model, str(path))
    return path


def same_size_conv(path: Path) -> Path:
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.full((3, 3, 3, 3), 1 / 27, dtype=np.float32), "w")
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, "h", "w"])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 3, "h", "w"])
    conv = helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])
    return _graph_model(path, [conv], [x], [y], [w])


def classifier(path: Path, *, fixed: bool) -> Path:
    from onnx import TensorProto, helper, numpy_helper

    dims: list = [1, 3, 32, 32] if fixed else ["n", 3, "h", "w"]
    w = numpy_helper.from_array(np.ones((3, 10), dtype=np.float32), "w")
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, dims)
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [dims[0], 10])
    nodes = [helper.make_node("GlobalAveragePool", ["x"], ["p"]), helper.make_node("Flatten", ["p"], ["f"]),
             helper.make_node("MatMul", ["f", "w"], ["y"])]
    return _graph_model(path, nodes, [x], [y], [w])


def test_a_lone_scale_key_is_confirmed_by_a_probe_and_the_overlap_measured_once(
        foreign: Path, srpipe_x2: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    desc = describe(foreign)
    assert (desc.scale, desc.srpipe, desc.overlap_source) == (2, False, "unknown")
    cache = tmp_path / "cache"
    up = TiledUpscaler.open(foreign, device="cpu", tile=64, cache_dir=cache)
    stated = describe(srpipe_x2).overlap  # what export measured for the very same weights
    assert up.scale == 2 and up.overlap_source == "measured" and up.overlap == stated
    entries = list(cache.glob("*.json"))
    assert [e.stem for e in entries] == [file_sha256(foreign)]
    assert json.loads(entries[0].read_text())["overlap"] == stated

    def fail(*args: object, **kwargs: object) -> None:
        raise AssertionError("measured again despite the cache")

    monkeypatch.setattr(measured, "measure_backend", fail)
    again = TiledUpscaler.open(foreign, device="cpu", tile=64, cache_dir=cache)
    assert again.overlap == stated


def test_foreign_model_tiled_matches_whole_image(foreign: Path, tmp_path: Path,
                                                 rng: np.random.Generator) -> None:
    img = smooth_image(rng, 151, 173)
    tiled = TiledUpscaler.open(foreign, device="cpu", tile=64, cache_dir=tmp_path / "c")(img)
    whole = TiledUpscaler.open(foreign, device="cpu", tile=0)(img)
    diff = tiled.astype(np.float64) - whole.astype(np.float64)
    psnr = 10 * np.log10(255.0**2 / max(np.mean(diff**2), 1e-12))
    assert psnr >= 50 and np.abs(diff).max() <= 2


def test_a_model_without_metadata_gets_scale_and_overlap(tmp_path: Path, srpipe_x2: Path) -> None:
    bare = _with_props(srpipe_x2, tmp_path / "bare.onnx", {})
    session = OrtSession(bare, device="cpu")
    assert session.scale == 2 and session.descriptor.overlap_source == "unknown"
    res = CliRunner().invoke(cli, ["--workspace", str(tmp_path / "ws"), "info", str(bare), "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["srpipe"] is False and data["scale"] == 2 and data["tile_overlap_source"] == "measured"
    assert data["tile_overlap"] == describe(srpipe_x2).overlap
    assert len(list((tmp_path / "ws" / "cache" / "overlap").glob("*.json"))) == 1


def test_a_wrong_stated_scale_is_caught_by_the_probe(tmp_path: Path, srpipe_x2: Path) -> None:
    liar = _with_props(srpipe_x2, tmp_path / "liar.onnx", {"scale": "4"})
    with pytest.raises(InputError, match=r"liar.onnx: the metadata says scale 4, but .* \(x2\)"):
        OrtSession(liar, device="cpu")
    bad = _with_props(srpipe_x2, tmp_path / "bad.onnx", {"scale": "two"})
    with pytest.raises(InputError, match=r"bad.onnx: metadata 'scale' is 'two', not an integer"):
        describe(bad)


def _process(tmp_path: Path, model: Path) -> tuple[int, str]:
    src = tmp_path / "in"
    src.mkdir(exist_ok=True)
    write_image(src / "a.png", np.zeros((17, 23, 3), dtype=np.uint8))
    res = CliRunner().invoke(cli, ["--workspace", str(tmp_path / "ws"), "process", str(src), "--model",
                                   str(model), "--out", str(tmp_path / "o")])
    return res.exit_code, res.stderr


@pytest.mark.parametrize("kind", ["same-size", "classifier-fixed", "classifier-dynamic"])
def test_models_that_are_not_upscalers_are_refused_before_any_file(kind: str, tmp_path: Path) -> None:
    path = tmp_path / f"{kind}.onnx"
    if kind == "same-size":
        same_size_conv(path)
        expected = r"gives \(1, 3, 24, 32\), the same size: not a super-resolution model"
    else:
        classifier(path, fixed=kind.endswith("fixed"))
        expected = ("the height and width are fixed" if kind.endswith("fixed")
                    else r"gives an output of shape \(1, 10\): not an RGB image enlarged")
    code, err = _process(tmp_path, path)
    assert code == 2 and "Traceback" not in err
    line = err.strip().splitlines()[-1]
    assert line.startswith(f"srpipe: error: {path}")
    assert re.search(expected, line), line
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())
    hr = tmp_path / "hr"
    hr.mkdir()
    write_image(hr / "b.png", np.zeros((32, 48, 3), dtype=np.uint8))
    res = CliRunner().invoke(cli, ["evaluate", str(path), "--hr", str(hr), "--scale", "2"])
    assert res.exit_code == 2 and re.search(expected, res.stderr), res.output


def test_an_empty_onnx_file_is_not_a_model(tmp_path: Path) -> None:
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    res = CliRunner().invoke(cli, ["info", str(empty)])
    assert res.exit_code == 2 and "not a readable ONNX model" in res.stderr
    code, err = _process(tmp_path, empty)
    assert code == 2 and "empty.onnx" in err


def test_srpipe_metadata_names_its_keys(srpipe_x2: Path) -> None:
    desc = describe(srpipe_x2)
    assert desc.srpipe and desc.overlap_source == "metadata"
    assert desc.overlap == int(desc.props[MetaKey.OVERLAP]) > 0


def test_metadata_is_read_from_the_wire_format_as_onnx_reads_it(srpipe_x2: Path, tmp_path: Path) -> None:
    import onnx

    from srpipe.contract import read_metadata

    bundled = Path(__file__).resolve().parents[1] / "srpipe" / "models" / "default-x2.onnx"
    for path in (srpipe_x2, bundled, _with_props(srpipe_x2, tmp_path / "u.onnx", {"ключ": "värde", "": ""})):
        expected = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
        assert read_metadata(path.read_bytes()) == expected
    data = srpipe_x2.read_bytes()
    for name, damaged in (("truncated", data[: len(data) // 2]), ("garbage", b"\xff" * 40),
                          ("no-graph", data[:0])):
        bad = tmp_path / f"{name}.onnx"
        bad.write_bytes(damaged)
        with pytest.raises(InputError, match=rf"{name}\.onnx: not a readable ONNX model"):
            describe(bad)


def test_choosing_and_opening_a_model_does_not_import_the_onnx_package(srpipe_x2: Path) -> None:
    import subprocess
    import sys

    code = ("import sys; from pathlib import Path; from srpipe.infer.upscaler import TiledUpscaler; "
            f"up = TiledUpscaler.open(Path({str(srpipe_x2)!r}), device='cpu', backend='onnxruntime'); "
            "assert up.scale == 2; print('onnx' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"  # importing it costs about a second of every start-up
