"""Issue 19: inputs no check reached (synthetic data over real data, ...)."""

from __future__ import annotations

import json

import pytest

from bench.errors import StudyError


def test_train_data_synthetic_refuses_a_folder_holding_real_data(tmp_path, capsys):
    from bench.cli import main

    real = tmp_path / "hggt"
    (real / "images" / "original").mkdir(parents=True)
    (real / "labels" / "A").mkdir(parents=True)
    photo = real / "images" / "original" / "0001-0-0.png"
    label = real / "labels" / "A" / "0001-0-0.json"
    photo.write_bytes(b"real photo bytes")
    label.write_text(json.dumps({"Picture_1": {"Name": "0001-0-0.png"}}))
    assert main(["train-data", "synthetic", str(real), "--groups-per-photo", "1", "--size", "32"]) == 2
    err = capsys.readouterr().err.strip()
    assert "not an earlier SYNTHETIC set" in err and len(err.splitlines()) == 1
    assert photo.read_bytes() == b"real photo bytes" and json.loads(label.read_text()) == {
        "Picture_1": {"Name": "0001-0-0.png"}}
    assert not (real / "SYNTHETIC.md").exists() and not (real / "images" / "01").exists()


def test_train_data_synthetic_rebuilds_its_own_output_and_an_interrupted_build(tmp_path, monkeypatch):
    from sr_training.data import synthetic

    out = tmp_path / "s"
    synthetic.build_synthetic_hggt(out, groups_per_photo=1, size=32)
    first = sorted(p.relative_to(out) for p in out.rglob("*.png"))
    assert first and not (out / synthetic.BUILDING).exists()
    synthetic.build_synthetic_hggt(out, groups_per_photo=1, size=32)  # its own output: rebuilt in place
    assert sorted(p.relative_to(out) for p in out.rglob("*.png")) == first

    interrupted = tmp_path / "i"

    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(synthetic, "enhance", boom)
    with pytest.raises(KeyboardInterrupt):
        synthetic.build_synthetic_hggt(interrupted, groups_per_photo=1, size=32)
    assert (interrupted / synthetic.BUILDING).exists() and not (interrupted / "SYNTHETIC.md").exists()
    monkeypatch.undo()
    synthetic.build_synthetic_hggt(interrupted, groups_per_photo=1, size=32)  # recognised as its own
    assert (interrupted / "SYNTHETIC.md").exists()
    with pytest.raises(StudyError, match="exists and is not a folder"):
        synthetic.build_synthetic_hggt(out / "SYNTHETIC.md")


# --- images replaced after the manifest was built --------------------------------------------------


@pytest.mark.timeout(120)
def test_fifo_dev_zero_and_outside_symlinks_are_one_error_row_each(sample_manifest, tmp_path):
    import os
    import shutil

    from bench.metrics.table import get
    from bench.scoring.engine import score_manifest
    from bench.store import Store
    from tests.conftest import copy_sample_images

    df, root = copy_sample_images(sample_manifest, tmp_path / "root")
    attrs = df.attrs
    df = df.head(4).copy()  # a few pairs are enough (entropy on every sample image takes long on CPU)
    df.attrs = attrs | {"iqa_study": attrs["iqa_study"] | {"root": str(root)}}
    rels = sorted(set(df["image_a"]) | set(df["image_b"]))
    fifo, zero, outside = rels[0], rels[1], rels[2]
    (root / fifo).unlink()
    os.mkfifo(root / fifo)  # opening it for reading would block until a writer comes: forever
    (root / zero).unlink()
    (root / zero).symlink_to("/dev/zero")  # reading it to the end: MemoryError
    elsewhere = tmp_path / "elsewhere.png"
    shutil.move(root / outside, elsewhere)  # the same bytes (hash matches), but outside the root
    (root / outside).symlink_to(elsewhere)
    _, (s,) = score_manifest(df, [get("entropy")], Store(tmp_path / "s"), workers=0, progress=False,
                             device="cpu")
    assert (s.ok, s.error) == (len(rels) - 3, 3)
    errors = " | ".join(s.first_errors)
    assert f"not a regular file: {root / fifo} is a FIFO" in errors
    assert f"outside the root: {root / zero} resolves to /dev/zero" in errors
    assert f"outside the root: {root / outside} resolves to {elsewhere}" in errors


