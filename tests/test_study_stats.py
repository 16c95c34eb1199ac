"""Study statistics against hand-built cases and independent computations."""

import numpy as np
import pandas as pd
import pytest
from scipy.stats import binomtest

from bench.errors import StudyError
from bench.study.configs import parse_pins
from bench.study.phases import stratified_subset
from bench.study.stats import (
    bootstrap_ci,
    both_wrong,
    conditional_accuracy,
    greedy_complement,
    group_bootstrap_ratio,
    holm,
    mcnemar_exact,
    oracle_of_two,
)

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


def test_iid_bootstrap_matches_wilson_and_group_bootstrap_counts_groups_not_pairs():
    rng = np.random.default_rng(1)
    correct = pd.DataFrame({"m1": rng.random(300) < 0.8, "m2": rng.random(300) < 0.55}).astype(int)
    ci = bootstrap_ci(correct, n_boot=2000, seed=3).set_index("metric")
    for m in ("m1", "m2"):  # iid pairs: the percentile bootstrap width is close to the binomial one
        w = binomtest(int(correct[m].sum()), 300).proportion_ci(method="wilson")
        assert abs((ci.loc[m, "ci_hi"] - ci.loc[m, "ci_lo"]) - (w.high - w.low)) < 0.02
    # 20 groups of 15 identical outcomes: 20 independent observations, not 300
    per_group = (rng.random(20) < 0.6).astype(int)
    clustered = pd.DataFrame({"m": np.repeat(per_group, 15)})
    grouped = bootstrap_ci(clustered, n_boot=2000, seed=0, groups=np.arange(300) // 15).iloc[0]
    w20 = binomtest(int(per_group.sum()), 20).proportion_ci(method="wilson")
    assert abs((grouped["ci_hi"] - grouped["ci_lo"]) - (w20.high - w20.low)) < 0.08


def test_group_bootstrap_ratio_weights_groups_by_their_pairs():
    # tie-half style ratio: group g1 has 3 pairs (num 1, 0.5, 0), g2 has 1 pair (num 1)
    point, lo, hi = group_bootstrap_ratio(np.array([1.0, 0.5, 0.0, 1.0]), np.ones(4), ["g1", "g1", "g1", "g2"],
                                          n_boot=4000, seed=0)
    assert point[0] == pytest.approx(2.5 / 4)
    # a resample is {g1,g1} (0.5), {g1,g2} (0.625) or {g2,g2} (1.0) with probabilities 1/4, 1/2, 1/4
    assert lo[0] == pytest.approx(0.5) and hi[0] == pytest.approx(1.0)
    # a zero denominator (no voted pair in a resample) is left out, not counted as 0; with one group
    # holding a denominator no interval exists (NaN, issue 18), though the point value does
    point, lo, hi = group_bootstrap_ratio(np.array([3.0, 0.0]), np.array([4.0, 0.0]), ["a", "b"], n_boot=500, seed=0)
    assert point[0] == pytest.approx(0.75) and np.isnan(lo[0]) and np.isnan(hi[0])
    point, lo, hi = group_bootstrap_ratio(np.array([3.0, 0.0, 1.0]), np.array([4.0, 0.0, 2.0]), ["a", "b", "c"],
                                          n_boot=500, seed=0)
    assert lo[0] == pytest.approx(0.5) and hi[0] == pytest.approx(0.75)


def test_holm_against_the_step_down_by_hand():
    p = [0.01, 0.04, 0.03, 0.20]
    # sorted 0.01, 0.03, 0.04, 0.20 times 4, 3, 2, 1, running maximum, capped at 1
    assert holm(p).tolist() == pytest.approx([0.04, 0.09, 0.09, 0.20])


def test_config_pins_parse_and_refuse_malformed():
    assert parse_pins(["niqe=ab12", "piqe = cd"]) == {"niqe": "ab12", "piqe": "cd"}
    for bad in (["niqe"], ["=ab"], ["niqe="], ["niqe=a", "niqe=b"]):
        with pytest.raises(StudyError, match="--config"):
            parse_pins(bad)


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
    shuffled = m.sample(frac=1.0, random_state=5).reset_index(drop=True)  # same manifest, rows reordered
    pd.testing.assert_frame_equal(sub, stratified_subset(shuffled, 60, seed=0))


def test_bootstrap_intervals_do_not_depend_on_row_order():
    """A seed fixes the interval whatever order the rows arrive in (SQL results have no order): the
    CLI's `agree --ci bootstrap` and the study read the same rows in different orders."""
    from bench.report.compare import bootstrap_ci as paired_ci

    rng = np.random.default_rng(4)
    groups = rng.integers(0, 40, 400).astype(str)
    num = (rng.random((400, 2)) < [0.7, 0.4]).astype(float)
    den = np.ones(400)
    perm = rng.permutation(400)
    a = group_bootstrap_ratio(num, den, groups, n_boot=500, seed=0)
    b = group_bootstrap_ratio(num[perm], den[perm], groups[perm], n_boot=500, seed=0)
    for x, y in zip(a, b):
        np.testing.assert_allclose(x, y, rtol=1e-12)
    assert a[1][0] < a[0][0] < a[2][0]  # a real interval around the point value
    diffs = rng.normal(0.1, 1.0, 200)
    lo, hi = paired_ci(diffs, n_boot=500, seed=0)
    assert (lo, hi) == pytest.approx(paired_ci(diffs[rng.permutation(200)], n_boot=500, seed=0), rel=1e-12)
    assert lo < diffs.mean() < hi
