"""The report's numbers beyond the stored study tables, each with one CI method.

CI method for every accuracy in the report (``CI_METHOD``): the study's percentile bootstrap over
source groups (``bench.study.stats.group_bootstrap_ratio``; pairs of one source image share
images, so groups are resampled whole), 95%, B = ``N_BOOT``, seed 0. The Phase I / II tables carry
the same method from the study (their own B, column ``ci_method``).

Definitions:

* strict accuracy: share of decided pairs (human pref != tie) where the metric picks the human's
  side (a metric tie is wrong); tie-half: a metric tie counts 0.5; vote agreement: votes for the
  metric's side / all votes (a metric tie takes half). As ``bench/store/views.py``.
* per SR method: a pair counts for method M when either image was made by M (manifest columns
  ``method_a`` / ``method_b``, e.g. sr2afc; else from ``<id>_<method>`` file names when every pair
  follows that convention, ``methods_from_names``).
* vote margin: share of the pair's votes for the majority side, (max(a, b)) / (a + b), binned
  ``MARGIN_BINS`` (weak 50-70%, medium 70-90%, strong 90-100%).
* inter-observer ceiling (split-half): where the manifest keeps per-observer votes (column
  ``observer_votes``, JSON {observer: [votes_a, votes_b]}), the observers are split into two halves
  (all balanced splits when there are at most ``MAX_EXACT_OBSERVERS``, else ``N_RANDOM_SPLITS``
  seeded random ones); each half's majority is its preference; the ceiling is the share of
  (pair, split) where both halves are decided and agree. It estimates how well one group of people
  predicts another on these pairs, the level a metric cannot be expected to beat by much.
"""

from __future__ import annotations

import itertools
import json

import numpy as np
import pandas as pd

from bench.store import Store
from bench.store.views import connect
from bench.study.outcomes import correctness_matrix, outcomes
from bench.study.stats import GROUP_BOOTSTRAP, group_bootstrap_ratio

N_BOOT = 2000
CI_METHOD = f"{GROUP_BOOTSTRAP} (B={N_BOOT}, 95%)"
MARGIN_BINS = [(0.5, 0.7, "weak (50-70%)"), (0.7, 0.9, "medium (70-90%)"), (0.9, 1.0001, "strong (90-100%)")]
MAX_EXACT_OBSERVERS = 10
N_RANDOM_SPLITS = 200


def ci_table(long: pd.DataFrame, n_boot: int = N_BOOT, seed: int = 0) -> pd.DataFrame:
    """Per metric of ``long`` (one row per pair x metric, as ``bench.study.outcomes``): strict,
    tie-half and vote agreement with group-bootstrap CIs; each metric over the pairs it scored."""
    idx = ["dataset", "pair_id"]
    d = long.assign(
        _dec=long["decided"].astype(float),
        _strict=long["correct"].astype(float) * long["decided"],
        _half=np.where(long["metric_pref"] == long["pref"], 1.0, np.where(long["metric_pref"] == "tie", 0.5, 0.0))
        * long["decided"],
        _va=long["votes_a"].astype(float).fillna(0.0), _vb=long["votes_b"].astype(float).fillna(0.0))
    d["_vnum"] = np.select([d["metric_pref"] == "a", d["metric_pref"] == "b"], [d["_va"], d["_vb"]],
                           (d["_va"] + d["_vb"]) / 2)
    d["_vden"] = d["_va"] + d["_vb"]
    metrics = sorted(d["metric"].unique())

    def wide(col: str) -> np.ndarray:
        return d.pivot_table(index=idx, columns="metric", values=col, aggfunc="sum", fill_value=0.0)[metrics]

    dec = wide("_dec")
    groups = d.drop_duplicates(idx).set_index(idx).loc[dec.index, "source_group"].to_numpy()
    num = np.hstack([wide("_strict").to_numpy(), wide("_half").to_numpy(), wide("_vnum").to_numpy()])
    den = np.hstack([dec.to_numpy(), dec.to_numpy(), wide("_vden").to_numpy()])
    point, lo, hi = group_bootstrap_ratio(num, den, groups, n_boot=n_boot, seed=seed)
    k = len(metrics)
    n_dec = dec.to_numpy().sum(axis=0).astype(int)
    return pd.DataFrame({
        "metric": metrics, "n_decided": n_dec,
        "acc": point[:k], "ci_lo": lo[:k], "ci_hi": hi[:k],
        "tie_half_acc": point[k:2 * k], "tie_half_ci_lo": lo[k:2 * k], "tie_half_ci_hi": hi[k:2 * k],
        "vote_agreement": point[2 * k:], "vote_ci_lo": lo[2 * k:], "vote_ci_hi": hi[2 * k:],
        "n_groups": len(set(groups)),
    }).sort_values(["acc", "metric"], ascending=[False, True]).reset_index(drop=True)


