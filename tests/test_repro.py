"""issue 15: `train-data synthetic --photos DIR` (real photographs as the originals of a SYNTHETIC multi-GT set)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bench.errors import StudyError


def _photos(folder: Path, n: int = 3, size=(150, 110)) -> Path:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        arr = (rng.random((size[1], size[0], 3)) * 255).astype(np.uint8)
        Image.fromarray(arr).save(folder / f"p{i}.png")
    (folder / "notes.txt").write_text("not an image")
    return folder


def test_train_data_synthetic_from_a_folder_of_photos(tmp_path, capsys):
    from bench.cli import main

    photos = _photos(tmp_path / "photos")
    out = tmp_path / "hggt"
    assert main(["train-data", "synthetic", str(out), "--photos", str(photos), "--groups-per-photo", "2",
                 "--size", "64", "--val-photos", "2"]) == 0
    assert "real photographs" in capsys.readouterr().out
    originals = sorted((out / "images" / "original").glob("*.png"))
    assert len(originals) == 6 and {p.name.split("-")[0] for p in originals} == {"0001", "0002", "0003"}
    # an original is a crop of its photograph: its pixels appear in the source at the recorded top/left
    stem = originals[0].stem
    _, top, left = map(int, stem.split("-"))
    src = np.asarray(Image.open(photos / "p0.png"))
    assert np.array_equal(np.asarray(Image.open(originals[0])), src[top:top + 64, left:left + 64])
    for k in ("01", "02", "03", "04"):
        assert (out / "images" / k / f"{stem}_{k}.png").is_file()
    assert len(list((out / "labels" / "A").glob("*.json"))) == 6
    assert sorted(p.name for p in (out / "val" / "hr").iterdir()) == ["p0.png", "p1.png"]
    record = json.loads((out / "source.json").read_text())
    assert record["originals"] == "real photographs" and record["photos"] == ["p0.png", "p1.png", "p2.png"]
    assert "SYNTHETIC" in record["enhanced_gts"] and "SYNTHETIC" in record["labels"]
    assert "REAL photographs" in (out / "SYNTHETIC.md").read_text()


def test_train_data_synthetic_refuses_bad_photo_folders(tmp_path):
    from sr_training.data.synthetic import build_synthetic_hggt

    with pytest.raises(StudyError, match="not a folder"):
        build_synthetic_hggt(tmp_path / "o1", photos=tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(StudyError, match=r"--photos .*empty: no images \("):
        build_synthetic_hggt(tmp_path / "o2", photos=tmp_path / "empty")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "broken.png").write_bytes(b"not a png")
    with pytest.raises(StudyError, match=r"broken\.png: cannot read --photos image"):
        build_synthetic_hggt(tmp_path / "o3", photos=bad, size=32)


# --- `iqa-study repro`: statistics, plan, and a two-run slice of the real code path -------------------------------


def _per(rows):
    import pandas as pd

    return pd.DataFrame(rows, columns=["label", "test_set", "item", "metric", "config_hash", "lower_better", "kind",
                                       "score"])


def test_repro_crossed_bootstrap_pairs_by_seed_and_image():
    from sr_training.repro.report import Scores, comparisons, difference, main_table

    rng = np.random.default_rng(1)
    base = rng.normal(25, 2, size=(3, 6))            # seeds x images: image effects dominate
    rows = []
    for s in range(3):
        for i in range(6):
            for label, psnr, niqe in ((f"upos_s{s}", base[s, i], 8.0 + i), (f"amo_s{s}", base[s, i] + 0.1 * (s + 1),
                                                                          8.0 + i + 0.5)):
                rows += [(label, "set5", f"img{i}", "psnr", "h", False, "FR", psnr),
                         (label, "set5", f"img{i}", "niqe", "h2", True, "NR", niqe)]
    sc = Scores(_per(rows))
    d = difference(sc, "amo", "upos", "psnr")
    assert d.shape == (3, 6) and np.allclose(d, np.array([[0.1], [0.2], [0.3]]))  # paired: seed s with seed s
    cmp = comparisons(sc)
    r = cmp[(cmp.a == "amo") & (cmp.b == "upos")].set_index("metric")
    assert r.loc["psnr", "delta"] == pytest.approx(0.2)
    assert 0.1 - 1e-9 <= r.loc["psnr", "ci_lo"] < 0.2 < r.loc["psnr", "ci_hi"] <= 0.3 + 1e-9  # the seed spread, not the images'
    assert r.loc["psnr", "result"] == "a better"
    assert r.loc["niqe", "result"] == "b better"     # NIQE +0.5 is worse: lower is better
    t = main_table(sc).set_index(["variant", "metric"])
    # the unpaired mean CI spans the image spread (~2 dB); the paired delta's does not
    assert t.loc[("amo", "psnr"), "ci_hi"] - t.loc[("amo", "psnr"), "ci_lo"] > 1.0
    assert t.loc[("amo", "psnr"), "delta_vs_upos"] == pytest.approx(0.2)


def test_repro_plan_order_and_refusals():
    from sr_training.repro import plan as P

    p = P.build_plan(seeds=(0, 1), only=("upos_ft",), reasons={"perceptual": "no VGG"})
    assert [r.name for r in p.runs] == ["upos_s0", "upos_s1", "upos_ft_s0", "upos_ft_s1"]
    full = P.build_plan(reasons={"perceptual": "no VGG19 here"})
    assert ("amo_ft_hp", "no VGG19 here") in full.skipped and all(r.variant.name != "amo_ft_hp" for r in full.runs)
    names = [r.name for r in full.runs]
    assert all(names.index(r.base_run) < names.index(r.name) for r in full.runs if r.base_run)
    assert sorted(P.lambda_of(v) for v in P.VARIANTS if P.lambda_of(v) is not None) == [0.0, 10.0, 100.0, 1000.0]
    with pytest.raises(StudyError, match="unknown variant"):
        P.build_plan(only=("amo_ftt",))


@pytest.mark.slow
def test_repro_two_run_slice_trains_evaluates_reports_and_resumes(tmp_path, monkeypatch, niqe_plumbing_params):
    """sma and amo (2 iterations from the shipped init) -> amo_ft (2 LoRA iterations, merged) -> evaluated on two tiny
    test sets with bicubic and the PSNR init -> report; a rerun trains nothing."""
    from bench.manifests.sample import bundled_photo
    from sr_training.repro import plan as P
    from sr_training.repro.report import write_report
    from sr_training.repro.run import execute

    monkeypatch.setattr(P, "GROUP_SIZE", 128)
    monkeypatch.setattr(P, "FT_GT_SIZE", 96)
    monkeypatch.setattr(P, "VAL_PHOTOS", 1)
    photos, tests = tmp_path / "photos", {}
    photos.mkdir()
    for k, name in enumerate(("astronaut.png", "coffee.png")):
        bundled_photo(name).resize((200, 160)).save(photos / f"{k}.png")
    for name, src in (("ta", "camera.png"), ("tb", "chelsea.png")):
        (tmp_path / name).mkdir()
        bundled_photo(src).convert("RGB").crop((0, 0, 130, 122)).save(tmp_path / name / "x.png")  # not a multiple of 4
        tests[name] = tmp_path / name
    plan = P.build_plan(seeds=(0,), only=("amo_ft", "sma"), base_iters=2, ft_iters=2)
    out = tmp_path / "run"
    recs = execute(plan, out, photos, tests)
    assert [r["run"] for r in recs] == ["sma_s0", "amo_s0", "amo_ft_s0"]
    # SMA samples by stored image-level NIQE of the training groups: scored once into a store of their own
    sma_cfg = (out / "runs" / "sma_s0" / "config.yaml").read_text()
    assert str((out / "train_scores").resolve()) in sma_cfg and "train_manifest.parquet" in sma_cfg
    assert recs[2]["evaluated"].endswith("merged.pth") and Path(recs[1]["evaluated"]).is_file()
    base_cfg = (out / "runs" / "amo_s0" / "config.yaml").read_text()
    assert "psnr_init_swinir_tiny" in base_cfg and "strategy: amo" in base_cfg
    rep = {p.name for p in write_report(out, tmp_path / "report")}
    assert {"main.csv", "claims.csv", "README.md", "index.html", "pd.png"} <= rep
    import pandas as pd

    t = pd.read_csv(tmp_path / "report" / "main.csv")
    assert set(t.variant) == {"bicubic", "PSNR init", "gold (HR)", "sma", "amo", "amo_ft"}
    assert (t[t.variant == "amo"].n_images == 2).all()          # both test sets pooled, one image each
    claims = pd.read_csv(tmp_path / "report" / "claims.csv").set_index("claim")
    assert claims.loc["FT raises NR quality at a PSNR cost", "measured"].startswith("amo_ft - amo: niqe")
    assert claims.loc["AMO >= UPos without labels", "verdict"] == "not tested"
    before = {p: p.stat().st_mtime_ns for p in (out / "runs").rglob("*.pt")}
    again = execute(plan, out, photos, tests)                   # resume: every run is done
    assert again == recs and {p: p.stat().st_mtime_ns for p in (out / "runs").rglob("*.pt")} == before


def test_a_mixed_verdict_is_partly_only_when_some_metric_reproduced():
    import pandas as pd

    from sr_training.repro.report import claim_verdicts

    def cmp(niqe: str, stlpips: str) -> pd.DataFrame:
        return pd.DataFrame([{"a": "amo_ft", "b": "upos_ft", "metric": m, "delta": 0.1, "ci_lo": 0.0, "ci_hi": 0.2,
                              "result": r} for m, r in (("niqe", niqe), ("stlpips", stlpips))])

    def verdict(niqe: str, stlpips: str) -> str:
        v = claim_verdicts(cmp(niqe, stlpips), {}).set_index("claim")
        return v.loc["AMO+FT >= UPos+FT", "verdict"]

    # lower is better for both: 'a better' is what the paper claims for AMO+FT
    assert verdict("a better", "a better") == "reproduced"
    assert verdict("no difference detected", "b better") == "not reproduced: niqe inconclusive, stlpips contradicted"
    assert verdict("a better", "b better") == "partly: niqe reproduced, stlpips contradicted"
    assert verdict("no difference detected", "no difference detected") == "inconclusive"
