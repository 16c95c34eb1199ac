"""The study report: one list of blocks rendered to Markdown and to HTML (same content).

Sections: agreement per dataset (three conventions, CIs) - Phase I ranking (CIs, top-k) -
Phase II with McNemar - complementarity heatmap and conditional accuracy - failure gallery -
ensemble - provenance. Every figure's data is written as CSV next to its PNG.
"""

from __future__ import annotations

import html
import json
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from PIL import Image

from bench.report.sources import provenance
from bench.report.figures import accuracy_bars, save
from bench.store import Store
from bench.store.views import agreement, connect
from bench.study.phases import latest_result

Block = tuple[str, object]


def _latest(store: Store, table: str, key_column: str) -> pd.DataFrame | None:
    return latest_result(store, table, key_column)[1]


def _fmt(v) -> str:
    if isinstance(v, (float, np.floating)):
        return "" if np.isnan(v) else f"{v:.4f}"
    return str(v)


def _gallery(store: Store, best: str, out: Path, limit: int = 6) -> tuple[Path | None, pd.DataFrame]:
    con = connect(store)
    wrong = con.execute("""
        SELECT p.dataset, p.pair_id, p.image_a, p.image_b, p.root, p.pref, p.votes_a, p.votes_b, p.synthetic
        FROM pair_scores s JOIN pairs p USING (dataset, pair_id)
        WHERE s.metric = ? AND s.pref <> 'tie' AND s.metric_pref <> s.pref
        ORDER BY abs(coalesce(p.votes_a, 0) - coalesce(p.votes_b, 0)) DESC, p.pair_id LIMIT ?""", [best, limit]).df()
    if wrong.empty:
        return None, wrong
    verdicts = con.execute("""
        SELECT dataset, pair_id, metric, metric_pref, (metric_pref = pref) AS right FROM pair_scores
        WHERE pair_id IN (SELECT unnest(?))""", [list(wrong["pair_id"])]).df()
    fig, axes = plt.subplots(len(wrong), 2, figsize=(6.4, 3.4 * len(wrong)), squeeze=False)
    rows = []
    for i, r in enumerate(wrong.itertuples()):
        v = verdicts[(verdicts["pair_id"] == r.pair_id) & (verdicts["dataset"] == r.dataset)]
        verdict = ", ".join(f"{m}: {'right' if ok else 'WRONG'}" for m, ok in zip(v["metric"], v["right"]))
        votes = f"votes {r.votes_a}-{r.votes_b}" if pd.notna(r.votes_a) else "label-based"
        for j, (side, rel) in enumerate((("a", r.image_a), ("b", r.image_b))):
            ax = axes[i][j]
            path = Path(r.root) / rel
            if path.is_file():
                with Image.open(path) as im:
                    im = im.convert("RGB")
                    im.thumbnail((320, 320))
                    ax.imshow(np.asarray(im))
            else:
                ax.text(0.5, 0.5, f"image not found:\n{path}", ha="center", va="center", fontsize=7, wrap=True)
            pick = (" (preferred, SYNTHETIC)" if r.synthetic else " (human choice)") if r.pref == side else ""
            ax.set_title(f"{side.upper()}{pick}", fontsize=9)
            ax.axis("off")
        axes[i][0].text(0, -0.08, f"{r.dataset}/{r.pair_id}: {votes}; {verdict}", transform=axes[i][0].transAxes,
                        fontsize=7, va="top")
        rows.append({"dataset": r.dataset, "pair_id": r.pair_id, "image_a": r.image_a,
                     "image_b": r.image_b, "human_pref": r.pref, "votes_a": r.votes_a, "votes_b": r.votes_b,
                     "verdicts": verdict})
    fig.suptitle(f"Pairs {best} gets wrong", fontsize=11)
    fig.tight_layout()
    data = pd.DataFrame(rows)
    return save(fig, data, out, "failure_gallery"), data


