"""Issue 19: names that become path components (a model's run_name/weights from a sidecar JSON or a
checkpoint's config, TrainConfig.name, a test set's name) cannot move evaluate's outputs out of the store."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

from bench.errors import StudyError
from bench.paths import component_problem, inside, safe_component
from bench.store import Store
from tests.test_evaluate import _suite_checkpoint


@pytest.mark.parametrize("name", ["w/../../../x", "..", ".", "", "  ", "a\x00b", "a\\b", "x" * 201, "tab\there", 7])
def test_unsafe_components_are_refused_in_one_line(name):
    assert component_problem(name) is not None
    with pytest.raises(StudyError) as err:
        safe_component(name, "field")
    assert "\n" not in str(err.value) and str(err.value).startswith("field ")


@pytest.mark.parametrize("name", ["ema", "tiny_rrdb_upos", "run-1.5", "Set5 (x4)", "ünïcode"])
def test_safe_components_pass_unchanged(name):
    assert safe_component(name, "field") == name


def test_inside_refuses_a_symlink_out(tmp_path):
    (tmp_path / "root").mkdir()
    (tmp_path / "root" / "out").symlink_to(tmp_path)
    assert inside(tmp_path / "root" / "a" / "b", tmp_path / "root", "x") == tmp_path / "root" / "a" / "b"
    with pytest.raises(StudyError, match="outside"):
        inside(tmp_path / "root" / "out" / "b", tmp_path / "root", "x")


def _folder_set(base):
    for sub, size in (("lr_blind_x4", 8), ("hr", 32)):
        (base / sub).mkdir(parents=True)
        Image.new("RGB", (size, size), (10, 20, 30)).save(base / sub / "a.png")
    return base


def _spandrel_model(path):
    from sr_training.archs import build_generator
    from sr_training.config import ArchConfig

    torch.manual_seed(0)
    torch.save(build_generator(ArchConfig(type="rrdb", size="tiny", drop_path_rate=0.0)).state_dict(), path)
    return path


@pytest.mark.parametrize("field", ["weights", "run_name"])
def test_a_sidecar_with_a_traversing_name_writes_nothing_outside_the_store(field, tmp_path):
    from sr_training.evaluate import evaluate

    (tmp_path / "models").mkdir()
    model = _spandrel_model(tmp_path / "models" / "m.pth")
    (tmp_path / "models" / "m.pth.json").write_text(json.dumps({field: "w/../../../x"}))
    store = Store(tmp_path / "deep" / "er" / "store")
    before = {p for p in tmp_path.rglob("*")}
    with pytest.raises(StudyError, match=rf"model {field} 'w/../../../x' contains a path separator"):
        evaluate(model, _folder_set(tmp_path / "set"), store, metrics="entropy", progress=False)
    new = {p for p in tmp_path.rglob("*")} - before
    assert not [p for p in new if p.suffix == ".png" and "set" not in p.parts]  # no SR output anywhere
    assert not (tmp_path / "deep" / "x").exists() and not (tmp_path / "x").exists()
    assert not list(store.root.rglob("*.json"))  # refused before the run record


def test_a_checkpoint_whose_config_name_traverses_is_refused(tmp_path):
    from sr_training.evaluate import evaluate

    ckpt = tmp_path / "m.pt"
    _suite_checkpoint(ckpt, name="../../escape")
    with pytest.raises(StudyError, match=r"run_name '../../escape' contains a path separator"):
        evaluate(ckpt, _folder_set(tmp_path / "set"), Store(tmp_path / "s"), metrics="entropy", progress=False)
    assert not list(tmp_path.rglob("*escape*"))


def test_a_test_set_name_that_traverses_is_refused(tmp_path):
    from sr_training.evaluate import evaluate

    ckpt = tmp_path / "m.pt"
    _suite_checkpoint(ckpt)
    yml = tmp_path / "t.yaml"
    yml.write_text(f"kind: folder\nroot: {_folder_set(tmp_path / 'set')}\nname: ../../../t\n")
    with pytest.raises(StudyError, match=r"test set name '../../../t' contains a path separator"):
        evaluate(ckpt, yml, Store(tmp_path / "s"), metrics="entropy", progress=False)


def test_train_config_name_must_be_one_path_component(tmp_path):
    from sr_training.config import load_config

    cfg = tmp_path / "c.yaml"
    cfg.write_text("name: ../../x\narch: {type: rrdb}\ndata: {root: /tmp, degradation: {kind: one_stage}}\n"
                   "sampling: {strategy: upos}\n")
    with pytest.raises(StudyError, match=r"field 'name': .*contains a path separator"):
        load_config(cfg)
