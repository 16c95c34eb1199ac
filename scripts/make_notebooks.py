"""Regenerate notebooks/*.ipynb (committed without outputs) from the cell sources below.

    python scripts/make_notebooks.py
"""

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

OPEN_STORE = '''import os
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from bench.store import Store
from bench.store.views import connect

# Point this at your own store; the default is the one `make demo` writes.
STORE = os.environ.get("IQA_STUDY_STORE", str(Path("..") / "runs" / "demo" / "store"))
con = connect(Store(STORE, create=False))
datasets = con.sql("SELECT dataset, bool_or(synthetic) AS synthetic, count(*) AS n_pairs FROM pairs GROUP BY ALL").df()
datasets'''

FAILURE = [
    new_markdown_cell("# Where does the best metric fail, and who is right instead?\n\n"
                      "Opens an iqa-study store through DuckDB. Set `STORE` (or `$IQA_STUDY_STORE`) to your own store; "
                      "the default is the demo store, whose preferences are **synthetic**."),
    new_code_cell(OPEN_STORE),
    new_code_cell('''if datasets["synthetic"].any():
    print("NOTE: synthetic datasets present; their 'preferences' are synthetic, not human votes.")
agree = con.sql("SELECT dataset, split, metric, n_decided, strict_acc, strict_ci_lo, strict_ci_hi, tie_half_acc, "
                "vote_agreement FROM agreement ORDER BY dataset, strict_acc DESC").df()
agree'''),
    new_markdown_cell("## The best metric\nThe latest Phase II winner when the study has run, else the top strict accuracy."),
    new_code_cell('''tables = set(con.sql("SELECT view_name FROM duckdb_views() WHERE NOT internal").df()["view_name"])
if "study_phase2_ranking" in tables:
    BEST = con.sql("SELECT metric FROM study_phase2_ranking WHERE is_best ORDER BY created_at DESC LIMIT 1").df().iat[0, 0]
else:
    BEST = agree.iloc[0]["metric"]
BEST'''),
    new_markdown_cell("## Failure rate by dataset and by source image (group)"),
    new_code_cell('''outcome = con.sql(f"""
    SELECT dataset, "group", pair_id, pref, metric_pref, (metric_pref <> pref) AS wrong
    FROM pair_scores WHERE metric = '{BEST}' AND pref <> 'tie'""").df()
by_group = outcome.groupby(["dataset", "group"])["wrong"].agg(["mean", "size"]).rename(columns={"mean": "error_rate"})
print(outcome.groupby("dataset")["wrong"].mean().rename("error_rate"))
by_group.sort_values("error_rate", ascending=False).head(10)'''),
    new_markdown_cell("## By SR method (when the manifest names methods) and by image statistics"),
    new_code_cell('''cols = set(con.sql("SELECT * FROM pairs LIMIT 0").df().columns)
if {"method_a", "method_b"} <= cols:
    methods = con.sql(f"""
        SELECT m.method, avg((s.metric_pref <> s.pref)::INT) AS error_rate, count(*) AS n FROM pair_scores s
        JOIN (SELECT dataset, pair_id, method_a AS method FROM pairs UNION ALL
              SELECT dataset, pair_id, method_b FROM pairs) m USING (dataset, pair_id)
        WHERE s.metric = '{BEST}' AND s.pref <> 'tie' GROUP BY m.method ORDER BY error_rate DESC""").df()
    display(methods)
elif "axis" in cols:
    display(con.sql(f"""SELECT p.axis, avg((s.metric_pref <> s.pref)::INT) AS error_rate, count(*) AS n
        FROM pair_scores s JOIN pairs p USING (dataset, pair_id)
        WHERE s.metric = '{BEST}' AND s.pref <> 'tie' GROUP BY p.axis ORDER BY error_rate DESC""").df())'''),
    new_code_cell('''import numpy as np
from PIL import Image

pairs = con.sql(f"""SELECT p.dataset, p.pair_id, p.root, p.image_a, p.image_b, (s.metric_pref <> s.pref) AS wrong
    FROM pair_scores s JOIN pairs p USING (dataset, pair_id) WHERE s.metric = '{BEST}' AND s.pref <> 'tie'""").df()

def stats(root, rel):
    with Image.open(Path(root) / rel) as im:
        g = np.asarray(im.convert("L"), dtype=np.float32)
    return g.mean(), g.std(), np.abs(np.diff(g, axis=1)).mean()  # brightness, contrast, edge energy

feat = pd.DataFrame([stats(r.root, r.image_a) for r in pairs.itertuples()], columns=["brightness", "contrast", "edges"])
feat["wrong"] = pairs["wrong"].to_numpy()
feat.groupby(pd.qcut(feat["edges"], 3, duplicates="drop"), observed=True)["wrong"].mean().rename("error rate by edge-energy tercile")'''),
    new_markdown_cell("## Example pairs the best metric gets wrong"),
    new_code_cell('''wrong = pairs[pairs["wrong"]].head(3)
fig, axes = plt.subplots(max(len(wrong), 1), 2, figsize=(7, 3.2 * max(len(wrong), 1)), squeeze=False)
for i, r in enumerate(wrong.itertuples()):
    for j, rel in enumerate((r.image_a, r.image_b)):
        axes[i][j].imshow(Image.open(Path(r.root) / rel).convert("RGB"))
        axes[i][j].set_title(f"{r.pair_id} {'AB'[j]}", fontsize=8)
        axes[i][j].axis("off")
plt.tight_layout()'''),
    new_markdown_cell("## Comparing metric pairs\nShare of pairs both metrics get wrong, and how often two metrics pick the same side."),
    new_code_cell('''both = con.sql("""
    SELECT a.metric AS metric_a, b.metric AS metric_b,
           avg(((a.metric_pref <> a.pref) AND (b.metric_pref <> b.pref))::INT) AS both_wrong,
           avg((a.metric_pref = b.metric_pref)::INT) AS same_choice
    FROM pair_scores a JOIN pair_scores b USING (dataset, pair_id)
    WHERE a.pref <> 'tie' GROUP BY ALL ORDER BY ALL""").df()
both.pivot(index="metric_a", columns="metric_b", values="both_wrong").round(3)'''),
]

