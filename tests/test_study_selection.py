"""The study on hand-built stores: one configuration per metric, Phase II scope for complement and
ensemble, the chain of keys in `select`, inferred pairs, the Phase II split, group-bootstrap CIs,
Holm-corrected McNemar, strict JSON. Each test builds the case the old code got wrong.

Stores are written directly (manifest rows + score rows), no images and no metric runs: a metric
"right" on a pair scores the preferred image higher (orientation applied for lower-is-better).
"""

from __future__ import annotations

import datetime as dt
import json
import math

import numpy as np
import pandas as pd
import pytest
from scipy.stats import binomtest

from bench.errors import StudyError
from bench.metrics.table import get, select
from bench.store import Store
from bench.study import select as select_mod
from bench.study.complement import complement
from bench.study.configs import config_for_images
from bench.study.ensemble import ensemble
from bench.study.outcomes import outcomes
from bench.study.phases import evaluate_phase1, evaluate_phase2, phase2_pairs
from bench.study.select import build_selection, read_selection, write_selection

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def manifest_of(n_pairs: int, per_group: int = 1, dataset: str = "d", prefs=None, kinds=None, split="all",
                votes=None) -> pd.DataFrame:
    prefs = prefs if prefs is not None else ["a" if i % 3 else "b" for i in range(n_pairs)]
    rows = []
    for i in range(n_pairs):
        va, vb = votes[i] if votes is not None else ((3, 1) if prefs[i] == "a" else (1, 3) if prefs[i] == "b" else (2, 2))
        rows.append({"pair_id": f"{dataset}-p{i:04d}", "dataset": dataset, "split": split[i] if isinstance(split, list)
                     else split, "group": f"g{i // per_group:04d}", "image_a": f"{dataset}/{i}a.png",
                     "image_b": f"{dataset}/{i}b.png", "votes_a": va, "votes_b": vb, "pref": prefs[i],
                     "image_a_id": f"{dataset}{i}a", "image_b_id": f"{dataset}{i}b",
                     "width_a": 8, "height_a": 8, "width_b": 8, "height_b": 8})
        if kinds is not None:
            rows[-1]["kind"] = kinds[i]
    m = pd.DataFrame(rows)
    m["votes_a"] = m["votes_a"].astype("Int64")
    m["votes_b"] = m["votes_b"].astype("Int64")
    m.attrs["iqa_study"] = {"root": "/nonexistent", "synthetic": False, "dataset": dataset}
    return m


def write_metric(store: Store, manifest: pd.DataFrame, metric: str, right, *, config: str = "cfg1",
                 run: str = "run1", minute: int = 0, rows_mask=None) -> None:
    """Score rows for ``metric`` under ``config``: on pair i the metric is right iff right[i]
    (1 right, 0 wrong, 0.5 a metric tie)."""
    spec = get(metric)
    sign = -1.0 if spec.lower_better else 1.0
    rows = []
    when = T0 + dt.timedelta(minutes=minute)
    for i, r in enumerate(manifest.itertuples()):
        if rows_mask is not None and not rows_mask[i]:
            continue
        ok = right[i]
        good, bad = (1.0, 1.0) if ok == 0.5 else (1.0, 0.0) if ok else (0.0, 1.0)
        qa, qb = (good, bad) if r.pref != "b" else (bad, good)
        for image_id, q in ((r.image_a_id, qa), (r.image_b_id, qb)):
            rows.append({"image_id": image_id, "metric": metric, "config_hash": config, "metric_config": "{}",
                         "score": sign * q, "status": "ok", "lower_better": spec.lower_better, "random_init": False,
                         "run_id": run, "written_at": when})
    store.write_scores(rows, run_id=f"{run}-{metric}-{config}", rank=0, seq=0)


def pair_frame(manifest: pd.DataFrame) -> pd.DataFrame:
    return manifest[["dataset", "pair_id"]]


# --- 1. one configuration per metric -------------------------------------------------------------

