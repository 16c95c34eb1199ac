"""Issue 18, "silent wrong numbers": each test builds the failing case of the issue."""

from __future__ import annotations

import pytest

from bench.errors import StoreError
from bench.store import Store
from bench.store.views import agreement, connect
from tests.test_store import _cli_json, _manifest, _rows, _scores_for


def _scored(tmp_path, manifest):
    store = Store(tmp_path / "s")
    store.register(manifest)
    store.write_scores(_rows(_scores_for(len(manifest), [True] * len(manifest))), "r1", 0, 0)
    return store


# --- item 1: a rebuilt manifest with corrected metadata is not ignored --------------------------

@pytest.mark.parametrize("column,value", [("split", "test"), ("group", "G"), ("note", "fixed")])
def test_rebuilt_manifest_with_other_metadata_is_a_new_manifest_refused_then_replacing(tmp_path, column, value):
    v1 = _manifest([(3, 0), (0, 3), (2, 1)], split="train")
    v2 = v1.copy()
    v2[column] = value
    assert Store.manifest_id(v1) != Store.manifest_id(v2)  # the id covers split, group and any extra column
    store = _scored(tmp_path, v1)
    with pytest.raises(StoreError) as err:
        store.register(v2)
    msg = str(err.value)
    assert "\n" not in msg and column in msg and "--replace" in msg and Store.manifest_id(v1) in msg
    reg = store.register(v2, replace=True)
    assert reg.replaced == {Store.manifest_id(v1): 3} and column in reg.summary()
    got = connect(store).execute(f'SELECT DISTINCT "{column}" FROM pairs').fetchall()
    assert got == [(value,)]
    if column == "split":
        df = agreement(store)
        assert list(df["split"]) == ["test"] and int(df["n_pairs"].iloc[0]) == 3


def test_same_content_is_still_one_manifest(tmp_path):
    v1 = _manifest([(3, 0), (0, 3)])
    store = _scored(tmp_path, v1)
    again = v1.copy()
    again["kind"] = "human"  # an explicit default kind is the same content
    assert Store.manifest_id(again) == Store.manifest_id(v1)
    assert not store.register(again).new


# --- item 3: the same image pairs registered by a second manifest are not counted twice ----------

def test_same_image_pairs_under_other_pair_ids_are_refused_and_replace_counts_them_once(tmp_path, capsys):
    v1 = _manifest([(3, 0), (0, 3), (2, 1), (1, 2)])
    fixed = v1.copy()
    fixed["pair_id"] = [f"votes_fixed-{i:06d}" for i in range(4)]  # pair ids from another CSV file name
    fixed["extra"] = "x"
    store = _scored(tmp_path, v1)
    with pytest.raises(StoreError) as err:
        store.register(fixed)
    assert "pair_id" in str(err.value) and "same two images" in str(err.value)
    store.register(fixed, replace=True)
    rc, rows = _cli_json(capsys, "agree", "--store", str(store.root), "--json")
    assert rc == 0 and rows[0]["n_pairs"] == 4  # not 8
    assert connect(store).execute("SELECT count(*), min(pair_id) FROM pairs").fetchone() == (4, "votes_fixed-000000")
    # swapped orientation (b, a) is the same unordered pair
    swapped = v1.copy()
    swapped[["image_a_id", "image_b_id"]] = v1[["image_b_id", "image_a_id"]].to_numpy()
    swapped["pair_id"] = [f"s{i}" for i in range(4)]
    with pytest.raises(StoreError):
        store.register(swapped)
    store.register(swapped, replace=True)
    assert agreement(store)["n_pairs"].iloc[0] == 4


def test_one_manifest_may_not_hold_one_image_pair_twice(tmp_path):
    m = _manifest([(3, 0), (0, 3)])
    m.loc[1, ["image_a_id", "image_b_id"]] = ["B0", "A0"]
    with pytest.raises(StoreError, match="same two images"):
        Store(tmp_path / "s").register(m)


# --- items 2 and 6: duplicate / contradictory rows and ambiguous headers of a vote CSV ---------

def _images(root, names=("A.png", "B.png", "C.png")):
    import numpy as np
    from PIL import Image

    root.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names):
        Image.fromarray(np.full((8, 8, 3), 40 * (i + 1), np.uint8)).save(root / name)
    return root


