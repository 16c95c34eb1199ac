"""Multi-GT training data over the HGGT layout (original + 01..04, labels A/B/C).

Each item is one group: the FULL images of all five versions (HGGT degrades the full 512x512
original, then crops; see :mod:`sr_training.data.pipeline`), with a shared horizontal flip (HGGT's
dataset ``augment(img_list, use_hflip, use_rot=False)``: flip only, no rotation), plus the effective
labels coded as HGGT does (0 original, 1 Positive, 2 Similar, 3 Negative). With ``crop=True``
(``data.crop_before_degrade``, not HGGT's recipe) the item is one co-located ``gt_size`` crop instead.
Randomness is a pure function of (seed, iteration, index), so a resumed run reads exactly the same items.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from bench.errors import StudyError
from bench.manifests.hggt import CODE, ENHANCED, group_table, resolve_layout
from bench.scoring.images import read_rgb

POSITIVE = CODE["Positive"]


class MultiGTDataset(Dataset):
    def __init__(self, root: str, split: str = "train", gt_size: int = 256, hflip: bool = True, seed: int = 0,
                 require_positive: bool = False, crop: bool = False):
        self.layout = resolve_layout(root, split)
        table = group_table(self.layout)
        codes = table.pivot(index="group", columns="gt", values="code")[list(ENHANCED)]
        if require_positive:  # UPos / SMP: HGGT drops groups with no effective Positive
            codes = codes[(codes == POSITIVE).any(axis=1)]
        if codes.empty:
            raise StudyError(f"{self.layout.labels}: no usable groups"
                             + (" with an effective Positive GT" if require_positive else ""))
        self.stems = list(codes.index)
        self.labels = torch.tensor(np.concatenate([np.zeros((len(codes), 1)), codes.to_numpy()], axis=1), dtype=torch.long)
        self.gt_size, self.hflip, self.seed, self.crop = gt_size, hflip, seed, crop

    def __len__(self) -> int:
        return len(self.stems)

    def paths(self, i: int) -> list:
        stem = self.stems[i]
        return [self.layout.original(stem)] + [self.layout.enhanced(stem, k) for k in ENHANCED]

    def __getitem__(self, key: tuple[int, int]) -> dict:
        index, iteration = key
        arrays = []
        for path in self.paths(index):  # HxWx3 float32 in [0, 1]: the suite's one decoder
            arrays.append(read_rgb(path, "GT image"))
        h, w = arrays[0].shape[:2]
        if any(a.shape[:2] != (h, w) for a in arrays):
            raise StudyError(f"group {self.stems[index]}: GT versions differ in size "
                             f"{sorted({a.shape[:2] for a in arrays})}")
        if h < self.gt_size or w < self.gt_size:
            raise StudyError(f"group {self.stems[index]}: {w}x{h} is smaller than data.gt_size={self.gt_size}")
        rng = np.random.default_rng([self.seed, iteration, index])
        flip = self.hflip and bool(rng.random() < 0.5)
        if self.crop:
            top, left = int(rng.integers(0, h - self.gt_size + 1)), int(rng.integers(0, w - self.gt_size + 1))
            arrays = [a[top:top + self.gt_size, left:left + self.gt_size] for a in arrays]
        stack = np.stack(arrays)
        if flip:
            stack = stack[:, :, ::-1]
        gts = torch.from_numpy(np.ascontiguousarray(stack)).permute(0, 3, 1, 2)
        return {"gts": gts, "labels": self.labels[index], "index": index}


class IterationBatchSampler(Sampler[list[tuple[int, int]]]):
    """Batches for iterations [start, total): epoch-wise permutations seeded by (seed, epoch), split
    across ranks; each index is paired with its iteration so flips (and crops) are reproducible on resume."""

    def __init__(self, n: int, batch_size: int, seed: int, start: int, total: int, rank: int = 0, world: int = 1):
        self.n, self.bs, self.seed, self.start, self.total = n, batch_size, seed, start, total
        self.rank, self.world = rank, world
        self.per_epoch = max(1, n // (batch_size * world))

    def __len__(self) -> int:
        return max(0, self.total - self.start)

    def batch_for(self, it: int) -> list[tuple[int, int]]:
        epoch, pos = divmod(it, self.per_epoch)
        perm = np.random.default_rng([self.seed, epoch]).permutation(self.n)
        if len(perm) < self.bs * self.world:  # tiny sets: repeat the permutation
            perm = np.resize(perm, self.bs * self.world)
        mine = perm[self.rank::self.world]
        idx = mine[pos * self.bs:(pos + 1) * self.bs]
        return [(int(i), it) for i in idx]

    def __iter__(self):
        for it in range(self.start, self.total):
            yield self.batch_for(it)


def collate(items: list[dict]) -> dict:
    sizes = {tuple(it["gts"].shape[-2:]) for it in items}
    if len(sizes) > 1:
        raise StudyError(f"a batch mixes GT sizes {sorted(sizes)} (HGGT's groups are all 512x512); full images "
                         "are degraded before cropping, so they must share one size (or set data.crop_before_degrade)")
    return {"gts": torch.stack([it["gts"] for it in items]), "labels": torch.stack([it["labels"] for it in items]),
            "index": torch.tensor([it["index"] for it in items])}
