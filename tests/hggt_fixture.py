"""Write a tiny dataset in the exact HGGT layout and label-JSON structure (datasets.md 1.2-1.6)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image


def label_json(stem: str, labels: list[str]) -> dict:
    doc = {"Picture_1": {"Name": f"{stem}.png", "File": "original", "Label": None}}
    for k, lab in enumerate(labels, start=1):
        doc[f"Picture_{k + 1}"] = {"Name": f"{stem}_0{k}.png", "File": f"0{k}", "Label": lab}
    doc["Time_cost"] = {"Start": "2022-05-01 10:00:00", "End": "2022-05-01 10:00:31", "Total": 31}
    return doc


def make_hggt(base: Path, groups: dict[str, dict[str, list[str]]], *, size: int = 32, original_dir: str = "original",
              batch: str | None = "0-20193", seed: int = 0) -> Path:
    """``groups[stem][annotator] = [label of 01, 02, 03, 04]``; returns the split folder."""
    rng = np.random.default_rng(seed)
    images = base / "images" / batch if batch else base / "images"
    labels = base / "labels" / batch if batch else base / "labels"
    for stem, by_ann in groups.items():
        arr = rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8)
        (images / original_dir).mkdir(parents=True, exist_ok=True)
        Image.fromarray(arr).save(images / original_dir / f"{stem}.png")
        for k in range(1, 5):
            (images / f"0{k}").mkdir(parents=True, exist_ok=True)
            enh = np.clip(arr.astype(int) + 10 * k, 0, 255).astype(np.uint8)
            Image.fromarray(enh).save(images / f"0{k}" / f"{stem}_0{k}.png")
        for ann, labs in by_ann.items():
            (labels / ann).mkdir(parents=True, exist_ok=True)
            (labels / ann / f"{stem}.json").write_text(json.dumps(label_json(stem, labs), indent=1))
    return base
