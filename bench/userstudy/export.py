"""`userstudy export`: the votes as a pairs manifest in the store (dataset ``userstudy:<name>``).

One pair per trial with votes (a test image and two runs): image_a/image_b are the trial's two
images in STUDY/images/ (run_a, run_b in --runs order), votes_a/votes_b count the first
presentations of the raters kept by the exclusion rule (bench.userstudy.analyse: same options as
`analyse`), group = the test image (its ``group`` in the store, the item when it has none).
Extra columns, as the sr2afc importer: method_a/method_b (run labels), n_observers and
observer_votes (JSON {rater_id: [votes_a, votes_b]}: anonymous rater ids r1, r2, ...; the study
report's split-half ceiling reads it).

The CSV is STUDY/export/votes.csv; it goes through the ``pairs-csv`` importer
(bench.manifests.votes.pairs_csv: path checks, hashes, sizes), is written as
STUDY/export/manifest.parquet and registered with ``Store.register``, so `agree`, `phase1`,
`phase2`, `complement` and `report` read it like any dataset. With ``--crop full`` the images are
byte-identical to the store's SR outputs (same content ids), so their stored scores apply; cropped
images must be scored first (`iqa-study score --manifest STUDY/export/manifest.parquet`).
Scripted raters (the demo's) make the manifest ``synthetic``. Exporting again after more votes
changes the votes of existing pair ids: the store then asks for ``--replace``.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from bench.atomic import atomic_write_text
from bench.errors import StudyError
from bench.userstudy.analyse import counted_votes
from bench.userstudy.design import load

COLUMNS = ["pair_id", "dataset", "split", "group", "kind", "image_a", "image_b", "votes_a", "votes_b", "item",
           "method_a", "method_b", "n_observers", "observer_votes"]


def votes_csv(study_dir: Path, study: dict, max_attention_failures: int = 0, exclude: tuple[str, ...] = ()):
    """(CSV text, rows, rater table, rule)."""
    main, raters, rule = counted_votes(study_dir, study, max_attention_failures, exclude)
    if main.empty:
        raise StudyError(f"{study_dir}: no votes to export ({len(raters)} rater(s) invited, "
                         f"{int(raters['excluded'].sum()) if len(raters) else 0} excluded)")
    order = {r["rater"]: r["idx"] for r in raters.assign(idx=range(len(raters))).to_dict("records")}
    rows = []
    for t in study["trials"]:
        g = main[main["trial_id"] == t["trial_id"]]
        if g.empty:
            continue
        per = {}
        for rater, v in sorted(g.groupby("rater_id"), key=lambda kv: order[kv[0]]):
            per[rater] = [int((v["chosen_run"] == t["run_a"]).sum()), int((v["chosen_run"] == t["run_b"]).sum())]
        rows.append({"pair_id": f"{t['item']}__{t['run_a']}__{t['run_b']}", "dataset": study["dataset"], "split": "all",
                     "group": t["group"], "kind": "human", "image_a": f"images/{t['image_a']}.png",
                     "image_b": f"images/{t['image_b']}.png", "votes_a": sum(a for a, _ in per.values()),
                     "votes_b": sum(b for _, b in per.values()), "item": t["item"], "method_a": t["run_a"],
                     "method_b": t["run_b"], "n_observers": len(per),
                     "observer_votes": json.dumps(per, separators=(",", ":"))})
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue(), rows, raters, rule


def export(study_dir: str | Path, store, *, max_attention_failures: int = 0, exclude: tuple[str, ...] = (),
           replace: bool = False):
    """Write export/votes.csv and export/manifest.parquet and register the manifest; returns
    (manifest path, Registration, number of images without a stored NR score)."""
    from bench.manifests import schema, votes
    from bench.store.views import connect

    study_dir = Path(study_dir)
    study = load(study_dir)
    text, _rows, raters, rule = votes_csv(study_dir, study, max_attention_failures, tuple(exclude))
    csv_path = atomic_write_text(text, study_dir / "export" / "votes.csv")
    df = votes.pairs_csv(csv_path, study_dir, dataset=study["dataset"])
    kept = raters[~raters["excluded"]]
    meta = df.attrs["iqa_study"]
    meta.update({"importer": "userstudy", "synthetic": bool(kept["scripted"].any()),
                 "source": str((study_dir / "study.json").resolve()),
                 "userstudy": {"name": study["name"], "created_at": study["created_at"], "seed": study["seed"],
                               "test_set": study["source"]["test_set"], "exclusion_rule": rule,
                               "excluded": {r.rater: r.reason for r in raters.itertuples() if r.excluded},
                               "scripted_raters": sorted(kept.loc[kept["scripted"], "rater"])}})
    path = schema.write(df, study_dir / "export" / "manifest.parquet")
    reg = store.register(schema.read(path), replace=replace)
    ids = sorted(set(df["image_a_id"]) | set(df["image_b_id"]))
    con = connect(store)
    scored = {r[0] for r in con.execute("SELECT DISTINCT image_id FROM scores WHERE ref_id IS NULL AND status = 'ok'")
              .fetchall()}
    return path, reg, sum(i not in scored for i in ids)
