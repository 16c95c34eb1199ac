"""The store: registration, views, bad parts, read-only queries, the agreement cache (small generated stores)."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import math

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from bench.atomic import atomic_write_table
from bench.cli import main
from bench.errors import StoreError
from bench.store import Store
from bench.store.layout import SCORE_SCHEMA
from bench.store.views import agreement, connect

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def _manifest(votes: list[tuple[int, int]], dataset: str = "d", start: int = 0, kind: list[str] | None = None,
              split: str = "test") -> pd.DataFrame:
    n = len(votes)
    va = [v[0] for v in votes]
    vb = [v[1] for v in votes]
    df = pd.DataFrame({
        "pair_id": [f"p{start + i}" for i in range(n)], "dataset": dataset, "split": split,
        "group": [f"g{start + i}" for i in range(n)],
        "image_a": [f"a{start + i}.png" for i in range(n)], "image_b": [f"b{start + i}.png" for i in range(n)],
        "votes_a": va, "votes_b": vb,
        "pref": ["a" if a > b else "b" if a < b else "tie" for a, b in zip(va, vb)],
        "image_a_id": [f"A{start + i}" for i in range(n)], "image_b_id": [f"B{start + i}" for i in range(n)],
    })
    if kind is not None:
        df["kind"] = kind
    return df


def _rows(scores: dict[str, float], metric: str = "m", ref_id: str | None = None, at: dt.datetime = T0,
          lower_better: bool = False, run: str = "r1") -> list[dict]:
    return [{"image_id": k, "ref_id": ref_id, "metric": metric, "config_hash": f"cfg-{metric}", "metric_config": "{}",
             "score": v, "status": "ok", "error": None, "lower_better": lower_better, "random_init": False,
             "input_h": 8, "input_w": 8, "input_policy": "native", "batch_size": 1, "seconds": 0.0,
             "device": "cpu", "dtype": "float32", "pyiqa_version": "x", "torch_version": "x", "run_id": run,
             "written_at": at} for k, v in scores.items()]


def _scores_for(n: int, a_wins: list[bool], start: int = 0) -> dict[str, float]:
    """Image scores such that the metric prefers image a of pair i iff a_wins[i]."""
    out = {}
    for i in range(n):
        out[f"A{start + i}"] = 1.0 if a_wins[i] else 0.0
        out[f"B{start + i}"] = 0.0 if a_wins[i] else 1.0
    return out


def _store_with(tmp_path, name="s", votes=((3, 0), (0, 3), (2, 1), (1, 2)), a_wins=(True, True, True, False)):
    store = Store(tmp_path / name)
    store.register(_manifest(list(votes)))
    store.write_scores(_rows(_scores_for(len(votes), list(a_wins))), "r1", 0, 0)
    return store


def _cli_json(capsys, *args) -> tuple[int, object]:
    rc = main(list(args))
    out = capsys.readouterr()
    return rc, (json.loads(out.out) if rc == 0 else out.err)


def test_agreement_numbers_and_cis_match_an_independent_computation(tmp_path):
    votes = [(3, 0), (0, 3), (2, 1), (1, 2), (2, 2), (5, 1), (1, 4)]
    a_wins = [True, True, True, False, True, False, False]
    store = Store(tmp_path / "s")
    store.register(_manifest(votes))
    scores = _scores_for(len(votes), a_wins)
    scores["A6"] = scores["B6"] = 0.5  # pair 6: a metric tie
    store.write_scores(_rows(scores), "r1", 0, 0)
    row = agreement(store).iloc[0]
    # by hand: human prefs a b a b tie a b; metric a a a b a b tie
    x = np.array([1, 0, 1, 1, 0, 0.5])  # per decided pair: right 1, wrong 0, metric tie 0.5
    assert row["n_pairs"] == 7 and row["n_decided"] == 6 and row["n_metric_ties"] == 1
    assert row["strict_acc"] == pytest.approx(3 / 6)
    assert row["tie_half_acc"] == pytest.approx(x.mean())
    half = 1.959963984540054 * x.std(ddof=1) / math.sqrt(6)
    assert (row["tie_half_ci_lo"], row["tie_half_ci_hi"]) == pytest.approx((x.mean() - half, x.mean() + half))
    y = np.array([3, 0, 2, 2, 2, 1, 2.5])  # votes for the metric's side (tie: half)
    tot = np.array([3, 3, 3, 3, 4, 6, 5])
    r = y.sum() / tot.sum()
    assert row["vote_agreement"] == pytest.approx(r)
    se = math.sqrt(((y - r * tot) ** 2).sum() / (7 * 6 * tot.mean() ** 2))
    assert (row["vote_ci_lo"], row["vote_ci_hi"]) == pytest.approx((r - 1.959963984540054 * se, r + 1.959963984540054 * se))


def test_quote_in_store_path(tmp_path, capsys):
    store = _store_with(tmp_path, name="it's a store")
    assert agreement(store).iloc[0]["strict_acc"] == pytest.approx(0.75)
    rc, rows = _cli_json(capsys, "query", "--store", str(store.root), "SELECT count(*) AS n FROM pair_scores", "--json")
    assert rc == 0 and rows == [{"n": 4}]
    rc, rows = _cli_json(capsys, "agree", "--store", str(store.root), "--json")
    assert rc == 0 and rows[0]["strict_acc"] == pytest.approx(0.75)
    ids = connect(store).execute("SELECT DISTINCT image_id FROM scores WHERE metric = 'm' AND config_hash = 'cfg-m'")
    assert {r[0] for r in ids.fetchall()} == {"A0", "A1", "A2", "A3", "B0", "B1", "B2", "B3"}


@pytest.mark.parametrize("content", [b"", b"PAR1 this is not parquet", "truncated"])
def test_bad_part_is_skipped_reported_and_quarantined(tmp_path, capsys, caplog, content):
    store = _store_with(tmp_path)
    bad = store.root / "scores" / "part-bad-r000-000000.parquet"
    if content == "truncated":
        good = next(p for p in (store.root / "scores").glob("part-r1-*.parquet"))
        bad.write_bytes(good.read_bytes()[:-20])
    else:
        bad.write_bytes(content)
    with caplog.at_level(logging.WARNING, logger="bench.store"):
        con = connect(store)
        assert con.execute("SELECT count(*) FROM scores_raw").fetchone()[0] == 8
    assert "scores/part-bad-r000-000000.parquet" in caplog.text
    assert agreement(store).iloc[0]["strict_acc"] == pytest.approx(0.75)
    rc = main(["store", "check", "--store", str(store.root), "--repair", "--json"])
    found = json.loads(capsys.readouterr().out)
    assert rc == 0 and [f["path"] for f in found] == ["scores/part-bad-r000-000000.parquet"]
    assert not bad.exists() and (store.root / "quarantine" / "scores" / bad.name).exists()


@pytest.mark.parametrize("sub", ["scores", "pairs"])
def test_a_part_with_corrupted_pages_and_an_intact_footer_is_skipped_not_a_crash(tmp_path, capsys, caplog, sub):
    """Bytes flipped inside the data pages (the footer still parses): the part is named and skipped on
    first sight (pages decoded, checksums verified), queries keep working, `store check --repair`
    quarantines it."""
    store = _store_with(tmp_path)
    if sub == "scores":
        extra = _rows({"A0": 9.0, "B0": 8.0}, run="r2", at=T0 + dt.timedelta(days=1))
        good = store.write_scores(extra, "r2", 0, 0)
    else:
        good = atomic_write_table(pa.Table.from_pandas(_manifest([(1, 1)] * 50, dataset="e"), preserve_index=False),
                                  store.root / "pairs" / "extra.parquet")
    data = bytearray(good.read_bytes())
    footer = int.from_bytes(data[-8:-4], "little") + 8
    for i in range(4, len(data) - footer, 7):  # every 7th byte of the pages, footer untouched
        data[i] ^= 0x5A
    good.write_bytes(bytes(data))
    import pyarrow.parquet as pq_

    assert pq_.ParquetFile(good).metadata.num_rows > 0  # the footer still reads: a footer check alone passes it
    with caplog.at_level(logging.WARNING, logger="bench.store"):
        con = connect(store)
        assert con.execute("SELECT count(*) FROM scores_raw").fetchone()[0] == 8
        assert con.execute("SELECT count(*) FROM pairs_all").fetchone()[0] == 4
    assert good.name in caplog.text
    assert agreement(store).iloc[0]["strict_acc"] == pytest.approx(0.75)
    rc = main(["store", "check", "--store", str(store.root), "--repair", "--json"])
    found = json.loads(capsys.readouterr().out)
    assert rc == 0 and [f["path"] for f in found] == [f"{sub}/{good.name}"]
    assert (store.root / "quarantine" / sub / good.name).exists()


def test_temp_files_are_never_read(tmp_path):
    from bench.atomic import temp_name

    store = _store_with(tmp_path)
    target = store.root / "pairs" / "x.parquet"
    assert not temp_name(target).name.endswith(".parquet") and temp_name(target).name.startswith(".")
    # leftovers of writers killed before the rename: the new naming and the old `.tmp-<uuid>-<name>.parquet`
    rogue = pa.Table.from_pandas(_manifest([(0, 9)] * 4), preserve_index=False)
    pq.write_table(rogue, temp_name(store.root / "pairs" / "y.parquet"))
    pq.write_table(rogue, store.root / "pairs" / ".tmp-0123abcd-z.parquet")
    pq.write_table(pa.Table.from_pylist(_rows({"A0": -5.0}, at=T0 + dt.timedelta(days=1)), schema=SCORE_SCHEMA),
                   temp_name(store.root / "scores" / "part-k-r000-000000.parquet"))
    con = connect(store)
    assert con.execute("SELECT count(*), sum(votes_a) FROM pairs_all").fetchone() == (4, 6)
    assert con.execute("SELECT min(score) FROM scores_raw").fetchone()[0] == 0.0


def test_conflicting_registration_is_refused_and_replace_makes_the_newest_win(tmp_path):
    store = Store(tmp_path / "s")
    v1 = _manifest([(3, 0), (0, 3), (2, 1)])
    v2 = _manifest([(0, 3), (0, 3), (2, 1)])  # pair p0 corrected
    id1, id2 = Store.manifest_id(v1), Store.manifest_id(v2)
    store.register(v1)
    with pytest.raises(StoreError) as err:
        store.register(v2)
    msg = str(err.value)
    assert "\n" not in msg and id1 in msg and id2 in msg and "--replace" in msg
    reg = store.register(v2, replace=True)
    assert reg.replaced == {id1: 1}
    con = connect(store)
    assert con.execute("SELECT votes_a, manifest_id FROM pairs WHERE pair_id = 'p0'").fetchone() == (0, id2)
    # and back: whichever content hash sorts first, the newest registration wins
    assert store.register(v1, replace=True).replaced == {id2: 1}
    assert connect(store).execute("SELECT votes_a, manifest_id FROM pairs WHERE pair_id = 'p0'").fetchone() == (3, id1)
    # re-registering the current content is a no-op; an agreeing overlap is no conflict
    assert not store.register(v1).new
    assert store.register(_manifest([(3, 0)])).replaced == {}


def test_agree_manifest_uses_that_manifests_pairs_and_votes(tmp_path, capsys):
    store = Store(tmp_path / "s")
    m1 = _manifest([(3, 0)] * 4)
    m2 = _manifest([(0, 3)] * 4, start=4)  # same dataset and split, other pairs
    store.register(m1)
    store.register(m2)
    store.write_scores(_rows({**_scores_for(4, [True] * 4), **_scores_for(4, [True] * 4, start=4)}), "r1", 0, 0)
    path = tmp_path / "m1.parquet"
    from bench.manifests import schema
    m1.attrs["iqa_study"] = {"dataset": "d", "synthetic": False, "root": str(tmp_path)}
    schema.write(m1, path)
    rc, rows = _cli_json(capsys, "agree", "--store", str(store.root), "--manifest", str(path), "--json")
    assert rc == 0 and len(rows) == 1 and rows[0]["n_pairs"] == 4 and rows[0]["strict_acc"] == 1.0
    rc, rows = _cli_json(capsys, "agree", "--store", str(store.root), "--json")
    assert rows[0]["n_pairs"] == 8 and rows[0]["strict_acc"] == 0.5


def test_agree_manifest_reports_that_manifests_corrected_votes_for_the_same_pairs(tmp_path, capsys):
    """v2 corrects the votes of pair p0 (same pair ids): `agree --manifest v2` must use v2's votes,
    `--manifest v1` v1's, and plain `agree` the newest registration; registering v2 over v1 without
    --replace is refused in one line."""
    from bench.manifests import schema

    store = Store(tmp_path / "s")
    v1 = _manifest([(3, 0)] * 4)
    v2 = _manifest([(0, 3), (3, 0), (3, 0), (3, 0)])  # p0 corrected
    store.register(v1)
    store.write_scores(_rows(_scores_for(4, [True] * 4)), "r1", 0, 0)  # the metric prefers a on every pair
    paths = {}
    for name, m in (("v1", v1), ("v2", v2)):
        m.attrs["iqa_study"] = {"dataset": "d", "synthetic": False, "root": str(tmp_path)}
        paths[name] = schema.write(m, tmp_path / f"{name}.parquet")
    rc, err = _cli_json(capsys, "agree", "--store", str(store.root), "--manifest", str(paths["v2"]), "--json")
    assert rc == 2 and "\n" not in err.strip() and "--replace" in err
    rc, rows = _cli_json(capsys, "agree", "--store", str(store.root), "--manifest", str(paths["v2"]), "--replace",
                         "--json")
    assert rc == 0 and rows[0]["n_pairs"] == 4 and rows[0]["strict_acc"] == 0.75
    rc, rows = _cli_json(capsys, "agree", "--store", str(store.root), "--manifest", str(paths["v1"]), "--json")
    assert rc == 0 and rows[0]["strict_acc"] == 1.0
    rc, rows = _cli_json(capsys, "agree", "--store", str(store.root), "--json")
    assert rc == 0 and rows[0]["n_pairs"] == 4 and rows[0]["strict_acc"] == 0.75  # newest registration wins


def test_ranks_creating_one_fresh_store_at_once_do_not_race(tmp_path):
    """torchrun ranks open the same new store together: every folder is created with exist_ok."""
    import threading

    root = tmp_path / "fresh"
    errors, go = [], threading.Barrier(8)

    def open_store():
        try:
            go.wait()
            Store(root).write_scores(_rows({"A0": 1.0}, run=f"r{threading.get_ident()}"),
                                     f"r{threading.get_ident()}", 0, 0)
        except Exception as exc:  # noqa: BLE001 - collected and asserted empty below
            errors.append(repr(exc))

    threads = [threading.Thread(target=open_store) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(list((root / "scores").glob("part-r*-r000-000000.parquet"))) == 8


def test_agree_json_on_an_empty_store_is_valid_json(tmp_path, capsys):
    Store(tmp_path / "s")
    rc, rows = _cli_json(capsys, "agree", "--store", str(tmp_path / "s"), "--json")
    assert rc == 0 and rows == []


def test_query_cannot_write_or_read_outside_the_store(tmp_path, capsys):
    store = _store_with(tmp_path)
    part = next((store.root / "scores").glob("part-r1-*.parquet"))
    before = hashlib.sha256(part.read_bytes()).hexdigest()
    outside = tmp_path / "secret.csv"
    outside.write_text("a\n1\n")
    attacks = [f"COPY (SELECT 1 AS x) TO '{part}' (FORMAT parquet)",
               f"COPY (SELECT 1 AS x) TO 'iqastore://{part}' (FORMAT parquet)",
               f"SELECT * FROM read_csv('{outside}')", f"SELECT * FROM read_csv('iqastore://{outside}')",
               "SET enable_external_access = true", f"ATTACH '{tmp_path / 'x.duckdb'}'"]
    for sql in attacks:
        rc = main(["query", "--store", str(store.root), sql])
        err = capsys.readouterr().err
        assert rc == 2 and err.startswith("iqa-study: error: query failed") and err.count("\n") == 1, sql
    assert hashlib.sha256(part.read_bytes()).hexdigest() == before
    assert not (tmp_path / "x.duckdb").exists()
    rc, rows = _cli_json(capsys, "query", "--store", str(store.root), "SELECT count(*) AS n FROM scores", "--json")
    assert rows == [{"n": 8}]


def test_agreement_cache_follows_new_parts(tmp_path):
    store = _store_with(tmp_path)
    assert agreement(store).iloc[0]["strict_acc"] == pytest.approx(0.75)
    assert len(list((store.root / "cache").glob("agreement-*.parquet"))) == 1
    # a later run re-scores image B3 so that pair p3 flips to 'a' (wrong: humans prefer b)
    store.write_scores(_rows({"B3": -1.0}, at=T0 + dt.timedelta(hours=1), run="r2"), "r2", 0, 0)
    assert agreement(store).iloc[0]["strict_acc"] == pytest.approx(0.5)
    assert len(list((store.root / "cache").glob("agreement-*.parquet"))) == 2
    # a moved-aside part changes the state too
    next((store.root / "scores").glob("part-r2-*.parquet")).unlink()
    assert agreement(store).iloc[0]["strict_acc"] == pytest.approx(0.75)


def test_full_reference_rows_do_not_enter_agreement(tmp_path):
    store = _store_with(tmp_path)
    before = agreement(store).iloc[0]
    # a newer full-reference score of the same images under the same metric/config key but with a reference
    store.write_scores(_rows(_scores_for(4, [False] * 4), ref_id="REF", at=T0 + dt.timedelta(hours=1)), "fr", 0, 0)
    after = agreement(store).iloc[0]
    assert after["strict_acc"] == before["strict_acc"] == pytest.approx(0.75)
    con = connect(store)
    assert con.execute("SELECT count(*) FROM scores").fetchone()[0] == 16  # one row per (image, ref, metric, config)


def test_inferred_pairs_excluded_unless_asked(tmp_path):
    store = Store(tmp_path / "s")
    store.register(_manifest([(3, 0), (3, 0), (0, 3), (0, 3)], kind=["human", "human", "inferred", "inferred"]))
    store.write_scores(_rows(_scores_for(4, [True] * 4)), "r1", 0, 0)
    default = agreement(store).iloc[0]
    assert default["n_pairs"] == 2 and default["strict_acc"] == 1.0
    both = agreement(store, include_inferred=True).iloc[0]
    assert both["n_pairs"] == 4 and both["strict_acc"] == 0.5
    con = connect(store, include_inferred=True)
    assert con.execute("SELECT n_pairs FROM agreement").fetchone()[0] == 4
    assert connect(store).execute("SELECT count(*) FROM pair_scores WHERE kind = 'inferred'").fetchone()[0] == 2


def test_legacy_store_files_without_new_columns(tmp_path):
    store = Store(tmp_path / "s")
    m = _manifest([(3, 0), (0, 3)])
    m["manifest_id"], m["synthetic"], m["root"] = "old", False, ""
    atomic_write_table(pa.Table.from_pandas(m, preserve_index=False), store.root / "pairs" / "old.parquet")
    legacy = SCORE_SCHEMA.remove(SCORE_SCHEMA.get_field_index("ref_id"))
    rows = [{k: v for k, v in r.items() if k != "ref_id"} for r in _rows(_scores_for(2, [True, True]))]
    (store.root / "scores" / "part-empty-schema.parquet").unlink()
    atomic_write_table(pa.Table.from_pylist(rows, schema=legacy), store.root / "scores" / "part-old-r000-000000.parquet")
    row = agreement(store).iloc[0]
    assert row["n_pairs"] == 2 and row["strict_acc"] == 0.5
    assert connect(store).execute("SELECT DISTINCT kind FROM pairs").fetchall() == [("human",)]


def test_read_only_store_is_served_without_a_cache(tmp_path, monkeypatch):
    store = _store_with(tmp_path)
    from bench.store import cache

    def refuse(target, write):
        raise OSError(30, "Read-only file system", str(target))

    monkeypatch.setattr(cache, "atomic_write", refuse)
    assert agreement(Store(store.root, create=False)).iloc[0]["strict_acc"] == pytest.approx(0.75)
    assert not list((store.root / "cache").glob("agreement-*.parquet"))


def test_every_published_file_goes_through_the_one_atomic_writer(tmp_path, monkeypatch):
    """Checkpoints, SR outputs, best.pt copies and truncated logs use bench.atomic: a write that fails
    half-way leaves the old file and no stray temp file; and no module renames files on its own."""
    import re
    from pathlib import Path

    import torch

    from sr_training.checkpoint import load_checkpoint, save_checkpoint
    from sr_training.infer import save_png

    ckpt = save_checkpoint({"iteration": 1, "w": torch.ones(2)}, tmp_path / "iter_00000001.pt")
    real_save = torch.save

    def dying_save(obj, f, *a, **k):
        real_save(obj, f, *a, **k)
        raise OSError(28, "No space left on device")  # the disk filled after a partial write

    monkeypatch.setattr(torch, "save", dying_save)
    with pytest.raises(OSError):
        save_checkpoint({"iteration": 2, "w": torch.zeros(2)}, ckpt)
    monkeypatch.undo()
    assert load_checkpoint(ckpt)["iteration"] == 1
    png = save_png(torch.zeros(3, 4, 4), tmp_path / "sr.png")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["iter_00000001.pt", "sr.png"] and png.stat().st_size > 0

    root = Path(__file__).resolve().parents[1]
    own_rename = re.compile(r"os\.replace\(|os\.rename\(|\.partial\b|with_name\(f?\"\.tmp")
    allowed = {"bench/atomic.py"}
    offenders = [f"{p.relative_to(root)}:{i}" for pkg in ("bench", "sr_training") for p in (root / pkg).rglob("*.py")
                 for i, line in enumerate(p.read_text().splitlines(), 1)
                 if own_rename.search(line) and str(p.relative_to(root)) not in allowed]
    assert offenders == []


def test_parts_are_verified_once_and_a_read_only_store_gets_the_footer_check(tmp_path, monkeypatch):
    """Every listing remembers what it verified (so scoring runs and ranks do not decode every part
    again); where the memo cannot be written, the check falls back to the footer."""
    import os

    from bench.store import parts as parts_mod

    store = _store_with(tmp_path)
    calls = []
    real = parts_mod._check
    monkeypatch.setattr(parts_mod, "_check", lambda path, full: calls.append((path.name, full)) or real(path, full))
    good = [p.rel for p in Store(store.root).score_parts().good]
    memo = json.loads((store.root / "cache" / "parts.json").read_text())
    assert set(good) <= set(memo) and all(len(memo[r]) == 5 for r in good)  # size, mtime, columns, rows, kinds
    assert calls and all(full for _, full in calls)
    calls.clear()
    Store(store.root).score_parts()
    assert calls == []  # remembered: nothing decoded again
    (store.root / "cache" / "parts.json").unlink()
    monkeypatch.setattr(os, "access", lambda path, mode: False)  # a read-only store (tests run as root)
    Store(store.root, create=False).score_parts()
    assert calls and not any(full for _, full in calls)
