"""Importers for vote tables: the SR 2AFC study (``sr2afc``) and the generic ``pairs-csv``."""

from __future__ import annotations

import csv
from collections import defaultdict
from pathlib import Path

import pandas as pd

from bench.errors import ManifestError
from bench.manifests.schema import finalize, pref_from_votes

SR2AFC_COLUMNS = ["observer", "session", "left", "right", "selected", "seconds"]


def _rows(path: Path, required: list[str]) -> list[tuple[int, dict]]:
    if not path.is_file():
        raise ManifestError(f"{path}: file does not exist")
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        header = reader.fieldnames or []
        absent = [c for c in required if c not in header]
        if absent:
            raise ManifestError(f"{path}: missing column(s) {absent}; found {header}")
        return [(i, row) for i, row in enumerate(reader, start=2)]


def _int(path: Path, line: int, row: dict, col: str) -> int:
    try:
        value = int(row[col])
    except (TypeError, ValueError):
        raise ManifestError(f"{path}:{line}: column '{col}' = {row[col]!r}, expected a non-negative integer") from None
    if value < 0:
        raise ManifestError(f"{path}:{line}: column '{col}' = {value}, expected a non-negative integer")
    return value


def sr2afc(root: str | Path) -> pd.DataFrame:
    """``ROOT/votes.csv`` (observer,session,left,right,selected,seconds) + ``ROOT/sr/<id>_<method>.png``.

    Each unordered pair becomes one row; image_a/image_b are in sorted (not display) order.
    """
    root = Path(root)
    path = root / "votes.csv"
    votes: dict[tuple[str, str], dict] = defaultdict(lambda: {"n": defaultdict(int), "sessions": set(), "lines": []})
    for line, row in _rows(path, SR2AFC_COLUMNS):
        left, right, sel = row["left"], row["right"], row["selected"]
        if sel not in (left, right):
            raise ManifestError(f"{path}:{line}: selected {sel!r} is neither left {left!r} nor right {right!r}")
        if left == right:
            raise ManifestError(f"{path}:{line}: left and right are the same image {left!r}")
        _int(path, line, row, "session")
        a, b = sorted((left, right))
        entry = votes[(a, b)]
        entry["n"][sel] += 1
        entry["sessions"].add(row["session"])
    if not votes:
        raise ManifestError(f"{path}: no vote rows")
    rows = []
    for (a, b), entry in sorted(votes.items()):
        group_a, method_a = Path(a).stem.split("_", 1)
        group_b, method_b = Path(b).stem.split("_", 1)
        if group_a != group_b:
            raise ManifestError(f"{path}: pair {a!r} vs {b!r} mixes source images {group_a!r} and {group_b!r}")
        va, vb = entry["n"][a], entry["n"][b]
        rows.append({
            "pair_id": f"{Path(a).stem}__{Path(b).stem}", "dataset": "sr2afc", "split": "all", "group": group_a,
            "image_a": f"sr/{a}", "image_b": f"sr/{b}", "votes_a": va, "votes_b": vb, "pref": pref_from_votes(va, vb),
            "method_a": method_a, "method_b": method_b, "n_sessions": len(entry["sessions"]),
        })
    return finalize(pd.DataFrame(rows), root, dataset="sr2afc", importer="sr2afc", synthetic=False, source=str(path),
                    extra_meta={"caveat": "15 votes per pair from 3 distinct observers; resample by session, not vote"})


def pairs_csv(file: str | Path, root: str | Path, dataset: str | None = None) -> pd.DataFrame:
    """Generic CSV: image_a,image_b,votes_a,votes_b (+ optional pair_id,split,group,dataset,...)."""
    file, root = Path(file), Path(root)
    rows = []
    for line, row in _rows(file, ["image_a", "image_b", "votes_a", "votes_b"]):
        va, vb = _int(file, line, row, "votes_a"), _int(file, line, row, "votes_b")
        for col in ("image_a", "image_b"):
            if not row[col]:
                raise ManifestError(f"{file}:{line}: column '{col}' is empty")
            if not (root / row[col]).is_file():
                raise ManifestError(f"{file}:{line}: column '{col}' = {row[col]!r}: no such file under {root}")
        extra = {k: v for k, v in row.items() if k not in ("image_a", "image_b", "votes_a", "votes_b") and k}
        rows.append({
            **extra,
            "pair_id": row.get("pair_id") or f"{file.stem}-{line - 1:06d}",
            "dataset": row.get("dataset") or dataset or file.stem,
            "split": row.get("split") or "all",
            "group": row.get("group") or row["image_a"],
            "image_a": row["image_a"], "image_b": row["image_b"], "votes_a": va, "votes_b": vb,
            "pref": pref_from_votes(va, vb),
        })
    if not rows:
        raise ManifestError(f"{file}: no pair rows")
    ds = rows[0]["dataset"]
    return finalize(pd.DataFrame(rows), root, dataset=ds, importer="pairs-csv", synthetic=False, source=str(file))
