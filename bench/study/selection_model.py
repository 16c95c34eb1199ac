"""The typed ``selection.json`` (contract C3): the one contract between the study and SR training.

``bench.study.select`` builds and writes it; every reader (SR sampling and reward, the FT guard,
``repro``, the study report) goes through :func:`load` (``read_selection`` is its dict view), so the
file is validated once, in one place, against this model. The JSON Schema generated from it is
committed as ``bench/study/selection.schema.json`` (a test keeps the two equal).

Fields the writer has always recorded are required where a reader needs them (``schema``,
``best.metric``, ``sampling_metric``); the evidence fields are optional so that hand-written
selections (a user pinning a metric for training) stay valid. Unknown fields are refused: a typo
such as ``reward_metrc`` would otherwise be ignored and training would run on another metric.
Files written before sampling and reward were recorded separately carry ``training_metric`` only;
it then stands for both (``Selection.upgrade_v1``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from bench.errors import StudyError

SCHEMA = "iqa-study/selection/v1"
SCHEMA_FILE = Path(__file__).with_name("selection.schema.json")


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _MetricRecord(_Record):
    """A metric under one configuration; every role below names one."""

    metric: str
    config_hash: str | None = None


class _RankedMetric(_MetricRecord):
    """A metric with its agreement evidence from the ranking that chose it."""

    strict_acc: float | None = None
    ci_lo: float | None = None
    ci_hi: float | None = None
    n_pairs: int | None = None


class BestMetric(_RankedMetric):
    """The top of the ranking that chose (Phase II, else Phase I), with its agreement evidence."""

    ci_method: str | None = None
    n_groups: int | None = None
    source: Literal["phase1", "phase2"] | None = None


class ComplementaryMetric(_MetricRecord):
    """A metric the greedy complement added to the best one (in its order)."""

    acc_on_best_wrong: float | None = None
    oracle_gain: float | None = None


class ChosenMetric(_RankedMetric):
    """The metric one training role uses (SMA/SMP/AMO sampling or the FT reward) and why."""

    reason: str = "no reason recorded"
    weights_available: bool | None = None
    differentiable: bool | None = None
    ranked_in: Literal["phase1", "phase2"] | None = None
    above_chance: bool | None = None


class EnsembleRecord(_Record):
    key: str
    cv_strict_acc: float | None = None
    model: str


class Evidence(_Record):
    """The chain of stored results the selection followed (bench.study.select's module docstring)."""

    phase1_key: str | None = None
    phase2_key: str | None = None
    complement_key: str | None = None
    ensemble_key: str | None = None
    store: str | None = None
    datasets: list[str] = []
    synthetic: bool = False
    include_inferred: bool = False


class Selection(_Record):
    schema_: Literal["iqa-study/selection/v1"] = Field(alias="schema")
    best: BestMetric
    complementary: list[ComplementaryMetric] = []
    sampling_metric: ChosenMetric
    reward_metric: ChosenMetric | None = None
    training_metric: ChosenMetric | None = Field(None, description="alias of reward_metric kept for older readers")
    configs: dict[str, str | None] = Field({}, description="{metric: config_hash} of the ranking, in rank order")
    warnings: list[str] = []
    allow_weak_metric: bool = False
    ensemble: EnsembleRecord | None = None
    evidence: Evidence | None = None
    pyiqa_version: str | None = None
    created_at: str | None = None

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    @model_validator(mode="before")
    @classmethod
    def upgrade_v1(cls, data):
        """A file with ``training_metric`` only: it is the reward and the sampling metric."""
        if isinstance(data, dict) and data.get("training_metric") is not None:
            data = dict(data)
            data.setdefault("reward_metric", data["training_metric"])
            data.setdefault("sampling_metric", data["training_metric"])
        return data

    @model_validator(mode="after")
    def _alias_follows_reward(self):
        self.training_metric = self.reward_metric
        return self

    def as_dict(self) -> dict:
        return self.model_dump(mode="json", by_alias=True)


def _field_path(err: dict) -> str:
    return ".".join(str(p) for p in err["loc"]) or "(top level)"


def validate(data: object, source: str | Path) -> Selection:
    """``data`` (a parsed selection.json) as a Selection, or one StudyError naming the first bad field."""
    if not isinstance(data, dict):
        raise StudyError(f"{source}: a selection.json holds a JSON object, got {type(data).__name__}")
    if data.get("schema") != SCHEMA:
        raise StudyError(f"{source}: field 'schema' is {data.get('schema')!r}, expected {SCHEMA!r}")
    try:
        return Selection.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = _field_path(err).replace("schema_", "schema")
        if err["type"] == "extra_forbidden":
            raise StudyError(f"{source}: unknown field '{field}' (fields: {', '.join(json_schema()['properties'])})"
                             ) from None
        if err["type"] == "missing":
            raise StudyError(f"{source}: field '{field}' missing") from None
        raise StudyError(f"{source}: field '{field}': {err['msg']} (got {err.get('input')!r})") from None


def load(path: str | Path) -> Selection:
    """Read and validate selection.json (one line naming the file and field when it is not one)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise StudyError(f"{path}: not a readable selection.json ({exc})") from None
    return validate(data, path)


def json_schema() -> dict:
    return Selection.model_json_schema(by_alias=True)