def agreement_by_dataset(store: Store, n_boot: int = N_BOOT) -> pd.DataFrame:
    """``ci_table`` per (dataset, split), every metric with scores (one configuration each)."""
    long = outcomes(store).long
    parts = [ci_table(g, n_boot).assign(dataset=ds, split=sp) for (ds, sp), g in long.groupby(["dataset", "split"])]
    out = pd.concat(parts, ignore_index=True)
    return out[["dataset", "split"] + [c for c in out.columns if c not in ("dataset", "split")]]


def study_outcomes(store: Store, key: str | None = "latest") -> tuple[pd.DataFrame | None, pd.DataFrame]:
    """(Phase II ranking ``key`` - default the latest - or None, per-pair outcomes of its metrics on
    its pairs, with its configurations). Without a Phase II (``key`` None): every scored metric on
    every pair."""
    if key == "latest":
        key, p2 = store.latest_study("phase2_ranking", "phase2_key")
    else:
        p2 = store.read_study("phase2_ranking", key) if key else None
    if p2 is None:
        return None, outcomes(store).long
    pairs = connect(store).execute("SELECT dataset, pair_id FROM study_phase2_pairs WHERE phase2_key = ?",
                                   [key]).df()
    pins = dict(zip(p2["metric"], p2["config_hash"])) if "config_hash" in p2 else None
    include = bool(p2["include_inferred"].iloc[0]) if "include_inferred" in p2 else False
    return p2, outcomes(store, pair_ids=pairs, metrics=list(p2["metric"]), pins=pins,
                        include_inferred=include).long


def pair_info(store: Store) -> pd.DataFrame:
    """The current pairs with their optional method / per-observer columns."""
    con = connect(store)
    cols = {r[0] for r in con.execute("DESCRIBE pairs").fetchall()}
    extra = [c for c in ("method_a", "method_b", "observer_votes") if c in cols]
    sel = ", ".join(['dataset', 'pair_id', '"group"', 'root', 'image_a', 'image_b', 'image_a_id', 'image_b_id',
                     'votes_a', 'votes_b', 'pref', 'synthetic'] + extra)
    pairs = con.execute(f"SELECT {sel} FROM pairs").df()
    if "method_a" not in pairs or pairs["method_a"].isna().all():
        pairs = methods_from_names(pairs)
    return pairs


def methods_from_names(pairs: pd.DataFrame) -> pd.DataFrame:
    """``method_a``/``method_b`` from ``<id>_<method>`` file names (the sr2afc convention), for a CSV
    without method columns: only when EVERY pair follows it (both stems hold a ``_`` and share the
    part before the first one); otherwise ``pairs`` unchanged (no per-method figure)."""
    from pathlib import PurePath

    def split(name) -> tuple[str, str] | None:
        stem = PurePath(str(name)).stem
        head, sep, tail = stem.partition("_")
        return (head, tail) if sep and head and tail else None

    a, b = [split(x) for x in pairs["image_a"]], [split(x) for x in pairs["image_b"]]
    if pairs.empty or not all(x and y and x[0] == y[0] for x, y in zip(a, b)):
        return pairs
    return pairs.assign(method_a=[x[1] for x in a], method_b=[y[1] for y in b])


