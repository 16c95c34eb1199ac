"""Which study results a report shows, and the selection it opens with.

A report follows ONE chain of study results, never each table's latest on its own (a later
``phase1`` would otherwise sit next to an older Phase II it did not produce):

* ``--selection F`` (selection.json): the keys in its ``evidence`` (phase1, phase2, complement,
  ensemble), and the selection itself opens the report;
* ``--phase2 KEY``: that Phase II result, the Phase I it was computed from, and the latest complement
  and ensemble computed on it;
* neither: the latest Phase II result and its chain as above; without any Phase II, the latest
  Phase I alone.

The chain is stated at the top of the report (``chain_text``). A study ranks metrics against each
other: a chain whose ranking holds fewer than two metrics is refused in one line.
``selection_blocks`` is the report's opening section as plain data (heading, paragraphs, a table,
warnings), for whichever renderer writes the page.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from bench.errors import StudyError
from bench.store import Store

KEYS = ("phase1_key", "phase2_key", "complement_key", "ensemble_key")


def resolve_chain(store: Store, selection: dict | None = None, selection_path: str | Path | None = None,
                  phase2_key: str | None = None) -> dict:
    """{phase1_key, phase2_key, complement_key, ensemble_key, source}: the one chain a report shows."""
    if selection is not None and phase2_key is not None:
        raise StudyError("report: give --selection or --phase2, not both")
    if selection is not None:
        ev = selection.get("evidence") or {}
        chain = {k: ev.get(k) for k in KEYS}
        for key, table in (("phase2_key", "phase2_ranking"), ("phase1_key", "phase1_ranking")):
            if chain[key] and not store.has_study(table, chain[key]):
                raise StudyError(f"report --selection {selection_path}: its {key.split('_')[0]} {chain[key]} is not "
                                 f"in {store.root} (was it written from another store, {ev.get('store')}?)")
        chain["source"] = f"selection {selection_path}"
    else:
        if phase2_key is None and (latest := store.latest_study("phase2_ranking", "phase2_key")[0]):
            phase2_key = latest
            source = f"the latest Phase II ({phase2_key})"
        else:
            source = f"Phase II {phase2_key}" if phase2_key else None
        if phase2_key:
            p2 = store.read_study("phase2_ranking", phase2_key)
            p1_key = str(p2["phase1_key"].iloc[0])
        else:
            p1_key, _ = store.latest_study("phase1_ranking", "phase1_key")
            if p1_key is None:
                raise StudyError(f"{store.root}: no phase1/phase2 results; run `iqa-study phase1` (and phase2) first")
            source = f"the latest Phase I ({p1_key}); no Phase II yet"
        c_key = e_key = None
        if phase2_key:
            c_key, _ = store.latest_study("complement_greedy", "complement_key", phase2_key=phase2_key)
            e_key, _ = store.latest_study("ensemble_summary", "ensemble_key", phase2_key=phase2_key)
        chain = {"phase1_key": p1_key, "phase2_key": phase2_key, "complement_key": c_key, "ensemble_key": e_key,
                 "source": source}
    ranking_table, ranking_key = (("phase2_ranking", chain["phase2_key"]) if chain["phase2_key"]
                                  else ("phase1_ranking", chain["phase1_key"]))
    if not ranking_key:
        raise StudyError(f"report: {chain['source']} names no Phase I or Phase II result")
    ranking = store.read_study(ranking_table, ranking_key)
    metrics = sorted(set(ranking["metric"]))
    if len(metrics) < 2:
        raise StudyError(f"report: {ranking_table.split('_')[0]} {ranking_key} ranked {len(metrics)} metric(s) "
                         f"({', '.join(metrics) or 'none'}); a study compares at least two: re-run phase1 with "
                         f"--metrics naming two or more available metrics (`iqa-study metrics --available`)")
    return chain


def chain_text(chain: dict) -> str:
    parts = [f"Phase II {chain['phase2_key']}" if chain.get("phase2_key") else "no Phase II",
             f"Phase I {chain['phase1_key']}",
             f"complement {chain['complement_key']}" if chain.get("complement_key") else "no complement",
             f"ensemble {chain['ensemble_key']}" if chain.get("ensemble_key") else "no ensemble"]
    return (f"This report follows one chain of results, from {chain['source']}: " + " <- ".join(parts[:2]) + "; "
            + ", ".join(parts[2:]) + ". Sections of results outside this chain are left out.")


def selection_rows(sel: dict) -> pd.DataFrame:
    """One row per role (best, sampling, reward) with its metric and evidence."""
    rows = []
    for role, rec in (("best (ranking)", sel.get("best")), ("sampling (SMA/SMP/AMO)", sel.get("sampling_metric")),
                      ("reward (FT)", sel.get("reward_metric"))):
        if rec is None:
            rows.append({"role": role, "metric": "none", "strict acc [95% CI]": "", "n pairs": "",
                         "above chance": "", "reason": "none selected (see warnings)"})
            continue
        acc = rec.get("strict_acc")
        lo, hi = rec.get("ci_lo"), rec.get("ci_hi")
        ci = "" if acc is None else f"{acc:.3f}" + ("" if lo is None or hi is None else f" [{lo:.3f}, {hi:.3f}]")
        above = rec.get("above_chance")
        if above is None and lo is not None:
            above = lo > 0.5
        rows.append({"role": role, "metric": rec["metric"], "strict acc [95% CI]": ci,
                     "n pairs": rec.get("n_pairs", ""), "above chance": "" if above is None else bool(above),
                     "reason": rec.get("reason", rec.get("source", ""))})
    return pd.DataFrame(rows)


def selection_blocks(sel: dict | None, chain: dict) -> list[tuple[str, object]]:
    """The report's opening section: the chain, and with a selection its metrics, evidence and
    every warning (as ``("h2" | "p" | "table" | "warn", value)`` blocks)."""
    blocks: list[tuple[str, object]] = [("h2", "Selection"), ("p", chain_text(chain))]
    if sel is None:
        return blocks + [("p", ("No selection.json given (`iqa-study report --selection F`): the ranking below "
                                "has not been turned into a sampling or reward metric."))]
    blocks.append(("table", selection_rows(sel)))
    if sel.get("allow_weak_metric"):
        blocks.append(("warn", ("selected with --allow-weak-metric: a metric whose 95% CI includes chance may "
                                "have been chosen")))
    for w in sel.get("warnings") or []:
        blocks.append(("warn", f"WARNING: {w}"))
    return blocks