def build_blocks(store: Store, out: Path, title: str) -> list[Block]:
    prov = provenance(store)
    synthetic = any(d.get("synthetic") for d in prov["datasets"])
    blocks: list[Block] = [("h1", title)]
    if synthetic:
        blocks.append(("warn", "SYNTHETIC DATA: some datasets in this store (marked synthetic) use the embedded "
                               "sample's synthetic preferences, not human votes. Their numbers describe metric "
                               "behaviour on documented synthetic degradations only."))
    blocks.append(("p", f"Store: {prov['store']}. Datasets: " + ", ".join(
        f"{d['dataset']} ({d['n_pairs']} pairs{', SYNTHETIC' if d['synthetic'] else ''})" for d in prov["datasets"])))

    agree = agreement(store)
    blocks.append(("h2", "Agreement with human preference"))
    blocks.append(("p", "strict: metric tie = wrong; tie-half: metric tie = 0.5; vote: share of votes for the "
                        "metric's choice. 95% Wilson CIs. Definitions: bench/store/views.py."))
    for (dataset, split), g in agree.groupby(["dataset", "split"], sort=True):
        name = f"agreement_{dataset}_{split}".replace("/", "_")
        save(accuracy_bars(g, "strict_acc", "strict_ci_lo", "strict_ci_hi", f"{dataset} / {split}"
                           + (" (SYNTHETIC)" if g["synthetic"].any() else "")), g, out, name)
        blocks += [("h3", f"{dataset} / {split}"),
                   ("table", g[["metric", "n_pairs", "n_decided", "strict_acc", "strict_ci_lo", "strict_ci_hi",
                                "tie_half_acc", "tie_half_ci_lo", "tie_half_ci_hi", "vote_agreement", "vote_ci_lo",
                                "vote_ci_hi"]]),
                   ("img", name)]

    p1 = _latest(store, "phase1_ranking", "phase1_key")
    if p1 is not None:
        top = set(p1.loc[p1["top_k"], "metric"])
        save(accuracy_bars(p1.rename(columns={"acc": "strict_acc"}), "strict_acc", "ci_lo", "ci_hi",
                           f"Phase I: {int(p1['n'].iloc[0])} pairs, top-{len(top)} highlighted", highlight=top),
             p1, out, "phase1_ranking")
        blocks += [("h2", "Phase I ranking"),
                   ("p", f"Key {p1['phase1_key'].iloc[0]}: stratified subset of {int(p1['n_subset'].iloc[0])} pairs, "
                         f"bootstrap 95% CIs over pairs. Orange = top-k."),
                   ("table", p1[["rank", "metric", "acc", "ci_lo", "ci_hi", "n", "top_k", "differentiable"]]),
                   ("img", "phase1_ranking")]
    p2 = _latest(store, "phase2_ranking", "phase2_key")
    if p2 is not None:
        p2.to_csv(out / "phase2_ranking.csv", index=False)
        blocks += [("h2", "Phase II"),
                   ("p", "Top-k on the full manifest. McNemar exact test of the best against each runner-up "
                         "(only_best_right / only_this_right are the discordant pairs)."),
                   ("table", p2[["rank", "metric", "acc", "ci_lo", "ci_hi", "n", "only_best_right", "only_this_right",
                                 "p_value_vs_best", "best_significantly_better"]])]
    overlap = _latest(store, "complement_overlap", "complement_key")
    cond = _latest(store, "complement_conditional", "complement_key")
    if overlap is not None and cond is not None:
        best = cond["best"].iloc[0]
        mat = overlap.pivot(index="metric_a", columns="metric_b", values="both_wrong_share")
        fig, ax = plt.subplots(figsize=(1.0 + 0.6 * len(mat), 0.8 + 0.5 * len(mat)))
        sns.heatmap(mat, annot=len(mat) <= 12, fmt=".2f", cmap="rocket_r", vmin=0, ax=ax,
                    cbar_kws={"label": "share of pairs both wrong"})
        ax.set_xlabel("")
        ax.set_ylabel("")
        ax.set_title("Both-wrong overlap (diagonal: error rate)", fontsize=10)
        save(fig, mat.reset_index(), out, "complement_overlap")
        fig, ax = plt.subplots(figsize=(7, 0.35 * len(cond) + 1.4))
        d = cond.sort_values("acc_on_best_wrong")
        ax.barh(d["metric"], d["acc_on_best_wrong"], color="#7570b3")
        ax.set_xlim(0, 1)
        ax.set_xlabel(f"accuracy on the {int(cond['n_best_wrong'].iloc[0])} pairs {best} gets wrong")
        ax.set_title(f"Conditional accuracy given {best} is wrong", fontsize=10)
        save(fig, cond, out, "complement_conditional")
        greedy = _latest(store, "complement_greedy", "complement_key")
        blocks += [("h2", f"Complementarity to {best}"),
                   ("img", "complement_overlap"), ("img", "complement_conditional"),
                   ("table", cond[["metric", "acc_on_best_wrong", "n_best_wrong"]]),
                   ("p", "Greedy complement (share of pairs where at least one chosen metric is right):"),
                   ("table", greedy[["step", "metric", "oracle_acc", "gain"]])]
        path, _ = _gallery(store, best, out)
        blocks += [("h2", "Failure gallery"),
                   ("img", "failure_gallery") if path else ("p", f"{best} gets no decided pair wrong.")]
    ens = _latest(store, "ensemble_summary", "ensemble_key")
    if ens is not None:
        ens.to_csv(out / "ensemble_summary.csv", index=False)
        blocks += [("h2", "Ensemble (beyond the paper)"),
                   ("p", f"Logistic regression on standardised score differences, {int(ens['n_folds'].iloc[0])}-fold "
                         "cross-validation grouped by source image; held-out strict accuracy vs each single metric "
                         "on the same pairs."),
                   ("table", ens[["model", "strict_acc", "n_pairs"]])]
    blocks += [("h2", "Provenance"), ("p", f"Store {prov['store']}; study tables: {', '.join(store.study_tables())}.")]
    for r in prov["runs"]:
        v = json.loads(r["versions"]) if isinstance(r.get("versions"), str) else {}
        blocks.append(("li", f"run {r['run_id']} ({r['kind']}): device {r['device_name']}, git {r['git_commit']}, "
                             f"pyiqa {v.get('pyiqa')}, torch {v.get('torch_build', v.get('torch'))}"))
    (out / "provenance.json").write_text(json.dumps(prov, indent=2, default=str))
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
            out += [f"![{x}]({x}.png)", f"Data: [{x}.csv]({x}.csv)", ""]
    return "\n".join(out) + "\n"


