"""Single-GT training data: a plain folder of HR images (no enhanced GTs, no labels).

This is the data of HGGT's PSNR stage: its ``Blind_PSNR`` initialisation was trained on DF2K_OST,
a folder of photographs, with Real-ESRGAN's blind degradation and an L1 loss. The item layout is the
multi-GT one with a single GT (``gts`` of shape (1, 3, L, L), label 0 = original), so the same
pipeline (:mod:`sr_training.data.pipeline`: full-patch degradation on the device, co-located crop,
pair queue) and the same seeding (a pure function of seed, iteration and index) apply unchanged.

Images of a folder differ in size, and a batch is degraded as one tensor, so every image is first
cropped to a ``load_size`` square at a seeded random location, reflect-padded when it is smaller:
Real-ESRGAN's ``RealESRGANDataset`` does the same with ``crop_pad_size: 400`` (pad with
``cv2.BORDER_REFLECT_101``, then a random 400x400 crop) before its GPU degradation. Horizontal flip
as in the multi-GT data (``data.hflip``).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from bench.errors import StudyError
from bench.hashing import sha256_file
from sr_training.infer import load_rgb

IMAGE_EXT = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def list_images(root: str | Path, what: str = "data.root",
                expects: str = "data.source=folder expects a folder of HR images") -> list[Path]:
    """The image files of ``root`` (not recursive, hidden files left out), sorted by name; ``what`` names the
    option in the one-line errors (data.root, --photos)."""
    root = Path(root)
    if not root.is_dir():
        raise StudyError(f"{what} {root}: not a folder ({expects})")
    files = sorted(p for p in root.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXT
                   and not p.name.startswith("."))
    if not files:
        raise StudyError(f"{what} {root}: no images ({', '.join(IMAGE_EXT)}) in the folder")
    return files


def file_list_sha256(files: list[Path]) -> str:
    """Identity of a training file list: SHA-256 over 'name<TAB>sha256(content)' lines in name order."""
    text = "\n".join(f"{p.name}\t{sha256_file(p)}" for p in sorted(files, key=lambda p: p.name))
    return hashlib.sha256(text.encode()).hexdigest()


class FolderDataset(Dataset):
    def __init__(self, root: str | Path, load_size: int, hflip: bool = True, seed: int = 0):
        self.files = list_images(root)
        self.load_size, self.hflip, self.seed = int(load_size), hflip, seed
        self.labels = torch.zeros((len(self.files), 1), dtype=torch.long)  # one GT: the original (code 0)

    def __len__(self) -> int:
        return len(self.files)

    def paths(self, i: int) -> list[Path]:
        return [self.files[i]]

    def __getitem__(self, key: tuple[int, int]) -> dict:
        index, iteration = key
        img = load_rgb(self.files[index])[0]  # (3, H, W) in [0, 1]
        size = self.load_size
        h, w = img.shape[-2:]
        if h < size or w < size:  # reflect-pad (Real-ESRGAN: BORDER_REFLECT_101 = torch's 'reflect')
            ph, pw = max(0, size - h), max(0, size - w)
            if ph >= h or pw >= w:
                raise StudyError(f"{self.files[index]}: {w}x{h} is too small to pad to data.load_size={size}")
            img = F.pad(img[None], (0, pw, 0, ph), mode="reflect")[0]
            h, w = img.shape[-2:]
        rng = np.random.default_rng([self.seed, iteration, index])
        top, left = int(rng.integers(0, h - size + 1)), int(rng.integers(0, w - size + 1))
        img = img[:, top:top + size, left:left + size]
        if self.hflip and bool(rng.random() < 0.5):
            img = img.flip(-1)
        return {"gts": img.contiguous()[None], "labels": self.labels[index], "index": index}
