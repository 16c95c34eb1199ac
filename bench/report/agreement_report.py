"""The short agreement report written by `iqa-study demo` (and reused by the full study report)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from bench.report.figures import accuracy_bars, save
from bench.store import Store
from bench.store.views import agreement, connect


def provenance(store: Store) -> dict:
    con = connect(store)
    runs = con.execute("SELECT * FROM runs ORDER BY started_at").df()
    datasets = con.execute("SELECT dataset, any_value(synthetic) AS synthetic, count(*) AS n_pairs, "
                           "list(DISTINCT manifest_id) AS manifests FROM pairs GROUP BY dataset").df()
    return {"store": str(store.root.resolve()), "runs": json.loads(runs.to_json(orient="records")),
            "datasets": json.loads(datasets.to_json(orient="records"))}


def write_agreement_report(store: Store, out: Path, title: str = "Metric / human agreement") -> Path:
    out.mkdir(parents=True, exist_ok=True)
    df = agreement(store)
    df.to_csv(out / "agreement.csv", index=False)
    prov = provenance(store)
    (out / "provenance.json").write_text(json.dumps(prov, indent=2, default=str))
    lines = [f"# {title}", ""]
    if df["synthetic"].any():
        lines += ["> **SYNTHETIC DATA.** Rows marked synthetic use the embedded sample's synthetic preferences "
                  "(documented degradations of scikit-image photographs), not human votes.", ""]
    lines += ["Definitions: `bench/store/views.py` (strict: metric tie = wrong; tie-half: metric tie = 0.5; "
              "vote agreement: share of votes for the metric's choice). 95% Wilson CIs.", ""]
    for (dataset, split), g in df.groupby(["dataset", "split"], sort=True):
        fig = accuracy_bars(g, "strict_acc", "strict_ci_lo", "strict_ci_hi",
                            f"{dataset} / {split}: strict accuracy" + (" (SYNTHETIC)" if g["synthetic"].any() else ""))
        name = f"agreement_{dataset}_{split}".replace("/", "_")
        save(fig, g, out, name)
        cols = ["metric", "n_pairs", "n_decided", "strict_acc", "strict_ci_lo", "strict_ci_hi", "tie_half_acc",
                "vote_agreement", "n_metric_ties"]
        lines += [f"## {dataset} / {split}", "", _markdown(g[cols]), "", f"![{name}]({name}.png)", ""]
    lines += ["## Provenance", "", f"Store: `{prov['store']}`", ""]
    for r in prov["runs"]:
        v = json.loads(r["versions"]) if isinstance(r.get("versions"), str) else r.get("versions", {})
        lines.append(f"- run `{r['run_id']}` ({r['kind']}): device {r['device_name']}, git {r['git_commit']}, "
                     f"pyiqa {v.get('pyiqa')}, torch {v.get('torch')}")
    (out / "report.md").write_text("\n".join(lines) + "\n")
    return out / "report.md"


def _markdown(df: pd.DataFrame) -> str:
    head = "| " + " | ".join(df.columns) + " |"
    sep = "|" + "---|" * len(df.columns)
    body = ["| " + " | ".join(f"{v:.4f}" if isinstance(v, float) else str(v) for v in row) + " |"
            for row in df.itertuples(index=False)]
    return "\n".join([head, sep, *body])
