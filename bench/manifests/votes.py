"""Importers for vote tables: the SR 2AFC study (``sr2afc``) and the generic ``pairs-csv``."""

from __future__ import annotations

import csv
import json
import os
from collections import defaultdict
from pathlib import Path

import pandas as pd

from bench.errors import ManifestError
from bench.manifests.schema import MAX_VOTES, PREFS, finalize, pref_from_votes, safe_path

SR2AFC_COLUMNS = ["observer", "session", "left", "right", "selected", "seconds"]


def _rows(path: Path, required: list[str]) -> list[tuple[int, dict]]:
    """(line number, row) of a UTF-8 CSV (a byte-order mark is accepted); one-line errors for
    non-UTF-8 bytes, missing columns and rows with more or fewer fields than the header."""
    if not path.is_file():
        raise ManifestError(f"{path}: file does not exist")
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            header = reader.fieldnames or []
            twice = sorted({c for c in header if header.count(c) > 1})
            if twice:  # csv.DictReader would silently keep the last of them
                raise ManifestError(f"{path}: column(s) {twice} appear more than once in the header; "
                                    f"keep one of each")
            absent = [c for c in required if c not in header]
            if absent:
                raise ManifestError(f"{path}: missing column(s) {absent}; found {header}")
            rows = []
            for row in reader:
                if None in row or None in row.values():
                    n = len(header) + len(row.get(None) or []) - sum(v is None for v in row.values())
                    raise ManifestError(f"{path}:{reader.line_num}: {n} field(s), the header has {len(header)}")
                rows.append((reader.line_num, row))
            return rows
    except UnicodeDecodeError as exc:
        raise ManifestError(f"{path}: not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start}); "
                            f"save it as UTF-8") from None
    except csv.Error as exc:
        raise ManifestError(f"{path}: not a readable CSV ({exc})") from None


def _int(path: Path, line: int, row: dict, col: str) -> int:
    try:
        value = int(row[col])
    except (TypeError, ValueError):
        raise ManifestError(f"{path}:{line}: column '{col}' = {row[col]!r}, expected a non-negative integer") from None
    if not 0 <= value <= MAX_VOTES:
        raise ManifestError(f"{path}:{line}: column '{col}' = {value}, expected a non-negative integer "
                            f"at most {MAX_VOTES}")
    return value


def sr2afc(root: str | Path) -> pd.DataFrame:
    """SR 2AFC vote folder.

    Layout::

        ROOT/votes.csv     one row per vote: observer,session,left,right,selected,seconds
                           (left/right/selected: file names in sr/; selected is left or right)
        ROOT/sr/<group>_<method>.png   e.g. 0809_SwinIR.png; both images of a pair share <group>

    Each unordered pair becomes one row; image_a/image_b are in sorted (not display) order;
    votes_a/votes_b count the votes for each side. ``observer_votes`` keeps the per-observer
    split as JSON ``{"o1": [votes_a, votes_b], ...}`` with ANONYMISED observer ids: o1, o2, ...
    numbered in order of first appearance in votes.csv (the raw ids are not stored), so reports
    can compute an inter-observer (split-half) ceiling; ``n_observers`` counts them.
    """
    root = Path(root)
    path = root / "votes.csv"
    votes: dict[tuple[str, str], dict] = defaultdict(
        lambda: {"n": defaultdict(int), "sessions": set(), "observers": defaultdict(lambda: [0, 0])})
    anon: dict[str, str] = {}
    for line, row in _rows(path, SR2AFC_COLUMNS):
        left, right, sel = row["left"], row["right"], row["selected"]
        if sel not in (left, right):
            raise ManifestError(f"{path}:{line}: selected {sel!r} is neither left {left!r} nor right {right!r}")
        if left == right:
            raise ManifestError(f"{path}:{line}: left and right are the same image {left!r}")
        _int(path, line, row, "session")
        if not row["observer"].strip():
            raise ManifestError(f"{path}:{line}: column 'observer' is empty")
        obs = anon.setdefault(row["observer"].strip(), f"o{len(anon) + 1}")
        a, b = sorted((left, right))
        entry = votes[(a, b)]
        entry["n"][sel] += 1
        entry["sessions"].add(row["session"])
        entry["observers"][obs][0 if sel == a else 1] += 1
    if not votes:
        raise ManifestError(f"{path}: no vote rows")
    rows = []
    for (a, b), entry in sorted(votes.items()):
        for name in (a, b):
            if "_" not in Path(name).stem:
                raise ManifestError(f"{path}: image {name!r} is not named <group>_<method>.png")
        group_a, method_a = Path(a).stem.split("_", 1)
        group_b, method_b = Path(b).stem.split("_", 1)
        if group_a != group_b:
            raise ManifestError(f"{path}: pair {a!r} vs {b!r} mixes source images {group_a!r} and {group_b!r}")
        va, vb = entry["n"][a], entry["n"][b]
        per_obs = {o: entry["observers"][o] for o in sorted(entry["observers"], key=lambda o: int(o[1:]))}
        rows.append({
            "pair_id": f"{Path(a).stem}__{Path(b).stem}", "dataset": "sr2afc", "split": "all", "group": group_a,
            "image_a": f"sr/{a}", "image_b": f"sr/{b}", "votes_a": va, "votes_b": vb, "pref": pref_from_votes(va, vb),
            "kind": "human", "method_a": method_a, "method_b": method_b, "n_sessions": len(entry["sessions"]),
            "n_observers": len(per_obs), "observer_votes": json.dumps(per_obs, separators=(",", ":")),
        })
    return finalize(pd.DataFrame(rows), root, dataset="sr2afc", importer="sr2afc", synthetic=False, source=str(path),
                    extra_meta={"caveat": "15 votes per pair from 3 distinct observers; resample by session, not vote",
                                "observer_ids": "anonymised: o1, o2, ... in order of first appearance in votes.csv"})


