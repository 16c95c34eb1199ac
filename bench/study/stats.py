"""Statistics of the study: bootstrap CIs, McNemar's exact test with Holm correction, complementarity.

All functions take plain arrays / frames (pairs x metrics correctness) so they can be checked
against hand-built cases.

CI method used by every study table (column ``ci_method``): percentile bootstrap that resamples
whole *source groups* (the manifest's ``group`` column, qualified by dataset) with replacement,
because pairs of one source share images and their outcomes are not independent (an iid pair
bootstrap or a Wilson interval is too narrow then). The same resamples serve every metric and
every quantity (paired). Accuracies that are not Bernoulli proportions (tie-half accuracy, vote
agreement) are ratios of per-group sums and get the same group bootstrap, never Wilson.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.stats import binomtest
from statsmodels.stats.multitest import multipletests


def bootstrap_ci(correct: pd.DataFrame, n_boot: int = 2000, seed: int = 0, level: float = 0.95,
                 groups: pd.Series | np.ndarray | None = None) -> pd.DataFrame:
    """Percentile bootstrap CI of each metric's accuracy, resampling whole groups (``groups``,
    one label per row of ``correct``) or, when ``groups`` is None, single pairs (iid).

    The same resamples are used for every metric (paired). Returns metric, acc, ci_lo, ci_hi, n.
    """
    values = correct.to_numpy(dtype=float)
    labels = np.arange(len(values)) if groups is None else np.asarray(groups)
    acc, lo, hi = group_bootstrap_ratio(values, np.ones(len(values)), labels, n_boot, seed, level)
    return pd.DataFrame({"metric": correct.columns, "acc": acc, "ci_lo": lo, "ci_hi": hi, "n": len(values)})


def mcnemar_exact(right_a: np.ndarray, right_b: np.ndarray) -> dict:
    """Exact (binomial) McNemar test on paired 0/1 correctness.

    b = A right & B wrong, c = A wrong & B right; p = two-sided binomial test of b in b + c, p=0.5.
    """
    right_a, right_b = np.asarray(right_a, bool), np.asarray(right_b, bool)
    b = int(np.sum(right_a & ~right_b))
    c = int(np.sum(~right_a & right_b))
    p = 1.0 if b + c == 0 else float(binomtest(b, b + c, 0.5, alternative="two-sided").pvalue)
    return {"only_a_right": b, "only_b_right": c, "p_value": p}


def conditional_accuracy(correct: pd.DataFrame, best: str) -> pd.DataFrame:
    """Accuracy of every other metric on the pairs ``best`` gets wrong."""
    wrong = correct[best] == 0
    sub = correct.loc[wrong].drop(columns=[best])
    return pd.DataFrame({"metric": sub.columns, "acc_on_best_wrong": sub.mean(axis=0).to_numpy() if len(sub) else np.nan,
                         "n_best_wrong": int(wrong.sum())}).sort_values("acc_on_best_wrong", ascending=False)


def both_wrong(correct: pd.DataFrame) -> pd.DataFrame:
    """N x N share of pairs both metrics get wrong (diagonal: each metric's error rate)."""
    w = (correct == 0).to_numpy(dtype=float)
    return pd.DataFrame(w.T @ w / len(w), index=correct.columns, columns=correct.columns)


def oracle_of_two(correct: pd.DataFrame, best: str) -> pd.DataFrame:
    """Share of pairs where ``best`` or the other metric is right."""
    rows = [{"metric": m, "oracle_acc": float(((correct[best] == 1) | (correct[m] == 1)).mean())}
            for m in correct.columns if m != best]
    return pd.DataFrame(rows).sort_values("oracle_acc", ascending=False)


def greedy_complement(correct: pd.DataFrame, best: str, k: int | None = None) -> pd.DataFrame:
    """Greedy set cover: repeatedly add the metric that most raises the share of pairs where at
    least one chosen metric is right (ties broken by the metric's own accuracy, then name)."""
    chosen = [best]
    covered = correct[best].to_numpy() == 1
    rows = [{"step": 0, "metric": best, "oracle_acc": float(covered.mean()), "gain": float(covered.mean())}]
    remaining = [m for m in correct.columns if m != best]
    acc = correct.mean(axis=0)
    while remaining and (k is None or len(chosen) < k + 1):
        gains = {m: float((covered | (correct[m].to_numpy() == 1)).mean()) for m in remaining}
        nxt = sorted(remaining, key=lambda m: (-gains[m], -acc[m], m))[0]
        rows.append({"step": len(chosen), "metric": nxt, "oracle_acc": gains[nxt], "gain": gains[nxt] - float(covered.mean())})
        covered = covered | (correct[nxt].to_numpy() == 1)
        chosen.append(nxt)
        remaining.remove(nxt)
    return pd.DataFrame(rows)


GROUP_BOOTSTRAP = "percentile bootstrap over source groups"


def group_bootstrap_ratio(num: np.ndarray, den: np.ndarray, groups: np.ndarray, n_boot: int = 2000, seed: int = 0,
                          level: float = 0.95) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Point value and percentile-bootstrap CI of ratios sum(num) / sum(den), resampling groups.

    ``num`` and ``den`` are (pairs x quantities) arrays (``den`` may be (pairs,)); the pairs of one
    group are kept together: a resample draws as many groups as there are, with replacement, and
    sums their pairs. The group draws are shared by all quantities (paired). Groups are numbered in
    sorted order, so a seed gives the same interval whatever the order of the rows. A resample whose
    denominator is 0 is dropped from that quantity's quantiles. A quantity with fewer than two groups
    holding a denominator (or an undefined point value) has an undefined interval: NaN, never a
    zero-width one. Returns (point, lo, hi).
    """
    num = np.asarray(num, dtype=float)
    num = num[:, None] if num.ndim == 1 else num
    den = np.asarray(den, dtype=float)
    den = np.broadcast_to(den[:, None] if den.ndim == 1 else den, num.shape)
    # sorted group codes: the draws for a seed do not depend on the row order (SQL results have none)
    codes, uniq = pd.factorize(pd.Series(np.asarray(groups, dtype=object)).astype(str), sort=True)
    n_groups = len(uniq)
    g_num = np.zeros((n_groups, num.shape[1]))
    g_den = np.zeros((n_groups, num.shape[1]))
    np.add.at(g_num, codes, num)
    np.add.at(g_den, codes, den)
    rng = np.random.default_rng(seed)
    boots = np.empty((n_boot, num.shape[1]))
    chunk = max(1, min(n_boot, 4_000_000 // max(n_groups, 1)))  # bounded memory: chunk x groups weights
    for start in range(0, n_boot, chunk):
        c = min(chunk, n_boot - start)
        pick = rng.integers(0, n_groups, size=(c, n_groups))  # each row: one resample of the groups
        weight = np.bincount((pick + np.arange(c)[:, None] * n_groups).ravel(), minlength=c * n_groups)
        weight = weight.reshape(c, n_groups).astype(float)
        b_num, b_den = weight @ g_num, weight @ g_den
        with np.errstate(invalid="ignore", divide="ignore"):
            boots[start:start + c] = np.where(b_den > 0, b_num / b_den, np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        point = np.where(g_den.sum(axis=0) > 0, g_num.sum(axis=0) / g_den.sum(axis=0), np.nan)
    alpha = (1 - level) / 2
    lo = np.array([np.quantile(c[~np.isnan(c)], alpha) if (~np.isnan(c)).any() else np.nan for c in boots.T])
    hi = np.array([np.quantile(c[~np.isnan(c)], 1 - alpha) if (~np.isnan(c)).any() else np.nan for c in boots.T])
    # fewer than two groups with a denominator: every resample is the sample, so no interval exists
    undefined = ((g_den > 0).sum(axis=0) < 2) | np.isnan(point)
    lo[undefined], hi[undefined] = np.nan, np.nan
    return point, lo, hi


def holm(p_values: list[float] | np.ndarray) -> np.ndarray:
    """Holm step-down adjusted p-values (statsmodels ``multipletests(method='holm')``)."""
    p = np.asarray(p_values, dtype=float)
    if len(p) == 0:
        return p
    return multipletests(p, method="holm")[1]
