"""phase1 -> phase2 -> complement -> ensemble -> select -> report, offline, on the synthetic sample
and on the real sr2afc votes; report files and notebooks checked."""

from __future__ import annotations

import json
import re
from pathlib import Path

import nbformat
import pandas as pd
import pytest
from nbclient import NotebookClient
from PIL import Image

from bench.metrics.table import get
from bench.store import Store
from bench.study.ensemble import EnsembleScorer
from bench.study.select import read_selection
from tests.cli import cli

REPO = Path(__file__).resolve().parents[1]


def _cli(*args: str) -> str:
    return cli(*args).stdout


def _study(store: Path, manifest: Path, tmp: Path, n_pairs: int) -> dict:
    common = ["--manifest", str(manifest), "--store", str(store), "--workers", "0", "--n-boot", "500"]
    _cli("phase1", *common, "--metrics", "piqe,entropy,niqe,musiq", "--n-pairs", str(n_pairs), "--top-k", "2")
    _cli("phase2", *common)
    _cli("complement", "--store", str(store))
    _cli("ensemble", "--store", str(store), "--folds", "3")
    # small studies (30-40 Phase I pairs): a metric whose CI includes chance may be chosen, with a warning
    _cli("select", "--store", str(store), "-o", str(tmp / "selection.json"), "--allow-weak-metric")
    _cli("report", "--store", str(store), "--out", str(tmp / "report"))
    return read_selection(tmp / "selection.json")


@pytest.fixture(scope="module")
def sample_study(tmp_path_factory, sample_manifest, niqe_plumbing_params):
    tmp = tmp_path_factory.mktemp("sample_study")
    return tmp, _study(tmp / "store", sample_manifest, tmp, n_pairs=40)


@pytest.fixture(scope="module")
def sr2afc_study(tmp_path_factory, sr2afc_scored):
    store, manifest = sr2afc_scored
    tmp = tmp_path_factory.mktemp("sr2afc_study")
    return tmp, store, _study(store, manifest, tmp, n_pairs=30)


@pytest.mark.parametrize("which", ["sample", "sr2afc"])
def test_selection_is_valid_and_names_a_differentiable_metric(which, sample_study, sr2afc_study):
    tmp, sel = (sample_study[0], sample_study[1]) if which == "sample" else (sr2afc_study[0], sr2afc_study[2])
    assert get(sel["reward_metric"]["metric"]).differentiable and sel["training_metric"] == sel["reward_metric"]
    if not sel["reward_metric"]["above_chance"]:
        assert any("--allow-weak-metric" in w and sel["reward_metric"]["metric"] in w for w in sel["warnings"])
    assert sel["evidence"]["synthetic"] is (which == "sample")
    assert sel["best"]["source"] == "phase2"
    assert sel["ensemble"] is not None and Path(sel["ensemble"]["model"]).is_file()
    # the chain: the Phase II result names its Phase I; complement and ensemble were computed on it
    store = Store(tmp / "store") if which == "sample" else Store(sr2afc_study[1])
    p2 = store.read_study("phase2_ranking", sel["evidence"]["phase2_key"])
    assert sel["evidence"]["phase1_key"] == p2["phase1_key"].iloc[0]
    greedy = store.read_study("complement_greedy", sel["evidence"]["complement_key"])
    assert (greedy["phase2_key"] == sel["evidence"]["phase2_key"]).all()
    assert sel["best"]["config_hash"] == p2.loc[p2["is_best"], "config_hash"].iloc[0]
    json.loads((tmp / "selection.json").read_text(), parse_constant=lambda c: pytest.fail(f"{c} in selection.json"))


def test_unavailable_study_metrics_are_recorded(sample_study):
    tmp, _ = sample_study
    from bench.store.views import connect

    rows = connect(Store(tmp / "store")).execute("SELECT metric, reason FROM study_phase1_unavailable").fetchall()
    assert [r[0] for r in rows] == ["musiq"] and "musiq_koniq_ckpt" in rows[0][1]


