"""Per-pair outcomes of each metric, as the frames the study statistics work on.

``outcomes(store, ...)`` returns an ``Outcomes``: a long frame (one row per pair x metric, straight
from the ``pair_scores`` view) holding exactly one scoring configuration per metric (the rule of
``bench.study.configs``), and the chosen configurations. Human ties stay in the long frame
(``decided`` = False): vote agreement counts them, accuracies do not.

HGGT enhanced-vs-enhanced pairs are *inferred* from labels (manifest column ``kind`` =
'inferred'; a missing column means 'human'): no annotator compared them, so they are excluded
unless ``include_inferred=True``.

``correctness_matrix`` pivots to pairs x metrics with 1 = strictly right, 0 = wrong (a metric tie
is wrong), on decided pairs only, keeping just the pairs every metric has scored (so all metrics
are compared on the same pairs). ``complete_pairs`` does the same on the long frame (ties kept).
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from bench.errors import StudyError
from bench.store import Store
from bench.store.views import connect
from bench.study.configs import choose_configs, keep_chosen


@dataclass
class Outcomes:
    long: pd.DataFrame
    configs: pd.DataFrame  # metric, config_hash, config_rule, n_configs

    def config_map(self) -> dict[str, str]:
        return dict(zip(self.configs["metric"], self.configs["config_hash"]))


def _connect(store: Store):
    return connect(store, include_inferred=True)  # the views filter nothing; the study does (pair_filter)


def pair_filter(include_inferred: bool, datasets: list[str] | None, alias: str = "") -> tuple[list[str], list]:
    """WHERE terms and parameters over ``pair_scores`` (whose ``kind`` is never NULL: the store
    fills a missing column with 'human'): inferred pairs out unless asked for, optional datasets."""
    where, params = ["TRUE"], []
    if not include_inferred:
        where.append(f"{alias}kind <> 'inferred'")
    if datasets:
        where.append(f"{alias}dataset IN ({', '.join('?' for _ in datasets)})")
        params += list(datasets)
    return where, params


def outcomes(store: Store, *, datasets: list[str] | None = None, split: str | None = None,
             pair_ids: pd.DataFrame | None = None, metrics: list[str] | None = None,
             include_inferred: bool = False, pins: dict[str, str] | None = None) -> Outcomes:
    con = _connect(store)
    where, params = pair_filter(include_inferred, datasets, alias="ps.")
    if split:
        where.append("ps.split = ?")
        params.append(split)
    if metrics:
        where.append(f"ps.metric IN ({', '.join('?' for _ in metrics)})")
        params += list(metrics)
    sql = ("SELECT ps.dataset, ps.split, ps.\"group\", ps.dataset || '/' || ps.\"group\" AS source_group, ps.pair_id, "
           "ps.kind, ps.pref, ps.pref <> 'tie' AS decided, ps.votes_a, ps.votes_b, ps.metric, ps.config_hash, "
           "ps.score_a, ps.score_b, ps.sign, ps.metric_pref, (ps.metric_pref = ps.pref)::INT AS correct "
           "FROM pair_scores ps")
    if pair_ids is not None:
        con.register("subset_ids", pair_ids[["dataset", "pair_id"]].drop_duplicates())
        sql += " JOIN subset_ids si ON si.dataset = ps.dataset AND si.pair_id = ps.pair_id"
    df = con.execute(f"{sql} WHERE {' AND '.join(where)}", params).df()
    if df.empty or not df["decided"].any():
        raise StudyError(f"{store.root}: no scored, decided pairs for this selection (datasets={datasets}, split={split},"
                         f" metrics={metrics}, include_inferred={include_inferred}); run `iqa-study score` first")
    chosen = choose_configs(con, df, pins)
    long = keep_chosen(df, chosen)
    if long.duplicated(["dataset", "pair_id", "metric"]).any():
        raise StudyError(f"{store.root}: a pair appears twice for one metric configuration (duplicate pair ids?)")
    return Outcomes(long, chosen)


def complete_pairs(long: pd.DataFrame) -> pd.DataFrame:
    """The rows of the pairs that every metric in ``long`` has scored (ties kept)."""
    n_metrics = long["metric"].nunique()
    counts = long.groupby(["dataset", "pair_id"])["metric"].transform("nunique")
    return long[counts == n_metrics].reset_index(drop=True)


def correctness_matrix(long: pd.DataFrame) -> pd.DataFrame:
    """pairs (index: dataset, pair_id) x metrics, 0/1, decided pairs scored by every metric."""
    decided = long[long["decided"]] if "decided" in long else long[long["pref"] != "tie"]
    wide = decided.pivot(index=["dataset", "pair_id"], columns="metric", values="correct")
    return wide.dropna().astype(int)


def groups_of(long: pd.DataFrame, index: pd.Index) -> pd.Series:
    """The source group (dataset/group) of each pair in ``index`` (dataset, pair_id)."""
    g = long.drop_duplicates(["dataset", "pair_id"]).set_index(["dataset", "pair_id"])["source_group"]
    return g.loc[index]


def require_metrics(oc: Outcomes, metrics: list[str], where: str) -> None:
    """One-line error when a requested metric has no scores on the selected pairs."""
    absent = sorted(set(metrics) - set(oc.long["metric"]))
    if absent:
        raise StudyError(f"{where}: metric(s) {', '.join(absent)} have no ok scores on the selected pairs "
                         f"(scored: {', '.join(sorted(oc.long['metric'].unique()))})")
