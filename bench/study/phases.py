"""Phase I (all study metrics on a stratified subset -> top-k) and Phase II (top-k on the full
manifest -> best, with paired significance).

Every result table is keyed by a hash of its inputs, so a re-run reuses cached scores and
rewrites identical tables (idempotent). Tables live in STORE/study/<name>/<key>.parquet and
are queryable as DuckDB views ``study_<name>``.

Rankings: strict accuracy (a metric tie is wrong), tie-half accuracy and vote agreement (the
definitions of ``bench.store.views``) with 95% CIs from a percentile bootstrap over source groups
(``bench.study.stats``), one scoring configuration per metric (``bench.study.configs``; the
``config_hash`` column). Phase II compares the best against each of the k-1 runners-up with
McNemar's exact test and a Holm correction over those k-1 tests (raw and adjusted p).
Inferred (HGGT enhanced-vs-enhanced) pairs are excluded unless ``include_inferred``.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pandas as pd

from bench import provenance
from bench.errors import StudyError
from bench.metrics.table import MetricSpec, get
from bench.scoring.engine import score_manifest
from bench.scoring.plan import MetricSummary
from bench.store import Store
from bench.study.outcomes import Outcomes, complete_pairs, correctness_matrix, outcomes
from bench.study.stats import GROUP_BOOTSTRAP, group_bootstrap_ratio, holm, mcnemar_exact


def key_of(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def stratified_subset(manifest: pd.DataFrame, n_pairs: int, seed: int = 0) -> pd.DataFrame:
    """Reproducible subset of decided pairs: each dataset gets its proportional share (at least
    one pair), and within a dataset every group is visited once before any group gets a second pair.
    The pairs are put in (dataset, pair_id) order first, so the subset depends on the seed and the
    manifest's content, not on its row order."""
    decided = manifest[manifest["pref"] != "tie"][["dataset", "split", "group", "pair_id"]].copy()
    if "kind" in manifest:  # inferred pairs were kept by the caller on purpose (include_inferred)
        decided["kind"] = manifest.loc[decided.index, "kind"]
    decided = decided.sort_values(["dataset", "pair_id"], kind="stable")  # the subset does not depend on row order
    if n_pairs >= len(decided):
        return decided.drop(columns="kind", errors="ignore").sort_values(["dataset", "pair_id"]).reset_index(drop=True)
    rng = np.random.default_rng(seed)
    decided["_r"] = rng.random(len(decided))
    decided["_rank_in_group"] = decided.groupby(["dataset", "group"])["_r"].rank(method="first")
    shares = decided["dataset"].value_counts(normalize=True).sort_index()
    quotas = {d: max(1, int(round(n_pairs * s))) for d, s in shares.items()}
    while sum(quotas.values()) > n_pairs:  # rounding can overshoot by a pair or two
        biggest = max(quotas, key=quotas.get)
        quotas[biggest] -= 1
    picked = [g.sort_values(["_rank_in_group", "_r"]).head(quotas[d]) for d, g in decided.groupby("dataset")]
    out = pd.concat(picked).drop(columns=["_r", "_rank_in_group", "kind"], errors="ignore")
    return out.sort_values(["dataset", "pair_id"]).reset_index(drop=True)


def _available(summaries: list[MetricSummary]) -> list[str]:
    return [s.metric for s in summaries if not s.unavailable]


def human_pairs(manifest: pd.DataFrame, include_inferred: bool) -> pd.DataFrame:
    """The manifest without its inferred pairs (``kind`` == 'inferred'), unless included."""
    if include_inferred or "kind" not in manifest:
        return manifest
    out = manifest[manifest["kind"].fillna("human").astype(str) != "inferred"].copy()
    out.attrs = manifest.attrs
    return out


