"""Blur kernels of HGGT's blind degradation (method.md 5), written from their closed forms.

Definitions (the ones BasicSR's ``basicsr/data/degradations.py`` implements and HGGT's datasets
``posneggtpos_dataset.PosNegGTPosDataset.__getitem__`` and
``twostagedegradation_posneggtpos_dataset.TwoStageDegradation_PosNegGTPos_Dataset.__getitem__`` draw from):

* grid: pixel offsets ``-(k-1)/2 .. (k-1)/2`` from the centre of a ``k x k`` kernel (``k`` odd),
  x along columns, y along rows;
* bivariate Gaussian (``bivariate_Gaussian``): ``exp(-1/2 p^T S^-1 p)`` with
  ``S = R(theta) diag(sx^2, sy^2) R(theta)^T``, normalised to sum 1. Isotropic: ``sx = sy``, ``theta = 0``;
  anisotropic: ``sx, sy ~ U(sigma range)`` independently, ``theta ~ U(-pi, pi)``;
* circular low-pass (``circular_lowpass_kernel``), the 2-D sinc / Airy pattern with cutoff ``w``:
  ``w J1(w r) / (2 pi r)``, centre value ``w^2 / (4 pi)``, normalised to sum 1;
* sizes are ``2v + 1`` for ``v`` in ``[blur_kernel_size_min, blur_kernel_size_max]`` and every kernel is
  zero-padded to 9 x 9 (HGGT pads to 9, not Real-ESRGAN's 21);
* a sinc blur kernel draws ``w ~ U(pi/3, pi)`` (sizes < 13, the only ones HGGT uses);
* the final sinc (two-stage only) takes its size from the stage-2 range, ``w ~ U(pi/3, pi)``, padded to
  9; when it is not drawn the final "kernel" is a 9 x 9 pulse (identity).

All draws come from an explicit ``torch.Generator``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from scipy.special import j1

PAD_TO = 9


def _grid(size: int) -> tuple[torch.Tensor, torch.Tensor]:
    if size < 1 or size % 2 == 0:
        raise ValueError(f"kernel size must be odd and positive, got {size}")
    ax = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    yy, xx = torch.meshgrid(ax, ax, indexing="ij")
    return xx, yy


def gaussian_kernel(size: int, sx: float, sy: float, theta: float) -> torch.Tensor:
    """Bivariate Gaussian ``exp(-1/2 p^T S^-1 p)``, ``S = R diag(sx^2, sy^2) R^T``; sums to 1 (float64)."""
    xx, yy = _grid(size)
    c, s = math.cos(theta), math.sin(theta)
    rot = torch.tensor([[c, -s], [s, c]], dtype=torch.float64)
    cov = rot @ torch.diag(torch.tensor([sx ** 2, sy ** 2], dtype=torch.float64)) @ rot.T
    pts = torch.stack([xx, yy], dim=-1)
    k = torch.exp(-0.5 * torch.einsum("...i,ij,...j->...", pts, torch.linalg.inv(cov), pts))
    return k / k.sum()


def sinc_kernel(size: int, cutoff: float) -> torch.Tensor:
    """Circular low-pass ``w J1(w r) / (2 pi r)`` (centre ``w^2 / 4 pi``) with cutoff ``w`` radians; sums to 1."""
    xx, yy = _grid(size)
    r = torch.sqrt(xx ** 2 + yy ** 2)
    k = torch.where(r == 0, torch.full_like(r, cutoff ** 2 / (4 * math.pi)),
                    cutoff * torch.from_numpy(j1((cutoff * r).numpy())) / (2 * math.pi * r.clamp_min(1e-12)))
    return k / k.sum()


def pad_kernel(k: torch.Tensor, pad_to: int = PAD_TO) -> torch.Tensor:
    """Zero-pad a centred ``k x k`` kernel to ``pad_to x pad_to``."""
    p = (pad_to - k.shape[-1]) // 2
    if p < 0:
        raise ValueError(f"kernel of size {k.shape[-1]} does not fit in {pad_to}x{pad_to}")
    return F.pad(k, (p, p, p, p))


def pulse(pad_to: int = PAD_TO) -> torch.Tensor:
    """The identity kernel: 1 at the centre of a ``pad_to x pad_to`` zero kernel."""
    k = torch.zeros(pad_to, pad_to, dtype=torch.float64)
    k[pad_to // 2, pad_to // 2] = 1.0
    return k


def _u(gen: torch.Generator, lo: float, hi: float) -> float:
    return float(lo + (hi - lo) * torch.rand(1, generator=gen, dtype=torch.float64))


def random_blur_kernel(sizes: tuple[int, ...], sigma: tuple[float, float], iso_prob: float, sinc_prob: float,
                       gen: torch.Generator, pad_to: int = PAD_TO, trace: list | None = None) -> torch.Tensor:
    """One blur kernel as HGGT's datasets draw it: size ~ U(sizes); with ``sinc_prob`` a circular low-pass
    (``w ~ U(pi/3, pi)``), else iso (``iso_prob``) or aniso Gaussian; zero-padded to ``pad_to``."""
    size = sizes[int(torch.randint(len(sizes), (1,), generator=gen))]
    if _u(gen, 0, 1) < sinc_prob:
        family, k = "sinc", sinc_kernel(size, _u(gen, math.pi / 3, math.pi))
    elif _u(gen, 0, 1) < iso_prob:
        s = _u(gen, *sigma)
        family, k = "iso", gaussian_kernel(size, s, s, 0.0)
    else:
        sx, sy = _u(gen, *sigma), _u(gen, *sigma)
        family, k = "aniso", gaussian_kernel(size, sx, sy, _u(gen, -math.pi, math.pi))
    if trace is not None:
        trace.append({"op": "kernel", "family": family, "size": size})
    return pad_kernel(k, pad_to)


def final_sinc_kernel(sizes: tuple[int, ...], prob: float, gen: torch.Generator, pad_to: int = PAD_TO,
                      trace: list | None = None) -> torch.Tensor:
    """The two-stage final filter: with ``prob`` a circular low-pass of size ~ U(sizes) and
    ``w ~ U(pi/3, pi)`` padded to ``pad_to``, else the ``pad_to x pad_to`` pulse."""
    if _u(gen, 0, 1) < prob:
        size = sizes[int(torch.randint(len(sizes), (1,), generator=gen))]
        if trace is not None:
            trace.append({"op": "final_kernel", "family": "sinc", "size": size})
        return pad_kernel(sinc_kernel(size, _u(gen, math.pi / 3, math.pi)), pad_to)
    if trace is not None:
        trace.append({"op": "final_kernel", "family": "pulse", "size": 1})
    return pulse(pad_to)
