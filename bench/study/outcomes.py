"""Per-pair outcomes of each metric, as the matrices the study statistics work on.

``outcomes(store, ...)`` returns a long frame (one row per pair x metric) straight from the
``pair_scores`` view; ``correctness_matrix`` pivots it to pairs x metrics with
1 = strictly right, 0 = wrong (a metric tie is wrong), on decided pairs only, keeping just
the pairs every requested metric has scored (so all metrics are compared on the same pairs).
"""

from __future__ import annotations

import pandas as pd

from bench.errors import StudyError
from bench.store import Store
from bench.store.views import connect


def outcomes(store: Store, *, datasets: list[str] | None = None, split: str | None = None,
             pair_ids: pd.DataFrame | None = None, metrics: list[str] | None = None) -> pd.DataFrame:
    con = connect(store)
    where, params = ["pref <> 'tie'"], []
    if datasets:
        where.append(f"dataset IN ({', '.join('?' for _ in datasets)})")
        params += list(datasets)
    if split:
        where.append("split = ?")
        params.append(split)
    if metrics:
        where.append(f"metric IN ({', '.join('?' for _ in metrics)})")
        params += list(metrics)
    sql = ("SELECT dataset, split, \"group\", pair_id, pref, votes_a, votes_b, metric, score_a, score_b, sign, "
           "metric_pref, (metric_pref = pref)::INT AS correct FROM pair_scores")
    if pair_ids is not None:
        con.register("subset_ids", pair_ids[["dataset", "pair_id"]])
        sql += " JOIN subset_ids USING (dataset, pair_id)"
    df = con.execute(f"{sql} WHERE {' AND '.join(where)}", params).df()
    if df.empty:
        raise StudyError(f"{store.root}: no scored, decided pairs for this selection (datasets={datasets}, split={split},"
                         f" metrics={metrics}); run `iqa-study score` first")
    return df


def correctness_matrix(long: pd.DataFrame) -> pd.DataFrame:
    """pairs (index: dataset, pair_id) x metrics, 0/1, complete rows only."""
    wide = long.pivot_table(index=["dataset", "pair_id"], columns="metric", values="correct", aggfunc="first")
    return wide.dropna().astype(int)