def test_duplicate_and_reversed_rows_of_one_pair_are_merged_orientation_aware(tmp_path, capsys):
    from bench.cli import main
    from bench.manifests import votes

    root = _images(tmp_path / "img")
    csv = tmp_path / "v.csv"
    csv.write_text("image_a,image_b,votes_a,votes_b,method_a,method_b\n"
                   "A.png,B.png,10,5,x,y\nB.png,A.png,10,5,y,x\nA.png,B.png,10,5,x,y\nA.png,C.png,1,2,x,z\n")
    df = votes.pairs_csv(csv, root)
    assert len(df) == 2  # not 4
    ab = df[df["image_b"] == "B.png"].iloc[0]
    assert (ab["votes_a"], ab["votes_b"], ab["pref"]) == (25, 20, "a")
    assert df.attrs["iqa_study"]["merged_rows"] == 2
    rc = main(["manifest", "build", "pairs-csv", str(csv), "--root", str(root), "-o", str(tmp_path / "m.parquet")])
    out = capsys.readouterr().out
    assert rc == 0 and "merged 2 row(s)" in out and ": 2 pairs" in out


def test_rows_of_one_pair_with_other_metadata_are_refused(tmp_path):
    from bench.errors import ManifestError
    from bench.manifests import votes

    root = _images(tmp_path / "img")
    csv = tmp_path / "v.csv"
    csv.write_text("image_a,image_b,votes_a,votes_b,split\nA.png,B.png,10,5,train\nB.png,A.png,10,5,test\n")
    with pytest.raises(ManifestError, match=r"v.csv:3: names the same two images as line 2 with other split"):
        votes.pairs_csv(csv, root)


def test_duplicated_header_column_is_refused(tmp_path):
    from bench.errors import ManifestError
    from bench.manifests import votes

    root = _images(tmp_path / "img")
    csv = tmp_path / "v.csv"
    csv.write_text("image_a,image_b,votes_a,votes_b,votes_a\nA.png,B.png,10,5,0\n")
    with pytest.raises(ManifestError, match=r"\['votes_a'\] appear more than once"):
        votes.pairs_csv(csv, root)


def test_two_files_with_one_content_in_one_manifest_are_refused(tmp_path):
    from bench.errors import ManifestError
    from bench.manifests import votes

    root = _images(tmp_path / "img")
    (root / "A2.png").write_bytes((root / "A.png").read_bytes())
    csv = tmp_path / "v.csv"
    csv.write_text("image_a,image_b,votes_a,votes_b\nA.png,B.png,10,5\nB.png,A2.png,1,5\n")
    with pytest.raises(ManifestError, match="compare the same two images"):
        votes.pairs_csv(csv, root)


# --- item 4: a store path with glob characters reads that store, not a sibling -------------------

@pytest.mark.parametrize("name,sibling", [("exp[1]", "exp1"), ("e*p", "exp"), ("e?p", "eap")])
def test_store_path_with_glob_characters_reads_only_that_store(tmp_path, capsys, name, sibling):
    from tests.test_store import _store_with

    _store_with(tmp_path, sibling, votes=((3, 0),) * 5, a_wins=(True,) * 5)  # 5 pairs, all right
    mine = _store_with(tmp_path, name)  # 4 pairs, 3 right
    rc, rows = _cli_json(capsys, "agree", "--store", str(mine.root), "--json")
    assert rc == 0 and [(r["n_pairs"], r["strict_acc"]) for r in rows] == [(4, 0.75)]
    rc, rows = _cli_json(capsys, "agree", "--store", str(mine.root), "--json")  # from the cache
    assert rc == 0 and rows[0]["n_pairs"] == 4
    rc, rows = _cli_json(capsys, "query", "--store", str(mine.root), "--json",
                         "SELECT count(*) AS n, count(DISTINCT image_id) AS i FROM scores")
    assert rc == 0 and rows == [{"n": 8, "i": 8}]
    from bench.scoring.plan import stored_status

    assert len(stored_status(mine, ["cfg-m"])) == 8


# --- item 5: readers of pixels check the image id; a changed file is marked, never shown as evidence -

