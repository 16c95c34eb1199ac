"""Scoring engine and agreement: real metrics, real votes, independent recomputation."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import pandas as pd
import pyiqa
import pytest
import torch
from scipy.stats import binomtest

from bench.errors import StudyError, WeightsMissing
from bench.manifests import schema
from bench.metrics.factory import create
from bench.metrics.table import get, select
from bench.scoring.engine import _score_stack, score_manifest
from bench.scoring.options import Shard
from bench.store import Store
from bench.store.views import agreement, connect
from tests.cli import cli as _cli

CLI = [sys.executable, "-m", "bench.cli"]


@pytest.fixture(scope="module")
def sr2afc_store(sr2afc_scored):
    return sr2afc_scored


def _independent_agreement(sr2afc_root: Path, metric: str) -> dict:
    """From the raw votes.csv and raw pyiqa scores only (no bench code)."""
    m = pyiqa.create_metric(metric, device="cpu")
    sign = -1 if m.lower_better else 1
    score = {}
    pair_votes = defaultdict(lambda: defaultdict(int))
    with open(sr2afc_root / "votes.csv") as fh:
        for row in csv.DictReader(fh):
            key = tuple(sorted((row["left"], row["right"])))
            pair_votes[key][row["selected"]] += 1
    for key in pair_votes:
        for name in key:
            if name not in score:
                score[name] = float(m(str(sr2afc_root / "sr" / name)).item())
    strict = half = 0.0
    n_decided = 0
    votes_for = votes_all = 0.0
    for (a, b), v in pair_votes.items():
        sa, sb = sign * score[a], sign * score[b]
        mp = "a" if sa > sb else "b" if sa < sb else "tie"
        hp = "a" if v[a] > v[b] else "b" if v[a] < v[b] else "tie"
        if hp != "tie":
            n_decided += 1
            strict += mp == hp
            half += 1.0 if mp == hp else 0.5 if mp == "tie" else 0.0
        votes_for += v[a] if mp == "a" else v[b] if mp == "b" else (v[a] + v[b]) / 2
        votes_all += v[a] + v[b]
    ci = binomtest(int(strict), n_decided).proportion_ci(confidence_level=0.95, method="wilson")
    return {"n_pairs": len(pair_votes), "n_decided": n_decided, "strict_acc": strict / n_decided,
            "tie_half_acc": half / n_decided, "vote_agreement": votes_for / votes_all,
            "strict_ci_lo": ci.low, "strict_ci_hi": ci.high, "scores": score}


@pytest.mark.parametrize("metric", ["piqe", "entropy"])
def test_sr2afc_agreement_matches_independent_recomputation(sr2afc_store, sr2afc_root, metric):
    store_dir, _ = sr2afc_store
    rows = json.loads(_cli("agree", "--store", str(store_dir), "--json").stdout)
    row = next(r for r in rows if r["metric"] == metric)
    for key in ("dataset", "split", "metric", "n_pairs", "n_decided", "strict_acc", "tie_half_acc", "vote_agreement",
                "strict_ci_lo", "strict_ci_hi"):
        assert key in row
    ref = _independent_agreement(sr2afc_root, metric)
    assert row["n_pairs"] == ref["n_pairs"] == 60 and row["n_decided"] == 60
    for key in ("strict_acc", "tie_half_acc", "vote_agreement", "strict_ci_lo", "strict_ci_hi"):
        assert row[key] == pytest.approx(ref[key], abs=1e-9), key
    # the stored raw scores are pyiqa's own scores of the files
    con = connect(Store(store_dir))
    stored = con.execute("SELECT s.score, p.image_a FROM pairs p JOIN scores s ON s.image_id = p.image_a_id "
                         "WHERE s.metric = ?", [metric]).df()
    for score, rel in zip(stored["score"], stored["image_a"]):
        assert score == pytest.approx(ref["scores"][Path(rel).name], rel=1e-5)


def test_each_image_scored_once_and_rerun_skips(sr2afc_store):
    store_dir, manifest = sr2afc_store
    con = connect(Store(store_dir))
    counts = con.execute("SELECT metric, count(*) n, count(DISTINCT image_id) u FROM scores_raw GROUP BY metric").df()
    assert set(counts["n"]) == {40} and set(counts["u"]) == {40}  # 60 pairs cite 40 images
    out = _cli("score", "--manifest", str(manifest), "--metrics", "piqe,entropy", "--store", str(store_dir)).stdout
    assert out.count("scored 0 (ok 0, error 0, nan 0), skipped 40 already stored") == 2
    runs = con.execute("SELECT run_id, config, versions, git_commit, device_name FROM runs").df()
    assert len(runs) >= 1
    v = json.loads(runs["versions"].iloc[0])
    assert v["pyiqa"] == pyiqa.__version__ and v["torch_build"] == torch.__version__


def test_query_cli(sr2afc_store):
    store_dir, _ = sr2afc_store
    rows = json.loads(_cli("query", "--store", str(store_dir), "SELECT count(*) AS n FROM pairs", "--json").stdout)
    assert rows == [{"n": 60}]
    bad = _cli("query", "--store", str(store_dir), "SELECT nope FROM pairs", check=False)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "query failed" in bad.stderr


def test_failing_image_becomes_a_row_and_the_run_continues(tmp_path, sample_manifest):
    from tests.conftest import copy_sample_images

    # a private copy of the images with one file corrupted after the manifest was built
    df, copy = copy_sample_images(sample_manifest, tmp_path / "copy")
    victim = df["image_a"].iloc[0]
    (copy / victim).write_bytes(b"\x89PNG\r\n\x1a\n this is not an image")
    m = schema.read(sample_manifest, root=copy)
    store = Store(tmp_path / "store")
    _, (summary,) = score_manifest(m, [get("piqe")], store, workers=0, batch_size=4)
    n_images = len(set(df["image_a_id"]) | set(df["image_b_id"]))
    assert summary.error == 1 and summary.ok == n_images - 1
    bad = connect(store).execute("SELECT status, error FROM scores WHERE status <> 'ok'").df()
    assert list(bad["status"]) == ["error"] and bad["error"].iloc[0].startswith("changed: file content hash")


class _NaNOnSecond(torch.nn.Module):
    """Stand-in metric for the engine's NaN/exception handling (never stored as a score)."""

    def forward(self, x):
        if x.shape[0] > 1:
            raise RuntimeError("simulated OOM for batches")
        return torch.tensor([float("nan")]) if x.mean() > 0.5 else x.mean().reshape(1)


