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


@cache
def load_table() -> MetricTable:
    text = resources.files("bench.metrics").joinpath("metrics.yaml").read_text()
    table = MetricTable.model_validate(yaml.safe_load(text))
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
