"""What complement and ensemble run on, by default: the Phase II metrics on the Phase II pairs.

Rule (``study_scope``):

* a Phase II result given by key, or - when no ``--dataset``/``--split`` is named - the latest
  Phase II result: its pairs (study table ``phase2_pairs``: the decided pairs it ranked), its
  metrics (or the metrics named) under the configurations it used (its ``config_hash`` column;
  a ``--config`` pin overrides), and its inferred-pair setting;
* ``--dataset``/``--split`` named: those pairs, the metrics named or every scored metric;
* no Phase II result: every scored pair and metric (a note says so).

Never the intersection of everything in the store: after Phase I (many metrics on a subset) and
Phase II (top-k on all pairs) that intersection would be the Phase I subset.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field

import pandas as pd

from bench.errors import StudyError
from bench.store import Store
from bench.study.outcomes import Outcomes, outcomes, require_metrics


@dataclass
class Scope:
    pair_ids: pd.DataFrame | None = None
    metrics: list[str] | None = None
    datasets: list[str] | None = None
    split: str | None = None
    phase2_key: str | None = None
    best: str | None = None  # the Phase II winner when the scope follows a Phase II result
    include_inferred: bool = False
    pins: dict[str, str] = field(default_factory=dict)

    def describe(self) -> str:
        if self.phase2_key:
            return f"phase2 {self.phase2_key}: {len(self.pair_ids)} pairs, metrics {', '.join(self.metrics)}"
        return f"datasets={self.datasets or 'all'}, split={self.split or 'all'}, metrics={self.metrics or 'all scored'}"

    def outcomes(self, store: Store, where: str) -> Outcomes:
        oc = outcomes(store, datasets=self.datasets, split=self.split, pair_ids=self.pair_ids, metrics=self.metrics,
                      include_inferred=self.include_inferred, pins=self.pins)
        if self.metrics:
            require_metrics(oc, self.metrics, where)
        return oc


def study_scope(store: Store, *, metrics: list[str] | None = None, datasets: list[str] | None = None,
                split: str | None = None, phase2_key: str | None = None, include_inferred: bool | None = None,
                pins: dict[str, str] | None = None) -> Scope:
    pins = dict(pins or {})
    if phase2_key is None and not datasets and not split:
        phase2_key, _ = store.latest_study("phase2_ranking", "phase2_key")
        if phase2_key is None:
            print("note: no Phase II result in this store; using every scored pair and metric", file=sys.stderr)
    if phase2_key is None:
        return Scope(metrics=metrics, datasets=datasets, split=split, include_inferred=bool(include_inferred), pins=pins)
    if datasets or split:
        raise StudyError("--from-phase2 and --dataset/--split are exclusive (the Phase II result fixes the pairs)")
    ranking = store.read_study("phase2_ranking", phase2_key)
    if not store.has_study("phase2_pairs", phase2_key):
        raise StudyError(f"{store.root}: phase2 {phase2_key} predates recorded Phase II pairs; re-run `iqa-study phase2`")
    pairs = store.read_study("phase2_pairs", phase2_key)
    chosen = metrics or list(ranking["metric"])
    used = dict(zip(ranking["metric"], ranking["config_hash"])) if "config_hash" in ranking else {}
    pins = {**{m: h for m, h in used.items() if m in chosen}, **pins}
    inferred = bool(ranking["include_inferred"].iloc[0]) if "include_inferred" in ranking else False
    if include_inferred is not None and include_inferred != inferred:
        raise StudyError(f"--include-inferred: phase2 {phase2_key} was computed with include_inferred={inferred}; "
                         f"re-run phase2 with the same setting")
    return Scope(pair_ids=pairs[["dataset", "pair_id"]], metrics=chosen, phase2_key=phase2_key,
                 best=str(ranking.loc[ranking["is_best"], "metric"].iloc[0]), include_inferred=inferred, pins=pins)