def two_config_store(tmp_path):
    store = Store(tmp_path / "store")
    m = manifest_of(30)
    store.register_manifest(m)
    write_metric(store, m, "niqe", [1] * 30, config="old", run="r1", minute=0)   # right everywhere
    write_metric(store, m, "niqe", [0] * 30, config="new", run="r2", minute=5)   # wrong everywhere, later run
    write_metric(store, m, "piqe", [i % 2 for i in range(30)], config="p", run="r1", minute=0)
    return store, m


def test_two_configs_of_one_metric_are_never_mixed(tmp_path):
    store, m = two_config_store(tmp_path)
    ranked = evaluate_phase1(store, pair_frame(m), ["niqe", "piqe"], "k1", top_k=1, n_boot=200, seed=0)
    niqe = ranked.set_index("metric").loc["niqe"]
    # the latest run's configuration, alone: wrong on all 30 pairs (a mix would land in between)
    assert (niqe["config_hash"], niqe["config_rule"], niqe["acc"], niqe["n"]) == ("new", "latest run", 0.0, 30)
    pinned = evaluate_phase1(store, pair_frame(m), ["niqe", "piqe"], "k2", top_k=1, n_boot=200, seed=0,
                             pins={"niqe": "ol"})  # a unique prefix of the hash
    assert pinned.set_index("metric").loc["niqe", ["config_hash", "acc"]].tolist() == ["old", 1.0]
    with pytest.raises(StudyError, match="niqe=zzz"):
        outcomes(store, pins={"niqe": "zzz"})


def test_two_configs_written_by_the_latest_run_are_refused(tmp_path):
    store, m = two_config_store(tmp_path)
    write_metric(store, m, "niqe", [1] * 30, config="c3", run="r3", minute=9)
    write_metric(store, m, "niqe", [0] * 30, config="c4", run="r3", minute=9)
    with pytest.raises(StudyError, match=r"latest run \(r3\) wrote 2 of them; pin one with --config niqe=HASH"):
        outcomes(store)


def test_sampling_scores_read_one_configuration(tmp_path):
    from bench.store.views import connect

    store, m = two_config_store(tmp_path)
    ids = list(m["image_a_id"]) + list(m["image_b_id"])
    assert config_for_images(connect(store), "niqe", ids) == "new"
    assert config_for_images(connect(store), "niqe", ids, pin="old") == "old"


# --- 2. complement / ensemble scope: Phase II metrics on Phase II pairs ------------------------------

def test_complement_and_ensemble_follow_phase2_not_the_store_intersection(tmp_path):
    rng = np.random.default_rng(0)
    store = Store(tmp_path / "store")
    n = 120
    m = manifest_of(n, per_group=4, prefs=list(rng.choice(["a", "b"], n)))
    store.register_manifest(m)
    subset = np.zeros(n, bool)
    subset[:24] = True  # Phase I subset: 24 pairs
    names = [s.name for s in select("study")]
    assert len(names) == 42
    top7 = names[::6][:7]
    for k, name in enumerate(names):  # Phase I: 42 metrics on the subset; Phase II: the top 7 on every pair
        right = (rng.random(n) < 0.6 + 0.03 * (k % 7)).astype(int)
        right[:24] = 1 if name in top7 else np.arange(24) % 2  # the top 7 win Phase I
        write_metric(store, m, name, right, rows_mask=None if name in top7 else subset)
    p1 = evaluate_phase1(store, pair_frame(m)[subset], names, "p1", top_k=7, n_boot=100, seed=0)
    assert len(p1) == 42 and p1["n"].iloc[0] == 24
    top = list(p1.loc[p1["top_k"], "metric"])
    assert sorted(top) == sorted(top7)
    pairs, used = phase2_pairs(m)
    p2 = evaluate_phase2(store, pairs, "p1", top, "p2", split_used=used, n_boot=100, seed=0)
    assert p2["n"].iloc[0] == n

    _, tables = complement(store)
    greedy = tables["complement_greedy"]
    assert greedy["n_pairs"].iloc[0] == n  # the old default intersected all 42 metrics: 24 pairs
    assert set(greedy["metric"]) == set(top) and greedy["best"].iloc[0] == p2.loc[p2["is_best"], "metric"].iloc[0]
    assert (greedy["phase2_key"] == "p2").all()
    _, summary, scorer = ensemble(store, n_splits=3)
    assert summary["n_pairs"].iloc[0] == n and sorted(scorer.metrics) == sorted(top)
    assert scorer.phase2_key == "p2" and scorer.config_hashes == ["cfg1"] * 7
    # named metrics replace the Phase II list, still on the Phase II pairs
    _, t2 = complement(store, metrics=top[:3])
    assert set(t2["complement_greedy"]["metric"]) == set(top[:3]) and t2["complement_greedy"]["n_pairs"].iloc[0] == n


