"""Statistics of the study: bootstrap CIs, McNemar's exact test, complementarity.

All functions take plain arrays / frames (pairs x metrics correctness) so they can be checked
against hand-built cases.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.stats import binomtest


def bootstrap_ci(correct: pd.DataFrame, n_boot: int = 2000, seed: int = 0, level: float = 0.95,
                 groups: pd.Series | None = None) -> pd.DataFrame:
    """Percentile bootstrap CI of each metric's accuracy, resampling pairs (or whole groups).

    The same resamples are used for every metric (paired), so rank stability is comparable.
    Returns metric, acc, ci_lo, ci_hi, n.
    """
    values = correct.to_numpy(dtype=float)
    rng = np.random.default_rng(seed)
    n = len(values)
    if groups is None:
        idx = rng.integers(0, n, size=(n_boot, n))
        boots = values[idx].mean(axis=1)  # (n_boot, metrics)
    else:
        codes, uniq = pd.factorize(groups.to_numpy())
        sums = np.zeros((len(uniq), values.shape[1]))
        np.add.at(sums, codes, values)
        counts = np.bincount(codes, minlength=len(uniq)).astype(float)
        pick = rng.integers(0, len(uniq), size=(n_boot, len(uniq)))
        boots = sums[pick].sum(axis=1) / counts[pick].sum(axis=1)[:, None]
    alpha = (1 - level) / 2
    return pd.DataFrame({
        "metric": correct.columns,
        "acc": values.mean(axis=0),
        "ci_lo": np.quantile(boots, alpha, axis=0),
        "ci_hi": np.quantile(boots, 1 - alpha, axis=0),
        "n": n,
    })


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
