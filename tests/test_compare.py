"""`iqa-study compare`: the table (means, paired deltas, bootstrap CIs), refusals, figures and report files."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from bench.errors import StudyError
from bench.manifests.schema import file_hash
from bench.report.compare import (
    GOLD,
    bootstrap_ci,
    compare_table,
    load_per_image,
    pick_baseline,
)
from bench.store import Store
from bench.store.images import register_images

NR = {"upos": [5.0, 6.0, 7.0], "amo": [5.5, 6.0, 8.5]}       # entropy of the SR output per image
PSNR = {"upos": [[20.0, 22.0], [30.0, 32.0], [25.0, 25.0]],   # per image, against its two Positives
        "amo": [[19.0, 21.0], [29.0, 30.0], [24.0, 25.0]]}
GOLD_NR = [[6.0, 7.0], [7.0, 7.0], [8.0, 9.0]]
IDS: dict[str, str] = {}  # fixture name of an image -> its content hash (the store's image id)


def _row(image_id, ref_id, metric, score, config="c1", lower_better=False):
    return {"image_id": image_id, "ref_id": ref_id, "metric": metric, "config_hash": config, "metric_config": "{}",
            "score": score, "status": "ok", "error": None, "lower_better": lower_better, "random_init": False,
            "input_h": 64, "input_w": 64, "input_policy": "native", "batch_size": 1, "seconds": 0.0, "device": "cpu",
            "dtype": "float32", "pyiqa_version": "x", "torch_version": "x", "run_id": "fixture",
            "written_at": dt.datetime(2026, 1, 1, tzinfo=dt.UTC)}


@pytest.fixture
def store(tmp_path):
    """Three test images with two Positive GTs each, two runs (UPos, AMO), known scores."""
    rng = np.random.default_rng(0)
    st = Store(tmp_path / "store")
    images, scores = [], []
    for i in range(3):
        item = f"g{i}"
        gt = (rng.random((64, 64, 3)) * 255).astype(np.uint8)
        gt[16:40, 16:40] = 128  # a flat patch
        for k in (1, 2):
            p = tmp_path / "gt" / f"{item}_{k}.png"
            p.parent.mkdir(exist_ok=True)
            Image.fromarray(np.clip(gt.astype(int) + k, 0, 255).astype(np.uint8)).save(p)
            images.append({"image_id": f"{item}p{k}", "path": str(p), "role": "gt", "test_set": "t", "item": item,
                           "group": item, "gt_index": k, "label": "Positive"})
            scores.append(_row(f"{item}p{k}", None, "entropy", GOLD_NR[i][k - 1]))
        lr = tmp_path / "lr" / f"{item}.png"
        lr.parent.mkdir(exist_ok=True)
        Image.fromarray(gt).resize((16, 16), Image.Resampling.BICUBIC).save(lr)
        images.append({"image_id": f"{item}lr", "path": str(lr), "role": "lr", "test_set": "t", "item": item,
                       "group": item})
        for run, sha, noise in (("upos", "a" * 64, 10), ("amo", "b" * 64, 20)):
            p = tmp_path / run / f"{item}.png"
            p.parent.mkdir(exist_ok=True)
            Image.fromarray(np.clip(gt + rng.normal(0, noise, gt.shape), 0, 255).astype(np.uint8)).save(p)
            images.append({"image_id": f"{item}{run}", "path": str(p), "role": "sr_output", "test_set": "t",
                           "item": item, "group": item, "run_name": f"tiny_{run}", "arch": "swinir-tiny",
                           "sampling": run, "iteration": 20, "checkpoint_sha256": sha, "weights": "ema"})
            scores.append(_row(f"{item}{run}", None, "entropy", NR[run][i]))
            for k in (1, 2):
                scores.append(_row(f"{item}{run}", f"{item}p{k}", "psnr", PSNR[run][i][k - 1]))
                scores.append(_row(f"{item}{run}", f"{item}p{k}", "stlpips", 0.1 * (k + i), lower_better=True))
    # image ids are content hashes, as evaluation registers them (readers of pixels check them)
    IDS.update({img["image_id"]: file_hash(Path(img["path"])) for img in images})
    for row in images + scores:
        for col in ("image_id", "ref_id"):
            if row.get(col):
                row[col] = IDS[row[col]]
    register_images(st, images)
    st.write_scores(scores, "fixture", 0, 0)
    return st


def test_table_means_and_paired_deltas_match_a_hand_computation(store):
    per, runs, _ = load_per_image(store)
    base, why = pick_baseline(runs, None)
    assert base == "tiny_upos" and "UPos" in why
    t = compare_table(per, runs, "t", base, n_boot=500).set_index("run")
    assert list(t.index) == ["tiny_upos", "tiny_amo", GOLD]
    # PSNR: average over the two Positives per image, then over images
    upos_psnr = np.mean([21.0, 31.0, 25.0])
    amo_psnr = np.mean([20.0, 29.5, 24.5])
    assert t.loc["tiny_upos", "psnr"] == pytest.approx(upos_psnr)
    assert t.loc["tiny_amo", "psnr"] == pytest.approx(amo_psnr)
    assert t.loc["tiny_amo", "d_psnr"] == pytest.approx(amo_psnr - upos_psnr)
    assert t.loc["tiny_amo", "d_entropy"] == pytest.approx(np.mean([0.5, 0.0, 1.5]))
    lo, hi = t.loc["tiny_amo", ["d_entropy_lo", "d_entropy_hi"]]
    assert 0.0 <= lo < 2 / 3 < hi <= 1.5  # resampled means of {0.5, 0, 1.5} lie within [0, 1.5]
    # per-image PSNR differences are -1, -1.5, -0.5: every bootstrap mean lies in [-1.5, -0.5]
    assert -1.5 <= t.loc["tiny_amo", "d_psnr_lo"] <= t.loc["tiny_amo", "d_psnr_hi"] <= -0.5
    assert t.loc[GOLD, "entropy"] == pytest.approx(np.mean([6.5, 7.0, 8.5]))
    assert np.isnan(t.loc[GOLD, "psnr"])  # the Gold standard is NR only
    assert bootstrap_ci(np.array([0.25, 0.25, 0.25])) == (0.25, 0.25)


def test_ambiguous_configurations_and_baselines_are_refused(store):
    with pytest.raises(StudyError, match="--baseline 'nope' matches no evaluated run"):
        pick_baseline(load_per_image(store)[1], "nope")
    store.write_scores([_row(IDS["g0amo"], None, "entropy", 1.0, config="c2")], "fixture2", 0, 0)
    with pytest.raises(StudyError, match="metric entropy was scored under 2 configurations"):
        load_per_image(store)


def test_compare_writes_table_plots_and_crop_grid(store, tmp_path):
    out = tmp_path / "cmp"
    from bench.cli import main

    assert main(["compare", "--store", str(store.root), "-o", str(out), "--n-boot", "200"]) == 0
    csv = pd.read_csv(out / "compare.csv")
    assert set(csv["run"]) == {"tiny_upos", "tiny_amo", GOLD}
    md = (out / "compare.md").read_text()
    assert "LPIPS-ST ↓" in md and "ΔPSNR [95% CI]" in md and "baseline for Δ = tiny_upos" in md
    html = (out / "compare.html").read_text()
    assert 'src="pd_t.png"' in html and 'src="crops_t.png"' in html and "LPIPS-ST" in html
    assert (out / "pd_t.svg").stat().st_size > 1000
    with Image.open(out / "crops_t.png") as im:
        assert im.width > 400


def test_crop_window_is_where_the_reference_has_detail():
    from bench.report.compare import _crop_box

    ref = np.full((240, 300, 3), 90, np.uint8)
    ref[144:240, 192:300] = (np.random.default_rng(0).random((96, 108, 3)) * 255).astype(np.uint8)
    top, left, size = _crop_box(ref)
    assert size == 96  # a third of the shorter side (80) raised to NIQE's minimum of 96, a multiple of 4
    assert (top, left) == (144, 192)  # the only grid window inside the textured block
