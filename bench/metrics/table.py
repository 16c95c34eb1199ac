"""Load ``metrics.yaml`` into typed, immutable entries; lookup with "did you mean"."""

from __future__ import annotations

import difflib
from functools import cache
from importlib import resources
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict

from bench.errors import UnknownMetric

Cache = Literal["pyiqa", "torchvision", "clip", "hf", "package", "iqa-study", "url"]  # iqa-study: env.CacheDirs.study
Offline = Literal["real", "params", "package", "random-init", "random-init-patched", "none"]


class WeightFile(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    cache: Cache
    name: str


class MetricSpec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    name: str
    mode: Literal["NR", "FR"]
    family: str
    train_set: str
    lower_better: bool
    score_min: float | None
    score_max: float | None
    range_approx: bool
    differentiable: bool
    not_differentiable_because: str | None = None
    weights: tuple[WeightFile, ...] = ()
    extra_deps: tuple[str, ...] = ()
    study: bool
    batchable: bool
    offline: Offline
    random_init_kwargs: dict | None = None
    min_side: int | None = None  # smallest height/width the metric accepts (None: no known minimum)

    @property
    def sign(self) -> int:
        """Multiply a raw score by this to get "higher is better"."""
        return -1 if self.lower_better else 1

    @property
    def span(self) -> float:
        """score_max - score_min (pyiqa's score range): the unit of every range-normalised quantity (SMA/SMP's
        tau, FT's Q_norm, the guard's margins); a metric without a finite range is a one-line StudyError."""
        if self.score_min is None or self.score_max is None or self.score_max <= self.score_min:
            from bench.errors import StudyError

            raise StudyError(f"metric {self.name}: pyiqa gives no finite score range (score_min/score_max), so its "
                             "scores cannot be range-normalised")
        return self.score_max - self.score_min

    def normalised(self, value):
        """A raw score (or difference of scores; float or tensor) oriented "higher is better" and divided by
        ``span``: the one range normalisation of the suite."""
        return self.sign * value / self.span

    def size_error(self, height: int, width: int) -> str | None:
        """A one-line reason when an image of ``height`` x ``width`` is below ``min_side`` (else None).

        NIQE (pyiqa/archs/niqe_arch.py ``niqe``, from BasicSR) computes its features on 96x96
        blocks: a side below 96 gives zero blocks and a raw PyTorch error deep inside pyiqa.
        """
        if self.min_side and min(height, width) < self.min_side:
            return (f"image {width}x{height} is too small for {self.name}: it needs at least "
                    f"{self.min_side} px on each side")
        return None


class MetricTable(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    pyiqa_version: str
    metrics: tuple[MetricSpec, ...]


DERIVED = ("mode", "lower_better", "score_min", "score_max", "range_approx")  # from pyiqa, never in metrics.yaml


@cache
def pyiqa_defaults() -> dict:
    """pyiqa's ``DEFAULT_CONFIGS`` (the dict ``pyiqa.create_metric`` reads). Without pyiqa imported yet, its
    module file is read on its own (it imports only ``collections``): importing the pyiqa package pulls torch
    and every arch, 3-5 s, for a table lookup."""
    import importlib.util
    import sys
    from pathlib import Path

    if "pyiqa.default_model_configs" in sys.modules:
        return sys.modules["pyiqa.default_model_configs"].DEFAULT_CONFIGS
    found = importlib.util.find_spec("pyiqa")
    if found is None or not found.submodule_search_locations:
        raise ImportError("pyiqa is not installed: the metric table derives its modes and ranges from it")
    path = Path(next(iter(found.submodule_search_locations))) / "default_model_configs.py"
    spec = importlib.util.spec_from_file_location("_iqa_study_pyiqa_default_configs", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.DEFAULT_CONFIGS


def derived_fields(name: str) -> dict:
    """mode, lower_better and the numeric score range of pyiqa metric ``name`` from DEFAULT_CONFIGS."""
    cfg = pyiqa_defaults().get(name)
    if cfg is None:
        raise ValueError(f"bench/metrics/metrics.yaml: '{name}' is not a pyiqa metric (DEFAULT_CONFIGS)")
    text = str(cfg.get("score_range", ","))
    lo, _, hi = (t.strip().lstrip("~") for t in text.partition(","))
    return {"mode": cfg["metric_mode"], "lower_better": bool(cfg.get("lower_better", False)),
            "score_min": float(lo) if lo else None, "score_max": float(hi) if hi else None,
            "range_approx": "~" in text or not lo or not hi}


@cache
def load_table() -> MetricTable:
    return parse_table(resources.files("bench.metrics").joinpath("metrics.yaml").read_text())


def parse_table(text: str) -> MetricTable:
    """metrics.yaml's text as the typed table, pyiqa's own fields (``DERIVED``) filled in from pyiqa."""
    raw = yaml.safe_load(text)
    entries = []
    for entry in raw.get("metrics") or []:
        copied = [k for k in DERIVED if k in entry]
        if copied:
            raise ValueError(f"bench/metrics/metrics.yaml: {entry.get('name')}: field(s) {', '.join(copied)} are "
                             f"derived from pyiqa's DEFAULT_CONFIGS; remove them")
        entries.append({**entry, **derived_fields(entry["name"])})
    table = MetricTable.model_validate({**raw, "metrics": entries})
    names = [m.name for m in table.metrics]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise ValueError(f"bench/metrics/metrics.yaml: duplicate metric names {sorted(dup)}")
    return table


def get(name: str) -> MetricSpec:
    for spec in load_table().metrics:
        if spec.name == name:
            return spec
    names = [m.name for m in load_table().metrics]
    close = difflib.get_close_matches(name, names, n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(close)}?" if close else "; see `iqa-study metrics list`"
    raise UnknownMetric(f"unknown metric '{name}'{hint}")


def select(selector: str | list[str]) -> list[MetricSpec]:
    """``study`` | ``available`` | ``all`` | comma-separated names (each validated)."""
    from bench.metrics.weights import is_available

    table = load_table().metrics
    if isinstance(selector, str):
        if selector == "study":
            return [m for m in table if m.study]
        if selector == "all":
            return list(table)
        if selector == "available":
            return [m for m in table if m.mode == "NR" and is_available(m)]
        selector = [s.strip() for s in selector.split(",") if s.strip()]
    return [get(s) for s in selector]