def test_read_bytes_bounds_the_size(tmp_path):
    from bench.scoring.images import DecodeError, read_bytes

    p = tmp_path / "x.png"
    p.write_bytes(b"0123456789")
    assert read_bytes(p, tmp_path, limit=10) == b"0123456789"
    with pytest.raises(DecodeError, match="too large: .* is 10 bytes, more than the 9"):
        read_bytes(p, limit=9)
    with pytest.raises(DecodeError, match="not a regular file: .* is a folder"):
        read_bytes(tmp_path)
    (tmp_path / "zero.png").symlink_to("/dev/zero")  # no root to check (a folder scored as given)
    with pytest.raises(DecodeError, match="not a regular file: .*zero.png is a device"):
        read_bytes(tmp_path / "zero.png")


# --- reserved manifest columns -----------------------------------------------------------------------


def _vote_csv(folder, votes, extra=""):
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(("a.png", "b.png")):
        Image.fromarray(np.full((8, 8, 3), 40 + 100 * i, np.uint8)).save(folder / name)
    head = "image_a,image_b,votes_a,votes_b" + (f",{extra}" if extra else "")
    row = f"a.png,b.png,{votes[0]},{votes[1]}" + (",true" if extra else "")
    (folder / "votes.csv").write_text(f"{head}\n{row}\n")
    return folder / "votes.csv"


