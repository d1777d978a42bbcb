from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from srpipe.config import Pipeline, TrainConfig, apply_overrides, find_pipeline, load_pipeline
from srpipe.errors import ConfigError


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "recipe.toml"
    path.write_text(text)
    return path


def test_load_nested_tables_and_types(tmp_path: Path) -> None:
    path = write(tmp_path, 'description = "x"\n[train]\nbatch_size = 8\nmilestones = [10, 20]\n'
                           '[train.model]\nscale = 3\nn_feats = 8\n[prepare]\nscales = [2]\n')
    pipe = load_pipeline(path)
    assert pipe.name == "recipe"
    assert pipe.train.batch_size == 8
    assert pipe.train.milestones == (10, 20)
    assert pipe.train.model.scale == 3 and pipe.train.model.n_feats == 8
    assert pipe.prepare.scales == (2,)
    assert isinstance(pipe.train.lr, float)
    with pytest.raises(dataclasses.FrozenInstanceError):
        pipe.train.batch_size = 1  # type: ignore[misc]


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("[train]\nbatchsize = 8\n", "unknown key 'train.batchsize'"),
        ("[train.model]\nfeats = 8\n", "unknown key 'train.model.feats'"),
        ("[train]\nbatch_size = '8'\n", "key 'train.batch_size' must be an integer"),
        ("[train]\nloss = 'l3'\n", "key 'train.loss' must be one of 'l1', 'charbonnier'"),
        ("[train]\nchannels_last = 1\n", "key 'train.channels_last' must be true or false"),
        ("[train]\nbetas = [0.9]\n", "key 'train.betas' must be an array of 2 values"),
        ("[nope]\n", "unknown key 'nope'"),
        ("[train\n", "cannot read pipeline"),
    ],
)
def test_bad_files_name_file_and_key(tmp_path: Path, text: str, needle: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_pipeline(path)
    assert needle in str(info.value)
    assert str(path) in str(info.value)


def test_overrides_replace_nested_values() -> None:
    sets = ["lr=2e-4", "model.n_feats=32", "loss=charbonnier", "betas=[0.9, 0.99]"]
    cfg = apply_overrides(TrainConfig(), sets)
    assert cfg.lr == 2e-4 and cfg.model.n_feats == 32 and cfg.loss == "charbonnier"
    assert cfg.betas == (0.9, 0.99)
    assert TrainConfig().lr == 1e-4  # the original is untouched


@pytest.mark.parametrize(
    ("assignment", "needle"),
    [("nope=1", "unknown key 'nope'"), ("model.x=1", "unknown key 'model.x'"), ("lr", "expected key=value"),
     ("lr.x=1", "'lr' has no sub-keys"), ("batch_size=1.5", "must be an integer")],
)
def test_bad_overrides(assignment: str, needle: str) -> None:
    with pytest.raises(ConfigError, match=needle.replace(".", r"\.")):
        apply_overrides(TrainConfig(), [assignment])


def test_unknown_pipeline_name_lists_known() -> None:
    with pytest.raises(ConfigError, match="unknown pipeline 'does-not-exist'"):
        find_pipeline("does-not-exist")


def test_shipped_pipelines_all_load() -> None:
    folder = Path(__file__).resolve().parents[1] / "pipelines"
    files = sorted(folder.glob("*.toml"))
    for path in files:
        assert isinstance(load_pipeline(path), Pipeline), path


def test_shipped_recipes_are_found_from_anywhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # no ./pipelines here: the copy inside the package must be used
    path = find_pipeline("edsr-baseline-x4")
    assert path.parent.name == "pipelines" and path.parent.parent.name == "srpipe"
    assert load_pipeline("edsr-baseline-x4").train.model.scale == 4
