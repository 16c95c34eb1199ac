"""The typed selection.json (contract C3): committed schema, one reader, one-line refusals of bad files."""

from __future__ import annotations

import json

import pytest

from bench.errors import StudyError
from bench.study.select import read_selection, write_selection
from bench.study.selection_model import SCHEMA, SCHEMA_FILE, json_schema, load


def _minimal(**extra) -> dict:
    return {"schema": SCHEMA, "best": {"metric": "musiq"},
            "sampling_metric": {"metric": "niqe", "reason": "pinned by hand"}, **extra}


def test_committed_schema_is_the_models():
    assert json.loads(SCHEMA_FILE.read_text()) == json_schema()
    assert set(json_schema()["required"]) == {"schema", "best", "sampling_metric"}


def test_a_hand_written_selection_is_filled_and_the_alias_follows_the_reward(tmp_path):
    path = tmp_path / "s.json"
    path.write_text(json.dumps(_minimal(reward_metric={"metric": "niqe", "reason": "r"},
                                        training_metric={"metric": "piqe", "reason": "stale alias"})))
    sel = read_selection(path)
    assert sel["reward_metric"]["metric"] == "niqe" and sel["training_metric"] == sel["reward_metric"]
    assert sel["complementary"] == [] and sel["warnings"] == [] and sel["evidence"] is None
    typed = load(path)
    assert typed.sampling_metric.metric == "niqe" and typed.best.metric == "musiq"


def test_a_v1_file_with_training_metric_only_uses_it_for_both_roles(tmp_path):
    path = tmp_path / "old.json"
    old = {"schema": SCHEMA, "best": {"metric": "musiq"}, "training_metric": {"metric": "niqe", "reason": "old"}}
    path.write_text(json.dumps(old))
    sel = read_selection(path)
    assert sel["sampling_metric"]["metric"] == sel["reward_metric"]["metric"] == "niqe"


@pytest.mark.parametrize(("data", "message"), [
    (_minimal(reward_metrc={"metric": "niqe"}), "unknown field 'reward_metrc'"),
    (_minimal(sampling_metric={"reason": "x"}), "field 'sampling_metric.metric' missing"),
    ({"schema": SCHEMA, "best": {"metric": "musiq"}}, "field 'sampling_metric' missing"),
    (_minimal(best={"metric": "musiq", "n_pairs": "many"}), "field 'best.n_pairs': "),
    (_minimal(warnings="none"), "field 'warnings': "),
    (_minimal(schema="iqa-study/selection/v0"), "field 'schema' is 'iqa-study/selection/v0', expected"),
    ([1, 2], "holds a JSON object, got list"),
])
def test_a_bad_selection_is_one_line_naming_the_file_and_field(tmp_path, data, message):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    with pytest.raises(StudyError) as err:
        read_selection(path)
    text = str(err.value)
    assert text.startswith(f"{path}: ") and message in text and "\n" not in text


def test_the_writer_refuses_what_the_reader_would(tmp_path):
    with pytest.raises(StudyError, match="unknown field 'extra'"):
        write_selection(_minimal(extra=1), tmp_path / "s.json")
    assert not (tmp_path / "s.json").exists()
    written = write_selection(_minimal(configs={"musiq": float("nan")}), tmp_path / "s.json")
    assert json.loads(written.read_text())["configs"] == {"musiq": None}  # strict JSON, then validated
