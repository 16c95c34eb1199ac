"""The part files of a store: which are readable, which are not, and the store's state.

Readers never glob the store folders through DuckDB: they list the folder here, skip hidden and
temporary names (``bench.atomic``), check each Parquet file the first time it is seen (footer, every
page decoded, page checksums verified), and pass DuckDB an explicit, escaped list of the good files.
A zero-byte, truncated, corrupted or otherwise unreadable part is reported by
name (``logging`` warning, logger ``bench.store``) and left out of every view, so one bad file never
makes every query fail; ``iqa-study store check --repair`` moves it to ``STORE/quarantine/``.
A readable part whose schema is foreign to its folder (a required column missing, or a column of
another kind than the store's: e.g. ``score`` as text in scores/, which made every view fail to
bind) is treated the same way: named, skipped, and quarantined by ``store check --repair``
(``expect``: the column kinds of ``bench.store.layout.FOLDER_KINDS``).

Checked parts are remembered in ``STORE/cache/parts.json`` by (size, mtime_ns), so a reader only
opens files that are new or changed since the last check. A store whose memo cannot be written
(read-only) gets the footer check only, so opening it does not decode every part each time. The *state* of a set of parts (their
names, sizes and modification times) keys every derived cache (``bench.store.cache``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from bench.atomic import atomic_write_text, is_temp_name

log = logging.getLogger("bench.store")

MEMO = "parts.json"


@dataclass(frozen=True)
class Part:
    path: Path
    rel: str  # path relative to the store root, '/'-separated
    size: int
    mtime_ns: int
    columns: tuple[str, ...] = ()
    rows: int = -1  # from the footer (-1: unknown)
    kinds: tuple[str, ...] = ()  # kind of each column (``kind_of``), from the footer


@dataclass
class PartList:
    good: list[Part] = field(default_factory=list)
    bad: list[tuple[str, str]] = field(default_factory=list)  # (relative path, reason)

    @property
    def paths(self) -> list[Path]:
        return [p.path for p in self.good]

    def columns(self) -> set[str]:
        return {c for p in self.good for c in p.columns}

    def state(self) -> str:
        """Hash of (name, size, mtime_ns) of the good parts: changes whenever a part lands or changes."""
        h = hashlib.sha256()
        for p in sorted(self.good, key=lambda p: p.rel):
            h.update(f"{p.rel}\0{p.size}\0{p.mtime_ns}\n".encode())
        return h.hexdigest()[:20]


def _is_data_name(name: str, prefix: str) -> bool:
    return name.endswith(".parquet") and name.startswith(prefix) and not name.startswith(".") and not is_temp_name(name)


def kind_of(t: pa.DataType) -> str:
    """Coarse kind of an Arrow type: readers tolerate int32 vs int64, never text vs number."""
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return "string"
    if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t):
        return "number"
    if pa.types.is_boolean(t):
        return "bool"
    if pa.types.is_timestamp(t) or pa.types.is_date(t):
        return "time"
    if pa.types.is_null(t):
        return "null"
    return str(t)


def schema_problem(columns, kinds, expect: dict | None) -> str | None:
    """Why a part with ``columns`` of ``kinds`` is foreign to a folder expecting ``expect``
    ({"required": [...], "kinds": {column: kind}}); None when it fits (a null column fits any kind)."""
    if not expect:
        return None
    missing = [c for c in expect.get("required", ()) if c not in columns]
    if missing:
        return f"foreign schema: no column(s) {', '.join(missing)}"
    want = expect.get("kinds", {})
    for col, kind in zip(columns, kinds):
        if col in want and kind not in (want[col], "null"):
            return f"foreign schema: column '{col}' is {kind}, the store's is {want[col]}"
    return None


def footer_problem(path: Path, full: bool = False) -> tuple[str | None, tuple[str, ...]]:
    """(None, columns) for a readable Parquet file, else (reason, ()). ``full`` also decodes every page
    and verifies the page checksums the suite's writer adds (``bench.atomic.atomic_write_table``)."""
    problem, cols, _, _ = _check(path, full)
    return problem, cols


def _check(path: Path, full: bool) -> tuple[str | None, tuple[str, ...], int, tuple[str, ...]]:
    try:
        if path.stat().st_size == 0:
            return "zero-byte file", (), 0, ()
        pf = pq.ParquetFile(path, page_checksum_verification=full)
        cols = tuple(pf.schema_arrow.names)
        kinds = tuple(kind_of(f.type) for f in pf.schema_arrow)
        if full:
            pf.read()
        return None, cols, pf.metadata.num_rows, kinds
    except (OSError, pa.ArrowException, ValueError) as exc:
        return f"not a readable Parquet file ({type(exc).__name__}: {str(exc).splitlines()[0][:120]})", (), 0, ()