def test_failure_gallery_marks_a_pair_whose_file_changed_on_disk(tmp_path):
    import pandas as pd

    from bench.manifests.schema import file_hash
    from bench.report.gallery import pair_figure

    root = _images(tmp_path / "img")
    ids = {n: file_hash(root / n) for n in ("A.png", "B.png", "C.png")}
    rows = pd.DataFrame({"dataset": "d", "pair_id": ["p0", "p1"], "root": str(root), "image_a": ["A.png", "A.png"],
                         "image_b": ["B.png", "C.png"], "image_a_id": [ids["A.png"]] * 2,
                         "image_b_id": [ids["B.png"], ids["C.png"]], "pref": "a", "votes_a": 3, "votes_b": 1})
    verdicts = pd.DataFrame({"dataset": "d", "pair_id": ["p0", "p1"], "metric": "m", "metric_pref": "b", "pref": "a",
                             "score_a": 0.0, "score_b": 1.0, "sign": 1})
    (root / "C.png").write_bytes((root / "B.png").read_bytes())  # another photo now sits at C.png
    fig, shown = pair_figure(rows, verdicts, "t")
    shown = shown.set_index("pair_id")
    assert pd.isna(shown.loc["p0", "problem"]) and shown.loc["p0", "zoom_size"] > 0
    assert "B not shown" in shown.loc["p1", "problem"] and "changed" in shown.loc["p1", "problem"]
    assert pd.isna(shown.loc["p1", "zoom_size"])
    texts = " ".join(t.get_text() for ax in fig.axes for t in ax.texts)
    assert "NOT THE SCORED IMAGES" in texts


# --- item 7: an undefined interval is NULL everywhere, never one that excludes its estimate -------

def test_one_pair_and_all_zero_votes_give_null_intervals(tmp_path, capsys):
    from tests.test_store import _store_with

    one = _store_with(tmp_path, "one", votes=((5, 3),), a_wins=(True,))
    rc, rows = _cli_json(capsys, "agree", "--store", str(one.root), "--json")
    r = rows[0]
    assert rc == 0 and r["vote_agreement"] == 0.625 and r["tie_half_acc"] == 1.0
    assert r["vote_ci_lo"] is None and r["vote_ci_hi"] is None  # was [0.0, 0.0]
    assert r["tie_half_ci_lo"] is None and r["tie_half_ci_hi"] is None  # was [1.0, 1.0]
    assert r["strict_ci_lo"] < 1.0 <= r["strict_ci_hi"]  # Wilson is defined for n = 1
    rc, rows = _cli_json(capsys, "agree", "--store", str(one.root), "--json", "--ci", "bootstrap")
    assert rc == 0 and rows[0]["vote_ci_lo"] is None and rows[0]["strict_ci_hi"] is None  # one group: undefined
    zero = _store_with(tmp_path, "zero", votes=((0, 0), (0, 0)), a_wins=(True, False))
    assert main_csv(capsys, zero)[0]["vote_ci_lo"] == ""
    rc, rows = _cli_json(capsys, "agree", "--store", str(zero.root), "--json")
    assert rows[0]["vote_agreement"] is None and rows[0]["vote_ci_lo"] is None and rows[0]["vote_ci_hi"] is None
    assert connect(zero).execute("SELECT vote_ci_lo, strict_ci_lo FROM agreement").fetchone() == (None, None)
    from bench.cli import main

    assert main(["agree", "--store", str(one.root)]) == 0
    table = capsys.readouterr().out
    assert "0.625 [" not in table and "0.625" in table


def main_csv(capsys, store):
    import csv as csvlib
    import io

    from bench.cli import main

    assert main(["agree", "--store", str(store.root), "--csv"]) == 0
    return list(csvlib.DictReader(io.StringIO(capsys.readouterr().out)))


def test_bootstrap_interval_needs_two_groups():
    import numpy as np

    from bench.study.stats import group_bootstrap_ratio

    point, lo, hi = group_bootstrap_ratio(np.array([1.0, 0.0]), np.array([1.0, 1.0]), np.array(["g", "g"]), n_boot=50)
    assert point[0] == 0.5 and np.isnan(lo[0]) and np.isnan(hi[0])
    point, lo, hi = group_bootstrap_ratio(np.array([1.0, 0.0]), np.array([1.0, 1.0]), np.array(["g", "h"]), n_boot=50)
    assert lo[0] <= 0.5 <= hi[0]


# --- item 8: a metric whose CI does not exclude chance is not selected for training unless allowed --

