"""Derived, disposable caches under STORE/cache/, keyed by the state of the parts they derive from.

``agreement-<state>.parquet`` holds ``agreement_parts`` (bench.store.views): additive sums per
(manifest_id, current, kind, dataset, split, metric, config_hash). The long Parquet tables stay the
truth; this file only saves re-joining millions of score rows. ``<state>`` hashes the names, sizes
and modification times of every readable score part and pair part (``PartList.state``) and the
cache format version, so a new part, a rewritten manifest or a moved-aside bad part gives a new
state and the next ``agreement()`` builds a new file.

**Incremental builds.** Next to each file, ``agreement-<state>.json`` records the pair state and,
per score part, its (size, mtime_ns) and the (metric, config_hash) keys it holds. The current-row
rule (newest ``ok`` row per image, metric and config) never looks across keys, so the sums of one
key depend only on the parts that hold that key (and on the pairs). A new state is built from the
newest earlier file with the same pair state: the keys of every part that landed, changed or went
away are *stale*; their sums are recomputed from all the parts holding them (the older rows a
rescoring supersedes included), every other key's rows are copied. The result is row for row what
a full rebuild gives (the sums are of counts and of quarter-integer vote values, exact in
doubles). A change to the pairs (``current`` can move for any pair) rebuilds everything.

A cache entry that cannot be read (truncated, corrupted, a bad index) is noted on one line
(warning, logger ``bench.store``) and rebuilt, never fatal. A store that cannot be written
(read-only mount) is served without a cache. Deleting STORE/cache/ is always safe.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import duckdb

from bench.atomic import atomic_write, atomic_write_text
from bench.errors import StoreError
from bench.store.parts import Part, PartList, footer_problem
from bench.store.sql import file_literal, literal, read_parquet

log = logging.getLogger("bench.store")

VERSION = "agreement-v3"  # v3: the current-row rule covers unordered image pairs across manifests (issue 18)
KEEP_OLD_S = 3600  # superseded cache files stay this long for connections still reading them
KEEP_INDEXES = 2  # indexes of other states kept as bases for the next builds (besides the current one)
COLUMNS = ("manifest_id", "current", "kind", "dataset", "split", "metric", "config_hash", "synthetic", "n_pairs",
           "n_decided", "n_voted", "n_metric_ties", "n_right", "n_tied_decided", "v_y", "v_x", "v_yy", "v_xx", "v_xy")

Key = tuple[str, str]  # (metric, config_hash)


def agreement_file(store, score_parts: PartList, pair_parts: PartList) -> Path | None:
    if not pair_parts.good:
        return None
    state = hashlib.sha256(f"{VERSION}\0{score_parts.state()}\0{pair_parts.state()}".encode()).hexdigest()[:20]
    return store.root / "cache" / f"agreement-{state}.parquet"


def _index_path(target: Path) -> Path:
    return target.with_suffix(".json")


def entry_problem(path: Path) -> str | None:
    """None if ``path`` is a complete agreement cache file, else why not (the file is small: read whole)."""
    problem, cols = footer_problem(path, full=True)
    if problem is None and not set(COLUMNS) <= set(cols):
        problem = f"columns {sorted(set(COLUMNS) - set(cols))} missing"
    return problem


def check(root: Path, repair: bool = False) -> list[dict]:
    """``store check`` records ({path, problem, action}) for agreement cache files that do not read completely
    (their part-key indexes beside them are rebuilt with them)."""
    found = []
    for path in sorted((Path(root) / "cache").glob("*.parquet")):
        problem = entry_problem(path)
        if problem is None:
            continue
        action = "left (a derived cache: --repair deletes it, the next agree rebuilds it)"
        if repair:
            path.unlink(missing_ok=True)
            _index_path(path).unlink(missing_ok=True)
            action = "deleted (a derived cache: the next agree rebuilds it)"
        found.append({"path": path.relative_to(root).as_posix(), "problem": problem, "action": action})
    return found


def _note(store, path: Path, problem: str, action: str) -> None:
    log.warning("%s: cache entry %s is unreadable (%s); %s", store.root, path.relative_to(store.root), problem, action)


def usable_agreement(store, score_parts: PartList, pair_parts: PartList) -> Path | None:
    """The cache file for this state if it exists and reads; None otherwise (the caller aggregates live)."""
    target = agreement_file(store, score_parts, pair_parts)
    if target is None or not target.exists():
        return None
    problem = entry_problem(target)
    if problem is not None:
        _note(store, target, problem, "aggregating without it until `agree` rebuilds it")
        return None
    return target


@dataclass
class _Index:
    path: Path  # the .parquet it describes
    pairs: str
    parts: dict[str, tuple[int, int, frozenset[Key]]]


def _read_index(store, path: Path) -> _Index | None:
    """An index file, or None (with a note, and the bad file removed) if it does not parse."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("version") != VERSION:
            return None
        parts = {rel: (int(size), int(mtime), frozenset((str(m), str(c)) for m, c in keys))
                 for rel, (size, mtime, keys) in data["parts"].items()}
        return _Index(path.with_suffix(".parquet"), str(data["pairs"]), parts)
    except FileNotFoundError:
        return None  # pruned meanwhile
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
        _note(store, path, f"{type(exc).__name__}: {str(exc).splitlines()[0][:120] if str(exc) else ''}",
              "ignored and removed")
        try:
            path.unlink(missing_ok=True)
        except OSError as err:  # read-only store: nothing is built there anyway
            log.debug("could not remove %s: %s", path, err)
        return None


