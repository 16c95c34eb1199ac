"""HGGT's JPEG: the codec of BasicSR's ``DiffJPEG(differentiable=False)``, written from the algorithm.

HGGT compresses with ``basicsr/utils/diffjpeg.py`` ``DiffJPEG(differentiable=False)`` (e.g.
``PosNegGTSR/basicsr/models/ours_posgt_model.py`` ``Ours_PosGT_Model.__init__``: ``self.jpeger =
DiffJPEG(differentiable=False)``, called in ``feed_data`` with a per-sample quality drawn uniformly from
``jpeg_range``; HGGT's copy is identical to BasicSR's). Per image, in 0-255 units:

1. zero-pad bottom/right to a multiple of 16 (black; cropped back at the end);
2. RGB -> YCbCr, JFIF full range (Y = .299R + .587G + .114B, Cb/Cr offset 128), no integer rounding;
3. Cb, Cr subsampled 4:2:0 by 2x2 averaging;
4. 8x8 blocks, level shift -128, orthonormal 2-D DCT-II (the JPEG FDCT);
5. quantisation with hard rounding, ``round(F / T)``, where ``T = table * f(q)`` and ``f(q) = 50 / q`` for
   ``q < 50``, ``(200 - 2q) / 100`` otherwise. Unlike libjpeg (``(table * 100 f + 50) // 100`` clamped to
   [1, 255]) and kornia (a soft floor), the scaled table is used as is: not rounded, floored or clamped,
   so q 95 divides by 1.6, not 2. The tables are the JPEG standard's Annex K luminance (K.1) and
   chrominance (K.2) tables, but TRANSPOSED relative to the standard and libjpeg: BasicSR stores them
   with ``.T`` while its DCT indexes coefficients (vertical, horizontal) frequency like libjpeg, so e.g.
   the first horizontal AC coefficient is divided by 12 f(q), where libjpeg divides by 11 f(q);
6. dequantise, inverse DCT, +128; chroma upsampled by pixel repetition (nearest, no "fancy" upsampling);
7. YCbCr -> RGB, clamp to [0, 255], / 255, crop; the output is not rounded to 8 bit.

Batched and vectorised (one quality per sample), any device; computed in float32. No gradient: the
degradation runs without one and hard rounding has none.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

# JPEG standard (ITU-T T.81) Annex K, tables K.1 and K.2, natural order: row = vertical frequency.
LUMA_TABLE = torch.tensor([
    [16, 11, 10, 16, 24, 40, 51, 61],
    [12, 12, 14, 19, 26, 58, 60, 55],
    [14, 13, 16, 24, 40, 57, 69, 56],
    [14, 17, 22, 29, 51, 87, 80, 62],
    [18, 22, 37, 56, 68, 109, 103, 77],
    [24, 35, 55, 64, 81, 104, 113, 92],
    [49, 64, 78, 87, 103, 121, 120, 101],
    [72, 92, 95, 98, 112, 100, 103, 99]], dtype=torch.float32)
CHROMA_TABLE = torch.tensor([
    [17, 18, 24, 47, 99, 99, 99, 99],
    [18, 21, 26, 66, 99, 99, 99, 99],
    [24, 26, 56, 99, 99, 99, 99, 99],
    [47, 66, 99, 99, 99, 99, 99, 99],
    [99, 99, 99, 99, 99, 99, 99, 99],
    [99, 99, 99, 99, 99, 99, 99, 99],
    [99, 99, 99, 99, 99, 99, 99, 99],
    [99, 99, 99, 99, 99, 99, 99, 99]], dtype=torch.float32)

# JFIF full-range conversion (ITU-T T.871)
_RGB2YCC = torch.tensor([[0.299, 0.587, 0.114], [-0.168736, -0.331264, 0.5], [0.5, -0.418688, -0.081312]])
_YCC2RGB = torch.tensor([[1.0, 0.0, 1.402], [1.0, -0.344136, -0.714136], [1.0, 1.772, 0.0]])


def _dct_matrix() -> torch.Tensor:
    """Orthonormal DCT-II: ``D[k, n] = c_k cos((2n + 1) k pi / 16)``, so a block's coefficients are D B D^T."""
    k = torch.arange(8, dtype=torch.float64).view(8, 1)
    n = torch.arange(8, dtype=torch.float64).view(1, 8)
    d = torch.cos((2 * n + 1) * k * math.pi / 16) * math.sqrt(2 / 8)
    d[0] = math.sqrt(1 / 8)
    return d.float()


