"""selection.json: the study's machine-readable outcome, consumed by SR training.

    {
      "schema": "iqa-study/selection/v1",
      "best": {"metric", "strict_acc", "ci_lo", "ci_hi", "n_pairs", "source"},
      "complementary": [{"metric", "acc_on_best_wrong", "oracle_gain"}...],
      "training_metric": {"metric", "differentiable": true, "weights_available": true, "reason"},
      "evidence": {"phase1_key", "phase2_key", "complement_key", "ensemble_key", "store", "datasets", "synthetic"},
      "pyiqa_version", "created_at"
    }
"""

from __future__ import annotations

import json
from pathlib import Path

import pyiqa

from bench import provenance
from bench.errors import StudyError
from bench.metrics.table import get
from bench.metrics.weights import is_available
from bench.store import Store
from bench.atomic import atomic_write_text
from bench.store.views import connect
from bench.study.phases import latest_result

SCHEMA = "iqa-study/selection/v1"


def build_selection(store: Store, n_complementary: int = 2) -> dict:
    con = connect(store)
    p1_key, p1 = latest_result(store, "phase1_ranking", "phase1_key")
    p2_key, p2 = latest_result(store, "phase2_ranking", "phase2_key")
    c_key, greedy = latest_result(store, "complement_greedy", "complement_key")
    _, conditional = latest_result(store, "complement_conditional", "complement_key")
    e_key, ens = latest_result(store, "ensemble_summary", "ensemble_key")
    ranking = p2 if p2 is not None else p1
    if ranking is None:
        raise StudyError(f"{store.root}: no phase1/phase2 results; run `iqa-study phase1` (and phase2) first")
    top = ranking.iloc[0]
    best = {"metric": top["metric"], "strict_acc": float(top["acc"]), "ci_lo": float(top["ci_lo"]),
            "ci_hi": float(top["ci_hi"]), "n_pairs": int(top["n"]), "source": "phase2" if p2 is not None else "phase1"}
    complementary = []
    if greedy is not None and greedy["best"].iloc[0] == best["metric"]:
        cond = conditional.set_index("metric")["acc_on_best_wrong"] if conditional is not None else {}
        for r in greedy[greedy["step"] > 0].head(n_complementary).itertuples():
            complementary.append({"metric": r.metric, "acc_on_best_wrong": float(cond.get(r.metric, float("nan"))),
                                  "oracle_gain": float(r.gain)})
    candidates = list(ranking["metric"]) + [m for m in (p1["metric"] if p1 is not None else []) if m not in set(ranking["metric"])]
    training = None
    for m in candidates:
        spec = get(m)
        if spec.differentiable and is_available(spec):
            training = {"metric": m, "differentiable": True, "weights_available": True,
                        "reason": "highest-ranked metric that is differentiable and has weights here"
                        + ("" if m == best["metric"] else f" ('{best['metric']}' is not)")}
            break
    if training is None:
        raise StudyError("select: no ranked metric is both differentiable and available here; score one "
                         "(e.g. niqe after `iqa-study weights seed-niqe`) or supply weights")
    datasets = con.execute("SELECT dataset, bool_or(synthetic) AS synthetic FROM pairs GROUP BY dataset").df()
    return {
        "schema": SCHEMA,
        "best": best,
        "complementary": complementary,
        "training_metric": training,
        "ensemble": None if ens is None else {"key": e_key, "cv_strict_acc": float(ens["strict_acc"].iloc[0]),
                                              "model": str(store.root / "models" / f"ensemble-{e_key}.json")},
        "evidence": {"phase1_key": p1_key, "phase2_key": p2_key, "complement_key": c_key, "ensemble_key": e_key,
                     "store": str(store.root.resolve()), "datasets": sorted(datasets["dataset"]),
                     "synthetic": bool(datasets["synthetic"].any())},
        "pyiqa_version": pyiqa.__version__,
        "created_at": provenance.now().isoformat(timespec="seconds"),
    }


def write_selection(selection: dict, out: str | Path) -> Path:
    return atomic_write_text(json.dumps(selection, indent=2), Path(out))


def read_selection(path: str | Path) -> dict:
    path = Path(path)
    try:
        sel = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise StudyError(f"{path}: not a readable selection.json ({exc})") from None
    if sel.get("schema") != SCHEMA:
        raise StudyError(f"{path}: field 'schema' is {sel.get('schema')!r}, expected {SCHEMA!r}")
    for field in ("best", "training_metric"):
        if not isinstance(sel.get(field), dict) or "metric" not in sel[field]:
            raise StudyError(f"{path}: field '{field}.metric' missing")
    return sel


def summary_text(sel: dict) -> str:
    b, t = sel["best"], sel["training_metric"]
    lines = [f"best metric: {b['metric']}  strict acc {b['strict_acc']:.4f} [{b['ci_lo']:.4f}, {b['ci_hi']:.4f}] "
             f"on {b['n_pairs']} pairs ({b['source']})",
             f"complementary: {', '.join(c['metric'] for c in sel['complementary']) or '(none computed)'}",
             f"training metric: {t['metric']} ({t['reason']})"]
    if sel.get("ensemble"):
        lines.append(f"ensemble (grouped CV): strict acc {sel['ensemble']['cv_strict_acc']:.4f}")
    if sel["evidence"]["synthetic"]:
        lines.append("NOTE: evidence includes SYNTHETIC preferences (embedded sample)")
    return "\n".join(lines)
