"""Image decoding for scoring: a Dataset that never raises, and size-grouped batches."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset, Sampler


@dataclass(frozen=True)
class ImageRef:
    image_id: str
    path: str
    width: int
    height: int


def policy_size(width: int, height: int, max_pixels: int | None) -> tuple[int, int]:
    """(w, h) after the input policy: downscale (keeping aspect) so w*h <= max_pixels."""
    if not max_pixels or width * height <= max_pixels or width <= 0:
        return width, height
    f = math.sqrt(max_pixels / (width * height))
    return max(1, int(width * f)), max(1, int(height * f))


class ImageDataset(Dataset):
    """Yields dicts {image_id, tensor (3,H,W) float32 in [0,1] or None, error or None}."""

    def __init__(self, refs: list[ImageRef], max_pixels: int | None = None):
        self.refs = refs
        self.max_pixels = max_pixels

    def __len__(self) -> int:
        return len(self.refs)

    def __getitem__(self, i: int) -> dict:
        ref = self.refs[i]
        try:
            with Image.open(ref.path) as im:
                img = im.convert("RGB")
                img.load()
        except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError) as exc:
            return {"image_id": ref.image_id, "tensor": None, "error": f"decode: {type(exc).__name__}: {exc}"}
        size = policy_size(img.width, img.height, self.max_pixels)
        if size != img.size:
            img = img.resize(size, Image.Resampling.BICUBIC, reducing_gap=3.0)
        arr = np.asarray(img, dtype=np.float32) / 255.0
        return {"image_id": ref.image_id, "tensor": torch.from_numpy(arr).permute(2, 0, 1).contiguous(), "error": None}


def collate(items: list[dict]) -> list[dict]:
    return items  # stacking happens in the engine, after failed decodes are set aside


class SizeBatchSampler(Sampler[list[int]]):
    """Batches of indices whose images share one (policy) size, so they can be stacked."""

    def __init__(self, refs: list[ImageRef], batch_size: int, max_pixels: int | None = None):
        groups: dict[tuple[int, int], list[int]] = {}
        for i, r in enumerate(refs):
            groups.setdefault(policy_size(r.width, r.height, max_pixels), []).append(i)
        self.batches = [idx[j:j + batch_size] for _, idx in sorted(groups.items()) for j in range(0, len(idx), batch_size)]

    def __iter__(self):
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


def refs_from_manifest(manifest) -> list[ImageRef]:
    """Unique images of a manifest (one entry per content hash), with absolute paths."""
    root = Path(manifest.attrs["iqa_study"]["root"])
    seen: dict[str, ImageRef] = {}
    for side in ("a", "b"):
        for iid, rel, w, h in zip(manifest[f"image_{side}_id"], manifest[f"image_{side}"],
                                  manifest[f"width_{side}"], manifest[f"height_{side}"]):
            if iid not in seen:
                seen[iid] = ImageRef(str(iid), str(root / rel), int(w), int(h))
    return [seen[k] for k in sorted(seen)]