_DCT = _dct_matrix()


def quality_factor(quality: torch.Tensor) -> torch.Tensor:
    """BasicSR's ``quality_to_factor``: 50 / q below 50, (200 - 2q) / 100 from 50 (q 75 -> 0.5, q 95 -> 0.1)."""
    q = quality.to(torch.float32)
    return torch.where(q < 50, 50 / q, (200 - 2 * q) / 100)


def hggt_tables(quality: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B,) quality -> the (B, 8, 8) luma and chroma divisors HGGT uses, indexed (vertical, horizontal)
    frequency: the Annex K tables transposed, times :func:`quality_factor`, unrounded."""
    f = quality_factor(quality).view(-1, 1, 1)
    return LUMA_TABLE.T.to(f.device) * f, CHROMA_TABLE.T.to(f.device) * f


def _blocks(plane: torch.Tensor) -> torch.Tensor:
    """(B, H, W) -> (B, H/8, W/8, 8, 8)."""
    b, h, w = plane.shape
    return plane.view(b, h // 8, 8, w // 8, 8).permute(0, 1, 3, 2, 4)


def _unblocks(blocks: torch.Tensor) -> torch.Tensor:
    b, nh, nw = blocks.shape[:3]
    return blocks.permute(0, 1, 3, 2, 4).reshape(b, nh * 8, nw * 8)


def _code(plane: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """Level shift, DCT, quantise (hard round), dequantise, IDCT of a (B, H, W) plane; table (B, 8, 8)."""
    d = _DCT.to(plane.device)
    coef = d @ _blocks(plane - 128) @ d.T
    t = table[:, None, None]
    return _unblocks(d.T @ (torch.round(coef / t) * t) @ d) + 128


@torch.no_grad()
def jpeg_hggt(x: torch.Tensor, quality: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) RGB in [0, 1], (B,) quality -> the decoded JPEG, (B, 3, H, W) in [0, 1], x's dtype."""
    if x.dim() != 4 or x.shape[1] != 3:
        raise ValueError(f"jpeg_hggt: expected (B,3,H,W) RGB, got {tuple(x.shape)}")
    quality = torch.as_tensor(quality, device=x.device).flatten()
    if quality.numel() != x.shape[0]:
        raise ValueError(f"jpeg_hggt: {quality.numel()} qualities for a batch of {x.shape[0]}")
    if not bool(((quality > 0) & (quality < 100)).all()):
        raise ValueError(f"jpeg_hggt: quality must be in (0, 100) (q 100 divides by zero), got {quality.tolist()}")
    h, w = x.shape[-2:]
    img = F.pad(x.float(), (0, -w % 16, 0, -h % 16), mode="constant", value=0) * 255
    ycc = torch.einsum("ij,bjhw->bihw", _RGB2YCC.to(img.device), img)
    ycc[:, 1:] += 128
    y_table, c_table = hggt_tables(quality)
    y = _code(ycc[:, 0], y_table)
    c = F.avg_pool2d(ycc[:, 1:], 2)
    cb, cr = _code(c[:, 0], c_table), _code(c[:, 1], c_table)
    c = torch.stack([cb, cr], 1).repeat_interleave(2, -2).repeat_interleave(2, -1) - 128
    rgb = torch.einsum("ij,bjhw->bihw", _YCC2RGB.to(img.device), torch.cat([y[:, None], c], 1))
    return (rgb.clamp(0, 255) / 255)[..., :h, :w].to(x.dtype)
