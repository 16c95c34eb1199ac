"""From a batch of full GT stacks to a training batch, in HGGT's order (contract C6, method.md 5).

HGGT (``basicsr/models/realesrgan_posgt_model.RealESRGAN_PosGT_Model.feed_data`` and
``ours_posgt_model.Ours_PosGT_Model.feed_data``), per iteration:

1. the dataset yields the full 512x512 GT stack (original + 01..04), horizontally flipped with
   probability 0.5 (``use_hflip``; no rotation) - done in :class:`sr_training.data.multigt.MultiGTDataset`;
2. the full *original* is degraded on the device (:func:`sr_training.data.degradation.degrade`);
3. ``paired_random_crop`` (BasicSR ``basicsr/data/transforms.py``) takes ONE location per batch on the LR
   grid (``top, left ~ U{0 .. h_lq - gt_size/scale}``) and crops the LR there and all five GTs at
   ``(top*scale, left*scale)``, ``gt_size`` wide: the LR and the GT stack are co-located;
4. the pair queue (:mod:`sr_training.data.queue`) mixes the samples with earlier batches.

``crop_before_degrade`` (``data.crop_before_degrade``, off in every paper config) is a shortcut that is NOT
HGGT's recipe: the dataset crops ``gt_size`` first and only the crop is degraded (cheaper, but blur,
resize and JPEG see different borders and block grids than in HGGT).

Every draw is seeded by (seed, iteration, rank), and the queue state is checkpointed, so a resumed
run produces bit-identical batches.
"""

from __future__ import annotations

import numpy as np
import torch

from bench.errors import StudyError
from sr_training.data.degradation import degrade
from sr_training.data.queue import PairQueue

# queue_size of HGGT's configs (options/train/PosNegGTSR/train_*_PosNegGT_Blind_Pos_x4.yml)
HGGT_QUEUE_SIZE = {("swinir", "one_stage"): 160,  # train_SwinIRGAN_...: queue_size 160, batch 8
                   ("rrdb", "two_stage"): 180,  # train_RealESRGAN_...: queue_size 180, batch 12
                   ("rrdb", "one_stage"): 144}  # train_RRDBGAN_...: queue_size 144, batch 12
_STREAM = 3  # seed stream of the data pipeline (the trainer uses 1 and 2)


def hggt_queue_size(arch: str, kind: str) -> int:
    """``data.queue_size: null``: the size of HGGT's config for (arch, degradation kind). HGGT has a single
    SwinIR config, so SwinIR gets 160 with either degradation; RRDB gets 180 (two-stage, Real-ESRGAN) or
    144 (one-stage, RRDBGAN)."""
    if arch == "swinir":
        return HGGT_QUEUE_SIZE[("swinir", "one_stage")]
    try:
        return HGGT_QUEUE_SIZE[(arch, kind)]
    except KeyError:
        raise StudyError(f"data.queue_size: HGGT has no config for arch {arch!r} with {kind} degradation; "
                         f"set data.queue_size explicitly (0 disables the queue)") from None


def _seed(*parts: int) -> int:
    return int(np.random.SeedSequence(list(parts)).generate_state(1)[0])


class DataPipeline:
    def __init__(self, kind: str, scale: int, gt_size: int, queue_size: int, seed: int, rank: int = 0,
                 device: str | torch.device = "cpu", crop_before_degrade: bool = False, jpeg: str = "hggt"):
        if gt_size % scale:
            raise StudyError(f"data.gt_size={gt_size} must be a multiple of arch.scale={scale}")
        self.kind, self.scale, self.gt_size, self.seed, self.rank = kind, scale, gt_size, seed, rank
        self.device, self.crop_before_degrade, self.jpeg = torch.device(device), crop_before_degrade, jpeg
        self.queue = PairQueue(queue_size, self.device)

    @classmethod
    def from_config(cls, cfg, device, rank: int = 0) -> DataPipeline:
        d = cfg.data
        size = d.queue_size if d.queue_size is not None else hggt_queue_size(cfg.arch.type, d.degradation.kind)
        if size % d.batch_size:
            raise StudyError(f"data.queue_size={size}{' (HGGT default)' if d.queue_size is None else ''} must be a "
                             f"multiple of data.batch_size={d.batch_size} (HGGT asserts it); set data.queue_size")
        return cls(d.degradation.kind, cfg.arch.scale, d.gt_size, size, cfg.seed, rank, device, d.crop_before_degrade,
                   d.degradation.jpeg)

    def next_batch(self, batch: dict, it: int, trace: list | None = None) -> dict:
        """``batch`` from :func:`sr_training.data.multigt.collate` -> dict(lr, gts, labels, index)."""
        gen = torch.Generator().manual_seed(_seed(self.seed, it, self.rank, _STREAM))
        gts = batch["gts"].to(self.device, non_blocking=True)  # (B, 5, 3, H, W)
        if trace is not None:
            trace.append({"op": "degrade_input", "size": tuple(gts.shape[-2:])})
        lr = degrade(gts[:, 0], self.kind, self.scale, gen, trace, self.jpeg)
        if not self.crop_before_degrade:
            lr, gts = self._paired_crop(lr, gts, gen)
        elif gts.shape[-1] != self.gt_size or gts.shape[-2] != self.gt_size:
            raise StudyError(f"data.crop_before_degrade: expected {self.gt_size}px crops from the dataset, got "
                             f"{tuple(gts.shape[-2:])}")
        return self.queue.push_pop({"lr": lr, "gts": gts, "labels": batch["labels"], "index": batch["index"]}, gen)

    def _paired_crop(self, lr: torch.Tensor, gts: torch.Tensor, gen: torch.Generator):
        p = self.gt_size // self.scale
        h, w = lr.shape[-2:]
        if h < p or w < p:
            raise StudyError(f"LR {h}x{w} is smaller than data.gt_size/scale={p}: the GT images are too small "
                             f"for data.gt_size={self.gt_size}")
        top = int(torch.randint(h - p + 1, (1,), generator=gen))
        left = int(torch.randint(w - p + 1, (1,), generator=gen))
        t, l = top * self.scale, left * self.scale
        return (lr[..., top:top + p, left:left + p],
                gts[..., t:t + self.gt_size, l:l + self.gt_size])

    def state_dict(self) -> dict:
        return {"queue": self.queue.state_dict()}

    def load_state_dict(self, s: dict) -> None:
        self.queue.load_state_dict(s["queue"])
