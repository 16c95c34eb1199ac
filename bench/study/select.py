"""selection.json: the study's machine-readable outcome, consumed by SR training.

    {
      "schema": "iqa-study/selection/v1",
      "best": {"metric", "config_hash", "strict_acc", "ci_lo", "ci_hi", "ci_method", "n_pairs", "n_groups", "source"},
      "complementary": [{"metric", "config_hash", "acc_on_best_wrong", "oracle_gain"}...],
      "sampling_metric": {"metric", "config_hash", "weights_available": true, "reason"},   # SMA/SMP/AMO (no gradient)
      "reward_metric": {"metric", "config_hash", "differentiable": true, "weights_available": true, "reason"} | null,
      "training_metric": same as reward_metric (alias kept for older readers),
      "configs": {metric: config_hash} of the ranking that chose,
      "warnings": [...],            # every warning, also shown by the study report
      "allow_weak_metric": bool,    # true: a metric whose CI includes chance could be chosen (and was warned)
      "evidence": {"phase1_key", "phase2_key", "complement_key", "ensemble_key", "store", "datasets", "synthetic",
                   "include_inferred"},
      "pyiqa_version", "created_at"
    }

The chain of keys is followed, never each table's latest on its own: the Phase II result (given,
else the latest) -> the Phase I result it was computed from -> the complement and ensemble results
computed on that Phase II result (latest of those; none -> null and a warning). Without a Phase II
result, the latest Phase I result is the ranking.

The file is strict JSON: NaN/inf are written as null (``json.dumps(allow_nan=False)``).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pyiqa

from bench import provenance
from bench.atomic import atomic_write_text
from bench.errors import StudyError
from bench.metrics.table import get
from bench.metrics.weights import is_available
from bench.store import Store
from bench.store.views import connect
from bench.study.ensemble import ensemble_model_path
from bench.study.selection_model import SCHEMA, load, validate

CHANCE = 0.5
MIN_PAIRS = 300   # below this many decided pairs (or MIN_GROUPS source groups) the evidence is called small;
MIN_GROUPS = 30   # the paper's Phase I subset alone has 1,212 pairs


def _ci_text(row) -> str:
    return f"{row['acc']:.3f} [{row['ci_lo']:.3f}, {row['ci_hi']:.3f}], n={int(row['n'])}"


def build_selection(store: Store, n_complementary: int = 2, phase2_key: str | None = None,
                    allow_weak: bool = False) -> dict:
    """The selection (module docstring). A sampling or reward metric must have a 95% CI that
    excludes chance from below (``ci_lo`` > 0.5): weaker candidates are skipped, each with a warning,
    unless ``allow_weak`` (CLI ``--allow-weak-metric``), which selects them and says so."""
    warnings: list[str] = []
    p1_latest, _ = store.latest_study("phase1_ranking", "phase1_key")
    if phase2_key is None:
        phase2_key, _ = store.latest_study("phase2_ranking", "phase2_key")
    p2 = store.read_study("phase2_ranking", phase2_key) if phase2_key else None
    if p2 is not None:
        p1_key = str(p2["phase1_key"].iloc[0])
        if p1_latest and p1_latest != p1_key:
            warnings.append(f"phase1 {p1_latest} is newer than phase1 {p1_key} that phase2 {phase2_key} used; "
                            f"this selection follows phase2 (re-run `iqa-study phase2` to use the newer Phase I)")
    else:
        p1_key = p1_latest
    p1 = store.read_study("phase1_ranking", p1_key) if p1_key else None
    ranking = p2 if p2 is not None else p1
    if ranking is None:
        raise StudyError(f"{store.root}: no phase1/phase2 results; run `iqa-study phase1` (and phase2) first")
    ranking = ranking.sort_values("rank")
    top = ranking.iloc[0]
    n_groups = int(top["n_groups"]) if "n_groups" in top else None
    best = {"metric": top["metric"], "config_hash": top.get("config_hash"), "strict_acc": float(top["acc"]),
            "ci_lo": float(top["ci_lo"]), "ci_hi": float(top["ci_hi"]), "ci_method": top.get("ci_method"),
            "n_pairs": int(top["n"]), "n_groups": n_groups, "source": "phase2" if p2 is not None else "phase1"}

    link = phase2_key or ""
    c_key, greedy = store.latest_study("complement_greedy", "complement_key", phase2_key=link, best=best["metric"])
    complementary = []
    if greedy is None:
        warnings.append(f"no complement result computed on {'phase2 ' + link if link else 'this ranking'} with best "
                        f"{best['metric']}; run `iqa-study complement` (complementary left empty)")
    else:
        _, conditional = store.latest_study("complement_conditional", "complement_key", complement_key=c_key)
        cond = conditional.set_index("metric")["acc_on_best_wrong"] if conditional is not None else pd.Series(dtype=float)
        for r in greedy[greedy["step"] > 0].sort_values("step").head(n_complementary).itertuples():
            complementary.append({"metric": r.metric, "config_hash": getattr(r, "config_hash", None),
                                  "acc_on_best_wrong": cond.get(r.metric, float("nan")), "oracle_gain": float(r.gain)})
    e_key, ens = store.latest_study("ensemble_summary", "ensemble_key", phase2_key=link)
    if ens is None and link:
        warnings.append(f"no ensemble computed on phase2 {link} (ensemble: null)")

    ranked_rows = {r["metric"]: r for _, r in ranking.iterrows()}
    if p1 is not None:
        for _, r in p1.sort_values("rank").iterrows():
            ranked_rows.setdefault(r["metric"], r)
    sampling = reward = None
    for m, row in ranked_rows.items():
        spec = get(m)
        if not is_available(spec):
            continue
        stage = "phase2" if p2 is not None and m in set(ranking["metric"]) else "phase1"
        weak = not (float(row["ci_lo"]) > CHANCE)  # the CI does not exclude chance from below (NaN: undefined)
        rec = {"metric": m, "config_hash": row.get("config_hash"), "weights_available": True,
               "strict_acc": float(row["acc"]), "ci_lo": float(row["ci_lo"]), "ci_hi": float(row["ci_hi"]),
               "n_pairs": int(row["n"]), "ranked_in": stage, "above_chance": not weak}
        for role in ("sampling", "reward"):
            if (sampling if role == "sampling" else reward) is not None:
                continue
            if role == "reward" and not spec.differentiable:
                continue
            if weak and not allow_weak:
                warnings.append(f"{role} candidate {m} not selected: its 95% CI does not exclude chance (0.5) from "
                                f"below ({_ci_text(row)}); --allow-weak-metric selects it anyway")
                continue
            first = "highest-ranked metric with weights here (sampling needs no gradient)" if role == "sampling" else \
                "highest-ranked metric that is differentiable and has weights here"
            why = "" if m == best["metric"] else \
                f" ('{best['metric']}' {'has no weights here' if role == 'sampling' else 'is not'})"
            strong = " whose CI excludes chance" if not allow_weak else ""
            chosen = {**rec, "reason": first.replace("metric", "metric" + strong, 1) + why}
            if role == "reward":
                chosen["differentiable"] = True
                reward = chosen
            else:
                sampling = chosen
            if weak:
                warnings.append(f"{role} metric {m} selected only because of --allow-weak-metric: its 95% CI "
                                f"does not exclude chance ({_ci_text(row)})")
    if sampling is None:
        skipped = [w.split(" candidate ", 1)[1].split(":", 1)[0].replace(" not selected", "") + " " +
                   w.split("below (", 1)[1].split(")", 1)[0] for w in warnings if w.startswith("sampling candidate")]
        if skipped:
            raise StudyError(f"select: no ranked metric with weights here has a 95% CI above chance (0.5) "
                             f"({'; '.join(skipped)}): the evidence does not support a metric for training; add "
                             f"pairs, or pass --allow-weak-metric to select the best anyway (recorded with a warning)")
        raise StudyError("select: no ranked metric has weights available here; score one (e.g. niqe after "
                         "`iqa-study weights seed-niqe`) or supply weights")
    if reward is None:
        warnings.append("no ranked metric is differentiable, available here" + ("" if allow_weak else
                        " and above chance") + ": reward_metric is null (FT needs one; e.g. niqe after "
                        "`iqa-study weights seed-niqe`" + ("" if allow_weak else ", or --allow-weak-metric") + ")")

    seen = set()
    for role, rec in (("best", {**best, "acc": best["strict_acc"], "n": best["n_pairs"]}),
                      ("sampling", {**sampling, "acc": sampling["strict_acc"], "n": sampling["n_pairs"]}),
                      ("reward", None if reward is None else {**reward, "acc": reward["strict_acc"],
                                                              "n": reward["n_pairs"]})):
        if rec is None or rec["metric"] in seen:
            continue
        seen.add(rec["metric"])
        if rec["acc"] <= CHANCE:
            warnings.append(f"{role} metric {rec['metric']} is AT OR BELOW CHANCE: strict accuracy {_ci_text(rec)}")
        elif rec["ci_lo"] <= CHANCE:
            warnings.append(f"{role} metric {rec['metric']} is not distinguishable from chance: its 95% CI includes "
                            f"0.5 ({_ci_text(rec)})")
    if best["n_pairs"] < MIN_PAIRS or (n_groups is not None and n_groups < MIN_GROUPS):
        warnings.append(f"small evidence: the ranking rests on n={best['n_pairs']} decided pairs from "
                        f"{n_groups if n_groups is not None else '?'} source groups (want >= {MIN_PAIRS} pairs and "
                        f">= {MIN_GROUPS} groups)")

    con = connect(store)
    pairs_ds = (store.read_study("phase2_pairs", phase2_key)["dataset"].unique()
                if store.has_study("phase2_pairs", phase2_key) else None)
    datasets = con.execute("SELECT dataset, bool_or(synthetic) AS synthetic FROM pairs GROUP BY dataset").df()
    if pairs_ds is not None:
        datasets = datasets[datasets["dataset"].isin(set(pairs_ds))]
    if datasets["synthetic"].any():
        warnings.append("evidence includes SYNTHETIC preferences (embedded sample)")
    configs = (dict(zip(ranking["metric"], ranking["config_hash"])) if "config_hash" in ranking else {})
    selection = {
        "schema": SCHEMA,
        "best": best,
        "complementary": complementary,
        "sampling_metric": sampling,
        "reward_metric": reward,
        "training_metric": reward,
        "configs": configs,
        "warnings": warnings,
        "allow_weak_metric": bool(allow_weak),
        "ensemble": None if ens is None else {"key": e_key, "cv_strict_acc": float(ens["strict_acc"].iloc[0]),
                                              "model": str(ensemble_model_path(store, e_key))},
        "evidence": {"phase1_key": p1_key, "phase2_key": phase2_key, "complement_key": c_key, "ensemble_key": e_key,
                     "store": str(store.root.resolve()), "datasets": sorted(datasets["dataset"]),
                     "synthetic": bool(datasets["synthetic"].any()),
                     "include_inferred": bool(ranking["include_inferred"].iloc[0]) if "include_inferred" in ranking
                     else False},
        "pyiqa_version": pyiqa.__version__,
        "created_at": provenance.now().isoformat(timespec="seconds"),
    }
    return strict_json(selection)


def strict_json(value):
    """A copy of ``value`` with NaN/inf -> None and numpy scalars -> Python (strict JSON)."""
    if isinstance(value, dict):
        return {str(k): strict_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict_json(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is pd.NA or value is pd.NaT:
        return None
    return value


def write_selection(selection: dict, out: str | Path) -> Path:
    """Validate ``selection`` against the typed contract (bench.study.selection_model), then write it."""
    checked = validate(strict_json(selection), out).as_dict()
    return atomic_write_text(json.dumps(checked, indent=2, allow_nan=False), Path(out))


def read_selection(path: str | Path) -> dict:
    """selection.json validated against ``bench.study.selection_model.Selection`` (the one reader), as a
    dict. Files before sampling/reward were recorded have only ``training_metric``: it then stands for
    both (``reward_metric`` and ``sampling_metric`` are filled from it)."""
    return load(path).as_dict()


def summary_text(sel: dict, with_warnings: bool = True) -> str:
    b, s, r = sel["best"], sel["sampling_metric"], sel.get("reward_metric")
    lines = [(f"best metric: {b['metric']}  strict acc {b['strict_acc']:.4f} [{b['ci_lo']:.4f}, {b['ci_hi']:.4f}] "
              f"on {b['n_pairs']} pairs ({b['source']}; {b.get('ci_method') or 'CI'})"),
             f"complementary: {', '.join(c['metric'] for c in sel['complementary']) or '(none computed)'}",
             f"sampling metric (SMA/SMP/AMO): {s['metric']} ({s['reason']})",
             f"reward metric (FT): {r['metric']} ({r['reason']})" if r else "reward metric (FT): none available"]
    if sel.get("ensemble"):
        lines.append(f"ensemble (grouped CV): strict acc {sel['ensemble']['cv_strict_acc']:.4f}")
    lines += [f"WARNING: {w}" for w in sel.get("warnings", [])] if with_warnings else []
    return "\n".join(lines)
