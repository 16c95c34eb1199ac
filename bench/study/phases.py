"""Phase I (all study metrics on a stratified subset -> top-k) and Phase II (top-k on the full
manifest -> best, with paired significance).

Every result table is keyed by a hash of its inputs, so a re-run reuses cached scores and
rewrites identical tables (idempotent). Tables live in STORE/study/<name>/<key>.parquet and
are queryable as DuckDB views ``study_<name>``.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pandas as pd

from bench import provenance
from bench.errors import StudyError
from bench.metrics.table import MetricSpec, get
from bench.scoring.engine import MetricSummary, score_manifest
from bench.store import Store
from bench.study.outcomes import correctness_matrix, outcomes
from bench.study.stats import bootstrap_ci, mcnemar_exact


def key_of(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def stratified_subset(manifest: pd.DataFrame, n_pairs: int, seed: int = 0) -> pd.DataFrame:
    """Reproducible subset of decided pairs: each dataset gets its proportional share (at least
    one pair), and within a dataset every group is visited once before any group gets a second pair."""
    decided = manifest[manifest["pref"] != "tie"][["dataset", "split", "group", "pair_id"]].copy()
    if n_pairs >= len(decided):
        return decided.sort_values(["dataset", "pair_id"]).reset_index(drop=True)
    rng = np.random.default_rng(seed)
    decided["_r"] = rng.random(len(decided))
    decided["_rank_in_group"] = decided.groupby(["dataset", "group"])["_r"].rank(method="first")
    shares = decided["dataset"].value_counts(normalize=True).sort_index()
    quotas = {d: max(1, int(round(n_pairs * s))) for d, s in shares.items()}
    while sum(quotas.values()) > n_pairs:  # rounding can overshoot by a pair or two
        biggest = max(quotas, key=quotas.get)
        quotas[biggest] -= 1
    picked = [g.sort_values(["_rank_in_group", "_r"]).head(quotas[d]) for d, g in decided.groupby("dataset")]
    out = pd.concat(picked).drop(columns=["_r", "_rank_in_group"])
    return out.sort_values(["dataset", "pair_id"]).reset_index(drop=True)


def _available(summaries: list[MetricSummary]) -> list[str]:
    return [s.metric for s in summaries if not s.unavailable]


def rank_metrics(correct: pd.DataFrame, n_boot: int, seed: int) -> pd.DataFrame:
    ranked = bootstrap_ci(correct, n_boot=n_boot, seed=seed)
    ranked = ranked.sort_values(["acc", "metric"], ascending=[False, True]).reset_index(drop=True)
    ranked.insert(0, "rank", np.arange(1, len(ranked) + 1))
    ranked["lower_better"] = [get(m).lower_better for m in ranked["metric"]]
    ranked["differentiable"] = [get(m).differentiable for m in ranked["metric"]]
    return ranked


def phase1(manifest: pd.DataFrame, store: Store, metrics: list[MetricSpec], *, n_pairs: int = 1212, seed: int = 0,
           top_k: int = 7, n_boot: int = 2000, **score_kwargs) -> tuple[str, pd.DataFrame, list[MetricSummary]]:
    subset = stratified_subset(manifest, n_pairs, seed)
    manifest_id = store.register_manifest(manifest)
    key = key_of("phase1", manifest_id, n_pairs, seed, sorted(m.name for m in metrics), top_k, n_boot)
    sub_manifest = manifest[manifest["pair_id"].isin(set(subset["pair_id"]))].copy()
    sub_manifest.attrs = manifest.attrs
    _, summaries = score_manifest(sub_manifest, metrics, store, register=False, **score_kwargs)
    usable = _available(summaries)
    if not usable:
        raise StudyError("phase1: no metric could be scored (all unavailable); see `iqa-study weights status`")
    long = outcomes(store, pair_ids=subset, metrics=usable)
    correct = correctness_matrix(long)
    ranked = rank_metrics(correct, n_boot, seed)
    ranked["top_k"] = ranked["rank"] <= top_k
    ranked.insert(0, "phase1_key", key)
    ranked["n_subset"] = len(subset)
    ranked["created_at"] = provenance.now()
    store.write_study_table("phase1_subset", key, subset.assign(phase1_key=key))
    store.write_study_table("phase1_ranking", key, ranked)
    unavailable = pd.DataFrame([{"phase1_key": key, "metric": s.metric, "reason": s.unavailable}
                                for s in summaries if s.unavailable], columns=["phase1_key", "metric", "reason"])
    store.write_study_table("phase1_unavailable", key, unavailable)
    return key, ranked, summaries


def latest_key(store: Store, table: str, key_column: str) -> str:
    """The key of the most recently written result in study table ``table``."""
    from bench.store.views import connect

    if table not in store.study_tables():
        raise StudyError(f"{store.root}: no study table '{table}' yet (run the earlier study step first)")
    return connect(store).execute(f"SELECT {key_column} FROM study_{table} ORDER BY created_at DESC LIMIT 1").fetchall()[0][0]


def latest_result(store: Store, table: str, key_column: str) -> tuple[str | None, pd.DataFrame | None]:
    """(key, table) of the most recent result in study table ``table``; (None, None) if there is none."""
    if table not in store.study_tables():
        return None, None
    key = latest_key(store, table, key_column)
    return key, read_study(store, table, key)


def read_study(store: Store, table: str, key: str) -> pd.DataFrame:
    path = store.root / "study" / table / f"{key}.parquet"
    if not path.is_file():
        raise StudyError(f"{path}: no such study result (key {key!r})")
    return pd.read_parquet(path)


def phase2(manifest: pd.DataFrame, store: Store, *, from_phase1: str | None = None, split: str | None = None,
           n_boot: int = 2000, seed: int = 0, alpha: float = 0.05, **score_kwargs) -> tuple[str, pd.DataFrame]:
    p1_key = from_phase1 or latest_key(store, "phase1_ranking", "phase1_key")
    p1 = read_study(store, "phase1_ranking", p1_key)
    top = [get(m) for m in p1.loc[p1["top_k"], "metric"]]
    manifest_id = store.register_manifest(manifest)
    key = key_of("phase2", p1_key, manifest_id, split, n_boot, seed)
    _, summaries = score_manifest(manifest, top, store, **score_kwargs)
    usable = _available(summaries)
    datasets = sorted(manifest["dataset"].unique())
    long = outcomes(store, datasets=datasets, split=split, metrics=usable)
    long = long[long["pair_id"].isin(set(manifest["pair_id"]))]
    correct = correctness_matrix(long)
    ranked = rank_metrics(correct, n_boot, seed)
    best = ranked.iloc[0]["metric"]
    tests = [mcnemar_exact(correct[best], correct[m]) if m != best else
             {"only_a_right": 0, "only_b_right": 0, "p_value": np.nan} for m in ranked["metric"]]
    ranked["only_best_right"] = [t["only_a_right"] for t in tests]
    ranked["only_this_right"] = [t["only_b_right"] for t in tests]
    ranked["p_value_vs_best"] = [t["p_value"] for t in tests]
    ranked["best_significantly_better"] = [bool(t["p_value"] < alpha) if m != best else False
                                           for t, m in zip(tests, ranked["metric"])]
    ranked["is_best"] = ranked["metric"] == best
    ranked.insert(0, "phase2_key", key)
    ranked["phase1_key"] = p1_key
    ranked["split"] = split or "all"
    ranked["created_at"] = provenance.now()
    store.write_study_table("phase2_ranking", key, ranked)
    return key, ranked
