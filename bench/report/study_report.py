"""The study report: one list of blocks rendered to Markdown and to a self-contained HTML page.

Sections: agreement per dataset - Phase I ranking - Phase II ranking with McNemar (raw and Holm
p) and the human split-half ceiling - accuracy per SR method - accuracy vs human vote margin -
complementarity (both-wrong heatmap, conditional accuracy, greedy complement / oracle curve) -
failure gallery with zoomed crops - ensemble with its CI - provenance.

Every figure is written as ``NAME.png``, ``NAME.pdf`` (vector) and ``NAME.csv`` (its data);
``FIGURES`` lists the names a full study produces. ``report.html`` embeds every PNG as a base64
data URI, so the page alone can be mailed; ``report.md`` links the files next to it.

One CI method for every accuracy: percentile bootstrap over source groups, 95%
(``bench.report.analyses.CI_METHOD``; the Phase I/II tables carry the study's own B).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from bench.atomic import atomic_write_text
from bench.errors import StudyError
from bench.report import analyses, html_page
from bench.report.chain import resolve_chain, selection_blocks
from bench.report.figures import accuracy_bars, greedy_curve, grouped_points, heatmap, save
from bench.report.gallery import pair_figure
from bench.report.sources import provenance
from bench.store import Store

Block = tuple[str, object]

# Every figure a full study (phase1 -> phase2 -> complement -> ensemble) on a dataset with SR
# method columns, votes and per-observer votes produces (agreement_<dataset>_<split> come on top).
FIGURES = ["phase1_ranking", "phase2_ranking", "accuracy_by_method", "accuracy_by_margin", "complement_overlap",
           "complement_conditional", "complement_greedy", "failure_gallery", "ensemble"]


def _keyed(store: Store, table: str, key: str | None) -> pd.DataFrame | None:
    """The result ``key`` of study table ``table`` (the report's chain, ``bench.report.chain``), or None."""
    return store.read_study(table, key) if store.has_study(table, key) else None


def _fmt(v) -> str:
    if isinstance(v, (bool, np.bool_)):
        return str(bool(v))
    if isinstance(v, (float, np.floating)):
        return "" if np.isnan(v) else f"{v:.4f}"
    return str(v)


def _ci(df: pd.DataFrame, value: str = "acc", lo: str = "ci_lo", hi: str = "ci_hi") -> pd.Series:
    return [f"{a:.3f} [{b:.3f}, {c:.3f}]" if np.isfinite(a) else "" for a, b, c in zip(df[value], df[lo], df[hi])]


def _agreement_blocks(store: Store, out: Path) -> list[Block]:
    agree = analyses.agreement_by_dataset(store)
    synthetic = analyses.pair_info(store).groupby("dataset")["synthetic"].any()
    blocks: list[Block] = [
        ("h2", "Agreement with human preference"),
        ("p", ("strict: metric tie = wrong; tie-half: metric tie = 0.5; vote: share of votes for the metric's "
              f"choice (definitions: bench/store/views.py). CIs: {analyses.CI_METHOD}. Each metric uses one "
              "scoring configuration (the study's rule, bench/study/configs.py)."))]
    for (dataset, split), g in agree.groupby(["dataset", "split"], sort=True):
        name = f"agreement_{dataset}_{split}".replace("/", "_")
        syn = " (SYNTHETIC)" if synthetic.get(dataset, False) else ""
        save(accuracy_bars(g, "acc", "ci_lo", "ci_hi", f"{dataset} / {split}{syn}: {int(g['n_decided'].max())} "
                           "decided pairs", xlabel="strict accuracy (95% CI)"), g, out, name)
        t = pd.DataFrame({"metric": g["metric"], "n_decided": g["n_decided"], "strict": _ci(g),
                          "tie-half": _ci(g, "tie_half_acc", "tie_half_ci_lo", "tie_half_ci_hi"),
                          "vote agreement": _ci(g, "vote_agreement", "vote_ci_lo", "vote_ci_hi")})
        blocks += [("h3", f"{dataset} / {split}{syn}"), ("table", t), ("img", name)]
    return blocks


def phase2_headline(p2: pd.DataFrame, best: str) -> str:
    """"best = X" only when the test says so: X significantly better (Holm) than every runner-up; otherwise
    "top-ranked X, not significantly better than ..." naming the runners-up it does not beat."""
    if "best_significantly_better" not in p2:
        return f"top-ranked {best} (no test recorded)"
    close = [m for m, sig in zip(p2["metric"], p2["best_significantly_better"]) if m != best and not bool(sig)]
    if not close:
        return f"best = {best}"
    shown = ", ".join(close[:3]) + (f" +{len(close) - 3}" if len(close) > 3 else "")
    return f"top-ranked {best}, not significantly better than {shown}"


def _phase2_blocks(p2: pd.DataFrame, ceiling: pd.DataFrame | None, out: Path) -> list[Block]:
    best = p2.loc[p2["is_best"], "metric"].iloc[0] if "is_best" in p2 else p2["metric"].iloc[0]
    holm = "p_value_holm" if "p_value_holm" in p2 else "p_value_vs_best"
    notes = {r.metric: f"p={getattr(r, holm):.3g} (Holm)" for r in p2.itertuples()
             if r.metric != best and np.isfinite(getattr(r, holm))}
    band = None
    if ceiling is not None and len(ceiling) == 1:
        c = ceiling.iloc[0]
        band = (c["agreement"], c["ci_lo"], c["ci_hi"])
    n = int(p2["n"].iloc[0])
    save(accuracy_bars(p2, "acc", "ci_lo", "ci_hi", f"Phase II: {n} pairs, {phase2_headline(p2, best)}",
                       highlight={best},
                       xlabel="strict accuracy (95% CI)", ceiling=band, notes=notes), p2, out, "phase2_ranking")
    cols = [c for c in ["rank", "metric", "acc", "ci_lo", "ci_hi", "n", "n_groups", "only_best_right",
                        "only_this_right", "p_value_vs_best", "p_value_holm", "best_significantly_better"] if c in p2]
    test = p2["test_method"].iloc[0] if "test_method" in p2 else "McNemar exact test"
    ci = p2["ci_method"].iloc[0] if "ci_method" in p2 else analyses.CI_METHOD
    return [("h2", "Phase II ranking"),
            ("p", (f"Top-k of Phase I on the full set (split: {p2['split'].iloc[0] if 'split' in p2 else 'all'}). "
                  f"CIs: {ci}. {test}: the best against each runner-up; only_best_right / only_this_right are the "
                  "discordant pairs; p_value_vs_best is the raw exact p, p_value_holm the Holm-adjusted one. "
                  "The blue band is the human split-half agreement (below) where per-observer votes exist.")),
            ("table", p2[cols]), ("img", "phase2_ranking")]


def _ceiling_blocks(ceiling: pd.DataFrame | None) -> list[Block]:
    if ceiling is None:
        return []
    t = ceiling.assign(agreement=_ci(ceiling, "agreement"))[["dataset", "agreement", "n_observers", "n_splits",
                                                               "n_pairs"]]
    return [("h2", "Inter-observer ceiling"),
            ("p", ("Split-half agreement: observers split into two halves (every balanced split, or 200 seeded random "
                  "ones for more than 10 observers); share of (pair, split) where both halves' majorities are decided "
                  f"and agree. CI: {analyses.CI_METHOD}. Observer ids are anonymised by the importer. With few "
                  "observers (or very unequal numbers of votes per observer) the estimate is coarse.")),
            ("table", t)]


def _by_method_blocks(long: pd.DataFrame, pairs: pd.DataFrame, out: Path, metrics: list[str]) -> list[Block]:
    t = analyses.accuracy_by_method(long, pairs)
    if t is None:
        return [("h2", "Accuracy per SR method"),
                ("p", ("Not drawn: the manifests have no method_a/method_b columns and not every pair's file names "
                       "follow <id>_<method> (bench.report.analyses.methods_from_names); add the columns to the "
                       "vote CSV to get this figure."))]
    save(grouped_points(t, "method", "Accuracy on pairs involving each SR method", "SR method", metrics=metrics), t, out,
         "accuracy_by_method")
    return [("h2", "Accuracy per SR method"),
            ("p", ("A pair counts for a method when either image is that method's output (manifest columns "
                  f"method_a/method_b). Strict accuracy; CIs: {analyses.CI_METHOD}.")),
            ("table", t.assign(acc=_ci(t))[["method", "metric", "acc", "n_decided"]]), ("img", "accuracy_by_method")]


def _by_margin_blocks(long: pd.DataFrame, out: Path, metrics: list[str]) -> list[Block]:
    t = analyses.accuracy_by_margin(long)
    if t is None:
        return []
    order = [label for _, _, label in analyses.MARGIN_BINS if label in set(t["margin"])]
    n = t.groupby("margin")["n_decided"].max()
    few = {label for label in order if int(n[label]) < analyses.MIN_BIN_PAIRS}
    shown = [f"{label}\nn={int(n[label])}" + (f" (<{analyses.MIN_BIN_PAIRS}!)" if label in few else "")
             for label in order]
    t = t.assign(note=[f"fewer than {analyses.MIN_BIN_PAIRS} pairs: rough" if m in few else "" for m in t["margin"]])
    fig = grouped_points(t.assign(margin=t["margin"].map(dict(zip(order, shown)))), "margin",
                         "Accuracy vs human vote margin", "share of votes for the majority side", order=shown,
                         metrics=metrics)
    save(fig, t, out, "accuracy_by_margin")
    warn = ([("warn", (f"margin bin(s) {', '.join(sorted(few))} hold fewer than {analyses.MIN_BIN_PAIRS} decided "
                      "pairs (marked '!'): their accuracies and CIs are rough at best"))] if few else [])
    return [("h2", "Accuracy vs human vote margin"),
            ("p", ("Decided pairs with votes, binned by the majority's share of votes (weak 50-70%, medium 70-90%, "
                  f"strong 90-100%). Strict accuracy; CIs: {analyses.CI_METHOD}.")), *warn,
            ("table", t.assign(acc=_ci(t))[["margin", "metric", "acc", "n_decided", "note"]]),
            ("img", "accuracy_by_margin")]


def _complement_blocks(store: Store, p2: pd.DataFrame | None, out: Path,
                       key: str | None) -> tuple[list[Block], str | None]:
    overlap = _keyed(store, "complement_overlap", key)
    cond = _keyed(store, "complement_conditional", key)
    if overlap is None or cond is None:
        return [], None
    best = cond["best"].iloc[0]
    mat = overlap.pivot(index="metric_a", columns="metric_b", values="both_wrong_share")
    save(heatmap(mat, "Both-wrong overlap (diagonal: error rate)", "share of pairs both wrong"), mat.reset_index(),
         out, "complement_overlap")
    import matplotlib.pyplot as plt

    from bench.report.figures import COLORS, FULL_WIDTH, style

    style()
    fig, ax = plt.subplots(figsize=(FULL_WIDTH / 2 + 0.5, 0.28 * len(cond) + 1.0))
    d = cond.sort_values("acc_on_best_wrong")
    ax.barh(d["metric"], d["acc_on_best_wrong"], color=COLORS[2])
    ax.set_xlim(0, 1)
    ax.set_xlabel(f"accuracy on the {int(cond['n_best_wrong'].iloc[0])} pairs {best} gets wrong")
    ax.set_title(f"Conditional accuracy given {best} is wrong")
    save(fig, cond, out, "complement_conditional")
    blocks: list[Block] = [("h2", f"Complementarity to {best}"),
                           ("p", ("Descriptive shares on the Phase II pairs (no CI): the both-wrong overlap, each "
                                 f"metric's accuracy where {best} is wrong, and the greedy complement.")),
                           ("img", "complement_overlap"), ("img", "complement_conditional"),
                           ("table", cond[["metric", "acc_on_best_wrong", "n_best_wrong"]])]
    greedy = _keyed(store, "complement_greedy", key)
    if greedy is not None:
        single = float(p2.loc[p2["metric"] == best, "acc"].iloc[0]) if p2 is not None and best in set(p2["metric"]) \
            else None
        save(greedy_curve(greedy, single, "Greedy complement: oracle accuracy"), greedy, out, "complement_greedy")
        blocks += [("p", ("Greedy complement: each step adds the metric that most raises the share of pairs where at "
                         "least one chosen metric is right (an oracle upper bound, not a usable combination). "
                         "Chance baseline (dashed): each added metric a fair coin, independent of the others, so "
                         "step k gets right about half of the pairs still wrong after step k-1: "
                         "1 - (1 - first)·0.5^k. A metric above it complements the first; one on it adds what "
                         "a coin would.")),
                   ("table", greedy[["step", "metric", "oracle_acc", "gain"]]), ("img", "complement_greedy")]
    return blocks, best


def _gallery_blocks(long: pd.DataFrame, pairs: pd.DataFrame, best: str, out: Path) -> list[Block]:
    wrong = analyses.failures(long, best)
    if wrong.empty:
        return [("h2", "Failure gallery"), ("p", f"{best} gets no decided pair wrong.")]
    rows = wrong[["dataset", "pair_id"]].merge(pairs, on=["dataset", "pair_id"])
    verdicts = long.merge(rows[["dataset", "pair_id"]], on=["dataset", "pair_id"])
    fig, shown = pair_figure(rows, verdicts, f"Pairs {best} gets wrong (strongest human preference first)")
    save(fig, shown, out, "failure_gallery")
    return [("h2", "Failure gallery"),
            ("p", (f"The decided pairs {best} gets wrong, strongest human preference first. Columns: A and B whole "
                  "(yellow box), then the same box of both at full resolution: the region where |A - B|, "
                  "mean-filtered over the box, is largest (bench/report/zoom.py). Under each row: every Phase II "
                  "metric's choice and both scores.")),
            ("img", "failure_gallery")]


def _ensemble_blocks(store: Store, out: Path, key: str | None) -> list[Block]:
    t = analyses.ensemble_ci(store, key=key) if key else None
    if t is None:
        return []
    save(accuracy_bars(t.rename(columns={"model": "metric"}), "acc", "ci_lo", "ci_hi",
                       f"Ensemble vs single metrics on the same {int(t['n'].iloc[0])} pairs",
                       highlight={t["model"].iloc[0]}, xlabel="strict accuracy (95% CI)"), t, out, "ensemble")
    return [("h2", "Ensemble (beyond the paper)"),
            ("p", ("Logistic regression on standardised score differences; the ensemble's accuracy is held out "
                  "(cross-validation grouped by source image), the single metrics' accuracies are on the same pairs. "
                  f"CIs: {analyses.CI_METHOD}, paired.")),
            ("table", t.assign(acc=_ci(t))[["model", "acc", "n"]]), ("img", "ensemble")]


def build_blocks(store: Store, out: Path, title: str, chain: dict | None = None,
                 selection: dict | None = None) -> list[Block]:
    chain = chain or resolve_chain(store)
    prov = provenance(store)
    synthetic = any(d.get("synthetic") for d in prov["datasets"])
    blocks: list[Block] = [("h1", title)]
    if synthetic:
        blocks.append(("warn", ("SYNTHETIC DATA: some datasets in this store (marked synthetic) use the embedded "
                               "sample's synthetic preferences, not human votes. Their numbers describe metric "
                               "behaviour on documented synthetic degradations only.")))
    blocks.append(("p", f"Store: {prov['store']}. Datasets: " + ", ".join(
        f"{d['dataset']} ({d['n_pairs']} pairs{', SYNTHETIC' if d['synthetic'] else ''})" for d in prov["datasets"])))
    blocks.append(("p", (f"One CI method for every accuracy in this report: {analyses.CI_METHOD}, resampling whole "
                        "source groups because pairs of one source share images. Every figure comes as PNG, PDF "
                        "(vector) and CSV (its data) next to this page.")))
    blocks += selection_blocks(selection, chain)
    blocks += _agreement_blocks(store, out)

    p1 = _keyed(store, "phase1_ranking", chain["phase1_key"])
    if p1 is not None:
        top = set(p1.loc[p1["top_k"], "metric"])
        save(accuracy_bars(p1, "acc", "ci_lo", "ci_hi", f"Phase I: {int(p1['n'].iloc[0])} pairs, top-{len(top)} "
                           "highlighted", highlight=top, xlabel="strict accuracy (95% CI)"), p1, out, "phase1_ranking")
        ci = p1["ci_method"].iloc[0] if "ci_method" in p1 else analyses.CI_METHOD
        blocks += [("h2", "Phase I ranking"),
                   ("p", (f"Key {p1['phase1_key'].iloc[0]}: stratified subset of {int(p1['n_subset'].iloc[0])} pairs. "
                         f"CIs: {ci}. Orange = top-k, carried to Phase II.")),
                   ("table", p1[[c for c in ["rank", "metric", "acc", "ci_lo", "ci_hi", "n", "top_k",
                                             "differentiable"] if c in p1]]),
                   ("img", "phase1_ranking")]
    pairs = analyses.pair_info(store)
    ceiling = analyses.split_half_ceiling(pairs)
    p2, long = analyses.study_outcomes(store, chain["phase2_key"])
    if p2 is not None:
        blocks += _phase2_blocks(p2, ceiling, out)
    blocks += _ceiling_blocks(ceiling)
    ranked = list(p2["metric"]) if p2 is not None else sorted(long["metric"].unique())
    blocks += _by_method_blocks(long, pairs, out, ranked)
    blocks += _by_margin_blocks(long, out, ranked)
    comp, best = _complement_blocks(store, p2, out, chain["complement_key"])
    blocks += comp
    if best is None and p2 is not None:
        best = p2["metric"].iloc[0]
    if best is not None and best in set(long["metric"]):
        blocks += _gallery_blocks(long, pairs, best, out)
    blocks += _ensemble_blocks(store, out, chain["ensemble_key"])
    blocks += [("h2", "Provenance"), ("p", f"Store {prov['store']}; study tables: {', '.join(store.study_tables())}.")]
    if not prov["runs"]:
        blocks.append(("li", "no readable run records in this store (`iqa-study store check` lists damaged parts)"))
    for r in prov["runs"]:
        v = json.loads(r["versions"]) if isinstance(r.get("versions"), str) else {}
        blocks.append(("li", (f"run {r['run_id']} ({r['kind']}): device {r['device_name']}, git {r['git_commit']}, "
                             f"pyiqa {v.get('pyiqa')}, torch {v.get('torch_build', v.get('torch'))}")))
    atomic_write_text(json.dumps(prov, indent=2, default=str), out / "provenance.json")
    return blocks


def to_markdown(blocks: list[Block]) -> str:
    out = []
    for kind, x in blocks:
        if kind in ("h1", "h2", "h3"):
            out += ["#" * int(kind[1]) + " " + str(x), ""]
        elif kind == "warn":
            out += [f"> **{x}**", ""]
        elif kind == "p":
            out += [str(x), ""]
        elif kind == "li":
            out.append(f"- {x}")
        elif kind == "table":
            df = x
            out += ["| " + " | ".join(df.columns) + " |", "|" + "---|" * len(df.columns)]
            out += ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in df.itertuples(index=False)]
            out.append("")
        elif kind == "img":
            out += [f"![{x}]({x}.png)", f"Vector: [{x}.pdf]({x}.pdf) · data: [{x}.csv]({x}.csv)", ""]
    return "\n".join(out) + "\n"


