"""`iqa-study score --images DIR [--ref DIR]`: one-line scoring without a manifest, and option errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyiqa
import pytest
from PIL import Image

from bench.cli import main


def _images(tmp: Path, n: int = 3) -> tuple[Path, Path]:
    """n noisy 'SR' images in sr/ and their references (same names) in hr/."""
    rng = np.random.default_rng(7)
    (tmp / "sr").mkdir()
    (tmp / "hr").mkdir()
    yy, xx = np.mgrid[0:72, 0:64] / 72
    for i in range(n):
        hr = np.stack([np.sin((5 + i) * xx + c) * np.cos(3 * yy + i) for c in range(3)], axis=2) * 0.45 + 0.5
        sr = np.clip(hr + rng.normal(0, 0.03 * (i + 1), hr.shape), 0, 1)
        for folder, arr in (("hr", hr), ("sr", sr)):
            Image.fromarray((arr * 255).round().astype(np.uint8)).save(tmp / folder / f"im{i}.png")
    return tmp / "sr", tmp / "hr"


def _score_json(capsys, *args: str) -> list[dict]:
    capsys.readouterr()
    assert main(["score", *args, "--format", "json", "--workers", "0"]) == 0
    return json.loads(capsys.readouterr().out)


def test_score_images_nr_and_fr_equal_pyiqa_called_directly(tmp_path, capsys):
    sr, hr = _images(tmp_path)
    rows = _score_json(capsys, "--images", str(sr), "--ref", str(hr), "--metrics", "piqe,psnr",
                       "--store", str(tmp_path / "store"))
    piqe = pyiqa.create_metric("piqe", device="cpu")
    psnr = pyiqa.create_metric("psnr", crop_border=4, device="cpu")
    assert [r["image"] for r in rows] == ["im0.png", "im1.png", "im2.png"]
    for r in rows:
        assert r["piqe"] == pytest.approx(piqe(str(sr / r["image"])).item(), abs=1e-6)
        assert r["psnr"] == pytest.approx(psnr(str(sr / r["image"]), str(hr / r["image"])).item(), abs=1e-6)
    assert rows[0]["psnr"] > rows[2]["psnr"]  # more noise, lower PSNR
    # a rerun reads the stored scores back (nothing rescored) and prints the same table as CSV
    capsys.readouterr()
    assert main(["score", "--images", str(sr), "--ref", str(hr), "--metrics", "piqe,psnr", "--store",
                 str(tmp_path / "store"), "--format", "csv", "--workers", "0"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == "image,piqe,psnr" and len(out.splitlines()) == 4


def test_score_images_on_set5_equals_pyiqa(tmp_path, capsys):
    from tests.conftest import shared_path

    set5 = shared_path("set5")
    sr = tmp_path / "sr"
    sr.mkdir()
    for name in ("bird.png", "butterfly.png"):
        with Image.open(set5 / "hr" / name) as h, Image.open(set5 / "lr_blind_x4" / name) as lr:
            lr.convert("RGB").resize(h.size, Image.Resampling.BICUBIC).save(sr / name)
    rows = _score_json(capsys, "--images", str(sr), "--ref", str(set5 / "hr"), "--metrics", "entropy,psnr",
                       "--store", str(tmp_path / "store"))
    entropy = pyiqa.create_metric("entropy", device="cpu")
    psnr = pyiqa.create_metric("psnr", crop_border=4, device="cpu")
    for r in rows:
        assert r["entropy"] == pytest.approx(entropy(str(sr / r["image"])).item(), abs=1e-6)
        assert r["psnr"] == pytest.approx(psnr(str(sr / r["image"]), str(set5 / "hr" / r["image"])).item(), abs=1e-6)


@pytest.mark.parametrize("args, message", [
    (["--max-pixels", "-5"], "--max-pixels -5: expected an integer >= 1"),
    (["--workers", "-1"], "--workers -1: expected an integer >= 0"),
    (["--batch-size", "0"], "--batch-size 0: expected an integer >= 1"),
    (["--metrics", ""], "--metrics is empty"),
    (["--metrics", " , "], "--metrics is empty"),
    (["--device", "cuda"], "--device cuda: CUDA is not available here"),
    (["--pixel-cap", "lots"], "--pixel-cap 'lots': expected an integer >= 0 or 'auto'"),
])
def test_bad_score_options_are_one_line_errors_and_store_nothing(tmp_path, capsys, args, message, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # the same answer on a GPU machine
    sr, _ = _images(tmp_path, n=1)
    store = tmp_path / "store"
    assert main(["score", "--images", str(sr), "--metrics", "piqe", "--store", str(store), *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("iqa-study: error: ") and message in err and err.count("\n") == 1
    assert not store.exists() or not list((store / "scores").glob("part-*-r*.parquet"))


def test_wrong_root_is_refused_before_anything_is_stored(tmp_path, capsys, sample_manifest):
    store = tmp_path / "store"
    empty = tmp_path / "elsewhere"
    empty.mkdir()
    assert main(["score", "--manifest", str(sample_manifest), "--root", str(empty), "--metrics", "piqe",
                 "--store", str(store), "--workers", "0"]) == 2
    err = capsys.readouterr().err
    assert "none of the" in err and "wrong --root?" in err and err.count("\n") == 1
    assert not list((store / "scores").glob("part-*-r*.parquet")) if store.exists() else True
    assert main(["score", "--manifest", str(sample_manifest), "--root", str(tmp_path / "missing"), "--metrics",
                 "piqe", "--store", str(store)]) == 2
    assert "not a directory" in capsys.readouterr().err


def test_unavailable_metrics_are_one_summary_line(tmp_path, capsys):
    sr, _ = _images(tmp_path, n=1)
    assert main(["score", "--images", str(sr), "--metrics", "musiq,nima,topiq_nr,piqe", "--store",
                 str(tmp_path / "s"), "--workers", "0", "--allow-missing"]) == 0
    out = capsys.readouterr().out
    lines = [ln for ln in out.splitlines() if "unavailable here" in ln]
    assert lines == [("  3 metrics unavailable here (weights missing, no network): musiq, nima, topiq_nr; "
                      "`iqa-study weights status --missing` lists why")]
    assert "piqe                   scored 1 (ok 1" in out


def test_a_fully_cached_rerun_writes_nothing_and_two_calls_of_one_run_keep_their_parts(tmp_path):
    """A rerun with every key stored must not write (so it works on a read-only store: tests run as
    root, where chmod does not stop writes, so the store's files are compared instead); two
    ``score_refs`` calls with one run id must not overwrite each other's parts."""
    import numpy as np
    from PIL import Image

    from bench.metrics.table import get
    from bench.scoring.engine import score_refs
    from bench.scoring.folder import score_folder
    from bench.scoring.options import ScoreOptions
    from bench.store import Store

    rng = np.random.default_rng(3)
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(imgs / f"{i}.png")
    store = Store(tmp_path / "store")
    score_folder(imgs, [get("entropy")], store, workers=0)
    files = sorted(p for p in store.root.rglob("*") if p.is_file())
    stamps = {p: p.stat().st_mtime_ns for p in files}
    run, summaries, _, _ = score_folder(imgs, [get("entropy")], store, workers=0)
    assert summaries[0].skipped_existing == 3 and summaries[0].scored == 0
    after = sorted(p for p in store.root.rglob("*") if p.is_file())
    assert after == files and all(p.stat().st_mtime_ns == stamps[p] for p in files)

    from bench.scoring.folder import refs_from_folder

    refs, _, _ = refs_from_folder(imgs, None)
    run = {"run_id": "same-run"}
    other = Store(tmp_path / "other")
    score_refs(refs[:2], [get("entropy")], other, run=run, options=ScoreOptions.resolve(workers=0, progress=False))
    score_refs(refs[2:], [get("entropy")], other, run=run, options=ScoreOptions.resolve(workers=0, progress=False))
    from bench.store.views import connect

    assert connect(other).execute("SELECT count(*) FROM scores WHERE metric = 'entropy'").fetchone()[0] == 3


def test_stored_failures_are_skipped_with_a_summary_and_rescored_with_retry_failed(tmp_path, capsys, sample_manifest,
                                                                                  monkeypatch):
    """`score --manifest` reruns: a permanent failure is not retried (the summary says how many were
    skipped and how to retry), `--retry-failed` re-scores it, and a fully cached rerun succeeds on a
    store that cannot be written."""
    from tests.conftest import copy_sample_images

    df, copy = copy_sample_images(sample_manifest, tmp_path / "copy")
    victim = copy / df["image_a"].iloc[0]
    victim.write_bytes(victim.read_bytes()[:200])  # truncated after the manifest was built: a permanent error
    n_images = len(set(df["image_a_id"]) | set(df["image_b_id"]))
    args = ["score", "--manifest", str(sample_manifest), "--root", str(copy), "--metrics", "piqe",
            "--store", str(tmp_path / "store")]
    assert main(args) == 0
    assert f"scored {n_images} (ok {n_images - 1}, error 1" in capsys.readouterr().out
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "1 stored failures skipped (--retry-failed re-scores them)" in out and "scored 0" in out
    assert main([*args, "--retry-failed"]) == 0
    assert "scored 1 (ok 0, error 1" in capsys.readouterr().out
    store = str(tmp_path / "store")
    assert main(["query", "--store", store, "SELECT versions, device_name FROM runs", "--json"]) == 0
    runs = json.loads(capsys.readouterr().out)
    assert len(runs) == 2 and all(json.loads(r["versions"])["pyiqa"] == pyiqa.__version__ for r in runs)  # scored-nothing rerun: no record
    assert main(["query", "--store", store, "SELECT nope FROM pairs"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "query failed" in err

    import bench.atomic

    def read_only(*a, **k):
        raise OSError(30, "Read-only file system")

    monkeypatch.setattr(bench.atomic, "atomic_write", read_only)
    assert main(args) == 0  # nothing to score, nothing written
    assert f"skipped {n_images - 1} already stored" in capsys.readouterr().out
