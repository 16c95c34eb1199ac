"""The study report: zoom box, split-half ceiling, margin bins and CI table against hand
computations, and a full report on a generated study (SR method columns, per-observer votes)."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image, ImageFilter

from bench.report import analyses
from bench.report.study_report import FIGURES, write_study_report
from bench.report.zoom import diff_box, pair_crops
from bench.store import Store
from tests.cli import cli

METHODS = ["sharp", "soft", "blurry"]


def _cli(*args: str) -> str:
    return cli(*args).stdout


def make_study_data(root: Path, n_groups: int = 8, size: int = 96) -> Path:
    """A pairs-csv dataset: per group one random texture, three 'SR methods' (no / light / strong blur),
    all three pairs with 15 votes from 3 observers (the sharper image mostly wins; group 0 reversed)."""
    rng = np.random.default_rng(0)
    rows = []
    for g in range(n_groups):
        base = rng.integers(0, 256, size=(size // 4, size // 4, 3), dtype=np.uint8)
        img = Image.fromarray(base).resize((size, size), Image.BICUBIC)
        for m, radius in zip(METHODS, (0, 1.0, 2.5)):
            (img.filter(ImageFilter.GaussianBlur(radius)) if radius else img).save(root / f"g{g}_{m}.png")
        for i, j in ((0, 1), (0, 2), (1, 2)):
            per_obs = {"o1": [4, 1], "o2": [3, 2], "o3": [4, 1]} if (g + i + j) % 3 else \
                {"o1": [1, 4], "o2": [3, 2], "o3": [2, 3]}
            if g == 0:
                per_obs = {o: v[::-1] for o, v in per_obs.items()}
            va, vb = sum(v[0] for v in per_obs.values()), sum(v[1] for v in per_obs.values())
            rows.append({"image_a": f"g{g}_{METHODS[i]}.png", "image_b": f"g{g}_{METHODS[j]}.png", "votes_a": va,
                         "votes_b": vb, "group": f"g{g}", "method_a": METHODS[i], "method_b": METHODS[j],
                         "observer_votes": json.dumps(per_obs)})
    with open(root / "votes.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return root / "votes.csv"


def run_study(tmp: Path) -> tuple[Path, Path]:
    """(store, report dir) of a generated study: piqe + entropy, phase1 -> ... -> report."""
    data = tmp / "data"
    data.mkdir()
    votes = make_study_data(data)
    manifest, store = str(tmp / "manifest.parquet"), str(tmp / "store")
    _cli("manifest", "build", "pairs-csv", str(votes), "--root", str(data), "--dataset", "gen", "-o", manifest)
    common = ["--manifest", manifest, "--store", store, "--workers", "0", "--n-boot", "200"]
    _cli("phase1", *common, "--metrics", "piqe,entropy", "--n-pairs", "24", "--top-k", "2")
    _cli("phase2", *common)
    _cli("complement", "--store", store)
    _cli("ensemble", "--store", store, "--folds", "3")
    _cli("report", "--store", store, "-o", str(tmp / "report"))
    return Path(store), tmp / "report"


@pytest.fixture(scope="module")
def study(generated_study):
    return generated_study["store"], generated_study["report"]


def test_diff_box_finds_the_changed_region():
    rng = np.random.default_rng(1)
    a = rng.integers(0, 256, size=(200, 300, 3), dtype=np.uint8)
    b = a.copy()
    b[120:150, 40:70] = 255 - b[120:150, 40:70]  # the only difference: a 30x30 patch
    box = diff_box(a, b, size=40)
    assert (box.height, box.width) == (40, 40)
    assert box.top <= 120 and box.top + 40 >= 150 and box.left <= 40 and box.left + 40 >= 70
    # near the border the box is moved inside the image
    c = a.copy()
    c[0:10, 290:300] = 255 - c[0:10, 290:300]
    edge = diff_box(a, c, size=40)
    assert (edge.top, edge.left) == (0, 260)


def test_pair_crops_map_the_box_to_a_larger_b():
    rng = np.random.default_rng(2)
    a = rng.integers(0, 256, size=(64, 80, 3), dtype=np.uint8)
    b = np.asarray(Image.fromarray(a).resize((160, 128), Image.NEAREST))
    b = b.copy()
    b[64:96, 100:140] = 0  # differs in A's region rows 32..48, cols 50..70
    box_a, box_b, ca, cb = pair_crops(a, b, size=16)
    assert box_a.top <= 32 + 8 and box_a.top + 16 >= 40 and 44 <= box_a.left <= 70
    assert (box_b.top, box_b.left, box_b.height) == (2 * box_a.top, 2 * box_a.left, 32)
    assert ca.shape == (16, 16, 3) and cb.shape == (32, 32, 3)


def test_split_half_ceiling_by_hand():
    # 4 observers -> 3 balanced splits. p1: everyone says a -> 3 of 3 splits agree.
    # p2: o1, o2 say a; o3, o4 say b -> {o1,o2}|{o3,o4} disagree; the two other splits are 1-1 ties
    # in both halves (not counted) -> 0 of 1. Ceiling = (3 + 0) / (3 + 1) = 0.75.
    pairs = pd.DataFrame({
        "dataset": ["d", "d"], "group": ["g1", "g2"],
        "observer_votes": [json.dumps({"o1": [1, 0], "o2": [1, 0], "o3": [1, 0], "o4": [1, 0]}),
                           json.dumps({"o1": [1, 0], "o2": [1, 0], "o3": [0, 1], "o4": [0, 1]})]})
    t = analyses.split_half_ceiling(pairs, n_boot=200)
    assert t["agreement"].item() == pytest.approx(0.75)
    assert t["n_splits"].item() == 3 and t["n_observers"].item() == 4 and t["n_pairs"].item() == 2
    # resampling the two groups: the CI spans the one-group values 0 and 1
    assert t["ci_lo"].item() == pytest.approx(0.0) and t["ci_hi"].item() == pytest.approx(1.0)
    assert analyses.split_half_ceiling(pairs.drop(columns="observer_votes")) is None


def test_margin_bins_by_hand():
    got = analyses.margin_bin([7, 12, 15, 14, 10, 5], [8, 3, 0, 1, 5, 5]).tolist()
    # 8/15 = .53 weak, 12/15 = .8 medium, 15/15 strong, 14/15 = .93 strong, 10/15 = .67 weak, 5-5 tie -> none
    assert got == ["weak (50-70%)", "medium (70-90%)", "strong (90-100%)", "strong (90-100%)", "weak (50-70%)", None]


def test_chance_oracle_halves_the_remaining_failures_per_coin():
    from bench.report.figures import chance_oracle

    # best alone 0.6: one coin adds half of the 0.4 still wrong, two coins a quarter more
    assert chance_oracle(0.6, [0, 1, 2]).tolist() == pytest.approx([0.6, 0.8, 0.9])


def test_phase2_headline_says_best_only_when_the_test_does():
    from bench.report.study_report import phase2_headline

    p2 = pd.DataFrame({"metric": ["musiq", "nima", "niqe"], "best_significantly_better": [False, True, True]})
    assert phase2_headline(p2, "musiq") == "best = musiq"
    p2.loc[1, "best_significantly_better"] = False
    assert phase2_headline(p2, "musiq") == "top-ranked musiq, not significantly better than nima"
    assert phase2_headline(p2.drop(columns="best_significantly_better"), "musiq") == "top-ranked musiq (no test recorded)"


def test_ci_table_counts_metric_ties_and_votes_by_hand():
    long = pd.DataFrame({
        "dataset": "d", "pair_id": ["p1", "p2", "p3", "p4"], "source_group": ["d/1", "d/2", "d/3", "d/4"],
        "metric": "m", "pref": ["a", "b", "a", "tie"], "decided": [True, True, True, False],
        "metric_pref": ["a", "tie", "b", "a"], "votes_a": [10, 2, 9, 5], "votes_b": [5, 13, 6, 5]})
    long["correct"] = (long["metric_pref"] == long["pref"]).astype(int)
    t = analyses.ci_table(long, n_boot=200).iloc[0]
    assert t["n_decided"] == 3
    assert t["acc"] == pytest.approx(1 / 3)                      # only p1 strictly right
    assert t["tie_half_acc"] == pytest.approx(1.5 / 3)           # p2's metric tie counts 0.5
    assert t["vote_agreement"] == pytest.approx((10 + 7.5 + 6 + 5) / 55)  # votes for the metric's side / all 55


def test_report_has_every_figure_as_png_pdf_csv_and_a_self_contained_html(study):
    _, report = study
    for name in FIGURES + ["agreement_gen_all"]:
        assert (report / f"{name}.png").stat().st_size > 1000, name
        assert (report / f"{name}.pdf").read_bytes()[:5] == b"%PDF-", name
        assert len(pd.read_csv(report / f"{name}.csv")) > 0, name
    html = (report / "report.html").read_text()
    srcs = re.findall(r'src="([^"]*)"', html)
    assert len(srcs) == len(FIGURES) + 1 and all(s.startswith("data:image/png;base64,") for s in srcs)
    assert "percentile bootstrap over source groups" in html and "Wilson" not in html


def test_report_numbers_match_the_store(study):
    from bench.store.views import connect

    store, report = study
    con = connect(Store(store, create=False))
    p2 = con.execute("SELECT * FROM study_phase2_ranking").df()
    best = p2.loc[p2["is_best"], "metric"].item()
    # the gallery shows pairs the best metric gets wrong, recomputed from raw scores
    scores = con.execute("SELECT image_id, metric, score FROM scores WHERE status = 'ok' AND metric = ?",
                         [best]).df().set_index("image_id")["score"]
    pairs = con.execute("SELECT pair_id, image_a_id, image_b_id, pref FROM pairs").df().set_index("pair_id")
    sign = -1.0 if best == "piqe" else 1.0  # piqe: lower is better; entropy: higher is better
    s_a, s_b = sign * scores.loc[pairs["image_a_id"]].to_numpy(), sign * scores.loc[pairs["image_b_id"]].to_numpy()
    wrong = set(pairs.index[np.where(s_a > s_b, "a", np.where(s_a < s_b, "b", "tie")) != pairs["pref"]])
    gallery = pd.read_csv(report / "failure_gallery.csv")
    assert len(gallery) == min(6, len(wrong)) and set(gallery["pair_id"]) <= wrong
    assert gallery["human"].str.match(r"human: [AB] \(votes \d+-\d+\)").all()
    for g in gallery.itertuples():  # each row names its files and SR methods, not only dataset / pair id
        assert g.label.startswith(f"gen / {g.pair_id}: A = {Path(g.image_a).name} (") and \
            f" vs B = {Path(g.image_b).name} (" in g.label
        assert any(f"({m})" in g.label for m in METHODS)
    # the ensemble's CI row is its held-out accuracy from the stored CV predictions
    cv = con.execute("SELECT pred, y FROM study_ensemble_cv").df()
    ens = pd.read_csv(report / "ensemble.csv")
    assert ens["acc"].iloc[0] == pytest.approx((cv["pred"] == cv["y"]).mean())
    assert (ens["ci_lo"] <= ens["acc"]).all() and (ens["acc"] <= ens["ci_hi"]).all()
    # per SR method: each method takes part in 2 of the 3 pairs of each of the 8 groups
    by_method = pd.read_csv(report / "accuracy_by_method.csv")
    assert set(by_method["method"]) == set(METHODS) and (by_method["n_decided"] == 16).all()
    # margin bins under 10 decided pairs are marked, in the table and with a warning; the others are not
    margin = pd.read_csv(report / "accuracy_by_margin.csv").fillna({"note": ""})
    few = margin["n_decided"].groupby(margin["margin"]).transform("max") < analyses.MIN_BIN_PAIRS
    assert (margin.loc[few, "note"].str.startswith("fewer than 10")).all() and (margin.loc[~few, "note"] == "").all()
    md = (report / "report.md").read_text()
    assert few.any() == ("hold fewer than 10 decided pairs" in md)
    assert "Chance baseline (dashed)" in md
    # the split-half ceiling from the per-observer votes (3 observers -> 3 splits)
    assert "Inter-observer ceiling" in (report / "report.md").read_text()


def test_report_refuses_a_file_as_output(study, tmp_path):
    from bench.errors import StudyError

    store, _ = study
    target = tmp_path / "report.txt"
    target.write_text("x")
    with pytest.raises(StudyError, match="is a file"):
        write_study_report(Store(store, create=False), target)


def test_the_report_says_why_the_per_method_figure_is_absent(tmp_path):
    from bench.report.study_report import _by_method_blocks

    pairs = pd.DataFrame({"dataset": ["d"], "pair_id": ["p1"], "image_a": ["x/a.png"], "image_b": ["y/b.png"]})
    blocks = _by_method_blocks(pd.DataFrame(), analyses.methods_from_names(pairs), tmp_path, ["piqe"])
    assert blocks[0] == ("h2", "Accuracy per SR method") and blocks[1][1].startswith("Not drawn: ")
    assert not list(tmp_path.iterdir())  # no empty figure written


def test_a_real_sr_method_without_failures_is_an_empty_selection_not_an_error():
    from bench.errors import StudyError
    from bench.report.notebook import select_pairs

    pairs = pd.DataFrame({"dataset": ["d", "d"], "pair_id": ["p1", "p2"], "method_a": ["esrgan", "ldl"],
                          "method_b": ["swinir", "swinir"], "votes_a": [9, 2], "votes_b": [1, 8]})
    # piqe is wrong only on p1 (esrgan vs swinir); 'ldl' takes part in p2 only
    long = pd.DataFrame({"dataset": ["d", "d"], "pair_id": ["p1", "p2"], "metric": ["piqe", "piqe"],
                         "decided": [True, True], "correct": [0, 1]})
    assert list(select_pairs(long, pairs, "piqe", sr_method="esrgan")["pair_id"]) == ["p1"]
    assert select_pairs(long, pairs, "piqe", sr_method="ldl").empty  # a method of these pairs: no failures
    with pytest.raises(StudyError, match=r"no such SR method in these pairs \(methods: esrgan, ldl, swinir\)"):
        select_pairs(long, pairs, "piqe", sr_method="ResShift")