# --- 3. select follows the chain of keys; C3 records; warnings; strict JSON -------------------------

def chain_store(tmp_path, n=40, per_group=1):
    store = Store(tmp_path / "store")
    m = manifest_of(n, per_group=per_group)
    store.register_manifest(m)
    write_metric(store, m, "piqe", [1] * n)                                    # best, never wrong
    write_metric(store, m, "niqe", [int(i % 4 != 0) for i in range(n)])        # 0.75
    write_metric(store, m, "qalign", [int(i % 2 == 0) for i in range(n)])      # 0.5
    pairs, used = phase2_pairs(m)
    return store, m, pairs, used


@pytest.fixture
def availability(monkeypatch):
    """Weights available here: piqe and niqe only (qalign/musiq have none)."""
    monkeypatch.setattr(select_mod, "is_available", lambda spec: spec.name in {"piqe", "niqe", "entropy"})


def test_select_follows_phase2_to_its_phase1_and_its_complement(tmp_path, availability):
    store, m, pairs, used = chain_store(tmp_path)
    all3 = ["piqe", "niqe", "qalign"]
    evaluate_phase1(store, pair_frame(m), all3, "p1-old", top_k=3, n_boot=100, seed=0)
    evaluate_phase2(store, pairs, "p1-old", all3, "p2-a", split_used=used, n_boot=100, seed=0)
    c_key, _ = complement(store)
    evaluate_phase1(store, pair_frame(m), ["niqe", "qalign"], "p1-new", top_k=1, n_boot=100, seed=0)  # newer, unused
    sel = build_selection(store)
    assert sel["evidence"]["phase1_key"] == "p1-old" and sel["evidence"]["phase2_key"] == "p2-a"
    assert sel["evidence"]["complement_key"] == c_key
    assert any("p1-new" in w and "newer" in w for w in sel["warnings"])
    # a newer Phase II without a complement of its own: the old complement is not borrowed
    evaluate_phase2(store, pairs, "p1-old", ["niqe", "qalign"], "p2-b", split_used=used, n_boot=100, seed=0)
    sel = build_selection(store)
    assert sel["evidence"]["phase2_key"] == "p2-b" and sel["evidence"]["complement_key"] is None
    assert sel["complementary"] == [] and any("no complement" in w for w in sel["warnings"])
    assert build_selection(store, phase2_key="p2-a")["evidence"]["complement_key"] == c_key


def test_selection_records_sampling_and_reward_metrics(tmp_path, availability):
    store, m, pairs, used = chain_store(tmp_path)
    evaluate_phase1(store, pair_frame(m), ["piqe", "niqe", "qalign"], "p1", top_k=3, n_boot=100, seed=0)
    evaluate_phase2(store, pairs, "p1", ["piqe", "niqe", "qalign"], "p2", split_used=used, n_boot=100, seed=0)
    sel = build_selection(store)
    # piqe ranks first and has weights but no gradient: it samples; niqe is the best differentiable one
    assert sel["best"]["metric"] == "piqe" and sel["sampling_metric"]["metric"] == "piqe"
    assert sel["reward_metric"]["metric"] == "niqe" and sel["training_metric"] == sel["reward_metric"]
    assert sel["sampling_metric"]["config_hash"] == "cfg1" and sel["configs"] == {m_: "cfg1" for m_ in
                                                                                    ("piqe", "niqe", "qalign")}
    path = write_selection(sel, tmp_path / "selection.json")
    assert read_selection(path)["sampling_metric"]["metric"] == "piqe"
    old = {k: v for k, v in sel.items() if k not in ("sampling_metric", "reward_metric")}
    (tmp_path / "old.json").write_text(json.dumps(old))  # a file from before C3: training_metric only
    back = read_selection(tmp_path / "old.json")
    assert back["reward_metric"]["metric"] == back["sampling_metric"]["metric"] == "niqe"