def test_below_chance_reward_metric_is_not_selected_without_the_flag(tmp_path, monkeypatch, capsys):
    import json

    from bench.cli import main
    from bench.study import select as select_mod
    from bench.study.phases import evaluate_phase1, evaluate_phase2, phase2_pairs
    from tests.test_study_selection import manifest_of, pair_frame, write_metric

    monkeypatch.setattr(select_mod, "is_available", lambda spec: spec.name in {"piqe", "niqe"})
    store = Store(tmp_path / "store")
    m = manifest_of(120, per_group=1)
    store.register_manifest(m)
    write_metric(store, m, "piqe", [int(i % 10 != 0) for i in range(120)])   # 0.9: samples (no gradient)
    write_metric(store, m, "niqe", [int(i % 25 < 12) for i in range(120)])   # 0.48: the only differentiable one
    pairs, used = phase2_pairs(m)
    evaluate_phase1(store, pair_frame(m), ["piqe", "niqe"], "p1", top_k=2, n_boot=300, seed=0)
    evaluate_phase2(store, pairs, "p1", ["piqe", "niqe"], "p2", split_used=used, n_boot=300, seed=0)
    out = tmp_path / "selection.json"
    assert main(["select", "--store", str(store.root), "-o", str(out)]) == 0
    sel = json.loads(out.read_text())
    assert sel["sampling_metric"]["metric"] == "piqe" and sel["sampling_metric"]["above_chance"] is True
    assert sel["reward_metric"] is None and sel["allow_weak_metric"] is False
    assert any("reward candidate niqe not selected" in w and "--allow-weak-metric" in w for w in sel["warnings"])
    err = capsys.readouterr().err
    assert "reward candidate niqe not selected" in err
    assert main(["select", "--store", str(store.root), "-o", str(out), "--allow-weak-metric"]) == 0
    sel = json.loads(out.read_text())
    assert sel["reward_metric"]["metric"] == "niqe" and sel["reward_metric"]["above_chance"] is False
    assert sel["reward_metric"]["ci_lo"] < 0.5 and sel["allow_weak_metric"] is True
    assert any("niqe selected only because of --allow-weak-metric" in w for w in sel["warnings"])


# --- items 8 and 11: the report follows one chain, states it, opens with the selection ------------

def _chain_study(tmp_path, monkeypatch):
    from bench.study import select as select_mod
    from bench.study.phases import evaluate_phase1, evaluate_phase2, phase2_pairs
    from tests.test_study_selection import manifest_of, pair_frame, write_metric

    monkeypatch.setattr(select_mod, "is_available", lambda spec: spec.name in {"piqe", "niqe"})
    import datetime as dt

    store = Store(tmp_path / "store")
    m = manifest_of(60, per_group=1)
    store.register_manifest(m)
    store.write_run({"run_id": "r1", "kind": "score", "started_at": dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
                     "device_name": "cpu", "git_commit": "x", "versions": "{}"})
    write_metric(store, m, "piqe", [int(i % 10 != 0) for i in range(60)])
    write_metric(store, m, "niqe", [int(i % 25 < 12) for i in range(60)])
    pairs, used = phase2_pairs(m)
    evaluate_phase1(store, pair_frame(m), ["piqe", "niqe"], "p1-old", top_k=2, n_boot=100, seed=0)
    evaluate_phase2(store, pairs, "p1-old", ["piqe", "niqe"], "p2-a", split_used=used, n_boot=100, seed=0)
    evaluate_phase1(store, pair_frame(m), ["niqe"], "p1-new", top_k=1, n_boot=100, seed=0)  # later, one metric
    return store


def test_report_follows_one_chain_and_opens_with_the_selection(tmp_path, monkeypatch):
    from bench.report.study_report import write_study_report
    from bench.study.select import build_selection, write_selection

    store = _chain_study(tmp_path, monkeypatch)
    md = write_study_report(store, tmp_path / "r1").read_text()
    assert "from the latest Phase II (p2-a): Phase II p2-a <- Phase I p1-old" in md
    assert "Key p1-old" in md and "p1-new" not in md.split("## Provenance")[0]  # not the later one-metric Phase I
    sel = write_selection(build_selection(store), tmp_path / "selection.json")
    md = write_study_report(store, tmp_path / "r2", selection=sel).read_text()
    head = md.split("## Selection", 1)[1].split("\n## ", 1)[0]
    assert f"from selection {sel}" in head
    assert "| sampling (SMA/SMP/AMO) | piqe |" in head and "| reward (FT) | none |" in head
    assert "WARNING: reward candidate niqe not selected" in head
    assert "<h2>Selection</h2>" in (tmp_path / "r2" / "report.html").read_text()


