"""HGGT's training-pair queue ("training pair pool"), with a checkpointable state.

Semantics, exactly those of ``_dequeue_and_enqueue`` in HGGT's
``basicsr/models/realesrgan_posgt_model.py`` and ``ours_posgt_model.py`` (Real-ESRGAN's
``realesrgan/models/realesrgan_model.py`` pool, extended to the GT stack and the labels):

* the queue holds ``size`` samples (LR, GT stack, labels, and here the group index too); ``size`` must
  be a multiple of the batch size ``b`` (HGGT asserts it);
* while it is not full (``ptr < size``) the incoming batch is written at ``[ptr, ptr + b)``, ``ptr``
  advances by ``b`` and the *incoming batch itself* is returned (so the first ``size / b`` iterations
  train on fresh batches, which also stay in the pool);
* once full, every call permutes the whole queue (one ``randperm(size)``), returns its first ``b``
  samples and writes the incoming batch into those ``b`` slots.

Samples therefore leave the queue at random, mixing degradations drawn for different batches (resize
mode, noise type) into one batch. The permutation comes from the caller's ``torch.Generator``, and
``state_dict()`` carries the queue contents, so a resumed run draws bit-identical batches.
"""

from __future__ import annotations

import torch

from bench.errors import StudyError

KEYS = ("lr", "gts", "labels", "index")
_IMAGE_KEYS = ("lr", "gts")


def _pack(x: torch.Tensor) -> torch.Tensor:
    """Images that are exact multiples of 1/255 (8-bit GTs, quantised LR) are stored as uint8 (4x smaller)."""
    x = x.detach().cpu()
    if x.is_floating_point():
        q = (x * 255).round()
        if torch.equal(q / 255, x) and bool(((q >= 0) & (q <= 255)).all()):
            return q.to(torch.uint8)
    return x.clone()


def _unpack(x: torch.Tensor, device) -> torch.Tensor:
    return (x.to(device).float() / 255) if x.dtype == torch.uint8 else x.to(device)


class PairQueue:
    def __init__(self, size: int, device: str | torch.device = "cpu"):
        if size < 0:
            raise StudyError(f"data.queue_size={size}: expected >= 0")
        self.size, self.device = int(size), torch.device(device)
        self.ptr = 0
        self.buf: dict[str, torch.Tensor] | None = None

    def _init(self, batch: dict[str, torch.Tensor]) -> None:
        b = batch["lr"].shape[0]
        if self.size % b:
            raise StudyError(f"data.queue_size={self.size} must be a multiple of data.batch_size={b} (HGGT asserts it)")
        self.buf = {k: torch.zeros((self.size, *batch[k].shape[1:]), dtype=batch[k].dtype, device=batch[k].device)
                    for k in KEYS}

    def push_pop(self, batch: dict[str, torch.Tensor], gen: torch.Generator) -> dict[str, torch.Tensor]:
        """Enqueue ``batch``; return the batch to train on (see the module docstring)."""
        if self.size == 0:
            return {k: batch[k] for k in KEYS}
        if self.buf is None:
            self._init(batch)
        b = batch["lr"].shape[0]
        for k in KEYS:
            if batch[k].shape[1:] != self.buf[k].shape[1:] or batch[k].shape[0] != b:
                raise StudyError(f"pair queue: batch '{k}' has shape {tuple(batch[k].shape)}, the queue holds "
                                 f"{tuple(self.buf[k].shape[1:])} per sample (batch {b}); every batch must match")
        if self.ptr == self.size:
            perm = torch.randperm(self.size, generator=gen)
            out = {}
            for k in KEYS:
                self.buf[k] = self.buf[k][perm.to(self.buf[k].device)]
                out[k] = self.buf[k][:b].clone()
                self.buf[k][:b] = batch[k]
            return out
        for k in KEYS:
            self.buf[k][self.ptr:self.ptr + b] = batch[k]
        self.ptr += b
        return {k: batch[k] for k in KEYS}

    # --- checkpoint (C5): plain tensors and ints, loadable with torch.load(weights_only=True) -------------
    def state_dict(self) -> dict:
        s = {"size": self.size, "ptr": self.ptr}
        if self.buf is not None:
            s |= {k: (_pack(v) if k in _IMAGE_KEYS else v.detach().cpu().clone()) for k, v in self.buf.items()}
        return s

    def load_state_dict(self, s: dict) -> None:
        if int(s["size"]) != self.size:
            raise StudyError(f"checkpoint pair queue has size {s['size']}, config data.queue_size resolves to "
                             f"{self.size}; resume with the same queue size")
        self.ptr = int(s["ptr"])
        if "lr" not in s:
            self.buf = None
            return
        self.buf = {k: _unpack(s[k], self.device) if k in _IMAGE_KEYS else s[k].clone() for k in KEYS}