def test_selection_json_is_strict_and_warns_on_small_evidence(tmp_path, availability):
    store, m, pairs, used = chain_store(tmp_path, n=40)
    evaluate_phase1(store, pair_frame(m), ["piqe", "niqe", "qalign"], "p1", top_k=3, n_boot=100, seed=0)
    evaluate_phase2(store, pairs, "p1", ["piqe", "niqe", "qalign"], "p2", split_used=used, n_boot=100, seed=0)
    complement(store)  # piqe is never wrong: accuracy "on the pairs piqe gets wrong" is undefined
    sel = build_selection(store)
    text = write_selection(sel, tmp_path / "selection.json").read_text()

    def refuse(token):
        raise AssertionError(f"non-standard JSON constant {token}")

    parsed = json.loads(text, parse_constant=refuse)
    assert parsed["complementary"] and parsed["complementary"][0]["acc_on_best_wrong"] is None
    assert any("small evidence" in w and "n=40" in w for w in parsed["warnings"])


def test_select_warns_when_the_chosen_metric_is_not_above_chance(tmp_path, availability):
    store = Store(tmp_path / "store")
    m = manifest_of(60, per_group=3)
    store.register_manifest(m)
    write_metric(store, m, "niqe", [int(i % 20 < 11) for i in range(60)])  # 0.55 on 60 pairs
    write_metric(store, m, "piqe", [int(i % 2 == 0) for i in range(60)])
    pairs, used = phase2_pairs(m)
    evaluate_phase1(store, pair_frame(m), ["niqe", "piqe"], "p1", top_k=2, n_boot=300, seed=0)
    evaluate_phase2(store, pairs, "p1", ["niqe", "piqe"], "p2", split_used=used, n_boot=300, seed=0)
    # neither CI excludes chance: nothing is selected for training without --allow-weak-metric (issue 18)
    with pytest.raises(StudyError, match="--allow-weak-metric"):
        build_selection(store)
    sel = build_selection(store, allow_weak=True)
    assert sel["best"]["metric"] == "niqe" and sel["best"]["ci_lo"] < 0.5 and sel["allow_weak_metric"]
    assert any("niqe" in w and "includes 0.5" in w for w in sel["warnings"])
    assert any("niqe" in w and "--allow-weak-metric" in w for w in sel["warnings"])
    assert any("piqe" not in w for w in sel["warnings"])


# --- 4. inferred pairs -----------------------------------------------------------------------------

def test_inferred_pairs_are_excluded_unless_asked_for(tmp_path):
    store = Store(tmp_path / "store")
    kinds = ["human"] * 20 + ["inferred"] * 20
    m = manifest_of(40, kinds=kinds)
    store.register_manifest(m)
    write_metric(store, m, "niqe", [1] * 20 + [0] * 20)  # right on every human pair, wrong on the inferred ones
    default = evaluate_phase1(store, pair_frame(m), ["niqe"], "k", top_k=1, n_boot=100, seed=0)
    assert default[["acc", "n"]].iloc[0].tolist() == [1.0, 20]
    both = evaluate_phase1(store, pair_frame(m), ["niqe"], "k2", top_k=1, n_boot=100, seed=0, include_inferred=True)
    assert both[["acc", "n"]].iloc[0].tolist() == [0.5, 40]


# --- 5. Phase II split ------------------------------------------------------------------------------

