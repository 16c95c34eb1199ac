"""The agreement table with group-bootstrap CIs (the ``agreement`` view's Wilson intervals treat
pairs as independent; pairs of one source share images, and tie-half accuracy and vote agreement
are not Bernoulli proportions).

Same definitions as ``bench.store.views`` (strict accuracy and tie-half accuracy over decided pairs,
vote agreement over pairs with votes), one row per (dataset, split, metric, config_hash); the three
95% CIs come from one percentile bootstrap over the source groups (dataset/group) of that row's
pairs (``bench.study.stats.group_bootstrap_ratio``). Inferred pairs are excluded unless asked for.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from bench.errors import StudyError
from bench.store import Store
from bench.study.outcomes import _connect, pair_filter
from bench.study.stats import GROUP_BOOTSTRAP, group_bootstrap_ratio

COLUMNS = ["dataset", "split", "metric", "config_hash", "n_pairs", "n_decided", "n_voted", "n_groups",
           "strict_acc", "strict_ci_lo", "strict_ci_hi", "tie_half_acc", "tie_half_ci_lo", "tie_half_ci_hi",
           "vote_agreement", "vote_ci_lo", "vote_ci_hi", "ci_method"]


def bootstrap_agreement(store: Store, *, n_boot: int = 2000, seed: int = 0, include_inferred: bool = False,
                        datasets: list[str] | None = None) -> pd.DataFrame:
    con = _connect(store)
    where, params = pair_filter(include_inferred, datasets)
    long = con.execute("SELECT dataset, split, dataset || '/' || \"group\" AS source_group, pref, votes_a, votes_b, "
                       f"metric, config_hash, metric_pref FROM pair_scores WHERE {' AND '.join(where)}", params).df()
    if long.empty:
        raise StudyError(f"{store.root}: no scored pairs (datasets={datasets}, include_inferred={include_inferred})")
    decided = (long["pref"] != "tie").to_numpy(float)
    right = (long["metric_pref"] == long["pref"]).to_numpy(float) * decided
    half = np.where(long["metric_pref"] == "tie", 0.5, right) * decided
    va, vb = long["votes_a"].astype(float), long["votes_b"].astype(float)
    voted = va.notna().to_numpy()
    va, vb = va.fillna(0).to_numpy(), vb.fillna(0).to_numpy()
    vote = np.select([long["metric_pref"] == "a", long["metric_pref"] == "b"], [va, vb], (va + vb) / 2)
    num = np.column_stack([right, half, vote])
    den = np.column_stack([decided, decided, va + vb])
    rows = []
    for key, idx in long.groupby(["dataset", "split", "metric", "config_hash"], sort=True).indices.items():
        groups = long["source_group"].to_numpy()[idx]
        point, lo, hi = group_bootstrap_ratio(num[idx], den[idx], groups, n_boot=n_boot, seed=seed)
        rows.append([*key, len(idx), int(decided[idx].sum()), int(voted[idx].sum()), len(set(groups)),
                     point[0], lo[0], hi[0], point[1], lo[1], hi[1], point[2], lo[2], hi[2],
                     f"{GROUP_BOOTSTRAP} (B={n_boot}, 95%)"])
    return pd.DataFrame(rows, columns=COLUMNS)