def test_phase1_is_idempotent(sample_study, sample_manifest):
    tmp, _ = sample_study
    store = tmp / "store"
    before = {p.name: pd.read_parquet(p) for p in (store / "study" / "phase1_ranking").glob("*.parquet")}
    out = _cli("phase1", "--manifest", str(sample_manifest), "--store", str(store), "--workers", "0", "--n-boot", "500",
               "--metrics", "piqe,entropy,niqe,musiq", "--n-pairs", "40", "--top-k", "2")
    assert "skipped" in out and "scored 0 " in out  # cached scores reused
    after = {p.name: pd.read_parquet(p) for p in (store / "study" / "phase1_ranking").glob("*.parquet")}
    assert before.keys() == after.keys()
    for k in before:
        pd.testing.assert_frame_equal(before[k].drop(columns="created_at"), after[k].drop(columns="created_at"))


def test_ensemble_scorer_is_the_fitted_pairwise_model(sr2afc_study):
    _, store, sel = sr2afc_study
    # the saved per-image scorer is the pairwise model: f(a) - f(b) equals the decision function of an
    # independently refitted logistic regression on raw, oriented score differences over the Phase II pairs
    from sklearn.linear_model import LogisticRegression

    from bench.store.views import connect

    scorer = EnsembleScorer.load(sel["ensemble"]["model"])
    con = connect(Store(store))
    con.register("p2_pairs", Store(store).read_study("phase2_pairs", sel["evidence"]["phase2_key"]))
    long = con.execute("SELECT pair_id, metric, sign * (score_a - score_b) AS d, (pref = 'a')::INT AS y "
                       "FROM pair_scores JOIN p2_pairs USING (dataset, pair_id) WHERE pref <> 'tie'").df()
    X = long.pivot(index="pair_id", columns="metric", values="d")[scorer.metrics]
    y = long.drop_duplicates("pair_id").set_index("pair_id").loc[X.index, "y"]
    sd = X.std(ddof=0).to_numpy()
    ref = LogisticRegression(fit_intercept=False, C=1.0, max_iter=1000).fit(X / sd, y)
    scores = scorer.score_store(Store(store)).set_index("image_id")["ensemble"]
    pairs = con.execute("SELECT pair_id, image_a_id, image_b_id FROM pairs").df().set_index("pair_id").loc[X.index]
    f = scores.loc[pairs["image_a_id"]].to_numpy() - scores.loc[pairs["image_b_id"]].to_numpy()
    assert f == pytest.approx(ref.decision_function(X / sd), rel=1e-4, abs=1e-4)


@pytest.mark.parametrize("which", ["sample", "sr2afc"])
def test_report_renders_and_references_every_figure(which, sample_study, sr2afc_study):
    report = (sample_study[0] if which == "sample" else sr2afc_study[0]) / "report"
    pngs = sorted(report.glob("*.png"))
    names = {p.stem for p in pngs}
    assert {"phase1_ranking", "complement_overlap", "complement_conditional", "failure_gallery"} <= names
    html_text = (report / "report.html").read_text()
    md = (report / "report.md").read_text()
    for png in pngs:
        with Image.open(png) as im:
            assert im.width > 200 and im.height > 100
            assert len(set(im.convert("L").get_flattened_data())) > 5  # not blank
        assert f'<figure id="{png.stem}"><img src="data:image/png;base64,' in html_text and f"({png.name})" in md
        assert (report / f"{png.stem}.csv").stat().st_size > 0
    referenced = {f"{name}.png" for name in re.findall(r'<figure id="([^"]+)">', html_text)}
    assert referenced == {p.name for p in pngs}
    assert ("SYNTHETIC" in md) is (which == "sample")
    prov = json.loads((report / "provenance.json").read_text())
    assert prov["runs"] and all("git_commit" in r for r in prov["runs"])


NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebooks_run_green_on_the_real_sr2afc_study(path, sr2afc_study, monkeypatch):
    _, store, _ = sr2afc_study
    monkeypatch.setenv("IQA_STUDY_STORE", str(store))
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}).execute()
    errors = [o for c in nb.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