@pytest.mark.parametrize("column", ["current", "manifest_id", "registered_at", "root", "synthetic"])
def test_a_csv_column_named_like_a_store_column_is_refused_at_import(column, tmp_path, capsys):
    from bench.cli import main

    csv = _vote_csv(tmp_path / "d", (3, 1), extra=column)
    assert main(["manifest", "build", "pairs-csv", str(csv), "--root", str(tmp_path / "d"), "-o",
                 str(tmp_path / "m.parquet")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(csv) in err and f"['{column}'] are reserved" in err
    assert not (tmp_path / "m.parquet").exists()


def test_a_stale_current_column_never_overrides_the_views_own(tmp_path):
    """A pair part holding a 'current' column (registered before the check) and a --replace registration:
    the newest registration is current, whatever the old part's column says."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from bench.errors import StoreError
    from bench.manifests import votes
    from bench.store import Store
    from bench.store.views import connect

    store = Store(tmp_path / "s")
    old = votes.pairs_csv(_vote_csv(tmp_path / "old", (3, 1)), tmp_path / "old", dataset="d")
    mid = store.register_manifest(old)
    part = store.root / "pairs" / f"{mid}.parquet"
    table = pq.read_table(part)
    pq.write_table(table.append_column("current", pa.array([True] * len(table))), part)
    with pytest.raises(StoreError, match=r"\['current'\] are reserved"):
        store.register_manifest(old.assign(current=True), replace=True)
    new = votes.pairs_csv(_vote_csv(tmp_path / "new", (0, 4)), tmp_path / "new", dataset="d")
    new_id = store.register_manifest(new, replace=True)
    con = connect(store)
    assert con.execute("SELECT manifest_id, votes_a, votes_b FROM pairs").fetchall() == [(new_id, 0, 4)]
    assert sorted(con.execute("SELECT manifest_id, current FROM pairs_all").fetchall()) == sorted(
        [(mid, False), (new_id, True)])


# --- a truncated agreement cache ------------------------------------------------------------------


def test_a_truncated_agreement_cache_is_rebuilt_and_store_check_reports_it(tmp_path, capsys, caplog):
    import logging

    from bench.cli import main
    from bench.manifests import votes
    from bench.store import Store
    from bench.store.views import agreement
    from tests.test_evaluate import _score

    store = Store(tmp_path / "s")
    m = votes.pairs_csv(_vote_csv(tmp_path / "d", (3, 1)), tmp_path / "d", dataset="d")
    store.register_manifest(m)
    a, b = m["image_a_id"].iloc[0], m["image_b_id"].iloc[0]
    store.write_scores([_score(a, None, "entropy", 5.0), _score(b, None, "entropy", 4.0)], "fixture", 0, 0)
    before = agreement(store)
    assert before["strict_acc"].tolist() == [1.0]
    (cached,) = (store.root / "cache").glob("agreement-*.parquet")
    cached.write_bytes(cached.read_bytes()[:40])  # a kill or a full disk mid-write

    assert main(["store", "check", "--store", str(store.root)]) == 0
    out = capsys.readouterr().out
    assert f"cache/{cached.name}: not a readable Parquet file" in out and "the next agree rebuilds it" in out

    with caplog.at_level(logging.WARNING, logger="bench.store"):
        after = agreement(store)
    assert after.equals(before)
    assert any("cache entry" in r.getMessage() and "unreadable" in r.getMessage() and "rebuild" in r.getMessage()
               for r in caplog.records)  # one note (bench.store.cache._note), then rebuilt
    from bench.store.parts import footer_problem

    assert footer_problem(cached, full=True)[0] is None  # rebuilt in place
    assert main(["store", "check", "--store", str(store.root)]) == 0
    assert "every Parquet file reads completely" in capsys.readouterr().out


# --- a truncated weight file for one metric ---------------------------------------------------------


def test_a_truncated_weight_file_makes_that_metric_unavailable_and_the_others_score(tmp_path, capsys):
    import io

    import numpy as np
    import torch
    from PIL import Image

    from bench.cli import main
    from bench.metrics import weights
    from bench.metrics.table import get

    target = weights.locate(get("brisque").weights[0])  # hub/pyiqa/brisque_svm_weights.pth (test cache)
    assert not target.exists()
    buf = io.BytesIO()
    torch.save({"sv": torch.zeros(3, 36)}, buf)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])  # a download cut in half
    try:
        folder = tmp_path / "imgs"
        folder.mkdir()
        Image.fromarray(np.random.default_rng(0).integers(0, 256, (48, 48, 3), dtype=np.uint8)).save(folder / "x.png")
        rc = main(["score", "--images", str(folder), "--metrics", "brisque,entropy", "--store", str(tmp_path / "s"),
                   "--device", "cpu", "--workers", "0", "--allow-missing"])
        out, err = capsys.readouterr()
        assert rc == 0, err
        line = next(x for x in (out + err).splitlines() if "brisque" in x and "do not load" in x)
        assert "PytorchStreamReader" in line or "central directory" in line or "zip" in line.lower()
        assert str(target) in line
        import duckdb

        from bench.store import Store

        rows = duckdb.connect().execute("SELECT metric, status FROM read_parquet(?)",
                                        [Store(tmp_path / "s").score_glob()]).fetchall()
        assert rows == [("entropy", "ok")]  # the other metric was scored, brisque stored nothing
    finally:
        target.unlink()


# --- small ones -----------------------------------------------------------------------------------


def test_hggt_label_json_whose_top_level_is_a_list_is_one_line(tmp_path, capsys):
    from bench.cli import main
    from tests.hggt_fixture import make_hggt

    labs = {a: ["Positive", "Negative", "Similar", "Positive"] for a in "ABC"}
    root = make_hggt(tmp_path / "h", {"g1": labs}, size=16, batch=None)
    bad = root / "labels" / "B" / "g1.json"
    bad.write_text(json.dumps([{"Picture_2": {"Label": "Positive"}}]))
    assert main(["manifest", "build", "hggt", str(root), "-o", str(tmp_path / "m.parquet")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"{bad}: the top level is a JSON list, expected an object" in err


def test_register_replace_of_a_moved_manifest_records_the_new_root(tmp_path, capsys):
    import shutil

    from bench.cli import main
    from bench.manifests import schema, votes
    from bench.store import Store
    from bench.store.views import connect

    old_root = tmp_path / "old"
    m = votes.pairs_csv(_vote_csv(old_root, (3, 1)), old_root, dataset="d")
    path = schema.write(m, tmp_path / "m.parquet")
    store = tmp_path / "s"
    assert main(["store", "register", str(path), "--store", str(store)]) == 0
    assert "registered (1 pairs)" in capsys.readouterr().out
    assert main(["store", "register", str(path), "--store", str(store)]) == 0
    assert "already registered (1 pairs)" in capsys.readouterr().out  # the same manifest again: nothing to do
    new_root = tmp_path / "moved"
    shutil.move(old_root, new_root)
    moved = schema.write(schema.read(path, root=new_root), tmp_path / "m2.parquet")
    assert main(["store", "register", str(moved), "--store", str(store)]) == 0
    out = capsys.readouterr().out
    assert f"with image root {old_root.resolve()}; this manifest's root is {new_root.resolve()}: --replace" in out
    assert main(["store", "register", str(moved), "--store", str(store), "--replace"]) == 0
    out = capsys.readouterr().out
    assert f"re-registered (1 pairs): image root {old_root.resolve()} -> {new_root.resolve()}" in out
    assert connect(Store(store)).execute("SELECT root FROM pairs").fetchall() == [(str(new_root.resolve()),)]