def accuracy_by_method(long: pd.DataFrame, pairs: pd.DataFrame, n_boot: int = N_BOOT) -> pd.DataFrame | None:
    """Strict accuracy with CIs per SR method (pairs where either image is that method's output)."""
    if not {"method_a", "method_b"} <= set(pairs.columns) or pairs["method_a"].isna().all():
        return None
    m = pairs[["dataset", "pair_id", "method_a", "method_b"]]
    rows = []
    for method in sorted(set(m["method_a"].dropna()) | set(m["method_b"].dropna())):
        ids = m[(m["method_a"] == method) | (m["method_b"] == method)][["dataset", "pair_id"]]
        sub = long.merge(ids, on=["dataset", "pair_id"])
        if sub["decided"].any():
            t = ci_table(sub, n_boot)
            rows.append(t[["metric", "acc", "ci_lo", "ci_hi", "n_decided"]].assign(method=method))
    return pd.concat(rows, ignore_index=True)[["method", "metric", "acc", "ci_lo", "ci_hi", "n_decided"]] \
        if rows else None


MIN_BIN_PAIRS = 10  # a margin bin with fewer decided pairs is marked in the report (its CI is rough)


def margin_bin(votes_a, votes_b) -> pd.Series:
    va, vb = pd.Series(votes_a, dtype=float), pd.Series(votes_b, dtype=float)
    share = np.maximum(va, vb) / (va + vb)
    out = pd.Series([None] * len(share), index=share.index, dtype=object)
    for lo, hi, label in MARGIN_BINS:
        out[(share >= lo) & (share < hi) & (va != vb)] = label
    return out


def accuracy_by_margin(long: pd.DataFrame, n_boot: int = N_BOOT) -> pd.DataFrame | None:
    """Strict accuracy with CIs per human vote-margin bin (decided pairs with votes)."""
    voted = long[long["votes_a"].notna() & long["decided"]].copy()
    if voted.empty:
        return None
    voted["margin"] = margin_bin(voted["votes_a"].to_numpy(), voted["votes_b"].to_numpy()).to_numpy()
    rows = [ci_table(g, n_boot)[["metric", "acc", "ci_lo", "ci_hi", "n_decided"]].assign(margin=label)
            for label, g in voted.groupby("margin") if g["decided"].any()]
    order = {label: i for i, (_, _, label) in enumerate(MARGIN_BINS)}
    out = pd.concat(rows, ignore_index=True)
    out = out.sort_values(["margin", "acc"], key=lambda s: s.map(order) if s.name == "margin" else -s)
    return out[["margin", "metric", "acc", "ci_lo", "ci_hi", "n_decided"]].reset_index(drop=True)