def test_a_study_over_fewer_than_two_metrics_is_refused(tmp_path, monkeypatch, capsys):
    from bench.cli import main
    from bench.errors import StudyError
    from bench.report.chain import resolve_chain
    from bench.study.phases import evaluate_phase2, phase2_pairs
    from tests.test_study_selection import manifest_of

    store = _chain_study(tmp_path, monkeypatch)
    pairs, used = phase2_pairs(manifest_of(60, per_group=1))
    evaluate_phase2(store, pairs, "p1-new", ["niqe"], "p2-one", split_used=used, n_boot=100, seed=0)
    with pytest.raises(StudyError, match=r"phase2 p2-one ranked 1 metric\(s\) \(niqe\); a study compares at least two"):
        resolve_chain(store)
    assert main(["report", "--store", str(store.root), "-o", str(tmp_path / "r"), "--phase2", "p2-a"]) == 0
    capsys.readouterr()
    assert main(["report", "--store", str(store.root), "-o", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "at least two" in err


# --- item 9: folder mode says which files it skipped --------------------------------------------

def test_folder_mode_reports_skipped_files_in_one_line(tmp_path, caplog):
    import logging

    from bench.errors import StudyError
    from bench.scoring.folder import list_images

    root = _images(tmp_path / "f", names=("a.png", "b.png"))
    (root / "anim.gif").write_bytes(b"GIF89a")
    (root / "notes.txt").write_text("x")
    with caplog.at_level(logging.WARNING, logger="bench.scoring"):
        files = list_images(root)
    assert [f.name for f in files] == ["a.png", "b.png"]
    msgs = [r.getMessage() for r in caplog.records if r.name == "bench.scoring"]
    assert len(msgs) == 1 and "skipped 2 file(s)" in msgs[0] and "anim.gif, notes.txt" in msgs[0]
    assert "\n" not in msgs[0]
    only = tmp_path / "g"
    only.mkdir()
    (only / "anim.gif").write_bytes(b"GIF89a")
    with pytest.raises(StudyError, match=r"no image files .*skipped 1 file\(s\) \(anim.gif\)"):
        list_images(only)


def test_phase1_over_fewer_than_two_available_metrics_is_refused(tmp_path, sample_manifest):
    from bench.errors import StudyError
    from bench.manifests import schema as mschema
    from bench.metrics.table import select
    from bench.study.phases import phase1

    with pytest.raises(StudyError, match=r"phase1: 1 metric\(s\) could be scored \(entropy\); a study compares at"):
        phase1(mschema.read(sample_manifest), Store(tmp_path / "s"), select("entropy"), n_pairs=8, workers=0,
               progress=False)
    assert "phase1_ranking" not in Store(tmp_path / "s").study_tables()


def test_select_refusal_names_the_weak_candidates(tmp_path, monkeypatch):
    from bench.errors import StudyError
    from bench.study import select as select_mod
    from bench.study.phases import evaluate_phase1
    from tests.test_study_selection import manifest_of, pair_frame, write_metric

    monkeypatch.setattr(select_mod, "is_available", lambda spec: spec.name in {"piqe", "niqe"})
    store = Store(tmp_path / "store")
    m = manifest_of(40)
    store.register_manifest(m)
    write_metric(store, m, "piqe", [int(i % 2 == 0) for i in range(40)])
    write_metric(store, m, "niqe", [int(i % 5 < 3) for i in range(40)])
    evaluate_phase1(store, pair_frame(m), ["piqe", "niqe"], "p1", top_k=2, n_boot=200, seed=0)
    with pytest.raises(StudyError) as err:
        select_mod.build_selection(store)
    msg = str(err.value)
    assert "no ranked metric with weights here has a 95% CI above chance" in msg and "--allow-weak-metric" in msg
    assert "niqe 0.600 [" in msg and "piqe 0.500 [" in msg and "\n" not in msg