def test_engine_splits_failing_batches_and_flags_nan():
    """The engine's batch scorer (the path every run takes): a failing batch of two is split into single
    images, each scored on its own; a NaN is a 'nan' row, not a score. (Decode failures become error rows
    before scoring: tests/test_scoring_faults.py and the NUL-byte test of tests/test_issue18_errors.py.)"""
    (dark, *_), (bright, *_) = got = _score_stack(_NaNOnSecond(), [torch.zeros(3, 4, 4), torch.ones(3, 4, 4)],
                                                  None, "cpu", 0, 2)
    assert [g[1:3] for g in got] == [("ok", None), ("nan", "non-finite score nan")]
    assert dark == 0.0 and bright is None


def test_kill9_then_rerun_gives_the_uninterrupted_table(tmp_path, sample_manifest, niqe_plumbing_params):
    reference = Store(tmp_path / "ref")
    score_manifest(schema.read(sample_manifest), select("niqe,piqe"), reference, workers=0, batch_size=2)
    ref = connect(reference).execute("SELECT image_id, metric, score FROM scores ORDER BY ALL").df()

    target = tmp_path / "killed"
    args = ["score", "--manifest", str(sample_manifest), "--metrics", "niqe,piqe", "--store", str(target),
            "--workers", "0", "--batch-size", "2", "--flush-rows", "4"]
    proc = subprocess.Popen([*CLI, *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline:
        parts = [p for p in (target / "scores").glob("part-*.parquet") if "empty" not in p.name] if target.exists() else []
        if len(parts) >= 3:
            break
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    partial = connect(Store(target)).execute("SELECT count(*) FROM scores_raw").fetchall()[0][0]
    assert 0 < partial < len(ref), "the kill must land mid-run for this test to mean anything"
    _cli(*args)
    con = connect(Store(target))
    assert con.execute("SELECT count(*) FROM scores_raw").fetchall()[0][0] == len(ref)
    dup = con.execute("SELECT count(*) FROM (SELECT image_id, metric, config_hash FROM scores_raw GROUP BY ALL "
                      "HAVING count(*) > 1)").fetchall()[0][0]
    assert dup == 0
    got = con.execute("SELECT image_id, metric, score FROM scores ORDER BY ALL").df()
    pd.testing.assert_frame_equal(got, ref)


def test_shards_cover_everything_once_without_merge(tmp_path, sample_manifest):
    m = schema.read(sample_manifest)
    single, sharded = Store(tmp_path / "single"), Store(tmp_path / "sharded")
    score_manifest(m, [get("piqe")], single, workers=0)
    for i in range(3):
        score_manifest(m, [get("piqe")], sharded, workers=0, shard=Shard(i, 3))
    con = connect(sharded)
    per_rank = con.execute("SELECT count(DISTINCT run_id) FROM scores_raw").fetchall()[0][0]
    assert per_rank == 3
    assert con.execute("SELECT count(*) = count(DISTINCT image_id) FROM scores_raw").fetchall()[0][0]
    a, b = agreement(single), agreement(sharded)
    pd.testing.assert_frame_equal(a.drop(columns=["config_hash"]), b.drop(columns=["config_hash"]))


def test_shard_from_launcher_env(monkeypatch):
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "3")
    assert Shard.parse(None) == Shard(1, 3)
    assert Shard.parse("2/4") == Shard(2, 4)
    with pytest.raises(StudyError, match="expected i/n"):
        Shard.parse("2-4")


@pytest.mark.timeout(60)
def test_missing_weights_fail_fast_with_one_actionable_line():
    with pytest.raises(WeightsMissing) as err:
        create(get("musiq"))
    msg = str(err.value)
    assert "\n" not in msg
    assert "'musiq'" in msg and "musiq_koniq_ckpt-e95806b9.pth" in msg
    assert str(Path(os.environ["TORCH_HOME"]) / "hub" / "pyiqa") in msg


def test_unavailable_metric_is_reported_not_a_crash(tmp_path, sample_manifest):
    out = _cli("score", "--manifest", str(sample_manifest), "--metrics", "musiq,piqe", "--store", str(tmp_path / "s"),
               "--workers", "0").stdout
    assert "  1 metric unavailable here (weights missing, no network): musiq; `iqa-study weights status --missing`" in out
    assert "piqe                   scored 78" in out


def test_decode_workers_default_to_none_on_cpu_and_scale_with_cpus_per_rank_on_gpu(sample_manifest, tmp_path,
                                                                                    monkeypatch):
    """On CPU, decoding workers compete with torch's threads for the same cores (reports/perf), so the
    default is in-process decoding; the value used is recorded in the run's config."""
    from bench.scoring.options import auto_workers

    assert auto_workers("cpu") == 0
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(16)))  # CPUs this process may use
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "8")
    assert auto_workers("cuda:3") == 2  # 16 CPUs shared by 8 ranks on the node
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "1")
    assert auto_workers("cuda:0") == 4
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0})
    assert auto_workers("cuda:0") == 1
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "eight")
    with pytest.raises(StudyError, match="LOCAL_WORLD_SIZE='eight': expected an integer"):
        auto_workers("cuda:0")
    monkeypatch.undo()
    m = schema.read(sample_manifest).head(4)  # a few pairs: the recorded value is what is checked
    run, (summary,) = score_manifest(m, [get("entropy")], Store(tmp_path / "store"), device="cpu")
    assert run["config"]["workers"] == 0 and summary.ok > 0
