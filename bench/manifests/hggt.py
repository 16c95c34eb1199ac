"""HGGT (Chen et al., CVPR 2023) layout, effective labels, and the study-pair importer.

Layout (docs: datasets.md 1.2-1.6)::

    <split dir>/images/[<batch>/]original/<stem>.png        (test sets may spell it 'Original')
    <split dir>/images/[<batch>/]0k/<stem>_0k.png           k = 1..4, enhanced GTs
    <split dir>/labels/[<batch>/]{A,B,C}/<stem>.json        one JSON per group and annotator

Label JSON: Picture_1 is the original (Label null), Picture_{k+1} is folder 0k with Label in
{Positive, Similar, Negative}. The group list comes from labels/A; B and C must match.
Effective label: majority of the three votes; all three different -> Similar.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from bench.errors import ManifestError
from bench.manifests.schema import finalize

LABELS = ("Positive", "Similar", "Negative")
CODE = {"Original": 0, "Positive": 1, "Similar": 2, "Negative": 3}
RANK = {"Positive": 2, "Similar": 1, "Negative": 0}  # preference order for enhanced-vs-enhanced pairs
ANNOTATORS = ("A", "B", "C")
ENHANCED = ("01", "02", "03", "04")


def effective_label(votes: list[str]) -> tuple[str, int]:
    """(label, label_num): the majority label and its size; all different -> ('Similar', 1)."""
    label, count = Counter(votes).most_common(1)[0]
    if count == 1:
        return "Similar", 1
    return label, count


@dataclass(frozen=True)
class HggtLayout:
    images: Path  # folder holding original/ and 01..04/
    labels: Path  # folder holding A/, B/, C/
    original_dir: str  # 'original' or the spelling found ('Original')

    def original(self, stem: str) -> Path:
        return self.images / self.original_dir / f"{stem}.png"

    def enhanced(self, stem: str, k: str) -> Path:
        return self.images / k / f"{stem}_{k}.png"

    def stems(self) -> list[str]:
        return sorted(p.stem for p in (self.labels / "A").glob("*.json"))


def _descend(folder: Path, marker: str) -> Path:
    """Return ``folder`` if it holds ``marker`` (case-insensitive), else its single subfolder that does."""
    def has(d: Path) -> bool:
        return d.is_dir() and any(c.name.lower() == marker.lower() for c in d.iterdir())

    if has(folder):
        return folder
    subs = [d for d in sorted(folder.iterdir()) if has(d)] if folder.is_dir() else []
    if len(subs) == 1:
        return subs[0]
    found = sorted(c.name for c in folder.iterdir())[:8] if folder.is_dir() else "nothing (missing)"
    raise ManifestError(f"{folder}: expected a '{marker}/' folder here or in one batch subfolder; found {found}")


def resolve_layout(root: str | os.PathLike, split: str = "test") -> HggtLayout:
    """Accept the HGGT dataset root (Train/, Test/) or a split dir holding images/ and labels/."""
    root = Path(root)
    if not root.is_dir():
        raise ManifestError(f"{root}: HGGT root does not exist")
    if (root / "images").is_dir() and (root / "labels").is_dir():
        base = root
    elif split == "train":
        base = root / "Train"
    elif split == "test":
        base = root / "Test" / "GT" / "Test-100"
    else:
        raise ManifestError(f"HGGT split {split!r}: expected 'train' or 'test'")
    for sub in ("images", "labels"):
        if not (base / sub).is_dir():
            raise ManifestError(
                f"{base}: expected HGGT folders images/ and labels/ (datasets.md 1.2/1.6); "
                f"found {sorted(p.name for p in base.iterdir()) if base.is_dir() else 'no such folder'}"
            )
    images = _descend(base / "images", "original")
    labels = _descend(base / "labels", "A")
    original_dir = next(c.name for c in images.iterdir() if c.name.lower() == "original")
    return HggtLayout(images=images, labels=labels, original_dir=original_dir)


def read_group_labels(layout: HggtLayout, stem: str) -> dict[str, list[str]]:
    """{'01': [vote A, vote B, vote C], ...}; checks that Picture_(k+1).File names folder 0k."""
    votes: dict[str, list[str]] = {k: [] for k in ENHANCED}
    for ann in ANNOTATORS:
        path = layout.labels / ann / f"{stem}.json"
        if not path.is_file():
            raise ManifestError(f"{path}: missing (every group listed in labels/A needs B and C labels too)")
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise ManifestError(f"{path}: invalid JSON ({exc.msg} at line {exc.lineno})") from None
        if not isinstance(data, dict):
            raise ManifestError(f"{path}: the top level is a JSON {type(data).__name__}, expected an object with "
                                f"Picture_1 .. Picture_5 (HGGT's label structure)")
        for i, k in enumerate(ENHANCED, start=2):
            pic = data.get(f"Picture_{i}")
            if not isinstance(pic, dict) or "Label" not in pic:
                raise ManifestError(f"{path}: field 'Picture_{i}.Label' missing")
            if str(pic.get("File", k)) != k:
                raise ManifestError(f"{path}: Picture_{i}.File is {pic.get('File')!r}, expected {k!r}")
            if pic["Label"] not in LABELS:
                raise ManifestError(f"{path}: Picture_{i}.Label is {pic['Label']!r}, expected one of {LABELS}")
            votes[k].append(pic["Label"])
    return votes


def group_table(layout: HggtLayout) -> pd.DataFrame:
    """One row per (group, enhanced GT): votes, effective label and label_num."""
    stems = layout.stems()
    if not stems:
        raise ManifestError(f"{layout.labels / 'A'}: no label JSON files")
    rows = []
    for stem in stems:
        votes = read_group_labels(layout, stem)
        for k, v in votes.items():
            label, num = effective_label(v)
            rows.append({"group": stem, "gt": k, "label": label, "label_num": num, "code": CODE[label],
                         "n_pos": v.count("Positive"), "n_sim": v.count("Similar"), "n_neg": v.count("Negative")})
    return pd.DataFrame(rows)


def hggt(root: str | os.PathLike, split: str = "test") -> pd.DataFrame:
    """Study pairs from HGGT groups.

    * (enhanced_k, original) for every effective Positive (pref a) or Negative (pref b) GT, and
      Similar -> tie; votes_a / votes_b = Positive / Negative annotator votes (Similar votes in votes_tie).
    * (enhanced_i, enhanced_j) when their effective labels differ (pref: the better label);
      no direct votes exist, so votes are null.

    ``kind``: 'human' for enhanced-vs-original pairs (each annotator judged the
    enhanced GT against the original), 'inferred' for enhanced-vs-enhanced pairs (no annotator
    compared the two; the preference is derived from their labels). Agreement and study
    accuracies exclude 'inferred' pairs by default. ``comparison`` names the pair type
    (enhanced_vs_original | enhanced_vs_enhanced).
    """
    layout = resolve_layout(root, split)
    groups = group_table(layout)
    rel = lambda p: str(p.relative_to(layout.images))
    rows = []
    for stem, g in groups.groupby("group", sort=True):
        orig = rel(layout.original(stem))
        recs = g.to_dict("records")
        for r in recs:
            pref = {"Positive": "a", "Negative": "b", "Similar": "tie"}[r["label"]]
            rows.append({
                "pair_id": f"{stem}:{r['gt']}-orig", "dataset": "hggt", "split": split, "group": stem,
                "image_a": rel(layout.enhanced(stem, r["gt"])), "image_b": orig,
                "votes_a": r["n_pos"], "votes_b": r["n_neg"], "votes_tie": r["n_sim"], "pref": pref,
                "kind": "human", "comparison": "enhanced_vs_original", "label_a": r["label"], "label_b": "Original",
            })
        for i, ri in enumerate(recs):
            for rj in recs[i + 1:]:
                if ri["label"] == rj["label"]:
                    continue
                pref = "a" if RANK[ri["label"]] > RANK[rj["label"]] else "b"
                rows.append({
                    "pair_id": f"{stem}:{ri['gt']}-{rj['gt']}", "dataset": "hggt", "split": split, "group": stem,
                    "image_a": rel(layout.enhanced(stem, ri["gt"])), "image_b": rel(layout.enhanced(stem, rj["gt"])),
                    "votes_a": None, "votes_b": None, "votes_tie": None, "pref": pref,
                    "kind": "inferred", "comparison": "enhanced_vs_enhanced", "label_a": ri["label"], "label_b": rj["label"],
                })
    df = pd.DataFrame(rows)
    df["votes_tie"] = df["votes_tie"].astype("Int64")
    return finalize(df, layout.images, dataset="hggt", importer="hggt", synthetic=False, source=str(layout.labels),
                    extra_meta={"split": split, "original_dir": layout.original_dir})
