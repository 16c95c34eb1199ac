"""Evaluation into the store (issue 7 §2): image table, multi-GT FR view, tiled inference, evaluate."""

from __future__ import annotations

import datetime as dt
import hashlib

import numpy as np
import pytest
import torch

from bench.errors import StoreError
from bench.store import Store
from bench.store.images import register_images
from bench.store.views import connect


def _score(image_id, ref_id, metric, score, config="c1", status="ok", lower_better=False, when=0):
    return {"image_id": image_id, "ref_id": ref_id, "metric": metric, "config_hash": config, "metric_config": "{}",
            "score": score, "status": status, "error": None, "lower_better": lower_better, "random_init": False,
            "input_h": 8, "input_w": 8, "input_policy": "native", "batch_size": 1, "seconds": 0.0, "device": "cpu",
            "dtype": "float32", "pyiqa_version": "x", "torch_version": "x", "run_id": "fixture",
            "written_at": dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc) + dt.timedelta(seconds=when)}


def _img(image_id, role, item, label=None, gt_index=None, **model):
    return {"image_id": image_id, "path": f"/x/{image_id}.png", "role": role, "test_set": "t", "item": item,
            "group": item, "gt_index": gt_index, "label": label, **model}


def test_multigt_average_equals_hand_computation(tmp_path):
    """Item g1 has 3 effective Positives (+ a Negative and the original, which are no references),
    item g2 has 2; the view averages an SR output's FR score over exactly its item's Positives."""
    store = Store(tmp_path / "s")
    model = dict(run_name="amo", arch="swinir", sampling="amo", iteration=20, checkpoint_sha256="ab" * 32,
                 weights="ema")
    register_images(store, [
        _img("sr1", "sr_output", "g1", **model), _img("sr2", "sr_output", "g2", **model),
        _img("p1", "gt", "g1", "Positive", 1), _img("p2", "gt", "g1", "Positive", 2), _img("p4", "gt", "g1", "Positive", 4),
        _img("n3", "gt", "g1", "Negative", 3), _img("o1", "gt", "g1", "Original", 0),
        _img("q1", "gt", "g2", "Positive", 1), _img("q3", "gt", "g2", "Positive", 3),
    ])
    rows = [_score("sr1", "p1", "psnr", 20.0), _score("sr1", "p2", "psnr", 23.0), _score("sr1", "p4", "psnr", 29.0),
            _score("sr1", "n3", "psnr", 99.0), _score("sr1", "o1", "psnr", 99.0),  # not references: ignored
            _score("sr2", "q1", "psnr", 30.0), _score("sr2", "q3", "psnr", 31.0),
            _score("sr2", "q3", "psnr", 1.0, when=-5),  # an older duplicate of the same key: not counted
            _score("sr1", None, "niqe", 5.5, lower_better=True), _score("p1", None, "niqe", 3.0, lower_better=True),
            _score("p2", None, "niqe", 4.0, lower_better=True), _score("p4", None, "niqe", 8.0, lower_better=True)]
    store.write_scores(rows, "fixture", 0, 0)
    con = connect(store)
    fr = con.execute("SELECT item, score, n_refs, n_refs_expected, complete FROM eval_fr_multigt "
                     "WHERE metric = 'psnr' ORDER BY item").fetchall()
    assert fr == [("g1", pytest.approx((20 + 23 + 29) / 3), 3, 3, True), ("g2", pytest.approx(30.5), 2, 2, True)]
    # the per-GT rows stay in the store: nothing was averaged on disk
    assert con.execute("SELECT count(*) FROM eval_scores WHERE metric = 'psnr'").fetchone()[0] == 7
    gold = con.execute("SELECT item, score, n_refs FROM eval_gold WHERE metric = 'niqe'").fetchall()
    assert gold == [("g1", pytest.approx(5.0), 3)]
    joined = con.execute("SELECT kind, item, metric, score, run_name, iteration FROM runs_eval ORDER BY kind, item").fetchall()
    assert joined == [("FR", "g1", "psnr", pytest.approx(24.0), "amo", 20), ("FR", "g2", "psnr", pytest.approx(30.5), "amo", 20),
                      ("NR", "g1", "niqe", 5.5, "amo", 20)]


def test_multigt_marks_an_item_with_a_missing_reference_score_incomplete(tmp_path):
    store = Store(tmp_path / "s")
    register_images(store, [_img("sr1", "sr_output", "g1", run_name="r", checkpoint_sha256="c", weights="ema"),
                            _img("p1", "gt", "g1", "Positive", 1), _img("p2", "gt", "g1", "Positive", 2)])
    store.write_scores([_score("sr1", "p1", "psnr", 20.0), _score("sr1", "p2", "psnr", None, status="error")],
                       "fixture", 0, 0)
    row = connect(store).execute("SELECT score, n_refs, n_refs_expected, complete FROM eval_fr_multigt").fetchone()
    assert row == (20.0, 1, 2, False)


def test_register_images_is_idempotent_and_validates(tmp_path):
    store = Store(tmp_path / "s")
    rows = [_img("a", "gt", "g1", "HR")]
    assert register_images(store, rows) is not None
    assert register_images(store, [{**rows[0], "eval_run_id": "another run"}]) is None
    assert connect(store).execute("SELECT count(*) FROM images").fetchone()[0] == 1
    with pytest.raises(StoreError, match="role 'sr'"):
        register_images(store, [_img("b", "sr", "g1")])
    with pytest.raises(StoreError, match="field 'item' is empty"):
        register_images(store, [_img("b", "gt", "")])


def test_views_exist_on_an_empty_store(tmp_path):
    con = connect(Store(tmp_path / "s"))
    for view in ("images", "eval_fr_multigt", "eval_gold", "runs_eval"):
        assert con.execute(f"SELECT count(*) FROM {view}").fetchone()[0] == 0