_STYLE = ("body{font-family:sans-serif;max-width:1000px;margin:2em auto;}table{border-collapse:collapse;"
          "font-size:13px}td,th{border:1px solid #ccc;padding:2px 6px}img{max-width:100%}.warn{color:#b00}"
          "figcaption{font-size:12px;color:#555}")


def to_html(blocks: list[Block], title: str, out: Path) -> str:
    """A self-contained page (bench.report.html_page: autoescaped, with a CSP): figures are
    embedded as base64 PNG data URIs (the PDF/CSV links point to the files next to it)."""
    page = []
    for kind, x in blocks:
        if kind == "li":
            page.append(("ul", [x]))
        elif kind == "img":
            page.append(("figure", {"id": x, "src": html_page.data_uri((out / f"{x}.png").read_bytes()), "alt": x,
                                    "caption": x, "links": [("PDF", f"{x}.pdf"), ("CSV", f"{x}.csv")]}))
        else:
            page.append((kind, x))
    return html_page.render(title, page, _STYLE, fmt=_fmt)


def write_study_report(store: Store, out: Path, title: str = "iqa-study: metric selection report",
                       selection: str | Path | None = None, phase2_key: str | None = None) -> Path:
    """Write report.md, report.html (self-contained), NAME.{png,pdf,csv} per figure and
    provenance.json under ``out``; returns the path of report.md. The report follows one chain of
    results (``bench.report.chain``): the ``selection`` file's, else ``phase2_key``'s, else the latest
    Phase II's; with a selection it opens with its metrics, evidence and warnings."""
    from bench.study.select import read_selection

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise StudyError(f"report: --out {out} is a file; expected a directory")
    sel = read_selection(selection) if selection else None
    chain = resolve_chain(store, sel, selection, phase2_key)
    out.mkdir(parents=True, exist_ok=True)
    blocks = build_blocks(store, out, title, chain, sel)
    atomic_write_text(to_markdown(blocks), out / "report.md")
    atomic_write_text(to_html(blocks, title, out), out / "report.html")
    return out / "report.md"
