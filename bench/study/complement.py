"""Complementarity: on the pairs the best metric gets wrong, which metrics are right?"""

from __future__ import annotations

import pandas as pd

from bench import provenance
from bench.errors import StudyError
from bench.store import Store
from bench.store.views import connect
from bench.study.outcomes import correctness_matrix, outcomes
from bench.study.phases import key_of, latest_result
from bench.study.stats import both_wrong, conditional_accuracy, greedy_complement, oracle_of_two


def default_best(store: Store) -> str:
    """The latest Phase II winner, else the best strict accuracy over everything scored."""
    _, p2 = latest_result(store, "phase2_ranking", "phase2_key")
    if p2 is not None:
        return str(p2.loc[p2["is_best"], "metric"].iloc[0])
    rows = connect(store).execute("SELECT metric FROM agreement ORDER BY strict_acc DESC, metric LIMIT 1").fetchall()
    if not rows:
        raise StudyError(f"{store.root}: nothing scored yet")
    return rows[0][0]


def complement(store: Store, best: str | None = None, *, datasets: list[str] | None = None,
               split: str | None = None) -> tuple[str, dict[str, pd.DataFrame]]:
    best = best or default_best(store)
    long = outcomes(store, datasets=datasets, split=split)
    correct = correctness_matrix(long)
    if best not in correct.columns:
        raise StudyError(f"complement: best metric '{best}' has no scores on the selected pairs "
                         f"(scored: {sorted(correct.columns)})")
    key = key_of("complement", best, datasets, split, sorted(correct.columns), len(correct))
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
        df = df.assign(complement_key=key, best=best, n_pairs=len(correct), created_at=stamp)
        store.write_study_table(name, key, df)
        tables[name] = df
    return key, tables