def test_phase2_defaults_to_the_test_split_where_there_is_one():
    with_test = manifest_of(10, dataset="hggt", split=["train"] * 6 + ["test"] * 4)
    votes_only = manifest_of(5, dataset="sr2afc")
    both = pd.concat([with_test, votes_only])
    both.attrs = with_test.attrs
    pairs, used = phase2_pairs(both)
    assert used == {"hggt": "test", "sr2afc": "all"}
    assert sorted(pairs.groupby("dataset").size().items()) == [("hggt", 4), ("sr2afc", 5)]
    assert len(phase2_pairs(both, "all")[0]) == 15
    with pytest.raises(StudyError, match=r"dataset 'sr2afc' has no such split; its splits: all"):
        phase2_pairs(both, "test")
    with pytest.raises(StudyError, match=r"--split val: dataset 'hggt' has no such split; its splits: test, train"):
        phase2_pairs(with_test, "val")


# --- 6. statistics ----------------------------------------------------------------------------------

def test_clustered_pairs_get_a_wider_group_bootstrap_ci_than_iid(tmp_path):
    store = Store(tmp_path / "store")
    n_groups, per = 30, 10
    n = n_groups * per
    group_right = [int(g % 10 < 7) for g in range(n_groups)]  # a group is right or wrong as a whole: acc 0.7
    votes = [(4, 1)] * n
    m = manifest_of(n, per_group=per, prefs=["a"] * n, votes=votes)
    store.register_manifest(m)
    write_metric(store, m, "niqe", [group_right[i // per] for i in range(n)])
    row = evaluate_phase1(store, pair_frame(m), ["niqe"], "k", top_k=1, n_boot=2000, seed=0).iloc[0]
    assert row["acc"] == pytest.approx(0.7) and row["n_groups"] == 30
    wilson = binomtest(int(0.7 * n), n).proportion_ci(method="wilson")
    iid_width = wilson.high - wilson.low  # ~0.10 for 300 independent pairs
    # 30 independent clusters: the honest width is about that of 30 Bernoulli draws, ~3x wider
    assert row["ci_hi"] - row["ci_lo"] > 2.0 * iid_width
    assert row["vote_ci_hi"] - row["vote_ci_lo"] > 2.0 * 0.6 * iid_width  # vote agreement resamples groups too
    assert row["vote_agreement"] == pytest.approx((0.7 * 4 + 0.3 * 1) / 5)
    assert "source groups" in row["ci_method"]


def test_phase2_holm_corrects_the_k_minus_1_mcnemar_tests(tmp_path):
    n = 60
    best = [1] * n
    best[0] = 0
    r1 = [1] * n              # only-best-right 12, only-this-right 0
    for i in range(1, 13):
        r1[i] = 0
    r1[0] = 0
    r2 = list(best)           # only-best-right 7, only-this-right 1
    for i in range(20, 27):
        r2[i] = 0
    r2[0] = 1
    r3 = list(best)           # only-best-right 6, only-this-right 0
    for i in range(30, 36):
        r3[i] = 0
    store = Store(tmp_path / "store")
    m = manifest_of(n)
    store.register_manifest(m)
    for name, right in (("piqe", best), ("niqe", r1), ("entropy", r2), ("musiq", r3)):
        write_metric(store, m, name, right)
    pairs, used = phase2_pairs(m)
    ranked = evaluate_phase2(store, pairs, "p1", ["piqe", "niqe", "entropy", "musiq"], "p2", split_used=used,
                             n_boot=100, seed=0).set_index("metric")
    raw = {"niqe": 2 * 0.5 ** 12, "entropy": 2 * (1 + 8) / 2 ** 8, "musiq": 2 * 0.5 ** 6}
    # Holm by hand: sorted raw p times (3, 2, 1), running maximum
    holm = {"niqe": 3 * raw["niqe"], "musiq": max(3 * raw["niqe"], 2 * raw["musiq"])}
    holm["entropy"] = max(holm["musiq"], raw["entropy"])
    assert ranked.loc["piqe", "is_best"] and math.isnan(ranked.loc["piqe", "p_value_holm"])
    for name, p_raw in raw.items():
        assert ranked.loc[name, "p_value_vs_best"] == pytest.approx(p_raw)
        assert ranked.loc[name, "p_value_holm"] == pytest.approx(holm[name])
    # musiq: raw p = 0.031 < 0.05, but not after correcting for 3 comparisons
    assert not ranked.loc["musiq", "best_significantly_better"] and ranked.loc["niqe", "best_significantly_better"]
    assert (ranked["n_comparisons"] == 3).all()


def test_sma_target_scores_come_from_one_configuration(tmp_path):
    """SMA/SMP read GT scores from the store under one configuration of the metric (sr_training.iqa)."""
    from bench.manifests import hggt, schema
    from sr_training.config import IQAConfig
    from sr_training.data.multigt import MultiGTDataset
    from sr_training.iqa import image_scores_for
    from tests.hggt_fixture import make_hggt

    p, s, n = "Positive", "Similar", "Negative"
    root = make_hggt(tmp_path / "hggt", {"0001-0-0": {"A": [p, s, n, n], "B": [p, s, n, s], "C": [s, s, n, n]}},
                     size=16)
    ds = MultiGTDataset(str(root), gt_size=16)
    manifest_path = schema.write(hggt.hggt(root, split="train"), tmp_path / "hggt.parquet")
    m = schema.read(manifest_path)
    ids = sorted(set(m["image_a_id"]) | set(m["image_b_id"]))
    assert len(ids) == 5
    store = Store(tmp_path / "store")

    def put(config, run, minute, values):
        store.write_scores([{"image_id": i, "metric": "piqe", "config_hash": config, "metric_config": "{}",
                             "score": v, "status": "ok", "lower_better": True, "random_init": False, "run_id": run,
                             "written_at": T0 + dt.timedelta(minutes=minute)} for i, v in zip(ids, values)],
                           run_id=f"{run}-{config}", rank=0, seq=0)

    put("old", "r1", 0, [50.0] * 5)
    put("new", "r2", 5, [10.0, 20.0, 30.0, 40.0, 60.0])
    cfg = IQAConfig(metric="piqe", store=str(store.root), manifest=str(manifest_path))
    got = image_scores_for(ds, cfg)
    assert got.shape == (1, 5)
    assert sorted((-got[0]).tolist()) == [10.0, 20.0, 30.0, 40.0, 60.0]  # all from 'new', oriented (lower-better)
    put("c3", "r3", 9, [1.0] * 5)
    put("c4", "r3", 9, [2.0] * 5)
    with pytest.raises(StudyError, match=r"pin one with --config piqe=HASH"):
        image_scores_for(ds, cfg)


def test_agreement_with_group_bootstrap_cis_matches_the_view_and_is_wider_on_clusters(tmp_path):
    from bench.store.views import agreement
    from bench.study.agreement import bootstrap_agreement

    store = Store(tmp_path / "store")
    n_groups, per = 24, 8
    n = n_groups * per
    prefs = ["tie" if i % 8 == 7 else "a" for i in range(n)]
    votes = [(2, 2) if p == "tie" else (3 + i % 3, 1) for i, p in enumerate(prefs)]
    m = manifest_of(n, per_group=per, prefs=prefs, votes=votes)
    store.register_manifest(m)
    right = [1 if (i // per) % 4 else (0.5 if i % 2 else 0) for i in range(n)]  # a quarter of the groups fail
    write_metric(store, m, "niqe", right)
    boot = bootstrap_agreement(store, n_boot=2000).iloc[0]
    view = agreement(store).iloc[0]  # the SQL view: same definitions, Wilson intervals
    for col in ("strict_acc", "tie_half_acc", "vote_agreement"):
        assert boot[col] == pytest.approx(view[col])
    assert (boot["n_decided"], boot["n_voted"], boot["n_groups"]) == (view["n_decided"], view["n_voted"], 24)
    for lo, hi in (("strict_ci_lo", "strict_ci_hi"), ("tie_half_ci_lo", "tie_half_ci_hi"), ("vote_ci_lo", "vote_ci_hi")):
        assert boot[hi] - boot[lo] > 1.5 * (view[hi] - view[lo])