def rank_metrics(oc: Outcomes, n_boot: int, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(ranking, correctness matrix) on the pairs every metric scored.

    Per metric: strict accuracy ``acc`` [ci_lo, ci_hi] and ``tie_half_acc`` over the ``n`` decided
    pairs, ``vote_agreement`` over the ``n_voted`` pairs with votes (human ties included); all three
    CIs from one percentile bootstrap over the ``n_groups`` source groups (paired across metrics).
    """
    long = complete_pairs(oc.long)
    correct = correctness_matrix(long)
    metrics = list(correct.columns)

    def wide(values: pd.Series) -> np.ndarray:
        return long.assign(_v=values).pivot(index=["dataset", "pair_id"], columns="metric", values="_v")[metrics]

    decided = wide(long["decided"].astype(float))
    strict = wide(long["correct"].astype(float) * long["decided"])
    half = wide(np.where(long["metric_pref"] == long["pref"], 1.0, np.where(long["metric_pref"] == "tie", 0.5, 0.0))
                * long["decided"])
    va, vb = long["votes_a"].astype(float).fillna(0.0), long["votes_b"].astype(float).fillna(0.0)
    vote_num = wide(np.select([long["metric_pref"] == "a", long["metric_pref"] == "b"], [va, vb], (va + vb) / 2))
    vote_den = wide(va + vb)
    groups = long.drop_duplicates(["dataset", "pair_id"]).set_index(["dataset", "pair_id"]).loc[decided.index,
                                                                                                 "source_group"]
    num = np.hstack([strict.to_numpy(), half.to_numpy(), vote_num.to_numpy()])
    den = np.hstack([decided.to_numpy(), decided.to_numpy(), vote_den.to_numpy()])
    point, lo, hi = group_bootstrap_ratio(num, den, groups.to_numpy(), n_boot=n_boot, seed=seed)
    k = len(metrics)
    cfg = oc.configs.set_index("metric")
    voted = long[long["votes_a"].notna()].drop_duplicates(["dataset", "pair_id"])
    ranked = pd.DataFrame({
        "metric": metrics,
        "config_hash": [cfg.loc[m, "config_hash"] for m in metrics],
        "config_rule": [cfg.loc[m, "config_rule"] for m in metrics],
        "acc": point[:k], "ci_lo": lo[:k], "ci_hi": hi[:k], "n": len(correct),
        "n_groups": int(groups.loc[correct.index].nunique()),
        "tie_half_acc": point[k:2 * k], "tie_half_ci_lo": lo[k:2 * k], "tie_half_ci_hi": hi[k:2 * k],
        "vote_agreement": point[2 * k:], "vote_ci_lo": lo[2 * k:], "vote_ci_hi": hi[2 * k:], "n_voted": len(voted),
        "ci_method": f"{GROUP_BOOTSTRAP} (B={n_boot}, 95%)",
    })
    ranked = ranked.sort_values(["acc", "metric"], ascending=[False, True]).reset_index(drop=True)
    ranked.insert(0, "rank", np.arange(1, len(ranked) + 1))
    ranked["lower_better"] = [get(m).lower_better for m in ranked["metric"]]
    ranked["differentiable"] = [get(m).differentiable for m in ranked["metric"]]
    return ranked, correct


def _configs_json(oc: Outcomes) -> str:
    return json.dumps(oc.config_map(), sort_keys=True)


def evaluate_phase1(store: Store, subset: pd.DataFrame, metrics: list[str], key: str, *, top_k: int, n_boot: int,
                    seed: int, include_inferred: bool = False, pins: dict[str, str] | None = None) -> pd.DataFrame:
    """Rank ``metrics`` (already scored) on the Phase I ``subset`` (dataset, pair_id) and store the tables."""
    oc = outcomes(store, pair_ids=subset, metrics=metrics, include_inferred=include_inferred, pins=pins)
    ranked, _ = rank_metrics(oc, n_boot, seed)
    ranked["top_k"] = ranked["rank"] <= top_k
    ranked.insert(0, "phase1_key", key)
    ranked["n_subset"] = len(subset)
    ranked["include_inferred"] = include_inferred
    ranked["created_at"] = provenance.now()
    store.write_study_table("phase1_subset", key, subset.assign(phase1_key=key))
    store.write_study_table("phase1_ranking", key, ranked)
    return ranked


def phase1(manifest: pd.DataFrame, store: Store, metrics: list[MetricSpec], *, n_pairs: int = 1212, seed: int = 0,
           top_k: int = 7, n_boot: int = 2000, include_inferred: bool = False, pins: dict[str, str] | None = None,
           **score_kwargs) -> tuple[str, pd.DataFrame, list[MetricSummary]]:
    subset = stratified_subset(human_pairs(manifest, include_inferred), n_pairs, seed)
    manifest_id = store.register_manifest(manifest)
    key = key_of("phase1", manifest_id, n_pairs, seed, sorted(m.name for m in metrics), top_k, n_boot,
                 include_inferred, sorted((pins or {}).items()))
    sub_manifest = manifest[manifest["pair_id"].isin(set(subset["pair_id"]))].copy()
    sub_manifest.attrs = manifest.attrs
    _, summaries = score_manifest(sub_manifest, metrics, store, register=False, **score_kwargs)
    usable = _available(summaries)
    if len(usable) < 2:  # a ranking of one metric is no study (it would be 'top-k' by default)
        gone = [f"{s.metric} ({s.unavailable})" for s in summaries if s.unavailable]
        raise StudyError(f"phase1: {len(usable)} metric(s) could be scored ({', '.join(usable) or 'none'}); a study "
                         f"compares at least two. Unavailable: {'; '.join(gone)[:300] or 'none'}; see "
                         f"`iqa-study weights status`, or name available metrics with --metrics")
    ranked = evaluate_phase1(store, subset, usable, key, top_k=top_k, n_boot=n_boot, seed=seed,
                             include_inferred=include_inferred, pins=pins)
    unavailable = pd.DataFrame([{"phase1_key": key, "metric": s.metric, "reason": s.unavailable}
                                for s in summaries if s.unavailable], columns=["phase1_key", "metric", "reason"])
    store.write_study_table("phase1_unavailable", key, unavailable)
    return key, ranked, summaries


def phase2_pairs(manifest: pd.DataFrame, split: str | None = None) -> tuple[pd.DataFrame, dict[str, str]]:
    """The manifest rows Phase II evaluates and the split used per dataset.

    Default (``split`` None or 'auto'): a dataset's official test split where it has one
    (``split == 'test'``; the paper's Phase II accuracy is a test-split figure), else all its pairs.
    'all' takes every pair; any other name must exist in every dataset (one-line error listing the
    splits otherwise).
    """
    parts, used = [], {}
    for dataset, rows in manifest.groupby("dataset", sort=True):
        splits = sorted(rows["split"].astype(str).unique())
        if split in (None, "auto"):
            chosen = "test" if "test" in splits else "all"
        elif split == "all":
            chosen = "all"
        elif split not in splits:
            raise StudyError(f"phase2 --split {split}: dataset {dataset!r} has no such split; its splits: "
                             f"{', '.join(splits)} (or --split all)")
        else:
            chosen = split
        parts.append(rows if chosen == "all" else rows[rows["split"].astype(str) == chosen])
        used[dataset] = chosen
    out = pd.concat(parts)
    out.attrs = manifest.attrs
    return out, used


def evaluate_phase2(store: Store, pairs: pd.DataFrame, p1_key: str, metrics: list[str], key: str, *,
                    split_used: dict[str, str], n_boot: int = 2000, seed: int = 0, alpha: float = 0.05,
                    include_inferred: bool = False, pins: dict[str, str] | None = None) -> pd.DataFrame:
    """Rank the (already scored) Phase II ``metrics`` on ``pairs``; McNemar best vs each runner-up, Holm."""
    oc = outcomes(store, pair_ids=pairs, metrics=metrics, include_inferred=include_inferred, pins=pins)
    ranked, correct = rank_metrics(oc, n_boot, seed)
    best = ranked.iloc[0]["metric"]
    tests = {m: mcnemar_exact(correct[best], correct[m]) for m in ranked["metric"] if m != best}
    adjusted = dict(zip(tests, holm([t["p_value"] for t in tests.values()])))
    ranked["only_best_right"] = [tests[m]["only_a_right"] if m in tests else 0 for m in ranked["metric"]]
    ranked["only_this_right"] = [tests[m]["only_b_right"] if m in tests else 0 for m in ranked["metric"]]
    ranked["p_value_vs_best"] = [tests[m]["p_value"] if m in tests else np.nan for m in ranked["metric"]]
    ranked["p_value_holm"] = [adjusted.get(m, np.nan) for m in ranked["metric"]]
    ranked["n_comparisons"] = len(tests)
    ranked["best_significantly_better"] = [bool(adjusted[m] < alpha) if m in adjusted else False
                                           for m in ranked["metric"]]
    ranked["test_method"] = f"McNemar exact (binomial), Holm over {len(tests)} comparisons, alpha={alpha}"
    ranked["is_best"] = ranked["metric"] == best
    ranked.insert(0, "phase2_key", key)
    ranked["phase1_key"] = p1_key
    splits = sorted(set(split_used.values()))  # one name when every dataset used the same split
    ranked["split"] = splits[0] if len(splits) == 1 else "mixed"
    ranked["split_by_dataset"] = json.dumps(split_used, sort_keys=True)
    ranked["include_inferred"] = include_inferred
    ranked["created_at"] = provenance.now()
    used_pairs = pd.DataFrame(list(correct.index), columns=["dataset", "pair_id"])
    used_pairs = used_pairs.merge(oc.long[["dataset", "pair_id", "source_group"]].drop_duplicates(),
                                  on=["dataset", "pair_id"])
    store.write_study_table("phase2_pairs", key, used_pairs.assign(phase2_key=key))
    store.write_study_table("phase2_ranking", key, ranked)
    return ranked


def phase2(manifest: pd.DataFrame, store: Store, *, from_phase1: str | None = None, split: str | None = None,
           n_boot: int = 2000, seed: int = 0, alpha: float = 0.05, include_inferred: bool = False,
           pins: dict[str, str] | None = None, **score_kwargs) -> tuple[str, pd.DataFrame]:
    p1_key = from_phase1 or store.latest_study("phase1_ranking", "phase1_key")[0]
    if p1_key is None:
        raise StudyError(f"{store.root}: no study table 'phase1_ranking' yet (run `iqa-study phase1` first)")
    p1 = store.read_study("phase1_ranking", p1_key)
    top = [get(m) for m in p1.loc[p1["top_k"], "metric"]]
    manifest_id = store.register_manifest(manifest)
    pairs, used = phase2_pairs(human_pairs(manifest, include_inferred), split)
    key = key_of("phase2", p1_key, manifest_id, sorted(used.items()), n_boot, seed, alpha, include_inferred,
                 sorted((pins or {}).items()))
    _, summaries = score_manifest(pairs, top, store, register=False, **score_kwargs)
    usable = _available(summaries)
    if not usable:
        raise StudyError(f"phase2: none of Phase I's top metrics ({', '.join(m.name for m in top)}) is available here")
    ranked = evaluate_phase2(store, pairs, p1_key, usable, key, split_used=used, n_boot=n_boot, seed=seed,
                             alpha=alpha, include_inferred=include_inferred, pins=pins)
    return key, ranked
