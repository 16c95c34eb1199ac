"""SBS180K (Neural Side-by-Side, Khrulkov & Babenko, CVPR 2021) importer.

The dataset's real on-disk layout is undocumented (its repository has no loader and no file
list; docs: datasets.md 2.2). Until the zip is inspected, this importer accepts one
**documented expected layout** and refuses anything else:

    SBS180K_ROOT/
      pairs.parquet  or  pairs.csv     one row per unordered pair, columns:
          pair_id, left_path, right_path, votes_left, votes_right, split
          (optional: source_image_id, method_left, method_right, label)
      <the images at the relative paths named by left_path / right_path>

``label`` ('left'/'right'/'tie') is used only when votes are absent. On a mismatch the error
names the expected entries, what was found and the docs section (datasets.md 2.3) to update.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from bench.errors import ManifestError
from bench.manifests.schema import MAX_VOTES, finalize, pref_from_votes, safe_path

EXPECTED = ["pair_id", "left_path", "right_path", "votes_left", "votes_right", "split"]


def _layout_error(root: Path, why: str) -> ManifestError:
    listing = sorted(p.name for p in root.iterdir())[:10] if root.is_dir() else "no such folder"
    return ManifestError(
        f"{root}: not the expected SBS180K layout ({why}); expected pairs.parquet or pairs.csv with columns "
        f"{EXPECTED} and images at the paths it names; found {listing}. "
        f"If this is the real unzipped NeuralSBS_dataset, add a converter and update docs datasets.md 2.3"
    )


def sbs180k(root: str | os.PathLike) -> pd.DataFrame:
    root = Path(root)
    if not root.is_dir():
        raise _layout_error(root, "root folder missing")
    try:
        if (root / "pairs.parquet").is_file():
            src = root / "pairs.parquet"
            table = pd.read_parquet(src)
        elif (root / "pairs.csv").is_file():
            src = root / "pairs.csv"
            table = pd.read_csv(src, encoding="utf-8-sig", dtype={"left_path": str, "right_path": str,
                                                                  "pair_id": str, "split": str})
        else:
            raise _layout_error(root, "no pairs.parquet / pairs.csv")
    except UnicodeDecodeError as exc:
        raise ManifestError(f"{src}: not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start}); "
                            f"save it as UTF-8") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, ValueError, OSError) as exc:
        raise ManifestError(f"{src}: not a readable table ({str(exc).splitlines()[0] if str(exc) else exc!r})") from None
    absent = [c for c in EXPECTED if c not in table.columns]
    if absent:
        raise _layout_error(root, f"{src.name} lacks column(s) {absent}, has {list(table.columns)[:12]}")
    votes_known = table["votes_left"].notna() & table["votes_right"].notna()
    if (~votes_known).any() and "label" not in table.columns:
        row = int((~votes_known).idxmax())
        raise ManifestError(f"{src}: row {row + 2}: votes missing and no 'label' column to fall back on")
    for col in ("votes_left", "votes_right"):
        v = pd.to_numeric(table[col], errors="coerce")
        bad = table[col].notna() & ~(v.notna() & (v >= 0) & (v <= MAX_VOTES) & (v == v.round()))
        if bad.any():
            row = int(bad.to_numpy().argmax())
            raise ManifestError(f"{src}: row {row + 2}: column '{col}' = {table[col].iloc[row]!r}, expected a "
                                f"non-negative integer at most {MAX_VOTES}")
    for col in ("left_path", "right_path"):
        for i, rel in enumerate(table[col].astype(str)):
            safe_path(root, rel, f"{src}: row {i + 2}: column '{col}'")
    pref = []
    for i, r in table.iterrows():
        if votes_known[i]:
            pref.append(pref_from_votes(int(r["votes_left"]), int(r["votes_right"])))
        else:
            lab = str(r["label"])
            if lab not in ("left", "right", "tie"):
                raise ManifestError(f"{src}: row {i + 2}: label {lab!r}, expected left/right/tie")
            pref.append({"left": "a", "right": "b", "tie": "tie"}[lab])
    out = table.rename(columns={"left_path": "image_a", "right_path": "image_b", "votes_left": "votes_a",
                                "votes_right": "votes_b", "method_left": "method_a", "method_right": "method_b"})
    out["pref"] = pref
    out["dataset"] = "sbs180k"
    if "kind" not in out.columns:
        out["kind"] = "human"  # SBS pairs were shown side by side to raters
    out["group"] = out["source_image_id"].astype(str) if "source_image_id" in out.columns else out["image_a"]
    return finalize(out, root, dataset="sbs180k", importer="sbs180k", synthetic=False, source=str(src))