def to_html(blocks: list[Block], title: str) -> str:
    body = []
    for kind, x in blocks:
        if kind in ("h1", "h2", "h3"):
            body.append(f"<{kind}>{html.escape(str(x))}</{kind}>")
        elif kind == "warn":
            body.append(f'<p class="warn"><strong>{html.escape(str(x))}</strong></p>')
        elif kind == "p":
            body.append(f"<p>{html.escape(str(x))}</p>")
        elif kind == "li":
            body.append(f"<ul><li>{html.escape(str(x))}</li></ul>")
        elif kind == "table":
            df = x
            head = "".join(f"<th>{html.escape(c)}</th>" for c in df.columns)
            rows = "".join("<tr>" + "".join(f"<td>{html.escape(_fmt(v))}</td>" for v in r) + "</tr>"
                           for r in df.itertuples(index=False))
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
        elif kind == "img":
            body.append(f'<figure><img src="{x}.png" alt="{x}"><figcaption><a href="{x}.csv">{x}.csv</a>'
                        f"</figcaption></figure>")
    style = ("body{font-family:sans-serif;max-width:1000px;margin:2em auto;}table{border-collapse:collapse;"
             "font-size:13px}td,th{border:1px solid #ccc;padding:2px 6px}img{max-width:100%}.warn{color:#b00}")
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{style}</style></head><body>{''.join(body)}</body></html>\n")


def write_study_report(store: Store, out: Path, title: str = "iqa-study: metric selection report") -> Path:
    out.mkdir(parents=True, exist_ok=True)
    blocks = build_blocks(store, out, title)
    (out / "report.md").write_text(to_markdown(blocks))
    (out / "report.html").write_text(to_html(blocks, title))
    return out / "report.md"
