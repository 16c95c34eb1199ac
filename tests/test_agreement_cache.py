"""The incremental agreement cache (bench.store.cache): after new score parts it recomputes only the
keys they touch, and gives exactly what a full rebuild gives; a bad cache entry is rebuilt."""

from __future__ import annotations

import datetime as dt
import logging
import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest

from bench.store import Store, cache
from bench.store.views import agreement, connect
from tests.test_store import T0, _manifest, _rows

KEYS = ["manifest_id", "current", "kind", "dataset", "split", "metric", "config_hash"]


def _store(tmp_path, rng) -> Store:
    """Two datasets, a corrected re-registration (older rows not current), inferred pairs, vote ties."""
    store = Store(tmp_path / "s")
    votes = [tuple(int(v) for v in rng.integers(0, 4, 2)) for _ in range(30)]
    kinds = ["human"] * 24 + ["inferred"] * 6
    store.register(_manifest(votes, dataset="d1", kind=kinds))
    corrected = list(votes)
    corrected[:5] = [(b, a) for a, b in votes[:5]]
    store.register(_manifest(corrected, dataset="d1", kind=kinds), replace=True)
    store.register(_manifest(votes[:12], dataset="d2", start=100, split="val"))
    return store


def _images() -> list[str]:
    return [f"{s}{i}" for s in "AB" for i in [*range(30), *range(100, 112)]]


def _scores(rng, images, metric, at=T0, run="r1", lower_better=False, status="ok"):
    # few distinct values, so metric ties occur
    rows = _rows({k: float(rng.integers(0, 4)) for k in images}, metric=metric, at=at, run=run,
                 lower_better=lower_better)
    for r in rows:
        r["status"] = status
    return rows


def _parts_table(path):
    return pq.read_table(path).to_pandas().sort_values(KEYS).reset_index(drop=True)


def _full_rebuild(store, tmp_path):
    """The same store copied without its cache: what a full rebuild gives."""
    twin = tmp_path / "twin"
    shutil.rmtree(twin, ignore_errors=True)
    shutil.copytree(store.root, twin, ignore=shutil.ignore_patterns("cache"))
    other = Store(twin, create=False)
    return other, agreement(other), cache.ensure_agreement(other)


class Spy:
    def __init__(self, monkeypatch):
        self.incremental, self.full, self.keys_read = [], 0, 0
        real_inc, real_full, real_keys = cache._write_incremental, cache._write_full, cache.part_keys

        def inc(target, base, stale, parts, pair_parts):
            self.incremental.append((set(stale), sorted(p.rel for p in parts)))
            return real_inc(target, base, stale, parts, pair_parts)

        def full(target, score_parts, pair_parts):
            self.full += 1
            return real_full(target, score_parts, pair_parts)

        def keys(parts):
            self.keys_read += len(parts)
            return real_keys(parts)

        monkeypatch.setattr(cache, "_write_incremental", inc)
        monkeypatch.setattr(cache, "_write_full", full)
        monkeypatch.setattr(cache, "part_keys", keys)


def _assert_same_as_full(store, tmp_path):
    twin, expected, twin_file = _full_rebuild(store, tmp_path)
    ours = cache.ensure_agreement(store)
    # every cached sum, row for row, exactly
    a, b = _parts_table(ours), _parts_table(twin_file)
    assert len(a) == len(b) > 0
    assert a.equals(b)
    for kw in ({}, {"include_inferred": True}):
        assert agreement(store, **kw).equals(agreement(twin, **kw))
    for mid in sorted(set(a["manifest_id"])):
        assert agreement(store, manifest_id=mid).equals(agreement(twin, manifest_id=mid))
    return expected