PHASES = [
    new_markdown_cell("# Phase I / Phase II tables from SQL alone\n\n"
                      "Recomputes the study's tables with plain SQL over the store's raw tables and checks them "
                      "against what `iqa-study phase1` / `phase2` stored. Set `STORE` to your own store."),
    new_code_cell(OPEN_STORE),
    new_markdown_cell("## Phase I: accuracy on the stored subset\n"
                      "Complete cases: only pairs every ranked metric scored (as the ranking does)."),
    new_code_cell('''import numpy as np

P1 = con.sql("SELECT phase1_key FROM study_phase1_ranking ORDER BY created_at DESC LIMIT 1").df().iat[0, 0]
phase1_sql = con.sql(f"""
    WITH ranked AS (SELECT metric FROM study_phase1_ranking WHERE phase1_key = '{P1}'),
    sub AS (SELECT s.* FROM pair_scores s JOIN study_phase1_subset u USING (dataset, pair_id)
            WHERE u.phase1_key = '{P1}' AND s.pref <> 'tie' AND s.metric IN (SELECT metric FROM ranked)),
    complete AS (SELECT dataset, pair_id FROM sub GROUP BY ALL HAVING count(DISTINCT metric) = (SELECT count(*) FROM ranked))
    SELECT metric, avg((metric_pref = pref)::INT) AS acc, count(*) AS n
    FROM sub JOIN complete USING (dataset, pair_id) GROUP BY metric ORDER BY acc DESC, metric""").df()
stored1 = con.sql(f"SELECT metric, acc, n, ci_lo, ci_hi, top_k FROM study_phase1_ranking WHERE phase1_key = '{P1}' ORDER BY rank").df()
check1 = phase1_sql.merge(stored1, on="metric", suffixes=("_sql", "_stored"))
assert np.allclose(check1["acc_sql"], check1["acc_stored"]) and (check1["n_sql"] == check1["n_stored"]).all()
check1'''),
    new_markdown_cell("## Phase II: accuracy on the full set, and McNemar's discordant pairs against the best"),
    new_code_cell('''P2 = con.sql("SELECT phase2_key FROM study_phase2_ranking ORDER BY created_at DESC LIMIT 1").df().iat[0, 0]
stored2 = con.sql(f"SELECT * FROM study_phase2_ranking WHERE phase2_key = '{P2}' ORDER BY rank").df()
best = stored2.loc[stored2["is_best"], "metric"].item()
split = stored2["split"].iloc[0]
split_sql = "" if split == "all" else f"AND split = '{split}'"
metrics = ", ".join(f"'{m}'" for m in stored2["metric"])
phase2_sql = con.sql(f"""
    WITH p AS (SELECT * FROM pair_scores WHERE pref <> 'tie' AND metric IN ({metrics}) {split_sql}
               AND dataset IN (SELECT DISTINCT dataset FROM pairs p2 JOIN study_phase1_subset u USING (dataset, pair_id)
                               WHERE u.phase1_key = '{stored2["phase1_key"].iloc[0]}')),
    complete AS (SELECT dataset, pair_id FROM p GROUP BY ALL HAVING count(DISTINCT metric) = {len(stored2)}),
    c AS (SELECT p.* FROM p JOIN complete USING (dataset, pair_id))
    SELECT o.metric, avg((o.metric_pref = o.pref)::INT) AS acc,
           sum(((b.metric_pref = b.pref) AND (o.metric_pref <> o.pref))::INT) AS only_best_right,
           sum(((b.metric_pref <> b.pref) AND (o.metric_pref = o.pref))::INT) AS only_this_right
    FROM c o JOIN c b ON b.dataset = o.dataset AND b.pair_id = o.pair_id AND b.metric = '{best}'
    GROUP BY o.metric ORDER BY acc DESC, o.metric""").df()
check2 = phase2_sql.merge(stored2[["metric", "acc", "only_best_right", "only_this_right", "p_value_vs_best"]],
                          on="metric", suffixes=("_sql", "_stored"))
assert np.allclose(check2["acc_sql"], check2["acc_stored"])
assert (check2["only_best_right_sql"] == check2["only_best_right_stored"]).all()
check2'''),
]


def main() -> None:
    out = Path(__file__).resolve().parents[1] / "notebooks"
    out.mkdir(exist_ok=True)
    for name, cells in (("failure_complementarity.ipynb", FAILURE), ("phases_from_sql.ipynb", PHASES)):
        nb = new_notebook(cells=cells, metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                                "language": "python"}})
        nbformat.write(nb, out / name)
        print(f"wrote {out / name}")


if __name__ == "__main__":
    main()
