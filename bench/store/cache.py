"""Derived, disposable caches under STORE/cache/, keyed by the state of the parts they derive from.

``agreement-<state>.parquet`` holds ``agreement_parts`` (bench.store.views): additive sums per
(manifest_id, current, kind, dataset, split, metric, config_hash). The long Parquet tables stay the
truth; this file only saves re-joining millions of score rows. ``<state>`` hashes the names, sizes
and modification times of every readable score part and pair part (``PartList.state``) and the
cache format version, so a new part, a rewritten manifest or a moved-aside bad part gives a new
state and the next ``agreement()`` rebuilds. A store that cannot be written (read-only mount) is
served without a cache. Deleting STORE/cache/ is always safe: a cache file that does not read
completely (truncated by a kill or a full disk) is deleted with a one-line note and rebuilt
(``usable``), and ``store check`` reports such files (``check``; ``--repair`` deletes them).
"""

from __future__ import annotations

import hashlib
import logging
import time
from pathlib import Path

import duckdb

from bench.atomic import atomic_write
from bench.errors import StoreError
from bench.store.parts import PartList, footer_problem
from bench.store.sql import literal

log = logging.getLogger("bench.store")

VERSION = "agreement-v1"
KEEP_OLD_S = 3600  # superseded cache files stay this long for connections still reading them


def agreement_file(store, score_parts: PartList, pair_parts: PartList) -> Path | None:
    if not pair_parts.good:
        return None
    state = hashlib.sha256(f"{VERSION}\0{score_parts.state()}\0{pair_parts.state()}".encode()).hexdigest()[:20]
    return store.root / "cache" / f"agreement-{state}.parquet"


def ensure_agreement(store) -> Path | None:
    """Build the agreement cache for the store's current state if missing; None if not cacheable."""
    from bench.store.views import AGREEMENT_PARTS_SQL, connect

    target = agreement_file(store, store.score_parts(), store.pair_parts())
    if target is None or (target.exists() and usable(target)):
        return target
    con = connect(store)  # no cache file yet: agreement_parts is the live aggregation

    def write(tmp: Path) -> None:
        con.execute(f"COPY ({AGREEMENT_PARTS_SQL}) TO {literal(str(tmp))} (FORMAT parquet)")

    try:
        atomic_write(target, write)
    except OSError as exc:  # read-only mount or permissions: correct numbers, just not cached
        log.info("%s: store not writable, agreement served without a cache (%s)", store.root, exc)
        return None
    except duckdb.IOException as exc:
        if "Permission" in str(exc) or "Read-only" in str(exc):
            log.info("%s: store not writable, agreement served without a cache", store.root)
            return None
        raise StoreError(f"{store.root}: reading the store failed ({str(exc).splitlines()[0]}); "
                         f"run `iqa-study store check --repair`") from None
    except duckdb.Error as exc:
        raise StoreError(f"{store.root}: reading the store failed ({str(exc).splitlines()[0]}); "
                         f"run `iqa-study store check --repair`") from None
    _prune(target)
    return target


def usable(path: Path) -> bool:
    """Whether the cache file reads completely; a bad one is deleted (one-line note) so it gets rebuilt."""
    problem, _ = footer_problem(path, full=True)
    if problem is None:
        return True
    try:
        path.unlink(missing_ok=True)
        done = "deleted; rebuilding it from the parts"
    except OSError as exc:
        done = f"cannot delete it ({exc.strerror or exc}); serving without the cache"
    log.warning("%s: bad agreement cache, %s: %s", path, problem, done)
    return False


def check(root: Path, repair: bool = False) -> list[dict]:
    """``store check`` records ({path, problem, action}) for cache files that do not read completely."""
    found = []
    for path in sorted((Path(root) / "cache").glob("*.parquet")):
        problem, _ = footer_problem(path, full=True)
        if problem is None:
            continue
        action = "left (a derived cache: --repair deletes it, the next agree rebuilds it)"
        if repair:
            path.unlink(missing_ok=True)
            action = "deleted (a derived cache: the next agree rebuilds it)"
        found.append({"path": path.relative_to(root).as_posix(), "problem": problem, "action": action})
    return found


def _prune(current: Path) -> None:
    now = time.time()
    for old in current.parent.glob("agreement-*.parquet"):
        if old != current and now - old.stat().st_mtime > KEEP_OLD_S:
            old.unlink(missing_ok=True)
