"""Study statistics against hand-built cases and independent computations."""

import numpy as np
import pandas as pd
import pytest
from scipy.stats import binomtest

from bench.study.phases import stratified_subset
from bench.study.stats import (bootstrap_ci, both_wrong, conditional_accuracy, greedy_complement, mcnemar_exact,
                               oracle_of_two)

# 6 pairs x 3 metrics, 1 = right
HAND = pd.DataFrame({"best": [1, 0, 1, 0, 1, 1], "nima": [0, 1, 1, 1, 0, 1], "qalign": [1, 0, 0, 1, 1, 0]})


def test_mcnemar_exact_on_a_hand_built_table():
    a = np.array([1] * 8 + [0] * 2 + [1] * 5 + [0] * 3)  # 8 only-A-right, 2 only-B-right, 5 both, 3 neither
    b = np.array([0] * 8 + [1] * 2 + [1] * 5 + [0] * 3)
    res = mcnemar_exact(a, b)
    assert (res["only_a_right"], res["only_b_right"]) == (8, 2)
    assert res["p_value"] == pytest.approx(2 * (1 + 10 + 45) / 1024)  # two-sided exact binomial, n=10, k=2
    assert mcnemar_exact(a, a)["p_value"] == 1.0


def test_conditional_accuracy_hand_built():
    cond = conditional_accuracy(HAND, "best").set_index("metric")
    # best is wrong on pairs 1 and 3: nima right on both, qalign right on pair 3 only
    assert cond.loc["nima", "acc_on_best_wrong"] == 1.0
    assert cond.loc["qalign", "acc_on_best_wrong"] == 0.5
    assert (cond["n_best_wrong"] == 2).all()


def test_overlap_oracle_and_greedy_hand_built():
    bw = both_wrong(HAND)
    assert bw.loc["best", "best"] == pytest.approx(2 / 6)  # diagonal = error rate
    assert bw.loc["best", "qalign"] == pytest.approx(1 / 6)  # pair 1 only
    assert bw.loc["nima", "qalign"] == 0.0
    oracle = oracle_of_two(HAND, "best").set_index("metric")["oracle_acc"]
    assert oracle["nima"] == 1.0 and oracle["qalign"] == pytest.approx(5 / 6)
    greedy = greedy_complement(HAND, "best")
    assert list(greedy["metric"]) == ["best", "nima", "qalign"]
    assert greedy["oracle_acc"].tolist() == pytest.approx([4 / 6, 1.0, 1.0])


def test_bootstrap_ci_contains_the_point_value_and_is_reproducible():
    rng = np.random.default_rng(1)
    correct = pd.DataFrame({"m1": rng.random(300) < 0.8, "m2": rng.random(300) < 0.55}).astype(int)
    ci = bootstrap_ci(correct, n_boot=1000, seed=3).set_index("metric")
    for m in ("m1", "m2"):
        assert ci.loc[m, "ci_lo"] <= ci.loc[m, "acc"] <= ci.loc[m, "ci_hi"]
        # percentile bootstrap width is close to the binomial one for iid pairs
        w = binomtest(int(correct[m].sum()), 300).proportion_ci(method="wilson")
        assert abs((ci.loc[m, "ci_hi"] - ci.loc[m, "ci_lo"]) - (w.high - w.low)) < 0.03
    again = bootstrap_ci(correct, n_boot=1000, seed=3)
    pd.testing.assert_frame_equal(ci.reset_index(), again)
    grouped = bootstrap_ci(correct, n_boot=500, seed=0, groups=pd.Series(np.arange(300) // 10))
    assert (grouped["ci_lo"] <= grouped["acc"]).all() and (grouped["acc"] <= grouped["ci_hi"]).all()


def test_stratified_subset_covers_every_source_and_is_reproducible():
    rows = []
    for d, n_groups, per in (("big", 50, 8), ("small", 5, 4)):
        for g in range(n_groups):
            for k in range(per):
                rows.append({"dataset": d, "split": "all", "group": f"{d}{g}", "pair_id": f"{d}{g}-{k}",
                             "pref": "tie" if k == 0 else "a"})
    m = pd.DataFrame(rows)
    sub = stratified_subset(m, 60, seed=0)
    assert len(sub) == 60 and set(sub["dataset"]) == {"big", "small"}
    assert not set(sub["pair_id"]) & set(m.loc[m["pref"] == "tie", "pair_id"])
    big = sub[sub["dataset"] == "big"]
    assert big["group"].nunique() == min(len(big), 50)  # every group once before any twice
    pd.testing.assert_frame_equal(sub, stratified_subset(m, 60, seed=0))
    assert not sub.equals(stratified_subset(m, 60, seed=1))