def _indexes(store, exclude: Path):
    """Earlier index files, newest first (read lazily)."""
    found = []
    for p in (store.root / "cache").glob("agreement-*.json"):
        try:
            found.append((p.stat().st_mtime_ns, p))
        except FileNotFoundError:
            continue
    for _, p in sorted(found, reverse=True):
        if p != _index_path(exclude):
            ix = _read_index(store, p)
            if ix is not None:
                yield ix


def part_keys(parts: list[Part]) -> dict[str, frozenset[Key]]:
    """The (metric, config_hash) keys of each score part: one scan of those two columns of all of them."""
    out: dict[str, frozenset[Key]] = {p.rel: frozenset() for p in parts}
    if not parts:
        return out
    rel = {str(p.path): p.rel for p in parts}
    files = ", ".join(file_literal(f) for f in rel)  # glob-escaped: a store at exp[1] must not read exp1
    try:
        found = duckdb.connect(":memory:").execute(
            f"SELECT filename, metric, config_hash FROM read_parquet([{files}], filename=true) "
            "WHERE metric IS NOT NULL AND config_hash IS NOT NULL GROUP BY ALL").fetchall()
    except duckdb.Error as exc:
        raise StoreError(f"reading the metric/config_hash columns of {len(parts)} score part(s) failed "
                         f"({str(exc).splitlines()[0][:200]}); run `iqa-study store check --repair`") from None
    keys: dict[str, set[Key]] = {}
    for filename, metric, config in found:
        if filename not in rel:
            raise StoreError(f"{filename}: DuckDB named a score part that was not asked for (expected one of "
                             f"{len(rel)} paths)")
        keys.setdefault(rel[filename], set()).add((metric, config))
    out.update({r: frozenset(k) for r, k in keys.items()})
    return out


def ensure_agreement(store) -> Path | None:
    """Build the agreement cache for the store's current state if missing or unreadable; None if not cacheable."""
    score_parts, pair_parts = store.score_parts(), store.pair_parts()
    target = agreement_file(store, score_parts, pair_parts)
    if target is None:
        return None
    if target.exists():
        problem = entry_problem(target)
        if problem is None:
            return target
        _note(store, target, problem, "rebuilding it")
        try:
            target.unlink()
        except OSError as exc:  # read-only: the build below fails the same way and serves it uncached
            log.debug("could not remove %s: %s", target, exc)
    try:
        _build(store, target, score_parts, pair_parts)
    except OSError as exc:  # read-only mount or permissions: correct numbers, just not cached
        log.info("%s: store not writable, agreement served without a cache (%s)", store.root, exc)
        return None
    except duckdb.IOException as exc:
        if "Permission" in str(exc) or "Read-only" in str(exc):
            log.info("%s: store not writable, agreement served without a cache", store.root)
            return None
        raise _read_failed(store, exc) from None
    except duckdb.Error as exc:
        raise _read_failed(store, exc) from None
    _prune(target)
    return target


def _read_failed(store, exc: Exception) -> StoreError:
    return StoreError(f"{store.root}: reading the store failed ({str(exc).splitlines()[0]}); "
                      f"run `iqa-study store check --repair`")


