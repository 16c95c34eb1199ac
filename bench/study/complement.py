"""Complementarity: on the pairs the best metric gets wrong, which metrics are right?

Scope (``bench.study.scope``): by default the Phase II metrics on the Phase II pairs, the best
being the Phase II winner; every table records ``phase2_key``, ``configs`` (metric -> config_hash)
and, per metric row, the ``config_hash`` it was computed under.
"""

from __future__ import annotations

import json

import pandas as pd

from bench import provenance
from bench.errors import StudyError
from bench.store import Store
from bench.store.views import connect
from bench.study.outcomes import correctness_matrix
from bench.study.phases import key_of
from bench.study.scope import study_scope
from bench.study.stats import both_wrong, conditional_accuracy, greedy_complement, oracle_of_two


def _best_overall(store: Store) -> str:
    rows = connect(store).execute("SELECT metric FROM agreement ORDER BY strict_acc DESC, metric LIMIT 1").fetchall()
    if not rows:
        raise StudyError(f"{store.root}: nothing scored yet")
    return rows[0][0]


def complement(store: Store, best: str | None = None, *, metrics: list[str] | None = None,
               datasets: list[str] | None = None, split: str | None = None, phase2_key: str | None = None,
               include_inferred: bool | None = None, pins: dict[str, str] | None = None
               ) -> tuple[str, dict[str, pd.DataFrame]]:
    scope = study_scope(store, metrics=metrics, datasets=datasets, split=split, phase2_key=phase2_key,
                        include_inferred=include_inferred, pins=pins)
    if best and scope.metrics and best not in scope.metrics:
        scope.metrics = [*scope.metrics, best]
    oc = scope.outcomes(store, "complement")
    correct = correctness_matrix(oc.long)
    best = best or scope.best or _best_overall(store)
    if best not in correct.columns:
        raise StudyError(f"complement: best metric '{best}' has no scores on the selected pairs "
                         f"(scored: {sorted(correct.columns)})")
    configs = oc.config_map()
    key = key_of("complement", best, scope.phase2_key, datasets, split, sorted(configs.items()), len(correct),
                 scope.include_inferred)
    overlap = both_wrong(correct)
    tables = {
        "complement_conditional": conditional_accuracy(correct, best),
        "complement_oracle": oracle_of_two(correct, best),
        "complement_greedy": greedy_complement(correct, best),
        "complement_overlap": overlap.rename_axis("metric_a").reset_index().melt(
            id_vars="metric_a", var_name="metric_b", value_name="both_wrong_share"),
    }
    stamp = provenance.now()
    for name, df in tables.items():
        if "metric" in df:
            df = df.assign(config_hash=df["metric"].map(configs))
        df = df.assign(complement_key=key, best=best, best_config_hash=configs[best], phase2_key=scope.phase2_key or "",
                       configs=json.dumps(configs, sort_keys=True), n_pairs=len(correct),
                       include_inferred=scope.include_inferred, created_at=stamp)
        store.write_study_table(name, key, df)
        tables[name] = df
    return key, tables
