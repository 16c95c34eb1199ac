"""Real-ESRGAN-style blind degradation as HGGT uses it (method.md 5), batched on any device.

The LR is synthesised from the *original* HR only. Every random draw comes from an explicit
``torch.Generator`` (seeded per iteration by the trainer), so a batch's LR is reproducible and
a resumed run degrades exactly as an uninterrupted one. Filtering and JPEG use kornia.

one_stage (SwinIR config): blur (Gaussian iso/aniso or sinc) -> random resize -> Gaussian or
Poisson noise -> JPEG -> resize to H/s x W/s -> round to 8 bit and clamp.
two_stage (Real-ESRGAN config): the same chain twice with the stage-2 ranges, then the final
sinc + resize and JPEG in random order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from kornia.enhance import jpeg_codec_differentiable
from kornia.filters import filter2d
from scipy.special import j1


@dataclass(frozen=True)
class StageParams:
    kernel_sizes: tuple[int, ...]
    sigma: tuple[float, float]
    iso_prob: float  # isotropic vs anisotropic Gaussian
    sinc_prob: float
    blur_prob: float
    resize_prob: tuple[float, float, float]  # up, down, keep
    resize_range: tuple[float, float]
    gaussian_noise_prob: float
    noise_sigma: tuple[float, float]  # in 0-255 units
    poisson_scale: tuple[float, float]
    gray_noise_prob: float
    jpeg_range: tuple[float, float]


ONE_STAGE = StageParams(kernel_sizes=(3, 5, 7, 9), sigma=(0.1, 1.0), iso_prob=0.7, sinc_prob=0.01, blur_prob=1.0,
                        resize_prob=(0.1, 0.85, 0.05), resize_range=(0.8, 1.2), gaussian_noise_prob=0.5,
                        noise_sigma=(1, 12), poisson_scale=(0.05, 0.8), gray_noise_prob=0.2, jpeg_range=(75, 95))
TWO_STAGE_1 = StageParams(kernel_sizes=(3, 5, 7), sigma=(0.1, 0.6), iso_prob=0.7, sinc_prob=0.01, blur_prob=1.0,
                          resize_prob=(0.1, 0.85, 0.05), resize_range=(0.9, 1.1), gaussian_noise_prob=0.5,
                          noise_sigma=(1, 8), poisson_scale=(0.05, 0.5), gray_noise_prob=0.2, jpeg_range=(85, 95))
TWO_STAGE_2 = StageParams(kernel_sizes=(3, 5), sigma=(0.1, 0.4), iso_prob=0.7, sinc_prob=0.01, blur_prob=0.8,
                          resize_prob=(0.1, 0.85, 0.05), resize_range=(0.9, 1.1), gaussian_noise_prob=0.5,
                          noise_sigma=(0, 4), poisson_scale=(0.0, 0.3), gray_noise_prob=0.2, jpeg_range=(87, 95))
FINAL_SINC_PROB = 0.1
MODES = ("area", "bilinear", "bicubic")


def _u(gen: torch.Generator, lo: float, hi: float, n: int = 1) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=gen, dtype=torch.float64)


def _choice(gen: torch.Generator, options, probs=None):
    if probs is None:
        return options[int(torch.randint(len(options), (1,), generator=gen))]
    idx = int(torch.multinomial(torch.tensor(probs, dtype=torch.float64), 1, generator=gen))
    return options[idx]


def gaussian_kernel(size: int, sx: float, sy: float, theta: float) -> torch.Tensor:
    ax = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    yy, xx = torch.meshgrid(ax, ax, indexing="ij")
    c, s = math.cos(theta), math.sin(theta)
    rot = torch.tensor([[c, -s], [s, c]], dtype=torch.float64)
    cov = rot @ torch.diag(torch.tensor([sx ** 2, sy ** 2], dtype=torch.float64)) @ rot.T
    inv = torch.linalg.inv(cov)
    pts = torch.stack([xx, yy], dim=-1)
    k = torch.exp(-0.5 * torch.einsum("...i,ij,...j->...", pts, inv, pts))
    return k / k.sum()


def sinc_kernel(size: int, cutoff: float) -> torch.Tensor:
    """Circular low-pass (2-D sinc / Airy) kernel with cutoff frequency ``cutoff`` (radians)."""
    ax = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    yy, xx = torch.meshgrid(ax, ax, indexing="ij")
    r = torch.sqrt(xx ** 2 + yy ** 2)
    k = torch.where(r == 0, torch.full_like(r, cutoff ** 2 / (4 * math.pi)),
                    cutoff * torch.from_numpy(j1((cutoff * r).numpy())) / (2 * math.pi * r.clamp_min(1e-12)))
    return k / k.sum()


def random_kernel(p: StageParams, gen: torch.Generator, pad_to: int) -> torch.Tensor:
    size = _choice(gen, p.kernel_sizes)
    if float(_u(gen, 0, 1)) < p.sinc_prob:
        k = sinc_kernel(size, float(_u(gen, math.pi / 3, math.pi)))
    elif float(_u(gen, 0, 1)) < p.iso_prob:
        s = float(_u(gen, *p.sigma))
        k = gaussian_kernel(size, s, s, 0.0)
    else:
        sx, sy = (float(v) for v in _u(gen, *p.sigma, n=2))
        k = gaussian_kernel(size, sx, sy, float(_u(gen, -math.pi, math.pi)))
    pad = (pad_to - size) // 2
    return F.pad(k, (pad, pad, pad, pad))


def _blur(x: torch.Tensor, kernels: torch.Tensor) -> torch.Tensor:
    return filter2d(x, kernels.to(x.dtype).to(x.device), border_type="reflect")


def _resize(x: torch.Tensor, p: StageParams, gen: torch.Generator) -> torch.Tensor:
    kind = _choice(gen, ("up", "down", "keep"), p.resize_prob)
    scale = float(_u(gen, 1, p.resize_range[1])) if kind == "up" else (
        float(_u(gen, p.resize_range[0], 1)) if kind == "down" else 1.0)
    mode = _choice(gen, MODES)
    if scale == 1.0:
        return x
    h, w = max(1, int(x.shape[-2] * scale)), max(1, int(x.shape[-1] * scale))
    return F.interpolate(x, size=(h, w), mode=mode, **({} if mode == "area" else {"align_corners": False}))


def _noise(x: torch.Tensor, p: StageParams, gen: torch.Generator) -> torch.Tensor:
    b = x.shape[0]
    gray = (torch.rand(b, generator=gen) < p.gray_noise_prob).to(x.device).view(b, 1, 1, 1)
    if float(_u(gen, 0, 1)) < p.gaussian_noise_prob:
        sigma = (_u(gen, *p.noise_sigma, n=b).float() / 255).to(x.device).view(b, 1, 1, 1)
        cpu_noise = torch.randn(x.shape, generator=gen, dtype=torch.float32).to(x.device)
        noise = torch.where(gray, cpu_noise[:, :1].expand_as(x), cpu_noise) * sigma
    else:
        scale = _u(gen, *p.poisson_scale, n=b).float().to(x.device).view(b, 1, 1, 1)
        rate = (x.clamp(0, 1) * 255).detach().cpu()
        shot = torch.poisson(rate, generator=gen).to(x.device) / 255 - x.clamp(0, 1)
        lum = (0.299 * x[:, :1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]).clamp(0, 1)
        shot_gray = torch.poisson((lum * 255).detach().cpu(), generator=gen).to(x.device) / 255 - lum
        noise = torch.where(gray, shot_gray.expand_as(x), shot) * scale
    return x + noise


def _jpeg(x: torch.Tensor, p: StageParams, gen: torch.Generator) -> torch.Tensor:
    q = _u(gen, *p.jpeg_range, n=x.shape[0]).float().to(x.device)
    return jpeg_codec_differentiable(x.clamp(0, 1), q)


def _stage(x: torch.Tensor, p: StageParams, gen: torch.Generator) -> torch.Tensor:
    if float(_u(gen, 0, 1)) < p.blur_prob:
        pad_to = max(p.kernel_sizes)
        x = _blur(x, torch.stack([random_kernel(p, gen, pad_to) for _ in range(x.shape[0])]))
    x = _resize(x, p, gen)
    x = _noise(x, p, gen)
    return _jpeg(x, p, gen)


def _to_lr(x: torch.Tensor, size: tuple[int, int], gen: torch.Generator) -> torch.Tensor:
    mode = _choice(gen, MODES)
    return F.interpolate(x, size=size, mode=mode, **({} if mode == "area" else {"align_corners": False}))


@torch.no_grad()
def degrade(hr: torch.Tensor, kind: str, scale: int, gen: torch.Generator) -> torch.Tensor:
    """(B,3,H,W) HR in [0,1] -> (B,3,H/scale,W/scale) LR in [0,1], quantised to 8 bit."""
    if hr.dim() != 4 or hr.shape[1] != 3:
        raise ValueError(f"degrade: expected (B,3,H,W), got {tuple(hr.shape)}")
    size = (hr.shape[-2] // scale, hr.shape[-1] // scale)
    if kind == "one_stage":
        x = _to_lr(_stage(hr, ONE_STAGE, gen), size, gen)
    elif kind == "two_stage":
        x = _stage(_stage(hr, TWO_STAGE_1, gen), TWO_STAGE_2, gen)
        sinc = float(_u(gen, 0, 1)) < FINAL_SINC_PROB
        kernels = torch.stack([sinc_kernel(21, float(_u(gen, math.pi / 3, math.pi))) if sinc
                               else F.pad(torch.ones(1, 1, dtype=torch.float64), (10, 10, 10, 10))
                               for _ in range(hr.shape[0])])
        if float(_u(gen, 0, 1)) < 0.5:  # resize + sinc, then JPEG
            x = _jpeg(_blur(_to_lr(x, size, gen), kernels), TWO_STAGE_2, gen)
        else:  # JPEG, then resize + sinc
            x = _blur(_to_lr(_jpeg(x, TWO_STAGE_2, gen), size, gen), kernels)
    else:
        raise ValueError(f"degradation kind {kind!r}: expected one_stage or two_stage")
    return (x.clamp(0, 1) * 255).round() / 255