def test_a_part_with_new_metrics_is_summed_alone_and_matches_a_full_rebuild(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    store = _store(tmp_path, rng)
    for m in ("m0", "m1"):
        store.write_scores(_scores(rng, _images(), m, lower_better=m == "m1"), f"r-{m}", 0, 0)
    before = agreement(store)
    assert sorted(set(before["metric"])) == ["m0", "m1"]
    spy = Spy(monkeypatch)
    # one part with two new metrics (one lower-is-better), images of d1 only for m3
    rows = _scores(rng, _images(), "m2") + _scores(rng, [i for i in _images() if int(i[1:]) < 30], "m3",
                                                    lower_better=True)
    store.write_scores(rows, "r-new", 0, 0)
    after = agreement(store)
    assert spy.full == 0 and spy.keys_read == 1  # only the new part was opened for its keys
    (stale, parts), = spy.incremental
    assert stale == {("m2", "cfg-m2"), ("m3", "cfg-m3")} and parts == ["scores/part-r-new-r000-000000.parquet"]
    assert sorted(set(after["metric"])) == ["m0", "m1", "m2", "m3"]
    # the old metrics' rows are unchanged, the new ones are real numbers
    old = after[after["metric"].isin(["m0", "m1"])].reset_index(drop=True)
    assert old.equals(before)
    assert after.loc[after["metric"] == "m3", "n_pairs"].tolist() == [24]  # d1, human, current pairs only
    _assert_same_as_full(store, tmp_path)


def test_a_rescoring_that_supersedes_older_rows_matches_a_full_rebuild(tmp_path, monkeypatch):
    rng = np.random.default_rng(1)
    store = _store(tmp_path, rng)
    for m in ("m0", "m1", "m2"):
        store.write_scores(_scores(rng, _images(), m), f"r-{m}", 0, 0)
    before = agreement(store)
    spy = Spy(monkeypatch)
    half = _images()[::2]
    later = T0 + dt.timedelta(hours=1)
    # m1 re-scored on half the images (newer rows win), plus newer *failed* rows for m1 on the other
    # half (an ok row is kept over a newer failure) and a same-time row of a later run_id for m1 on one image
    rows = (_scores(rng, half, "m1", at=later, run="r2")
            + _scores(rng, _images()[1::2], "m1", at=later + dt.timedelta(hours=1), run="r2", status="error"))
    store.write_scores(rows, "r2", 0, 0)
    store.write_scores([{**_rows({"A0": 9.0}, metric="m1", at=later, run="r3")[0]}], "r3", 0, 0)
    after = agreement(store)
    assert spy.full == 0 and spy.keys_read == 2
    (stale, parts), = spy.incremental  # both new parts in one incremental build
    assert stale == {("m1", "cfg-m1")}
    assert parts == ["scores/part-r-m1-r000-000000.parquet", "scores/part-r2-r000-000000.parquet",
                     "scores/part-r3-r000-000000.parquet"]
    changed = after.merge(before, on=["dataset", "split", "metric"], suffixes=("", "_old"))
    assert (changed.loc[changed["metric"] != "m1", "strict_acc"]
            == changed.loc[changed["metric"] != "m1", "strict_acc_old"]).all()
    assert (changed.loc[changed["metric"] == "m1", "strict_acc"]
            != changed.loc[changed["metric"] == "m1", "strict_acc_old"]).any()  # the rescoring counts
    con = connect(store)  # the pair views agree with the cache: image A0's m1 score is r3's 9.0
    assert con.execute("SELECT score_a FROM pair_scores WHERE image_a_id = 'A0' AND metric = 'm1'").fetchone() == (9.0,)
    _assert_same_as_full(store, tmp_path)
    # a part that goes away (moved to quarantine) is recomputed from the parts that remain
    spy.incremental.clear()
    spy.full = 0  # the twin's full build counted too
    (store.root / "scores" / "part-r3-r000-000000.parquet").unlink()
    agreement(store)
    assert spy.incremental[0][0] == {("m1", "cfg-m1")} and spy.full == 0
    _assert_same_as_full(store, tmp_path)


def test_new_pairs_rebuild_everything(tmp_path, monkeypatch):
    rng = np.random.default_rng(2)
    store = _store(tmp_path, rng)
    store.write_scores(_scores(rng, _images(), "m0"), "r1", 0, 0)
    agreement(store)
    spy = Spy(monkeypatch)
    store.register(_manifest([(3, 0)] * 12, dataset="d3", start=100))  # images A/B100.. are scored
    assert set(agreement(store)["dataset"]) == {"d1", "d2", "d3"}
    assert spy.full == 1 and spy.incremental == [] and spy.keys_read == 0  # part keys come from the index
    _assert_same_as_full(store, tmp_path)


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty"])
def test_a_bad_cache_entry_is_rebuilt_with_a_one_line_note(tmp_path, caplog, damage):
    rng = np.random.default_rng(3)
    store = _store(tmp_path, rng)
    store.write_scores(_scores(rng, _images(), "m0"), "r1", 0, 0)
    good = agreement(store)
    entry = cache.ensure_agreement(store)
    data = entry.read_bytes()
    entry.write_bytes({"truncated": data[: len(data) // 2], "garbage": b"x" * len(data), "empty": b""}[damage])
    with caplog.at_level(logging.WARNING, logger="bench.store"):
        # a connection made directly (``iqa-study query``) aggregates without it
        assert connect(store).execute("SELECT count(*) FROM agreement").fetchone()[0] == len(good)
        assert agreement(store).equals(good)
    notes = [r.getMessage() for r in caplog.records]
    assert len(notes) == 2 and all("\n" not in n and entry.name in n and "unreadable" in n for n in notes)
    assert "rebuilding it" in notes[1]
    assert cache.entry_problem(entry) is None  # rebuilt in place
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="bench.store"):
        assert agreement(store).equals(good)
    assert caplog.records == []


def test_a_bad_index_is_noted_removed_and_the_next_state_built_in_full(tmp_path, caplog, monkeypatch):
    rng = np.random.default_rng(4)
    store = _store(tmp_path, rng)
    store.write_scores(_scores(rng, _images(), "m0"), "r1", 0, 0)
    agreement(store)
    index = cache.ensure_agreement(store).with_suffix(".json")
    index.write_text('{"version": "agreement-v2", "pairs": ')  # cut short
    spy = Spy(monkeypatch)
    store.write_scores(_scores(rng, _images(), "m1"), "r2", 0, 0)
    with caplog.at_level(logging.WARNING, logger="bench.store"):
        agreement(store)
    (note,) = [r.getMessage() for r in caplog.records]
    assert "\n" not in note and index.name in note and "ignored and removed" in note
    assert not index.exists() and spy.full == 1 and spy.keys_read == 3  # r1, r2 and the store's empty part
    _assert_same_as_full(store, tmp_path)


def test_old_indexes_are_pruned_to_the_newest_few(tmp_path):
    rng = np.random.default_rng(5)
    store = _store(tmp_path, rng)
    for i in range(5):
        store.write_scores(_scores(rng, _images(), f"m{i}"), f"r{i}", 0, 0)
        agreement(store)
    indexes = sorted((store.root / "cache").glob("agreement-*.json"))
    assert len(indexes) == 1 + cache.KEEP_INDEXES
    assert cache.ensure_agreement(store).with_suffix(".json") in indexes
    assert len(list((store.root / "cache").glob("agreement-*.parquet"))) == 5  # read by open connections


def test_part_keys_of_a_store_whose_path_has_glob_characters_read_only_its_parts(tmp_path):
    """part_keys hands DuckDB the part paths glob-escaped: a store at exp[1] next to exp1 lists its own
    part's keys (unescaped, DuckDB read exp1's part and the build refused it)."""
    from tests.test_store import _store_with

    Store(tmp_path / "exp1").write_scores(_rows({"A0": 1.0, "B0": 0.0}, metric="other"), "r1", 0, 0)  # same part name
    mine = _store_with(tmp_path, "exp[1]")
    parts = mine.score_parts().good
    keys = cache.part_keys(parts)
    assert sorted(keys) == sorted(p.rel for p in parts)
    assert {m for k in keys.values() for m, _ in k} == {"m"}