def pairs_csv(file: str | Path, root: str | Path, dataset: str | None = None) -> pd.DataFrame:
    """Generic vote CSV (UTF-8, a byte-order mark is fine).

    Columns: image_a,image_b,votes_a,votes_b (required) and optionally pair_id, split, group,
    dataset, kind ('human' | 'inferred', default human), pref ('a' | 'b' | 'tie': checked against
    the votes, never overriding them) and any further columns (kept as they are). Image paths are
    relative to --root (no absolute paths, no '..', no symlinks leading outside the root).

    One pair is one unordered pair of images of a dataset: rows naming the same two images (in
    either order) are merged into the first such row, their votes summed orientation-aware (a row
    B,A,10,5 adds 5 to A and 10 to B); their other columns must agree (``*_a``/``*_b`` columns
    swapped for a reversed row), else the CSV is refused naming both lines. The manifest's
    metadata ``merged_rows`` counts the rows merged (``manifest build`` prints it in one line).
    """
    file, root = Path(file), Path(root)
    rows, first_line, seen = [], [], {}
    merged = 0
    for line, row in _rows(file, ["image_a", "image_b", "votes_a", "votes_b"]):
        va, vb = _int(file, line, row, "votes_a"), _int(file, line, row, "votes_b")
        for col in ("image_a", "image_b"):
            if not row[col]:
                raise ManifestError(f"{file}:{line}: column '{col}' is empty")
            if "\0" in row[col]:
                raise ManifestError(f"{file}:{line}: column '{col}' contains a NUL byte")
            safe_path(root, row[col], f"{file}:{line}: column '{col}'")
            if not (root / row[col]).is_file():
                raise ManifestError(f"{file}:{line}: column '{col}' = {row[col]!r}: no such file under {root}")
        pref = pref_from_votes(va, vb)
        given = (row.get("pref") or "").strip()
        if given and given not in PREFS:
            raise ManifestError(f"{file}:{line}: column 'pref' = {given!r}, expected one of a, b, tie (or empty)")
        if given and given != pref:
            raise ManifestError(f"{file}:{line}: column 'pref' = {given!r} disagrees with votes {va}-{vb} "
                                f"(majority {pref!r}); fix the votes or drop the pref column")
        extra = {k: v for k, v in row.items() if k not in ("image_a", "image_b", "votes_a", "votes_b", "pref") and k}
        entry = {
            **extra,
            "pair_id": row.get("pair_id") or f"{file.stem}-{line - 1:06d}",
            "dataset": row.get("dataset") or dataset or file.stem,
            "split": row.get("split") or "all",
            "group": row.get("group") or row["image_a"],
            "kind": row.get("kind") or "human",
            "image_a": row["image_a"], "image_b": row["image_b"], "votes_a": va, "votes_b": vb,
            "pref": pref,
        }
        a, b = os.path.normpath(row["image_a"]), os.path.normpath(row["image_b"])
        key = (entry["dataset"], min(a, b), max(a, b))
        if key not in seen:
            seen[key] = len(rows)
            rows.append(entry)
            first_line.append(line)
            continue
        i = seen[key]
        kept = rows[i]
        reverse = os.path.normpath(kept["image_a"]) != a
        if not row.get("pair_id"):
            entry["pair_id"] = kept["pair_id"]
        if not row.get("group") and reverse:
            entry["group"] = kept["group"]
        mine = _swap_sides(entry) if reverse else entry
        differ = sorted(k for k in set(kept) | set(mine)
                        if k not in ("image_a", "image_b", "votes_a", "votes_b", "pref") and kept.get(k) != mine.get(k))
        if differ:
            raise ManifestError(f"{file}:{line}: names the same two images as line {first_line[i]} with other "
                                f"{', '.join(differ)}; one pair is one row (its votes are summed): make them agree")
        kept["votes_a"] += vb if reverse else va
        kept["votes_b"] += va if reverse else vb
        kept["pref"] = pref_from_votes(kept["votes_a"], kept["votes_b"])
        merged += 1
    if not rows:
        raise ManifestError(f"{file}: no pair rows")
    for r in rows:
        if max(r["votes_a"], r["votes_b"]) > MAX_VOTES:
            raise ManifestError(f"{file}: pair {r['pair_id']!r}: summed votes exceed {MAX_VOTES}")
    ds = rows[0]["dataset"]
    return finalize(pd.DataFrame(rows), root, dataset=ds, importer="pairs-csv", synthetic=False, source=str(file),
                    extra_meta={"merged_rows": merged})


def _swap_sides(entry: dict) -> dict:
    """``entry`` seen from the other side: ``x_a`` and ``x_b`` columns exchanged."""
    out = dict(entry)
    for k, value in entry.items():
        if k.endswith("_a") and k[:-2] + "_b" in entry:
            out[k], out[k[:-2] + "_b"] = entry[k[:-2] + "_b"], value
    return out