class PartIndex:
    """Lists and checks the Parquet parts of one store, remembering checked footers."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.memo_path = self.root / "cache" / MEMO
        self._memo: dict[str, list] | None = None
        self._dirty = False
        self._writable: bool | None = None
        self.reported: set[str] = set()

    def _load_memo(self) -> dict[str, list]:
        if self._memo is None:
            try:
                self._memo = json.loads(self.memo_path.read_text())
                if not isinstance(self._memo, dict):
                    self._memo = {}
            except (OSError, ValueError):
                self._memo = {}
        return self._memo

    def list(self, sub: str, prefix: str = "", expect: dict | None = None) -> PartList:
        """Good and bad ``*.parquet`` files directly under STORE/<sub> whose names start with ``prefix``;
        with ``expect`` (``schema_problem``) a part of a foreign schema is bad too."""
        folder = self.root / sub
        out = PartList()
        if not folder.is_dir():
            return out
        memo = self._load_memo()
        with os.scandir(folder) as it:
            entries = sorted((e for e in it if _is_data_name(e.name, prefix) and e.is_file()), key=lambda e: e.name)
        for e in entries:
            st = e.stat()
            rel = f"{sub}/{e.name}"
            seen = memo.get(rel)
            if seen and len(seen) in (4, 5) and seen[0] == st.st_size and seen[1] == st.st_mtime_ns:
                if len(seen) == 4:  # remembered before column kinds were: read them from the footer once
                    try:
                        seen.append([kind_of(f.type) for f in pq.read_schema(e.path)])
                        self._dirty = True
                    except (OSError, pa.ArrowException, ValueError):
                        memo.pop(rel)
                        seen = None
                if seen:
                    part = Part(Path(e.path), rel, st.st_size, st.st_mtime_ns, tuple(seen[2]), seen[3], tuple(seen[4]))
                    foreign = schema_problem(part.columns, part.kinds, expect)
                    (out.bad.append((rel, foreign)) if foreign else out.good.append(part))
                    continue
            problem, cols, rows, kinds = _check(Path(e.path), full=self._can_remember())  # once per (size, mtime)
            if problem:
                out.bad.append((rel, problem))
                continue
            memo[rel] = [st.st_size, st.st_mtime_ns, list(cols), rows, list(kinds)]
            self._dirty = True
            foreign = schema_problem(cols, kinds, expect)
            if foreign:
                out.bad.append((rel, foreign))
                continue
            out.good.append(Part(Path(e.path), rel, st.st_size, st.st_mtime_ns, cols, rows, kinds))
        self.save()  # every reader remembers what it checked (scoring runs and ranks included)
        for rel, why in out.bad:
            if rel not in self.reported:
                self.reported.add(rel)
                log.warning("%s: skipped %s (%s); run `iqa-study store check --repair` to move it to quarantine/",
                            self.root, rel, why)
        return out

    def _can_remember(self) -> bool:
        """Full checks (every page) only where the memo can be written: a read-only store would
        otherwise decode every part on every open; it gets the footer check instead."""
        if self._writable is None:
            folder = self.memo_path.parent if self.memo_path.parent.is_dir() else self.root
            self._writable = os.access(folder, os.W_OK)
        return self._writable

    def save(self) -> None:
        """Persist the memo of checked footers (best effort: a read-only store just re-checks next time)."""
        if not self._dirty:
            return
        memo = self._load_memo()
        live = {k: v for k, v in memo.items() if (self.root / k).exists()}
        try:
            atomic_write_text(json.dumps(live), self.memo_path)
            self._dirty = False
        except OSError as exc:
            log.debug("could not write %s: %s", self.memo_path, exc)


DATA_FOLDERS = ("pairs", "scores", "runs", "images")


def check(root: Path, repair: bool = False) -> list[dict]:
    """Fully decode every Parquet file of the store (data folders and study tables).

    Returns one record per problem: {path, problem, action}. With ``repair`` a bad file is moved to
    STORE/quarantine/<its relative path> (never deleted), so later reads skip it and nothing is lost.
    """
    from bench.store.layout import FOLDER_KINDS

    root = Path(root)
    folders = [root / d for d in DATA_FOLDERS] + sorted(p for p in (root / "study").glob("*") if p.is_dir())
    found = []
    for folder in folders:
        if not folder.is_dir():
            continue
        for path in sorted(folder.iterdir()):
            if not path.is_file():
                continue
            rel = path.relative_to(root).as_posix()
            if is_temp_name(path.name):
                found.append({"path": rel, "problem": "temporary file of an interrupted write", "action": "left"})
                continue
            if not path.name.endswith(".parquet"):
                continue
            problem, cols, _, kinds = _check(path, full=True)
            if problem is None:
                problem = schema_problem(cols, kinds, FOLDER_KINDS.get(folder.relative_to(root).as_posix()))
            if problem is None:
                continue
            action = "left (use --repair)"
            if repair:
                dest = root / "quarantine" / rel
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.move(str(path), str(dest))
                action = f"moved to quarantine/{rel}"
            found.append({"path": rel, "problem": problem, "action": action})
    from bench.store import cache  # the derived caches under STORE/cache/ (rebuilt, never quarantined)

    return found + cache.check(root, repair)