def _build(store, target: Path, score_parts: PartList, pair_parts: PartList) -> None:
    pair_state = pair_parts.state()
    earlier = _indexes(store, exclude=target)
    newest = next(earlier, None)
    base = newest
    while base is not None and (base.pairs != pair_state or not base.path.exists()):
        base = next(earlier, None)
    known = dict(base.parts) if base is not None else {}
    if newest is not None and newest is not base:
        known = {**newest.parts, **known}
    keys: dict[str, frozenset[Key]] = {}
    unknown = []
    for p in score_parts.good:
        seen = known.get(p.rel)
        if seen and seen[:2] == (p.size, p.mtime_ns):
            keys[p.rel] = seen[2]
        else:
            unknown.append(p)
    keys.update(part_keys(unknown))
    index = {"version": VERSION, "pairs": pair_state,
             "parts": {p.rel: [p.size, p.mtime_ns, sorted(keys[p.rel])] for p in score_parts.good}}
    # the index goes first: a cache file on disk always has its index (unless removed later)
    atomic_write_text(json.dumps(index), _index_path(target))
    if base is not None:
        problem = entry_problem(base.path) if base.path.exists() else "removed meanwhile"
        if problem is not None:
            _note(store, base.path, problem, "building from the parts instead")
            base = None
    if base is not None:
        now = {p.rel: p for p in score_parts.good}
        stale: set[Key] = set()
        for rel, (size, mtime, old_keys) in base.parts.items():
            p = now.get(rel)
            if p is None or (p.size, p.mtime_ns) != (size, mtime):
                stale |= old_keys
        for p in score_parts.good:
            old = base.parts.get(p.rel)
            if old is None or old[:2] != (p.size, p.mtime_ns):
                stale |= keys[p.rel]
        every = set().union(*keys.values()) if keys else set()
        if not every <= stale:  # else everything is stale: a full build is as cheap
            try:
                _write_incremental(target, base.path, stale, [p for p in score_parts.good if keys[p.rel] & stale],
                                   pair_parts)
                return
            except duckdb.IOException as exc:  # the base went away meanwhile (pruned by another reader)
                if base.path.exists():
                    raise
                log.info("%s: %s went away (%s); building from the parts", store.root, base.path.name,
                         str(exc).splitlines()[0])
    _write_full(target, score_parts, pair_parts)


def _write_full(target: Path, score_parts: PartList, pair_parts: PartList) -> None:
    """The sums over exactly the listed parts (the ones the state and the index name)."""
    from bench.store.views import AGREEMENT_PARTS_SQL, register_pair_scores

    con = duckdb.connect(":memory:")
    register_pair_scores(con, score_parts, pair_parts)

    def write(tmp: Path) -> None:
        con.execute(f"COPY ({AGREEMENT_PARTS_SQL}) TO {literal(str(tmp))} (FORMAT parquet)")

    atomic_write(target, write)


def _write_incremental(target: Path, base: Path, stale: set[Key], parts: list[Part], pair_parts: PartList) -> None:
    """The base file's rows of every key not in ``stale``, plus the sums of the stale keys from ``parts``."""
    from bench.store.views import AGREEMENT_PARTS_SQL, register_pair_scores

    con = duckdb.connect(":memory:")
    con.execute("CREATE TEMP TABLE slice_keys (metric VARCHAR, config_hash VARCHAR)")
    if stale:
        con.executemany("INSERT INTO slice_keys VALUES (?, ?)", sorted(stale))
    register_pair_scores(con, PartList(good=parts), pair_parts, only_keys="slice_keys")
    cols = ", ".join(f'"{c}"' for c in COLUMNS)
    kept = (f"SELECT {cols} FROM {read_parquet([base])} b ANTI JOIN slice_keys k "
            f"ON b.metric = k.metric AND b.config_hash = k.config_hash")
    fresh = f"SELECT {cols} FROM ({AGREEMENT_PARTS_SQL})"

    def write(tmp: Path) -> None:
        con.execute(f"COPY ({kept} UNION ALL {fresh}) TO {literal(str(tmp))} (FORMAT parquet)")

    atomic_write(target, write)


def _prune(current: Path) -> None:
    """Cache files of other states go after KEEP_OLD_S (connections may still read them); of the
    other indexes only the KEEP_INDEXES newest stay (an index only serves as the base of a build)."""
    now = time.time()
    indexes = []
    for old in [*current.parent.glob("agreement-*.parquet"), *current.parent.glob("agreement-*.json")]:
        if old.with_suffix("") == current.with_suffix(""):
            continue
        try:
            mtime = old.stat().st_mtime
        except FileNotFoundError:
            continue
        if old.suffix == ".json":
            indexes.append((mtime, old))
        if now - mtime > KEEP_OLD_S:
            old.unlink(missing_ok=True)
    for _, old in sorted(indexes, reverse=True)[KEEP_INDEXES:]:
        old.unlink(missing_ok=True)