def _splits(observers: list[str], seed: int = 0) -> list[tuple[frozenset, frozenset]]:
    n = len(observers)
    if n < 2:
        return []
    if n <= MAX_EXACT_OBSERVERS:
        out, seen = [], set()
        for half in itertools.combinations(observers, n // 2):
            h1 = frozenset(half)
            h2 = frozenset(observers) - h1
            if frozenset((h1, h2)) not in seen:
                seen.add(frozenset((h1, h2)))
                out.append((h1, h2))
        return out
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(N_RANDOM_SPLITS):
        perm = list(rng.permutation(observers))
        out.append((frozenset(perm[:n // 2]), frozenset(perm[n // 2:])))
    return out


def split_half_ceiling(pairs: pd.DataFrame, n_boot: int = N_BOOT, seed: int = 0) -> pd.DataFrame | None:
    """Inter-observer split-half agreement per dataset with a group-bootstrap CI (module docstring)."""
    if "observer_votes" not in pairs or pairs["observer_votes"].isna().all():
        return None
    rows = []
    for ds, g in pairs[pairs["observer_votes"].notna()].groupby("dataset"):
        votes = [json.loads(v) for v in g["observer_votes"]]
        observers = sorted({o for v in votes for o in v})
        splits = _splits(observers, seed)
        if not splits:
            continue
        num, den = np.zeros(len(g)), np.zeros(len(g))
        for i, v in enumerate(votes):
            for h1, h2 in splits:
                a1 = sum(v[o][0] for o in h1 if o in v) - sum(v[o][1] for o in h1 if o in v)
                a2 = sum(v[o][0] for o in h2 if o in v) - sum(v[o][1] for o in h2 if o in v)
                if a1 != 0 and a2 != 0:
                    den[i] += 1
                    num[i] += np.sign(a1) == np.sign(a2)
        point, lo, hi = group_bootstrap_ratio(num, den, (ds + "/" + g["group"].astype(str)).to_numpy(),
                                              n_boot=n_boot, seed=seed)
        rows.append({"dataset": ds, "agreement": point[0], "ci_lo": lo[0], "ci_hi": hi[0],
                     "n_observers": len(observers), "n_splits": len(splits), "n_pairs": int((den > 0).sum())})
    return pd.DataFrame(rows) if rows else None


def ensemble_ci(store: Store, n_boot: int = N_BOOT, key: str | None = None) -> pd.DataFrame | None:
    """Held-out accuracy of ensemble ``key`` (default: the latest) and of each single metric on the
    same pairs, with paired group-bootstrap CIs (the ensemble's grouped-CV predictions, ``study_ensemble_cv``)."""
    if key is None:
        key, summary = store.latest_study("ensemble_summary", "ensemble_key")
    else:
        summary = store.read_study("ensemble_summary", key)
    if summary is None:
        return None
    cv = connect(store).execute("SELECT * FROM study_ensemble_cv WHERE ensemble_key = ?", [key]).df()
    if cv.empty:
        return None
    configs = json.loads(summary["configs"].iloc[0]) if "configs" in summary else None
    singles = [m for m in summary["model"] if m in (configs or {})] or \
        [m for m in summary["model"] if not str(m).startswith("ensemble")]
    include = bool(summary["include_inferred"].iloc[0]) if "include_inferred" in summary else False
    oc = outcomes(store, pair_ids=cv[["dataset", "pair_id"]], metrics=singles, pins=configs, include_inferred=include)
    correct = correctness_matrix(oc.long)
    cv = cv.set_index(["dataset", "pair_id"])
    common = cv.index.intersection(correct.index)
    right = np.column_stack([(cv.loc[common, "pred"] == cv.loc[common, "y"]).to_numpy(float)]
                            + [correct.loc[common, m].to_numpy(float) for m in singles])
    groups = oc.long.drop_duplicates(["dataset", "pair_id"]).set_index(["dataset", "pair_id"]).loc[
        common, "source_group"].to_numpy()
    point, lo, hi = group_bootstrap_ratio(right, np.ones(len(common)), groups, n_boot=n_boot)
    names = [f"ensemble ({int(summary['n_folds'].iloc[0])}-fold grouped CV, held out)"] + singles
    return pd.DataFrame({"model": names, "acc": point, "ci_lo": lo, "ci_hi": hi, "n": len(common),
                         "ensemble_key": key})


def failures(long: pd.DataFrame, best: str, limit: int = 6) -> pd.DataFrame:
    """The decided pairs ``best`` gets wrong, the strongest human preferences first (then pair id)."""
    b = long[(long["metric"] == best) & long["decided"] & (long["correct"] == 0)].copy()
    va, vb = b["votes_a"].astype(float), b["votes_b"].astype(float)
    b["margin"] = (np.maximum(va, vb) / (va + vb)).fillna(-1.0)
    return b.sort_values(["margin", "dataset", "pair_id"], ascending=[False, True, True]).head(limit)
